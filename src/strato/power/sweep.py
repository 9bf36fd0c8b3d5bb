"""``strato power sweep``: the same budget, more and more servers under it, each controller's impact.

For each number of servers added to the row the budget was provisioned for, the ``none`` reference runs
once and every controller runs on the same requests (the workload scales with the row: the peak rate is per
server); each (point, controller) is one independent run, so the sweep goes on a process pool, or on a
Dask cluster as ``strato llm plan`` does. A controller's limit is the largest number of added servers up to
which every point meets POLCA's targets (:attr:`~strato.power.experiment.ImpactRow.meets_targets`): the
point where it stops meeting them is the next one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from strato.core.dask import dask_map
from strato.core.progress import progress
from strato.errors import ConfigError
from strato.power.controllers import parse_controller
from strato.power.experiment import (
    HIGH_P50_TARGET_PCT,
    LOW_P50_TARGET_PCT,
    REFERENCE,
    ImpactRow,
    RunMeasures,
    check_controllers,
)
from strato.power.row import RowSimulator, RowSpec, RowWorkload

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?::\s*(-?\d+)\s*:\s*(-?\d+)\s*)?$")


def parse_added(text: str) -> tuple[int, ...]:
    """``START:STOP:STEP`` servers added (STOP included when it lands on a step), or one number."""
    match = _RANGE.match(text)
    if match is None:
        raise ConfigError(f"--added must be START:STOP:STEP in whole servers, e.g. 0:50:5 (got {text!r})")
    start = int(match.group(1))
    if match.group(2) is None:
        stop, step = start, 1
    else:
        stop, step = int(match.group(2)), int(match.group(3))
    if start < 0 or stop < 0:
        raise ConfigError(f"--added counts servers added to the row, so it cannot be negative (got {text!r})")
    if step <= 0:
        raise ConfigError(f"--added step must be a positive number of servers (got {text!r})")
    if stop < start:
        raise ConfigError(f"--added must not stop before it starts (got {text!r})")
    return tuple(range(start, stop + 1, step))


@dataclass(frozen=True)
class Sweep:
    """Every controller's :class:`ImpactRow` at every point; the references too when ``none`` was asked."""

    budget_servers: int
    budget_kw: float
    added: tuple[int, ...]
    controllers: tuple[str, ...]
    rows: tuple[ImpactRow, ...]

    def of(self, controller: str) -> list[ImpactRow]:
        return sorted((row for row in self.rows if row.controller == controller), key=lambda row: row.added)

    def limit(self, controller: str) -> int | None:
        """The largest ``added`` up to which every point meets the targets (None: not even the first)."""
        best = None
        for row in self.of(controller):
            if not row.meets_targets:
                break
            best = row.added
        return best

    def stops_at(self, controller: str) -> int | None:
        """The first point that misses the targets (None: it meets them all the way)."""
        return next((row.added for row in self.of(controller) if not row.meets_targets), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "budget_servers": self.budget_servers,
            "budget_kw": self.budget_kw,
            "added": list(self.added),
            "targets": {"high_p50_e2e_pct": HIGH_P50_TARGET_PCT, "low_p50_e2e_pct": LOW_P50_TARGET_PCT},
            "limits": {
                name: {"meets_targets_up_to": self.limit(name), "stops_at": self.stops_at(name)}
                for name in self.controllers
            },
            "rows": [row.to_json() for row in self.rows],
        }


@dataclass(frozen=True)
class _Task:
    spec: RowSpec
    controller: str


def _measure(task: _Task, workload: RowWorkload) -> RunMeasures:
    run = RowSimulator(task.spec, workload, parse_controller(task.controller)).run()
    return RunMeasures.of(run, task.controller, workload.duration_s)


def sweep(
    spec: RowSpec,
    workload: RowWorkload,
    controllers: Sequence[str],
    added: Sequence[int],
    *,
    workers: int | None = None,
    dask_address: str | None = None,
    show_progress: bool | None = None,
) -> Sweep:
    """Rows of ``spec.budget_servers + a`` servers for each ``a`` in ``added``, under ``spec``'s budget."""
    if not added:
        raise ConfigError("--added gives no point to simulate")
    workers = os.cpu_count() or 1 if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    names = tuple(dict.fromkeys(text.strip() for text in controllers))
    if not names:
        raise ConfigError("give at least one --controller")
    others = [name for name in names if name != REFERENCE]
    specs = [replace(spec, servers=spec.budget_servers + count) for count in added]
    # The largest row has the highest idle power: if the budget holds it, it holds every point.
    check_controllers(specs[-1], workload, [REFERENCE, *others])
    check_controllers(specs[0], workload, others)
    tasks = [_Task(point, name) for point in specs for name in (REFERENCE, *others)]
    measured = list(
        progress(
            _map(tasks, workload, workers, dask_address),
            total=len(tasks),
            description=f"{len(tasks)} row runs ({len(specs)} sizes)",
            enabled=show_progress,
        )
    )
    rows: list[ImpactRow] = []
    per_point = 1 + len(others)
    for index in range(len(specs)):
        group = measured[index * per_point : (index + 1) * per_point]
        reference = group[0]
        for item in group:
            if item is reference and REFERENCE not in names:
                continue
            rows.append(ImpactRow.of(item, reference))
    budget_w = measured[0].budget_w
    return Sweep(
        budget_servers=spec.budget_servers,
        budget_kw=budget_w / 1e3,
        added=tuple(added),
        controllers=names,
        rows=tuple(rows),
    )


def _map(
    tasks: list[_Task], workload: RowWorkload, workers: int, dask_address: str | None
) -> Iterator[RunMeasures]:
    """Results in the tasks' order, as they come, so a progress bar can follow."""
    if dask_address is not None:
        yield from dask_map(dask_address, _measure, tasks, shared={"workload": workload})
    elif workers == 1 or len(tasks) == 1:
        yield from (_measure(task, workload) for task in tasks)
    else:
        with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
            yield from pool.map(_measure, tasks, [workload] * len(tasks))
