"""One row, several controllers, the same requests: what each controller costs in latency and buys in power.

Every controller runs on the same :class:`~strato.power.row.RowWorkload` (same seed, so the very same
requests) as a run with controller ``none``, the reference: a controller's latency *impact* is its P50/P99
against the reference's, in percent, so the reference's own impacts are 0 by construction and any impact is
the controller's, not the arrival draw's. :class:`ImpactRow` is one controller's summary (power against the
budget, brake events, energy, throughput, impacts per priority class); :func:`run_experiment` runs the
reference and the controllers on a process pool (the runs are independent) and keeps the
:class:`~strato.power.row.RowRun` s for plots. :mod:`strato.power.sweep` reuses the rows over row sizes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from strato.core.progress import ProgressBar
from strato.errors import ConfigError
from strato.power.controllers import parse_controller
from strato.power.row import CLASSES, ClassLatency, RowRun, RowSimulator, RowSpec, RowWorkload

REFERENCE = "none"
HIGH_P50_TARGET_PCT = 1.0
"""POLCA's target: high-priority P50 latency impact under 1 %."""
LOW_P50_TARGET_PCT = 2.0
"""... and low-priority under 2 %, with no power-brake event and no telemetry reading over the budget."""
THRESHOLDS = (0.80, 0.89, 1.00)
"""Shares of the budget whose time above is reported: POLCA's two thresholds and the budget itself."""


@dataclass(frozen=True)
class RunMeasures:
    """What one run leaves once its series are summarised: small, so sweeps can send many back."""

    controller: str
    """The controller as the user wrote it (``polca``, ``static:1110`` ...)."""
    detail: str
    """The controller with every parameter (its ``describe()``)."""
    servers: int
    budget_servers: int
    budget_w: float
    duration_s: float
    peak_share: float
    """Largest 10 Hz row power as a share of the budget."""
    peak_telemetry_share: float
    """Largest telemetry reading (a mean over one interval) as a share of the budget: what control saw."""
    above_s: tuple[float, ...]
    """Seconds of 10 Hz row power above each of :data:`THRESHOLDS`."""
    brake_events: int
    actions: int
    energy_kwh: float
    latency: tuple[tuple[str, ClassLatency], ...]
    simulation_s: float

    @classmethod
    def of(cls, run: RowRun, controller: str, duration_s: float) -> RunMeasures:
        telemetry = float(run.telemetry_w.max()) if run.telemetry_w.size else 0.0
        return cls(
            controller=controller,
            detail=run.controller,
            servers=run.servers,
            budget_servers=run.budget_servers,
            budget_w=run.budget_w,
            duration_s=duration_s,
            peak_share=run.peak_w / run.budget_w,
            peak_telemetry_share=telemetry / run.budget_w,
            above_s=tuple(run.time_above(share) for share in THRESHOLDS),
            brake_events=run.brake_events,
            actions=len(run.actions),
            energy_kwh=run.energy_kwh,
            latency=tuple((name, run.latency[name]) for name in CLASSES if name in run.latency),
            simulation_s=run.simulation_s,
        )


def _impact(value: float | None, reference: float | None) -> float | None:
    """Percent change from the reference; None where either side has no completed request."""
    if value is None or reference is None or not reference > 0:
        return None
    return (value / reference - 1.0) * 100.0


@dataclass(frozen=True)
class ClassImpact:
    """One priority class under one controller, against the same class under ``none``."""

    name: str
    requests: int
    completed: int
    throughput_rps: float
    """Completed requests per second of the simulated window."""
    e2e_p50_s: float | None
    e2e_p99_s: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    e2e_p50_pct: float | None
    e2e_p99_pct: float | None
    ttft_p50_pct: float | None
    ttft_p99_pct: float | None

    @classmethod
    def of(cls, name: str, latency: ClassLatency, reference: ClassLatency, duration_s: float) -> ClassImpact:
        return cls(
            name=name,
            requests=latency.requests,
            completed=latency.completed,
            throughput_rps=latency.completed / duration_s,
            e2e_p50_s=latency.e2e_s.p50,
            e2e_p99_s=latency.e2e_s.p99,
            ttft_p50_s=latency.ttft_s.p50,
            ttft_p99_s=latency.ttft_s.p99,
            e2e_p50_pct=_impact(latency.e2e_s.p50, reference.e2e_s.p50),
            e2e_p99_pct=_impact(latency.e2e_s.p99, reference.e2e_s.p99),
            ttft_p50_pct=_impact(latency.ttft_s.p50, reference.ttft_s.p50),
            ttft_p99_pct=_impact(latency.ttft_s.p99, reference.ttft_s.p99),
        )

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


@dataclass(frozen=True)
class ImpactRow:
    """One controller on one row: power against the budget and latency impact against ``none``."""

    controller: str
    detail: str
    servers: int
    added: int
    """Servers beyond the ones the budget was provisioned for (``servers - budget_servers``)."""
    budget_kw: float
    peak_share: float
    peak_telemetry_share: float
    above_80_s: float
    above_89_s: float
    above_100_s: float
    brake_events: int
    actions: int
    energy_kwh: float
    classes: tuple[ClassImpact, ...]
    reference: bool
    """True for the ``none`` run every impact is measured against."""
    simulation_s: float

    @classmethod
    def of(cls, measures: RunMeasures, reference: RunMeasures) -> ImpactRow:
        if (measures.servers, measures.budget_w) != (reference.servers, reference.budget_w):
            raise ConfigError("a controller's impact needs a reference run on the same row and budget")
        base = dict(reference.latency)
        above_80, above_89, above_100 = measures.above_s
        return cls(
            controller=measures.controller,
            detail=measures.detail,
            servers=measures.servers,
            added=measures.servers - measures.budget_servers,
            budget_kw=measures.budget_w / 1e3,
            peak_share=measures.peak_share,
            peak_telemetry_share=measures.peak_telemetry_share,
            above_80_s=above_80,
            above_89_s=above_89,
            above_100_s=above_100,
            brake_events=measures.brake_events,
            actions=measures.actions,
            energy_kwh=measures.energy_kwh,
            classes=tuple(
                ClassImpact.of(name, latency, base[name], measures.duration_s)
                for name, latency in measures.latency
            ),
            reference=measures is reference,
            simulation_s=measures.simulation_s,
        )

    def impact(self, name: str) -> ClassImpact | None:
        return next((c for c in self.classes if c.name == name), None)

    @property
    def meets_targets(self) -> bool:
        """POLCA's bar: high-priority P50 E2E impact < 1 %, low-priority < 2 %, no brake, and no telemetry
        reading over the budget (what the row's meters and breakers see; a 100 ms bin over it is reported in
        ``above_100_s`` but is not a breach: breakers trip on sustained overload, and the brake acts on
        telemetry)."""
        if self.brake_events or self.peak_telemetry_share > 1.0:
            return False
        for name, target in (("high", HIGH_P50_TARGET_PCT), ("low", LOW_P50_TARGET_PCT)):
            impact = self.impact(name)
            # A row without that class (low-priority share 0 or 1) has nothing to miss.
            if impact is not None and (impact.e2e_p50_pct is None or not impact.e2e_p50_pct < target):
                return False
        return True

    def to_row(self) -> dict[str, Any]:
        """Flat, for tables: one row of power columns and the impacts of both classes."""
        row: dict[str, Any] = {
            "controller": self.controller + (" (reference)" if self.reference else ""),
            "servers": self.servers,
            "added": self.added,
            "budget_kw": self.budget_kw,
            "peak_pct": 100 * self.peak_share,
            "peak_telemetry_pct": 100 * self.peak_telemetry_share,
            "above_80_s": self.above_80_s,
            "above_89_s": self.above_89_s,
            "above_100_s": self.above_100_s,
            "brake_events": self.brake_events,
            "energy_kwh": self.energy_kwh,
            "meets_targets": "yes" if self.meets_targets else "no",
        }
        for impact in self.classes:
            for key in (
                "completed",
                "throughput_rps",
                "e2e_p50_pct",
                "e2e_p99_pct",
                "ttft_p50_pct",
                "ttft_p99_pct",
            ):
                row[f"{impact.name}_{key}"] = getattr(impact, key)
        return row

    def to_json(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.__dataclass_fields__ if key != "classes"}
        out["classes"] = {impact.name: impact.to_json() for impact in self.classes}
        out["meets_targets"] = self.meets_targets
        return out


@dataclass(frozen=True)
class Experiment:
    """The reference and each controller on one row and one workload."""

    spec: RowSpec
    workload: RowWorkload = field(repr=False)
    rows: tuple[ImpactRow, ...]
    """The reference first, then the controllers in the order given."""
    runs: tuple[RowRun, ...] = field(repr=False, compare=False)
    """The runs behind ``rows``, in the same order, with their 10 Hz series (for plots)."""

    def to_json(self) -> dict[str, Any]:
        spec = {key: getattr(self.spec, key) for key in self.spec.__dataclass_fields__}
        workload = self.workload
        reference = self.runs[0]
        return {
            "row": spec,
            "budget_w": reference.budget_w,
            "provisioned_w": reference.provisioned_w,
            "workload": {
                "trace": workload.base.name,
                "peak_rps_per_server": workload.peak_rps_per_server,
                "duration_s": workload.duration_s,
                "start_day": workload.start_day,
                "start_s": workload.start_s,
                "seed": workload.seed,
            },
            "targets": {"high_p50_e2e_pct": HIGH_P50_TARGET_PCT, "low_p50_e2e_pct": LOW_P50_TARGET_PCT},
            "rows": [row.to_json() for row in self.rows],
            "notes": list(reference.notes),
        }


def check_controllers(spec: RowSpec, workload: RowWorkload, controllers: Sequence[str]) -> None:
    """Parse each controller and bind it to the row here, so a bad clock or threshold (or a budget below
    the row's idle power) is one ConfigError before any worker starts."""
    for text in controllers:
        simulator = RowSimulator(spec, workload, parse_controller(text))
        simulator.controller.bind(simulator.row_info())


_SHARED_PROGRESS: Any = None
"""In pool workers: the shared array each run writes its progress (0..1) into."""


def _init_worker(shared: Any) -> None:
    global _SHARED_PROGRESS
    _SHARED_PROGRESS = shared


def _simulate(spec: RowSpec, workload: RowWorkload, controller: str, slot: int) -> RowRun:
    def report(share: float) -> None:
        if _SHARED_PROGRESS is not None:
            _SHARED_PROGRESS[slot] = share

    return RowSimulator(spec, workload, parse_controller(controller)).run(report)


def simulate_all(
    spec: RowSpec,
    workload: RowWorkload,
    controllers: Sequence[str],
    *,
    workers: int = 2,
    show_progress: bool | None = None,
    description: str = "simulating the row",
) -> list[RowRun]:
    """Each controller's run, in order; on ``workers`` processes when there is more than one run, with one
    progress bar following all of them (each run reports its share of the simulated time)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    units = 1000
    with ProgressBar(units * len(controllers), description, show_progress) as bar:
        if workers == 1 or len(controllers) == 1:
            runs = []
            for index, text in enumerate(controllers):
                done = bar.completed

                def report(share: float, floor: int = done) -> None:
                    bar.advance(max(floor + int(share * units) - bar.completed, 0))

                runs.append(RowSimulator(spec, workload, parse_controller(text)).run(report))
                bar.advance(units * (index + 1) - bar.completed)
            return runs
        shared = multiprocessing.Array("d", len(controllers), lock=False)
        with ProcessPoolExecutor(
            min(workers, len(controllers)), initializer=_init_worker, initargs=(shared,)
        ) as pool:
            futures: list[Future[RowRun]] = [
                pool.submit(_simulate, spec, workload, text, slot) for slot, text in enumerate(controllers)
            ]
            pending: set[Future[RowRun]] = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                shares = [1.0 if f.done() else float(shared[i]) for i, f in enumerate(futures)]
                bar.advance(max(int(sum(shares) * units) - bar.completed, 0))
            return [future.result() for future in futures]


def run_experiment(
    spec: RowSpec,
    workload: RowWorkload,
    controllers: Sequence[str],
    *,
    workers: int = 2,
    show_progress: bool | None = None,
) -> Experiment:
    """Run ``none`` once and each controller on the same row and requests; impacts against ``none``.

    ``none`` among ``controllers`` is not run twice: the reference row stands for it.
    """
    names = [text for text in dict.fromkeys(controllers) if text.strip() != REFERENCE]
    check_controllers(spec, workload, [REFERENCE, *names])
    runs = simulate_all(
        spec,
        workload,
        [REFERENCE, *names],
        workers=workers,
        show_progress=show_progress,
        description=f"{len(names) + 1} runs of {spec.servers} servers",
    )
    measures = [
        RunMeasures.of(run, text, workload.duration_s)
        for run, text in zip(runs, [REFERENCE, *names], strict=True)
    ]
    reference = measures[0]
    return Experiment(
        spec=spec,
        workload=workload,
        rows=tuple(ImpactRow.of(m, reference) for m in measures),
        runs=tuple(runs),
    )
