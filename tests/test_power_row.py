"""The row simulator: exact power bins from the engine's phase log, delayed actuation, priority classes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from strato.errors import ConfigError
from strato.power.catalog import power_model
from strato.power.controllers import parse_controller
from strato.power.model import DECODE, IDLE, PREFILL
from strato.power.row import RowMeter, RowSimulator, RowSpec, RowWorkload, largest_rise
from strato.traces.llm import synthetic

A100 = power_model("a100-80gb", "llama2-70b")
INSTANT = replace(A100, server=replace(A100.server, rest_lag_s=0.0))
BASE = synthetic("code", 5.0, 600.0, seed=1)


def _brute_force(entries: np.ndarray, t1: float, nodes: int, sample_s: float) -> np.ndarray:
    """Row power per bin by summing each node's piecewise-constant power over fine time steps."""
    fine = 1e-3
    grid = np.arange(0.0, t1, fine) + fine / 2
    total = np.zeros_like(grid)
    for node in range(nodes):
        mine = entries[entries[:, 1] == node]
        starts = np.concatenate([[0.0], mine[:, 0]])
        kinds = np.concatenate([[IDLE], mine[:, 2]]).astype(np.int64)
        loads = np.concatenate([[0.0], np.where(mine[:, 2] == PREFILL, mine[:, 3], mine[:, 4])])
        which = np.searchsorted(starts, grid, side="right") - 1
        gpu = INSTANT.gpu_power_w(kinds[which], loads[which], np.full(grid.size, 1410.0))
        total += INSTANT.server_power_w(INSTANT.server.gpus * gpu, (kinds[which] != IDLE).astype(float))
    return total.reshape(-1, round(sample_s / fine)).mean(axis=1)


def test_meter_bins_are_the_exact_integral_of_piecewise_power() -> None:
    rng = np.random.default_rng(4)
    nodes, t1, sample_s = 3, 2.0, 0.1
    times = np.sort(rng.uniform(0, t1, 40).round(3))
    columns = [times, rng.integers(0, nodes, 40), rng.choice([IDLE, PREFILL, DECODE], 40)]
    entries = np.column_stack([*columns, rng.integers(1, 4096, 40), rng.integers(1, 64, 40)]).astype(
        np.float64
    )
    meter = RowMeter(INSTANT, nodes, sample_s)
    # Two chunks with a boundary that is not a bin edge: the state carries over.
    split = 1.234
    lock, cap = np.full(nodes, 1410.0), np.full(nodes, 400.0)
    meter.add(0.0, split, entries[entries[:, 0] < split], lock, cap)
    meter.add(split, t1, entries[entries[:, 0] >= split], lock, cap)
    expected = _brute_force(entries, t1, nodes, sample_s)
    np.testing.assert_allclose(meter.series(t1), expected, rtol=2e-3)


def test_the_rest_of_the_server_follows_the_gpus_with_its_lag() -> None:
    meter = RowMeter(A100, 1, 0.1)
    lock, cap = np.full(1, 1410.0), np.full(1, 400.0)
    start = np.array([[0.0, 0, DECODE, 0, 16]])
    meter.add(0.0, 300.0, start, lock, cap)
    power = meter.series(300.0)
    gpus = A100.server.gpus * A100.gpu_power_w(np.array([DECODE]), np.array([16.0]), lock)[0]
    idle_rest, busy_rest = A100.server.rest_idle_w, A100.server.rest_busy_w
    lag = A100.server.rest_lag_s
    # One time constant in, the rest of the server has moved 1 - 1/e of the way; after ten, all of it.
    at_lag = power[round(lag / 0.1)] - gpus - idle_rest
    assert at_lag == pytest.approx((busy_rest - idle_rest) * (1 - np.exp(-1)), rel=0.02)
    assert power[-1] == pytest.approx(gpus + busy_rest, rel=1e-3)
    assert meter.mean_w(290.0, 300.0) == pytest.approx(gpus + busy_rest, rel=1e-3)


def test_largest_rise_is_peak_minus_the_earlier_minimum_in_the_window() -> None:
    power = np.array([5.0, 1.0, 3.0, 9.0, 2.0, 4.0])
    assert largest_rise(power, 1.0, 2.0) == 8.0  # 9 - 1 within two steps
    assert largest_rise(power, 1.0, 1.0) == 6.0  # 9 - 3


def _run(controller: str, servers: int = 6, budget: int = 4, minutes: float = 8.0) -> RowSimulator:
    spec = RowSpec(servers=servers, budget_servers=budget, telemetry_s=2.0, actuation_delay_s=10.0)
    workload = RowWorkload(BASE, 0.9, minutes * 60, start_s=14 * 3600, seed=2)
    return RowSimulator(spec, workload, parse_controller(controller))


def test_polca_holds_an_oversubscribed_row_that_none_lets_through() -> None:
    free = _run("none", servers=5).run()
    held = _run("polca", servers=5).run()
    budget = free.budget_w
    assert free.servers == 5 and budget == 4 * A100.server.rated_w
    assert free.actions == () and free.brake_events == 0
    assert free.telemetry_w.max() > 0.89 * budget  # the uncontrolled row passes POLCA's second threshold
    applied = [a.action for a in held.actions]
    assert "low: lock 1275 MHz" in applied or "low: lock 1110 MHz" in applied
    assert all(a.time_s - a.decided_s == pytest.approx(10.0) for a in held.actions if "brake" not in a.action)
    # Same requests either way; the low class pays the locks, the high class far less.
    for name in ("high", "low"):
        np.testing.assert_array_equal(free.times[name].arrival_s, held.times[name].arrival_s)
    # Means: a few hundred requests per class make the median too coarse for a 1-2 % effect.
    impact = {
        name: np.nanmean(held.times[name].e2e_s) / np.nanmean(free.times[name].e2e_s) - 1
        for name in ("high", "low")
    }
    assert impact["low"] > impact["high"]
    assert held.time_above(1.0) < free.time_above(1.0)


def test_the_row_drains_back_towards_idle_power() -> None:
    run = _run("none", servers=2, budget=2, minutes=2).run()
    # Once the last request is out the GPUs idle at once; the rest of the servers still cools down.
    extra = A100.server.rest_busy_w - A100.server.rest_idle_w
    assert 2 * A100.idle_server_w < run.power_w[-1] < 2 * (A100.idle_server_w + extra)
    assert run.power_w.max() <= 2 * A100.server.rated_w


def test_budgets_below_idle_power_and_bad_rows_are_errors() -> None:
    with pytest.raises(ConfigError, match="not above the row's idle power"):
        RowSimulator(
            RowSpec(servers=52, budget_w=10_000.0), RowWorkload(BASE, 0.9, 60.0), parse_controller("none")
        )
    with pytest.raises(ConfigError, match="low-priority share"):
        RowSpec(low_priority_share=1.5)
    with pytest.raises(ConfigError, match=r"whole number of 0\.1 s power samples"):
        RowSpec(telemetry_s=0.25)
    assert RowSpec(servers=1).class_sizes == {"high": 0, "low": 1}  # halves round up
    assert RowSpec(servers=5).class_sizes == {"high": 2, "low": 3}
    with pytest.raises(ConfigError, match="brake"):
        RowSimulator(RowSpec(brake_mhz=100.0), RowWorkload(BASE, 0.9, 60.0), parse_controller("none"))
    with pytest.raises(ConfigError, match="unknown design"):
        RowSimulator(RowSpec(design="tpu-pod"), RowWorkload(BASE, 0.9, 60.0), parse_controller("none"))
