"""The ``strato`` command line: ``strato <domain> <verb>``."""
