"""One simulation as the CLI runs it: design + model + performance model + requests -> metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strato.llm.catalog import LlmModel, Machine, get_machine, get_model
from strato.llm.compat import BatchTokenTable
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig, run_summary
from strato.llm.metrics import latency_summary, slo_checks
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


def simulate(
    spec: SimulationSpec, requests: LlmRequests, config: SchedulerConfig | None = None
) -> dict[str, Any]:
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
    horizon = float(times.completion_s.max()) if summary["completed"] else 0.0
    return {
        "design": design.label(),
        "model": model.name,
        "trace": requests.name,
        "perf": perf_models[design.pools[0].machine.name].describe(),
        "conventions": convention,
        **summary,
        **latency_summary(times, convention),
        "slo_met": all(check["met"] for check in checks),
        "slo_checks": checks,
        "cost_per_hour": design.cost_per_hour,
        "power_kw": design.power_kw,
        "utilisation": simulator.utilisation(horizon),
        "simulation_s": elapsed,
        "simulated_requests_per_s": len(requests) / elapsed if elapsed > 0 else None,
    }
