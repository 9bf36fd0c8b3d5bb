"""The one data layer: workloads of every domain, read, generated and characterised.

``faas`` (Azure Functions traces, the synthetic generator, characterisation), ``llm`` (inference
requests), ``vm`` (VM CPU traces); shared by them: ``spec`` (the one workload grammar), ``datasets``
(``data_root()`` and the named sets) and ``csvio`` (CSV/gzip reading with file/row/column errors).
"""
