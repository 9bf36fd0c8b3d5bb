"""strato: run and evaluate cloud resource-management policies, live and on real traces."""

__version__ = "0.1.0"
