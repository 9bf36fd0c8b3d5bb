"""The GPU/server power model: phase levels, clock scaling, power limits, and the engine's slowdown hook."""

from __future__ import annotations

import numpy as np
import pytest

from strato.errors import ConfigError
from strato.llm.catalog import get_machine, get_model
from strato.llm.designs import make_design
from strato.llm.engine import PHASE_DECODE, PHASE_IDLE, PHASE_PREFILL, ClusterSimulator
from strato.llm.perf import load_perf_model
from strato.power import model as pm
from strato.power.catalog import power_model
from strato.traces.llm import LlmRequests

A100 = power_model("a100-80gb", "llama2-70b")


def test_phase_numbers_match_the_engine_log() -> None:
    assert (pm.IDLE, pm.PREFILL, pm.DECODE) == (PHASE_IDLE, PHASE_PREFILL, PHASE_DECODE)


def test_prefill_draws_more_than_decode_and_longer_prompts_more() -> None:
    phases = np.array([pm.IDLE, pm.DECODE, pm.PREFILL, pm.PREFILL])
    load = np.array([0.0, 16.0, 256.0, 4096.0])
    watts = A100.gpu_power_w(phases, load, np.full(4, 1410.0))
    idle, decode, short, long = watts
    assert idle < decode < short < long <= A100.clocks.tdp_w


def test_locking_the_clock_cuts_power_and_slows_prefill_more_than_decode() -> None:
    phases = np.array([pm.PREFILL, pm.DECODE])
    load = np.array([2048.0, 16.0])
    free = A100.gpu_power_w(phases, load, np.full(2, 1410.0))
    locked = A100.gpu_power_w(phases, load, np.full(2, 1110.0))
    assert (locked < free).all()
    prefill_cut = 1 - locked[0] / free[0]
    # POLCA: locking inference to ~1.1 GHz takes up to about 20 % off the peak (docs/power.md).
    assert 0.15 < prefill_cut < 0.25
    slow = A100.slowdown(phases, load, np.full(2, 1110.0))
    assert slow[0] > slow[1] > 1.0
    # Decode reads HBM, whose bandwidth ignores the SM clock: under 3 % slower at 1110 MHz.
    assert slow[1] == pytest.approx(1.027, abs=0.002)
    assert (A100.slowdown(phases, load, np.full(2, 1410.0)) == 1.0).all()


def test_a_power_cap_lowers_the_clock_only_for_phases_that_pass_it() -> None:
    phases = np.array([pm.PREFILL, pm.DECODE])
    load = np.array([4096.0, 16.0])
    cap = np.full(2, 300.0)
    watts = A100.gpu_power_w(phases, load, np.full(2, 1410.0), cap)
    assert watts[0] == pytest.approx(300.0)
    assert watts[1] == pytest.approx(A100.gpu_power_w(phases, load, np.full(2, 1410.0))[1])
    slow = A100.slowdown(phases, load, np.full(2, 1410.0), cap)
    assert slow[0] > 1.0 and slow[1] == pytest.approx(1.0)


def test_server_power_adds_the_rest_of_the_machine() -> None:
    server = A100.server
    assert A100.idle_server_w == pytest.approx(server.gpus * A100.phases.idle_w + server.rest_idle_w)
    busy = A100.server_power_w(np.array([server.gpus * 300.0]), np.array([1.0]))
    assert busy[0] == pytest.approx(server.gpus * 300.0 + server.rest_busy_w)


def test_unknown_machine_or_model_and_bad_clocks_are_errors() -> None:
    with pytest.raises(ConfigError, match="no power model for machine"):
        power_model("tpu-v5", "llama2-70b")
    with pytest.raises(ConfigError, match="no power model for LLM"):
        power_model("a100-80gb", "gpt-9")
    with pytest.raises(ConfigError, match="outside the a100-80gb's SM clock range"):
        A100.clocks.check_clock(2000.0)
    with pytest.raises(ConfigError, match="clock range"):
        pm.GpuClocks("x", 1500.0, 1000.0, 400.0)


def test_h100_power_is_flagged_as_assumed() -> None:
    h100 = power_model("h100-80gb", "llama2-70b")
    assert h100.notes and "assumed" in h100.notes[0]
    assert h100.clocks.tdp_w == 700.0


def _one_request(output: int) -> tuple[ClusterSimulator, LlmRequests]:
    model, machine = get_model("llama2-70b"), get_machine("a100-80gb")
    perf = load_perf_model(None, model, machine, 8)
    sim = ClusterSimulator(make_design("baseline-a100", machines=1), model, {machine.name: perf})
    requests = LlmRequests("one", np.array([0.0]), np.array([512]), np.array([output]))
    return sim, requests


def test_a_slowdown_set_mid_decode_reprices_the_rest_of_the_stretch() -> None:
    sim, requests = _one_request(200)
    sim.start(requests)
    free = sim.run(requests).completion_s[0]
    sim, requests = _one_request(200)
    sim.start(requests)
    sim.record_phases()
    sim.advance(free / 2)
    sim.set_slowdown(0, prompt=1.0, token=1.5)
    sim.advance(float("inf"))
    slowed = sim.result().completion_s[0]
    # Half the decode at full speed, the other half 1.5x slower (to within one iteration).
    assert slowed == pytest.approx(free + 0.5 * (free / 2), rel=0.03)
    log = sim.phase_log
    assert log is not None
    kinds = [entry[2] for entry in log]
    assert (
        kinds[0] == PHASE_IDLE
        and PHASE_PREFILL in kinds
        and PHASE_DECODE in kinds
        and kinds[-1] == PHASE_IDLE
    )
    with pytest.raises(ConfigError, match=">= 1"):
        sim.set_slowdown(0, prompt=0.5, token=1.0)
