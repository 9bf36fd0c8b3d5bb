"""Experiments and sweeps of a power-oversubscribed row: impacts against ``none`` on the same requests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from strato.errors import ConfigError
from strato.power.experiment import Experiment, run_experiment
from strato.power.plots import binned, power_figure, sweep_figure
from strato.power.row import RowSpec, RowWorkload
from strato.power.sweep import Sweep, parse_added, sweep
from strato.traces.llm import synthetic

pytestmark = pytest.mark.slow

# 9 servers under the rated power of 6, ten minutes at the day's peak: over budget without control.
SPEC = RowSpec(servers=9, budget_servers=6)


@pytest.fixture(scope="module")
def workload() -> RowWorkload:
    return RowWorkload(synthetic("code", 5.0, 3600.0, seed=3), 0.9, 600.0, start_s=14 * 3600.0, seed=1)


@pytest.fixture(scope="module")
def experiment(workload: RowWorkload) -> Experiment:
    return run_experiment(SPEC, workload, ["polca", "none"], workers=2)


def test_none_is_the_reference_with_zero_impact_and_breaks_the_budget(experiment: Experiment) -> None:
    assert [row.controller for row in experiment.rows] == ["none", "polca"]  # none run once, first
    reference = experiment.rows[0]
    assert reference.reference and reference.added == 3
    for impact in reference.classes:
        assert (impact.e2e_p50_pct, impact.e2e_p99_pct, impact.ttft_p50_pct, impact.ttft_p99_pct) == (
            0.0,
            0.0,
            0.0,
            0.0,
        )
    assert reference.peak_telemetry_share > 1.0 and reference.above_100_s > 0
    assert reference.brake_events == 0  # none never brakes, it just goes over
    assert not reference.meets_targets


def test_polca_locks_clocks_and_draws_less_on_the_same_requests(experiment: Experiment) -> None:
    none_run, polca_run = experiment.runs
    none, polca = experiment.rows
    for name in ("high", "low"):
        assert none_run.latency[name].requests == polca_run.latency[name].requests > 1000
    locks = [a.action for a in polca_run.actions if "lock" in a.action]
    assert any(text.startswith("low: lock 1") for text in locks)
    assert polca.above_89_s < none.above_89_s and polca.above_100_s < none.above_100_s
    assert polca.energy_kwh < none.energy_kwh
    low = polca.impact("low")
    high = polca.impact("high")
    assert low is not None and high is not None and low.e2e_p50_pct is not None
    # POLCA slows low priority first: its low class pays more than its high class.
    assert high.e2e_p50_pct is not None and low.e2e_p50_pct > high.e2e_p50_pct
    json = experiment.to_json()
    assert json["rows"][1]["classes"]["low"]["e2e_p50_pct"] == low.e2e_p50_pct


def test_meets_targets_is_polcas_bar(experiment: Experiment) -> None:
    polca = experiment.rows[1]
    high, low = polca.impact("high"), polca.impact("low")
    assert high is not None and low is not None
    quiet = replace(polca, brake_events=0, peak_telemetry_share=0.99, above_100_s=0.3)
    ok = replace(quiet, classes=(replace(high, e2e_p50_pct=0.9), replace(low, e2e_p50_pct=1.9)))
    assert ok.meets_targets
    assert not replace(ok, classes=(replace(high, e2e_p50_pct=1.0), ok.classes[1])).meets_targets
    assert not replace(ok, classes=(ok.classes[0], replace(low, e2e_p50_pct=2.0))).meets_targets
    assert not replace(ok, brake_events=1).meets_targets
    assert not replace(ok, peak_telemetry_share=1.01).meets_targets


def test_sweep_rows_per_controller_and_limits(workload: RowWorkload) -> None:
    short = replace(workload, duration_s=300.0)
    result = sweep(replace(SPEC, servers=6), short, ["polca", "none"], (0, 3), workers=2)
    assert [row.added for row in result.of("polca")] == [0, 3]
    assert [row.servers for row in result.of("none")] == [6, 9]
    assert all(row.reference for row in result.of("none"))
    # At +0 the row fits its own budget: every controller meets the targets there; none breaks it at +3.
    assert all(row.meets_targets for row in result.rows if row.added == 0)
    assert result.limit("none") == 0 and result.stops_at("none") == 3
    assert result.to_json()["limits"]["none"] == {"meets_targets_up_to": 0, "stops_at": 3}


def test_parse_added() -> None:
    assert parse_added("0:50:5") == tuple(range(0, 51, 5))
    assert parse_added("0:12:5") == (0, 5, 10)
    assert parse_added("12") == (12,)
    for bad, message in (
        ("0-50", "START:STOP:STEP"),
        ("0:50", "START:STOP:STEP"),
        ("-5:10:5", "negative"),
        ("0:10:0", "step"),
        ("10:0:5", "stop before"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_added(bad)


@pytest.mark.parametrize(
    ("spec", "controller", "message"),
    [
        (SPEC, "polca:low1=2000", "outside the a100-80gb's SM clock range"),
        (SPEC, "polca:t1=0.9,t2=0.8", "thresholds must rise"),
        (replace(SPEC, budget_w=10e3), "polca", "not above the row's idle power"),
    ],
)
def test_bad_controllers_fail_before_any_run(
    workload: RowWorkload, spec: RowSpec, controller: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_experiment(spec, workload, [controller])


def test_figures(experiment: Experiment, workload: RowWorkload, tmp_path: Path) -> None:
    run = experiment.runs[0]
    starts, mean, peak = binned(run.power_w, run.sample_s, 60.0)
    assert starts[1] == 60.0 and (peak >= mean - 1e-9).all()
    assert peak.max() == run.power_w.max()
    power_figure(experiment).savefig(tmp_path / "power.png")
    result = sweep(replace(SPEC, servers=6), replace(workload, duration_s=120.0), ["none"], (0, 1), workers=1)
    sweep_figure(result).savefig(tmp_path / "sweep.png")
    assert (tmp_path / "power.png").stat().st_size > 10_000 and (
        tmp_path / "sweep.png"
    ).stat().st_size > 10_000


def test_a_sweep_on_a_real_dask_local_cluster_matches_the_local_pool(workload: RowWorkload) -> None:
    distributed = pytest.importorskip("distributed")
    short = replace(workload, duration_s=120.0)
    spec = replace(SPEC, servers=4, budget_servers=4)
    local = sweep(spec, short, ["polca"], (0, 1), workers=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = sweep(spec, short, ["polca"], (0, 1), dask_address=cluster.scheduler_address)

    def comparable(result: Sweep) -> list[dict[str, object]]:
        return [{k: v for k, v in row.to_json().items() if k != "simulation_s"} for row in result.rows]

    assert comparable(remote) == comparable(local)
