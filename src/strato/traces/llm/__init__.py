"""LLM workloads: inference requests (:mod:`.requests`) and the token-size tables of the public traces
(:mod:`.token_sizes`). Power traces of GPUs serving LLMs (POLCA) belong here too, beside the requests."""

from strato.traces.llm.requests import (
    LlmRequests,
    TraceKind,
    load_requests,
    percentile_table,
    poisson,
    poisson_arrivals,
    read_llm_requests,
    splitwise_sim_requests,
    synthetic,
)

__all__ = [
    "LlmRequests",
    "TraceKind",
    "load_requests",
    "percentile_table",
    "poisson",
    "poisson_arrivals",
    "read_llm_requests",
    "splitwise_sim_requests",
    "synthetic",
]
