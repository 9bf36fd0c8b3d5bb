"""The provisioning planner: shapes within a budget, sustainable-rate search, ranking, bad budgets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from strato.errors import ConfigError, UnavailableError
from strato.llm.plan import PlanOptions, parse_budget, plan, rank, shapes
from strato.traces.llm import synthetic

pytestmark = pytest.mark.slow


def test_shapes_fill_the_budget() -> None:
    options = PlanOptions("cost", 400.0, designs=("baseline-h100", "splitwise-ha"), max_splits=50)
    found = shapes(options)
    baseline = [spec for spec in found if spec.design == "baseline-h100"]
    assert [spec.machines for spec in baseline] == [10]  # 10 x $38 <= 400 < 11 x $38
    split = [spec for spec in found if spec.design == "splitwise-ha"]
    assert all(38.0 * spec.prompt + 17.6 * spec.token <= 400.0 for spec in split)  # type: ignore[operator]
    assert all(38.0 * spec.prompt + 17.6 * (spec.token + 1) > 400.0 for spec in split)  # type: ignore[operator]
    assert len(split) == 10  # 1..10 H100 prompt machines, each with the A100s the rest affords


def test_plan_finds_sustainable_rates_and_ranks_them() -> None:
    base = synthetic("code", 20.0, 200.0, seed=0)
    options = PlanOptions(
        "power",
        110.0,
        designs=("baseline-h100", "splitwise-hh"),
        duration_s=40,
        max_splits=3,
        steps=4,
        workers=1,
    )
    rows = plan(base, options)
    assert rows[0].rate_rps > 1.0
    assert [row.rate_rps for row in rows] == sorted((row.rate_rps for row in rows), reverse=True)
    assert all(row.power_kw <= 110.0 for row in rows)
    cheapest = rank(rows, "cost", target_rps=1.0)
    assert [row.cost_per_hour for row in cheapest] == sorted(row.cost_per_hour for row in cheapest)
    assert all(row.rate_rps >= 1.0 for row in cheapest)
    least_power = rank(rows, "power", target_rps=1.0)
    assert [row.power_kw for row in least_power] == sorted(row.power_kw for row in least_power)


def test_bad_budgets_and_objectives() -> None:
    assert parse_budget("cost=1520") == ("cost", 1520.0)
    for text in ("cost", "money=3", "power=-1", "cost=abc"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(text)
    with pytest.raises(ConfigError, match="no design fits"):
        shapes(PlanOptions("cost", 10.0, designs=("baseline-h100",)))
    with pytest.raises(ConfigError, match="needs --rate"):
        rank([], "cost", None)
    with pytest.raises(ConfigError, match="objective"):
        rank([], "speed", None)


def test_plan_on_a_real_dask_local_cluster_matches_the_local_pool() -> None:
    distributed = pytest.importorskip("distributed")
    base = synthetic("code", 20.0, 200.0, seed=0)
    options = PlanOptions(
        "cost",
        160.0,
        designs=("baseline-h100", "splitwise-hh"),
        duration_s=30,
        max_splits=2,
        steps=3,
        workers=1,
    )
    local = plan(base, options)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = plan(base, PlanOptions(**{**options.__dict__, "dask_address": cluster.scheduler_address}))
    assert remote == local


def test_an_unreachable_dask_scheduler_is_a_clear_error() -> None:
    pytest.importorskip("distributed")
    options = PlanOptions(
        "cost", 160.0, designs=("baseline-h100",), duration_s=10, steps=1, dask_address="tcp://127.0.0.1:9"
    )
    with pytest.raises(UnavailableError, match="cannot reach the Dask scheduler"):
        plan(synthetic("code", 5.0, 60.0, seed=0), options)


def test_cli_plan_and_simulate_write_plots(tmp_path: Path) -> None:
    import subprocess
    import sys

    def strato(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "strato", "llm", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    plan_png = str(tmp_path / "plan.png")
    planned = strato(
        "plan",
        "--budget",
        "cost=200",
        "--design",
        "baseline-h100",
        "--design",
        "splitwise-hh",
        "--splits",
        "2",
        "--duration",
        "20",
        "--workers",
        "1",
        "--plot",
        plan_png,
    )
    assert planned.returncode == 0, planned.stderr
    assert "sustained req/s" in planned.stdout
    cdf_png = str(tmp_path / "cdf.png")
    simulated = strato(
        "simulate",
        "--design",
        "baseline-a100",
        "--machines",
        "3",
        "--rate",
        "4",
        "--duration",
        "30",
        "--plot",
        cdf_png,
    )
    assert simulated.returncode == 0, simulated.stderr
    for name in ("plan.png", "cdf.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = strato("plan", "--budget", "watts=3")
    assert refused.returncode == 2 and "--budget" in refused.stderr


def test_fixed_shapes_are_evaluated_as_given() -> None:
    from strato.llm.plan import parse_shape

    options = PlanOptions(
        "cost",
        math.inf,
        fixed_shapes=("baseline-h100:3", "splitwise-aa:2+1"),
        duration_s=20,
        steps=2,
        workers=1,
    )
    specs = shapes(options)
    assert [(s.design, s.machines, s.prompt, s.token) for s in specs] == [
        ("baseline-h100", 3, None, None),
        ("splitwise-aa", None, 2, 1),
    ]
    rows = plan(synthetic("conv", 5.0, 60.0, seed=0), options)
    assert len(rows) == 2
    for bad in ("baseline-h100", "splitwise-aa:2+x", "splitwise-aa:0+3", "nope:3"):
        with pytest.raises(ConfigError):
            parse_shape(bad, options)
