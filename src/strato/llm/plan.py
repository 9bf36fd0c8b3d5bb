"""Provisioning planner: the highest request rate each design sustains under all nine SLOs, within a budget.

For every design, the planner lists the cluster shapes that fit the budget (a baseline: as many machines
as it affords; a Splitwise design: every prompt/token split of the machines it affords, coarsened to at
most ``max_splits`` shapes), and finds each shape's *sustainable rate* by bisection: the highest Poisson
rate (token sizes resampled from the trace) at which the simulated cluster completes every request and
meets every SLO (an overloaded cluster's growing queues fail the TTFT and E2E tails). Shapes run in a
local process pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

from matplotlib.figure import Figure

from strato.core.dask import dask_map
from strato.core.progress import progress
from strato.core.report import new_figure
from strato.errors import ConfigError
from strato.llm.catalog import get_machine
from strato.llm.designs import design_names, make_design
from strato.llm.simulate import SimulationResult, SimulationSpec, simulate
from strato.traces.llm import LlmRequests, poisson, splitwise_sim_requests

OBJECTIVES = ("throughput", "cost", "power")


@dataclass(frozen=True)
class PlanOptions:
    budget_kind: str
    """``cost`` (USD per hour) or ``power`` (provisioned kW)."""
    budget: float
    designs: tuple[str, ...] = tuple(design_names())
    model: str = "llama2-70b"
    perf: str | None = None
    duration_s: float = 120.0
    rate_low: float = 1.0
    rate_high: float = 400.0
    steps: int = 7
    max_splits: int = 8
    seed: int = 0
    public_simulator: bool = False
    workers: int = 2
    dask_address: str | None = None
    """A Dask distributed scheduler (``tcp://host:port``) to run the shapes on instead of local processes."""
    fixed_shapes: tuple[str, ...] = ()
    """Evaluate exactly these shapes (``design:N`` or ``design:P+T``) instead of enumerating the budget."""

    def __post_init__(self) -> None:
        if self.budget_kind not in ("cost", "power"):
            raise ConfigError(f"--budget must be cost=USD_PER_HOUR or power=KW, not {self.budget_kind!r}")
        if not self.budget > 0:
            raise ConfigError("the budget must be positive")
        if not 0 < self.rate_low < self.rate_high:
            raise ConfigError("rates must satisfy 0 < low < high")
        if self.steps < 1 or self.max_splits < 1 or self.workers < 1:
            raise ConfigError("steps, max_splits and workers must be at least 1")


def parse_budget(text: str) -> tuple[str, float]:
    kind, sep, value = text.partition("=")
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if not sep or kind not in ("cost", "power") or not amount > 0:
        raise ConfigError(f"--budget takes cost=USD_PER_HOUR or power=KW, not {text!r}")
    return kind, amount


def _unit(machine: str, kind: str) -> float:
    entry = get_machine(machine)
    return entry.cost_per_hour if kind == "cost" else entry.power_kw


def parse_shape(text: str, options: PlanOptions) -> SimulationSpec:
    """``baseline-h100:40`` or ``splitwise-aa:55+15`` (prompt + token machines)."""
    name, sep, sizes = text.partition(":")
    prompt, plus, token = sizes.partition("+")
    try:
        numbers = [int(prompt), int(token)] if plus else [int(sizes)]
    except ValueError:
        numbers = []
    if not sep or not numbers or min(numbers) < 1:
        raise ConfigError(f"--shape takes DESIGN:MACHINES or DESIGN:PROMPT+TOKEN, not {text!r}")
    spec = SimulationSpec(
        design=name, model=options.model, perf=options.perf, public_simulator=options.public_simulator
    )
    spec = replace(spec, prompt=numbers[0], token=numbers[1]) if plus else replace(spec, machines=numbers[0])
    make_design(spec.design, prompt=spec.prompt, token=spec.token, machines=spec.machines)  # validates
    return spec


def shapes(options: PlanOptions) -> list[SimulationSpec]:
    """Every cluster shape within the budget, per design (or exactly the fixed shapes asked for)."""
    if options.fixed_shapes:
        return [parse_shape(text, options) for text in options.fixed_shapes]
    out: list[SimulationSpec] = []
    for name in options.designs:
        pools = make_design(name, prompt=1, token=1, machines=1).pools
        if len(pools) == 1:
            count = int(options.budget // _unit(pools[0].machine.name, options.budget_kind))
            if count >= 1:
                out.append(
                    SimulationSpec(
                        design=name,
                        model=options.model,
                        machines=count,
                        perf=options.perf,
                        public_simulator=options.public_simulator,
                    )
                )
            continue
        prompt_unit = _unit(pools[0].machine.name, options.budget_kind)
        token_unit = _unit(pools[1].machine.name, options.budget_kind)
        most = int((options.budget - token_unit) // prompt_unit)
        if most < 1:
            continue
        step = max(1, math.ceil(most / options.max_splits))
        for prompt in range(1, most + 1, step):
            token = int((options.budget - prompt * prompt_unit) // token_unit)
            if token >= 1:
                out.append(
                    SimulationSpec(
                        design=name,
                        model=options.model,
                        prompt=prompt,
                        token=token,
                        perf=options.perf,
                        public_simulator=options.public_simulator,
                    )
                )
    if not out:
        raise ConfigError(f"no design fits a {options.budget_kind} budget of {options.budget:g}")
    return out


@dataclass(frozen=True)
class SustainedRate:
    """One shape's bisection: the highest rate found sustainable and the run that showed it."""

    spec: SimulationSpec
    rate_rps: float
    """0.0 when even ``rate_low`` is not sustained."""
    result: SimulationResult | None
    """The simulation at ``rate_rps`` (None when only ``rate_low`` was tried and failed, or no step
    above it held)."""


@dataclass(frozen=True)
class PlanRow:
    """One cluster shape in the planner's answer."""

    design: str
    """The design's label with its pool sizes."""
    rate_rps: float
    """Sustainable rate under all nine SLOs (0.0: not even the lowest rate searched)."""
    cost_per_hour: float
    power_kw: float
    machines: int

    @property
    def family(self) -> str:
        """The design's name without its pool sizes (``splitwise-hh``)."""
        return self.design.split(" ")[0]

    def to_row(self) -> dict[str, str | int | float]:
        return asdict(self)

    def to_json(self) -> dict[str, str | int | float]:
        return asdict(self)


def _sustains(
    spec: SimulationSpec, base: LlmRequests, rate: float, options: PlanOptions
) -> tuple[bool, SimulationResult]:
    if options.public_simulator:
        requests = splitwise_sim_requests(base, rate, options.duration_s, seed=options.seed)
    else:
        requests = poisson(base, rate, options.duration_s, seed=options.seed)
    result = simulate(spec, requests)
    # An overloaded cluster's queues grow without bound, which the TTFT and E2E tail checks catch.
    return result.completed == result.requests and result.slo_met, result


def sustainable_rate(spec: SimulationSpec, base: LlmRequests, options: PlanOptions) -> SustainedRate:
    """Bisection on a log scale between ``rate_low`` and ``rate_high``."""
    low, high = options.rate_low, options.rate_high
    best: SimulationResult | None = None
    if not _sustains(spec, base, low, options)[0]:
        return SustainedRate(spec, 0.0, None)
    for _ in range(options.steps):
        middle = math.sqrt(low * high)
        sustained, outcome = _sustains(spec, base, middle, options)
        if sustained:
            low, best = middle, outcome
        else:
            high = middle
    return SustainedRate(spec, low, best)


def plan(base: LlmRequests, options: PlanOptions, *, show_progress: bool | None = None) -> list[PlanRow]:
    """Every shape's sustainable rate, best first, with its cost and power (a progress bar on terminals)."""
    candidates = shapes(options)
    rows = []
    found_rates = progress(
        _map(candidates, base, options),
        total=len(candidates),
        description=f"planning {len(candidates)} cluster shapes",
        enabled=show_progress,
    )
    for found in found_rates:
        spec = found.spec
        design = make_design(spec.design, prompt=spec.prompt, token=spec.token, machines=spec.machines)
        rows.append(
            PlanRow(
                design=design.label(),
                rate_rps=found.rate_rps,
                cost_per_hour=design.cost_per_hour,
                power_kw=design.power_kw,
                machines=design.machines,
            )
        )
    rows.sort(key=lambda row: (-row.rate_rps, row.cost_per_hour))
    return rows


def rank(rows: list[PlanRow], objective: str, target_rps: float | None) -> list[PlanRow]:
    """``throughput``: highest sustainable rate first. ``cost``/``power``: the shapes that sustain
    ``target_rps``, cheapest (or least power) first."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if objective == "throughput":
        return rows
    if target_rps is None or not target_rps > 0:
        raise ConfigError(f"objective {objective} needs --rate, the request rate to sustain")
    sustaining = (row for row in rows if row.rate_rps >= target_rps)
    if objective == "cost":
        return sorted(sustaining, key=lambda row: row.cost_per_hour)
    return sorted(sustaining, key=lambda row: row.power_kw)


def _map(
    candidates: list[SimulationSpec], base: LlmRequests, options: PlanOptions
) -> Iterator[SustainedRate]:
    """Results in the candidates' order, as they come, so a progress bar can follow."""
    single = replace(options, workers=1, dask_address=None)
    if options.dask_address is not None:
        yield from dask_map(
            options.dask_address,
            sustainable_rate,
            candidates,
            shared={"base": base},
            constant={"options": single},
        )
    elif options.workers == 1:
        yield from (sustainable_rate(spec, base, single) for spec in candidates)
    else:
        with ProcessPoolExecutor(options.workers) as pool:
            yield from pool.map(
                sustainable_rate, candidates, [base] * len(candidates), [single] * len(candidates)
            )


def tradeoff_figure(rows: list[PlanRow], title: str) -> Figure:
    """Sustained throughput against cost and against power, one marker family per design (the paper's
    provisioning plots)."""
    figure = new_figure(10.0, 3.8)
    axes = figure.subplots(1, 2)
    families: dict[str, list[PlanRow]] = {}
    for row in rows:
        families.setdefault(row.family, []).append(row)
    for family, members in sorted(families.items()):
        rates = [m.rate_rps for m in members]
        axes[0].scatter([m.cost_per_hour for m in members], rates, label=family, s=18)
        axes[1].scatter([m.power_kw for m in members], rates, label=family, s=18)
    axes[0].set_xlabel("cost ($/h)")
    axes[1].set_xlabel("provisioned power (kW)")
    for axis in axes:
        axis.set_ylabel("sustained req/s (all nine SLOs)")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(title)
    return figure
