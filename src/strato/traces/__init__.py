"""Trace layer: readers for the Azure Functions traces, a synthetic generator, and characterisation."""

from strato.traces.model import DURATION_PERCENTILES, Invocations, Workload

__all__ = ["DURATION_PERCENTILES", "Invocations", "Workload"]
