"""One simulation as the CLI runs it: design + model + performance model + requests -> metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from strato.core.report import new_figure
from strato.llm.catalog import LlmModel, Machine, get_machine, get_model
from strato.llm.compat import BatchTokenTable
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig, run_summary
from strato.llm.metrics import Percentiles, RequestTimes, SloCheck, latency_summary, slo_checks, tbt_s
from strato.llm.perf import PerfModel, load_perf_model, profile_path
from strato.traces.llm import LlmRequests

REFERENCE_MACHINE = "a100-80gb"
"""SLO slowdowns are measured against each request alone on a DGX-A100."""


@dataclass(frozen=True)
class SimulationSpec:
    design: str
    model: str = "llama2-70b"
    prompt: int | None = None
    token: int | None = None
    machines: int | None = None
    perf: str | None = None
    tensor_parallel: int = 8
    public_simulator: bool = False
    """Use the public Splitwise simulator's choices throughout (docs/splitwise-sim.md): its iteration-time
    model over the profile CSV, its scheduler settings and its metric conventions."""


def _perf(spec: SimulationSpec, model: LlmModel, machine: Machine) -> PerfModel:
    if not spec.public_simulator:
        return load_perf_model(spec.perf, model, machine, spec.tensor_parallel)
    path = profile_path() if spec.perf in (None, "profile") else Path(spec.perf)
    return BatchTokenTable(path, model, machine, spec.tensor_parallel)


@dataclass(frozen=True)
class SimulationResult:
    """One run's summary: what ``strato llm simulate`` prints (and, through :meth:`to_json`, its --json)."""

    design: str
    """The design's label, pool sizes and machines included."""
    model: str
    trace: str
    perf: str
    """The performance model, as it describes itself."""
    conventions: str
    """Metric conventions: ``strato`` or ``public-sim`` (:data:`strato.llm.metrics.CONVENTIONS`)."""
    requests: int
    completed: int
    throughput_rps: float | None
    ttft_s: Percentiles
    tbt_s: Percentiles
    e2e_s: Percentiles
    slo_met: bool
    """All nine checks hold."""
    slo_checks: tuple[SloCheck, ...]
    cost_per_hour: float
    power_kw: float
    utilisation: dict[str, float]
    """Mean busy share of the machines of each home role, over the run."""
    simulation_s: float
    simulated_requests_per_s: float | None

    def to_row(self) -> dict[str, str | int | float | bool | None]:
        """Flat values by column key, one latency percentile per column (``ttft_p50`` ...)."""
        latencies = {
            f"{name}_{q}": value
            for name, percentiles in (("ttft", self.ttft_s), ("tbt", self.tbt_s), ("e2e", self.e2e_s))
            for q, value in percentiles.to_row().items()
        }
        return {
            "design": self.design,
            "model": self.model,
            "trace": self.trace,
            "requests": self.requests,
            "completed": self.completed,
            "throughput_rps": self.throughput_rps,
            **latencies,
            "slo_met": self.slo_met,
            "cost_per_hour": self.cost_per_hour,
            "power_kw": self.power_kw,
        }

    def to_json(self) -> dict[str, object]:
        """JSON-ready values (non-finite numbers become null)."""
        return {
            "design": self.design,
            "model": self.model,
            "trace": self.trace,
            "perf": self.perf,
            "conventions": self.conventions,
            "requests": self.requests,
            "completed": self.completed,
            "throughput_rps": self.throughput_rps,
            "ttft_s": self.ttft_s.to_json(),
            "tbt_s": self.tbt_s.to_json(),
            "e2e_s": self.e2e_s.to_json(),
            "slo_met": self.slo_met,
            "slo_checks": [check.to_json() for check in self.slo_checks],
            "cost_per_hour": self.cost_per_hour,
            "power_kw": self.power_kw,
            "utilisation": self.utilisation,
            "simulation_s": self.simulation_s,
            "simulated_requests_per_s": self.simulated_requests_per_s,
        }


def simulate(
    spec: SimulationSpec, requests: LlmRequests, config: SchedulerConfig | None = None
) -> SimulationResult:
    return run_simulation(spec, requests, config)[0]


def run_simulation(
    spec: SimulationSpec, requests: LlmRequests, config: SchedulerConfig | None = None
) -> tuple[SimulationResult, RequestTimes]:
    """The summary :func:`simulate` returns, and every request's times (for plots)."""
    model = get_model(spec.model)
    design = make_design(spec.design, prompt=spec.prompt, token=spec.token, machines=spec.machines)
    perf_models = {pool.machine.name: _perf(spec, model, pool.machine) for pool in design.pools}
    reference = _perf(spec, model, get_machine(REFERENCE_MACHINE))
    if config is None and spec.public_simulator:
        config = SchedulerConfig.public_simulator()
    convention = "public-sim" if spec.public_simulator else "strato"
    simulator = ClusterSimulator(design, model, perf_models, config)
    started = time.perf_counter()
    times = simulator.run(requests)
    elapsed = time.perf_counter() - started
    checks = slo_checks(times, reference, convention)
    summary = run_summary(times)
    latencies = latency_summary(times, convention)
    horizon = float(times.completion_s.max()) if summary.completed else 0.0
    result = SimulationResult(
        design=design.label(),
        model=model.name,
        trace=requests.name,
        perf=perf_models[design.pools[0].machine.name].describe(),
        conventions=convention,
        requests=summary.requests,
        completed=summary.completed,
        throughput_rps=summary.throughput_rps,
        ttft_s=latencies.ttft_s,
        tbt_s=latencies.tbt_s,
        e2e_s=latencies.e2e_s,
        slo_met=all(check.met for check in checks),
        slo_checks=tuple(checks),
        cost_per_hour=design.cost_per_hour,
        power_kw=design.power_kw,
        utilisation=simulator.utilisation(horizon),
        simulation_s=elapsed,
        simulated_requests_per_s=len(requests) / elapsed if elapsed > 0 else None,
    )
    return result, times


def latency_cdf_figure(runs: list[tuple[str, RequestTimes]], convention: str = "strato") -> Figure:
    """CDFs of TTFT, TBT and E2E, one line per run, as the paper plots them."""
    figure = new_figure(11.0, 3.4)
    axes = figure.subplots(1, 3)
    for label, times in runs:
        for axis, (name, values) in zip(
            axes,
            (("TTFT", times.ttft_s), ("TBT", tbt_s(times, convention)), ("E2E", times.e2e_s)),
            strict=True,
        ):
            ordered = np.sort(values[np.isfinite(values)])
            axis.plot(ordered, np.arange(1, ordered.size + 1) / max(ordered.size, 1), label=label)
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on narrow ranges
            axis.set_xlabel(f"{name} (s)")
            axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    axes[0].legend(fontsize=7)
    return figure
