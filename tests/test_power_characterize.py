"""strato.power.characterize: the characterisation on the model, the traces and the paper's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_helpers import shared_data
from strato.errors import ConfigError
from strato.power.characterize import Characterization, characterize

TRACES = shared_data() / "llm-gpu-power"
PAPER = (Path(__file__).resolve().parents[1] / "docs" / "power-paper-notes.md").read_text()


@pytest.fixture(scope="module")
def result() -> Characterization:
    if not TRACES.is_dir():
        pytest.skip(f"needs the llm-gpu-power traces at {TRACES}")
    return characterize(row_duration_s=1200, row_start_s=14 * 3600, traces_root=shared_data(), replay=False)


def test_row_at_the_peak_is_near_polca(result: Characterization) -> None:
    row = result.row
    assert row is not None and row.servers == 40
    assert 65 < row.peak_pct < 95
    # 2 s means smooth the iteration-level swings, so their rise is the smaller.
    assert 0 < row.rise_40s_telemetry_w < row.rise_40s_w
    assert row.skipped_s == pytest.approx(600)


def test_model_effects(result: Characterization) -> None:
    prompt = [p.peak_server_w for p in result.prompt_peaks]
    batch = [p.peak_server_w for p in result.batch_peaks]
    output = [p.peak_server_w for p in result.output_peaks]
    assert prompt == sorted(prompt) and prompt[-1] > 1.2 * prompt[0]
    assert batch == sorted(batch) and batch[-1] > batch[0]
    assert max(output) == pytest.approx(min(output))
    # The GPUs' own 10 Hz peak: TDP for a power-bound prefill; the model's level for a 1024-token one, whose
    # iteration (~150 ms) fills a whole bin.
    gpu = {p.prompt_tokens: p.peak_gpu_w for p in result.prompt_peaks}
    assert gpu[8192] == pytest.approx(400.0, rel=1e-3)
    assert gpu[1024] == pytest.approx(0.754 * 400.0, rel=0.01)
    assert result.prefill_demand_w > 400 >= result.prefill_w > result.decode_w


def test_frequency_table(result: Characterization) -> None:
    by_clock = {f.mhz: f for f in result.frequency}
    assert by_clock[1410].prefill_bound_cut == pytest.approx(0) and by_clock[1410].decode_slowdown == 1
    lowest = by_clock[1110]
    assert 0.15 < lowest.prefill_bound_cut < 0.30
    assert lowest.conv_e2e_slowdown < lowest.code_e2e_slowdown
    cuts = [by_clock[m].decode_cut for m in (1410, 1305, 1275, 1200, 1110)]
    assert cuts == sorted(cuts)


def test_traces_and_paper_columns(result: Characterization) -> None:
    assert {r.name for r in result.runs} == {"falcon-40b", "llama2-13b", "llama2-70b", "mixtral-8x7b"}
    assert result.input_effect is not None and result.input_effect.ratio > 1.5
    assert result.output_effect is not None and result.output_effect.ratio > 1.3
    rows = result.rows()
    assert all(len(r) == 4 and all(isinstance(c, str) and c for c in r) for r in rows)
    figures = [r[0] for r in rows]
    for wanted in ("inference peak", "largest rise", "prompt vs decode", "prompt length", "batch size",
                   "output length", "lock 1110 MHz"):  # fmt: skip
        assert any(wanted in f for f in figures), wanted
    for _, _, _, paper in rows:
        # Every paper figure quotes the notes, or says it is not there.
        numbers = [w.strip("(),~<=") for w in paper.split() if any(ch.isdigit() for ch in w)]
        for number in numbers:
            assert number.rstrip("%") in PAPER or "not" in paper, (paper, number)
    data = json.loads(json.dumps(result.to_json()))
    assert data["row"]["peak_pct"] == pytest.approx(result.row.peak_pct)  # type: ignore[union-attr]
    assert len(data["rows"]) == len(rows)


def test_without_traces_the_column_says_why(tmp_path: Path) -> None:
    result = characterize(simulate=False, traces_root=tmp_path)
    assert result.row is None and not result.runs
    assert result.traces_missing is not None and "llm-gpu-power" in result.traces_missing
    peak = result.rows()[0]
    assert peak[1] == "row not simulated" and "no traces" in peak[2]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="duration"):
        characterize(row_duration_s=0, simulate=False)
    with pytest.raises(ConfigError, match="skip"):
        characterize(row_duration_s=300, row_skip_s=-1, simulate=False)
    # A short window without a row is fine: the warm-up skip only concerns a simulated row.
    assert characterize(row_duration_s=300, simulate=False, replay=False).row is None
