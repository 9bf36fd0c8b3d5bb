"""FaaS workloads: the Azure Functions 2019/2021 readers, the calibrated synthetic generator, idle-time
profiles and the characterisation against the paper's figures."""

from strato.traces.faas.model import DURATION_PERCENTILES, Invocations, Workload

__all__ = ["DURATION_PERCENTILES", "Invocations", "Workload"]
