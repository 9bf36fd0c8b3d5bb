"""A live replay of a real trace agrees with the simulator's prediction for the same invocations."""

from __future__ import annotations

import pytest

from data_helpers import shared_data
from strato.errors import ConfigError
from strato.faas.live.replay import ReplayOptions, replay, select
from strato.traces.azure2019 import read_azure2019
from strato.traces.synth import SynthConfig, generate

TRACE = shared_data() / "azure-functions-2019" / "raw-format-100-8h"


@pytest.mark.shared_data
@pytest.mark.parametrize("policy", ["fixed:10m", "hybrid"])
def test_live_replay_matches_the_simulator(policy: str) -> None:
    if not TRACE.exists():
        pytest.skip(f"real trace {TRACE} is absent (the data folder: strato data list)")
    workload = read_azure2019(TRACE)
    report = replay(workload, ReplayOptions(trace=str(TRACE), policy=policy, speedup=120, hours=1.0))
    sim, live = report.simulated, report.live
    assert report.live_errors == {}
    assert live.invocations == pytest.approx(sim.invocations, rel=0.005)
    assert sim.cold_starts > 50
    assert live.cold_starts == pytest.approx(sim.cold_starts, rel=0.05)
    assert live.wasted_memory_gb_s == pytest.approx(sim.wasted_memory_gb_s, rel=0.10)


def test_select_cuts_apps_and_hours() -> None:
    workload = generate(SynthConfig(n_apps=20, minutes=120, seed=1))
    invocations = workload.expand(seed=0)
    part = select(invocations, hours=0.5, apps=5)
    assert part.n_apps == 5
    assert part.horizon_us == 1_800_000_000
    assert (part.app < 5).all() and (part.arrival_us < part.horizon_us).all()
    assert len(part) == int(((invocations.app < 5) & (invocations.arrival_us < 1_800_000_000)).sum())


def test_bad_replay_options_are_refused() -> None:
    with pytest.raises(ConfigError):
        ReplayOptions(trace="x", speedup=0)
    with pytest.raises(ConfigError):
        ReplayOptions(trace="x", hours=-1)
    workload = generate(SynthConfig(n_apps=5, minutes=10, seed=1))
    with pytest.raises(ConfigError, match="unknown policy"):
        replay(workload, ReplayOptions(trace="synthetic", policy="nonsense"))
