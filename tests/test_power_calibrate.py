"""strato.power.calibrate: the catalog against the Splitwise profile, the trace-calibrated model's held-out
accuracy, the engine replay, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.power import catalog
from strato.power.calibrate import (
    load_trace_run,
    profile_phase_power,
    replay_trace,
    trace_accuracy,
    trace_power_model,
    trace_runs,
)
from strato.power.model import DECODE, IDLE, PREFILL

PROFILE = shared_data() / "splitwise-profiles" / "perf_model.csv"
TRACES = shared_data() / "llm-gpu-power" / "plots" / "parameter-scale-input-test"
needs_profile = pytest.mark.skipif(not PROFILE.is_file(), reason=f"needs the Splitwise profile at {PROFILE}")
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"needs the llm-gpu-power traces at {TRACES}")


@pytest.fixture(scope="module")
def runs() -> dict[str, object]:
    return {run.name: run for run in trace_runs(TRACES)}


@needs_profile
@pytest.mark.parametrize("model", ["llama2-70b", "bloom-176b"])
def test_catalog_constants_are_the_profile_recomputed(model: str) -> None:
    fit = profile_phase_power(model, PROFILE)
    tokens, prefill = catalog._PREFILL_FRACTIONS[model]
    batches, decode = catalog._DECODE_FRACTIONS[model]
    assert fit.prefill_tokens == tokens
    assert fit.decode_batch == batches
    np.testing.assert_allclose(fit.prefill_fraction, prefill, atol=0.002)
    np.testing.assert_allclose(fit.decode_fraction, decode, atol=0.002)
    assert all(b >= a for a, b in zip(fit.prefill_fraction, fit.prefill_fraction[1:], strict=False))


@needs_profile
def test_profile_without_the_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="TP3"):
        profile_phase_power("llama2-70b", PROFILE, tensor_parallel=3)


def test_malformed_nvidia_smi_names_file_row_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "nvidia-smi.csv"
    bad.write_text(
        "timestamp, index, power.draw [W]\n"
        "2024/04/05 06:17:19.635, 0, 58.67 W\n"
        "2024/04/05 06:17:19.735, 0, lots W\n"
    )
    with pytest.raises(TraceFormatError) as caught:
        load_trace_run(bad, tmp_path / "table.csv")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}, row 3, column power.draw [W]: ")
    assert caught.value.row == 3


@needs_traces
def test_trace_model_levels_come_from_the_run(runs: dict[str, object]) -> None:
    run = runs["llama2-70b"]
    model = trace_power_model(run)  # type: ignore[arg-type]
    assert 50 < model.phases.idle_w < 60
    assert model.server.gpus == 4
    power = model.gpu_power_w(
        np.array([IDLE, PREFILL, PREFILL, DECODE]),
        np.array([0.0, 32 * 9, 32 * 2134, 32]),
        np.full(4, 1410.0),
    )
    # The first group (9 tokens) and the last (2134) as measured: ~86 W and ~158 W per GPU.
    assert power[0] == pytest.approx(model.phases.idle_w)
    assert 80 < power[1] < 92 and 150 < power[2] < 165
    assert power[3] == pytest.approx(power[1])
    with pytest.raises(ConfigError, match="fewer than 2"):
        trace_power_model(run, exclude_groups=[g.group for g in run.groups][1:])  # type: ignore[attr-defined]


@needs_traces
def test_held_out_input_sizes_within_ten_percent_except_at_the_knee(runs: dict[str, object]) -> None:
    for name, run in runs.items():
        accuracy = trace_accuracy(run)  # type: ignore[arg-type]
        # Fitted on every group, each phase (warm-up left out) is within 10 % of its energy-counter mean.
        assert accuracy.fitted_max_phase_error < 0.10, name
        outside = [g for g in accuracy.groups if abs(g.error) > 0.10]
        # Only the groups where the level jumps to the power limit (between 128 and 1024 input tokens,
        # a doubling apart) are not predicted from their neighbours.
        assert len(outside) <= 2, (name, outside)
        assert all(100 <= g.input_tokens <= 600 for g in outside), (name, outside)
    assert trace_accuracy(runs["mixtral-8x7b"]).max_error < 0.10  # type: ignore[arg-type]


@needs_traces
def test_replay_sets_the_engine_beside_the_trace(runs: dict[str, object]) -> None:
    run = runs["llama2-70b"]
    replay = replay_trace(run)  # type: ignore[arg-type]
    assert replay.requests == 32 * len(run.profile.phases)  # type: ignore[attr-defined]
    assert replay.trace_peak_to_mean == pytest.approx(run.profile.peak_to_mean)  # type: ignore[attr-defined]
    assert replay.perf.startswith("profile llama2-70b TP4")
    # The engine serves each batch faster than the traced pipeline did, so it idles between arrivals.
    assert replay.model_busy_share < 0.6 < replay.trace_busy_share
    assert 1.0 < replay.model_peak_to_mean < replay.trace_peak_to_mean
    with pytest.raises(ConfigError, match="no model for trace"):
        replay_trace(runs["falcon-40b"])  # type: ignore[arg-type]
