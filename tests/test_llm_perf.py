"""Tests for the iteration-time models: the profile table, the analytic roofline, and their agreement.

Real-data tests read the public Splitwise profile from the data folder (``strato data list``) and skip when
it is absent; interpolation arithmetic and every error path are checked on small files written into
``tmp_path``, so they run everywhere.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.llm.catalog import get_machine, model_names
from strato.llm.perf import (
    DEFAULT_EFFICIENCY,
    GENERIC_EFFICIENCY,
    MIXED_BATCH_SLOWDOWN,
    PROFILE_COLUMNS,
    REFERENCE_CONTEXT_PER_REQUEST,
    AnalyticModel,
    Efficiency,
    PerfModel,
    ProfileTable,
    fit_default_efficiencies,
    fit_efficiency,
    load_perf_model,
    model_error,
    read_profile_rows,
)

DATA = shared_data()
PROFILE = DATA / "splitwise-profiles" / "perf_model.csv"

# The worst per-table MAPE (percent) the fitted analytic model reaches on the public profile, rounded up;
# tightening the model should lower these, never the other way round.
PROMPT_MAPE_BOUND = 21.0
TOKEN_MAPE_BOUND = 7.5
# The same averaged over the tables of each GPU.
PROMPT_MAPE_MEAN_BOUND = 15.0
TOKEN_MAPE_MEAN_BOUND = 5.0


def needs_profile() -> Path:
    if not PROFILE.exists():
        pytest.skip(f"real profile {PROFILE} not present (the data folder: strato data list)")
    return PROFILE


@pytest.fixture(scope="module")
def tables() -> dict[tuple[str, str, int], ProfileTable]:
    path = needs_profile()
    return {(t.model.name, t.machine.name, t.tensor_parallel): t for t in ProfileTable.all_from_csv(path)}


def csv_runs(model: str, hardware: str, tp: int) -> dict[tuple[int, int, int], list[dict[str, float]]]:
    """The profile's rows of one configuration, read independently of the module under test."""
    runs: dict[tuple[int, int, int], list[dict[str, float]]] = defaultdict(list)
    with needs_profile().open(newline="") as handle:
        for row in csv.DictReader(handle):
            if (row["model"], row["hardware"], int(row["tensor_parallel"])) == (model, hardware, tp):
                key = (int(row["prompt_size"]), int(row["batch_size"]), int(row["token_size"]))
                runs[key].append({name: float(row[name]) for name in ("prompt_time", "token_time")})
    return runs


def write_profile(path: Path, rows: list[str], header: str = ",".join(PROFILE_COLUMNS)) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def row(
    prompt: int,
    batch: int,
    tokens: int,
    prompt_ms: float,
    token_ms: float,
    *,
    model: str = "llama2-70b",
    hardware: str = "a100-80gb",
    tp: int = 4,
) -> str:
    e2e = prompt_ms + (tokens - 1) * token_ms
    return f"{model},{hardware},{prompt},{batch},{tokens},0.0,0.0,{prompt_ms},{token_ms},{e2e},{tp}"


# ---------------------------------------------------------------------------- profile table, real data


@pytest.mark.shared_data
def test_reference_examples_reproduce(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    a100, h100 = tables[("bloom-176b", "a100-80gb", 8)], tables[("bloom-176b", "h100-80gb", 8)]
    # REFERENCE.md section 4: batch 1, TP8, 2048-token prompt 540 / 253 ms; decode 48.8 / 36.1 ms per token.
    assert a100.prompt_time_s(2048) == pytest.approx(0.540, abs=0.0005)
    assert h100.prompt_time_s(2048) == pytest.approx(0.253, abs=0.0005)
    assert a100.token_time_s(1) == pytest.approx(0.0488, abs=0.00005)
    assert h100.token_time_s(1) == pytest.approx(0.0361, abs=0.00005)


@pytest.mark.shared_data
@pytest.mark.parametrize("aggregate", ["median", "mean"])
def test_profiled_points_reproduce_the_csv(aggregate: str) -> None:
    path = needs_profile()
    combine = statistics.median if aggregate == "median" else statistics.fmean
    # Two tables whose sweeps already rise everywhere, so the monotone fit leaves every point as measured.
    for model, hardware, tp in [("bloom-176b", "a100-80gb", 8), ("llama2-70b", "a100-80gb", 2)]:
        table = ProfileTable.from_csv(path, model, hardware, tp, aggregate=aggregate)  # type: ignore[arg-type]
        runs = csv_runs(model, hardware, tp)
        failed = {(p.prompt_size, p.batch_size) for p, _ in table.dropped}
        # Prompt sweep (batch 1, 128 output tokens); 512 is left out, being pooled over the output sweep.
        for prompt in (128, 256, 1024, 2048, 4096, 8192):
            expected = combine(r["prompt_time"] for r in runs[(prompt, 1, 128)]) / 1e3
            assert table.prompt_time_s(prompt) == pytest.approx(expected, rel=1e-12)
        # Batch sweep (512-token prompts, 128 output tokens) feeds the token curve, and the prompt curve
        # above the batch-1 sweep.
        batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if (512, b) not in failed]
        assert len(batches) >= 6
        for batch in batches:
            expected = combine(r["token_time"] for r in runs[(512, batch, 128)]) / 1e3
            assert table.token_time_s(batch) == pytest.approx(expected, rel=1e-12)
        expected = combine(r["prompt_time"] for r in runs[(512, batches[-1], 128)]) / 1e3
        assert table.prompt_time_s(512 * batches[-1], batches[-1]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.shared_data
def test_mean_aggregate_averages_repeated_rows() -> None:
    table = ProfileTable.from_csv(needs_profile(), "bloom", "h100", 8, aggregate="mean")
    runs = [r["prompt_time"] for r in csv_runs("bloom-176b", "h100-80gb", 8)[(2048, 1, 128)]]
    assert len(runs) == 5
    assert table.prompt_time_s(2048) == pytest.approx(sum(runs) / 5 / 1e3)
    # One straggler run (272 ms) puts the mean 5 ms above the median REFERENCE quotes.
    assert table.prompt_time_s(2048) == pytest.approx(0.2583, abs=0.0001)


@pytest.mark.shared_data
def test_curves_are_monotone(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    tokens = np.unique(np.geomspace(1, 65536, 200).astype(int))
    batches = np.arange(1, 257)
    for table in tables.values():
        prompts = [table.prompt_time_s(int(t)) for t in tokens]
        assert np.all(np.diff(prompts) >= 0), table.describe()
        decodes = [table.token_time_s(int(b)) for b in batches]
        assert np.all(np.diff(decodes) >= 0), table.describe()
        long_contexts = [table.token_time_s(int(b), int(b) * 4096) for b in batches]
        assert np.all(np.diff(long_contexts) >= 0), table.describe()
        by_context = [table.token_time_s(8, c) for c in range(8, 8 * 8192, 997)]
        assert np.all(np.diff(by_context) >= 0), table.describe()
        same_context = [table.token_time_s(int(b), 256 * 100) for b in batches]
        assert np.all(np.diff(same_context) >= 0), table.describe()
        short_contexts = [table.token_time_s(int(b), int(b) * 16) for b in batches]
        assert np.all(np.diff(short_contexts) >= 0), table.describe()
        assert all(t > 0 for t in prompts + decodes)


@pytest.mark.shared_data
def test_linear_extrapolation_beyond_the_profile(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    table = tables[("bloom-176b", "a100-80gb", 8)]
    x, y = table.prompt_curve()
    slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    assert x[-1] == 32768
    assert table.prompt_time_s(65536) == pytest.approx(y[-1] + slope * 32768)
    bx, by = table.token_curve()
    assert bx[-1] == 64
    assert table.token_time_s(128) == pytest.approx(by[-1] + (by[-1] - by[-2]) / (bx[-1] - bx[-2]) * 64)
    # Below the profile a prefill never beats a batch-1 decode.
    assert table.prompt_time_s(1) >= table.token_time_s(1)


@pytest.mark.shared_data
def test_failed_run_is_dropped(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    table = tables[("llama2-70b", "a100-80gb", 2)]
    assert [(p.prompt_size, p.batch_size) for p, _ in table.dropped] == [(512, 64)]
    assert "794 ms" in table.dropped[0][1]
    assert all(not t.dropped for key, t in tables.items() if key[2] != 2)


@pytest.mark.shared_data
def test_context_slope_and_reference_context(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    table = tables[("bloom-176b", "a100-80gb", 8)]
    assert table.reference_context == pytest.approx(576)
    # BLOOM reads 4 MB of KV cache per token over 8 GPUs: 0.25 us at 2039 GB/s; the fit finds 0.32 us.
    assert table.context_slope_bounds()[0] == pytest.approx(4_014_080 / 8 / 2039e9)
    assert table.context_slope_bounds()[0] < table.context_slope_s < table.context_slope_bounds()[1]
    # Llama2-70B's batch-1 decode noise would read as a slope 9x its KV cost; the clamp holds it.
    llama = tables[("llama2-70b", "a100-80gb", 4)]
    assert llama.context_slope_s == pytest.approx(llama.context_slope_bounds()[1])
    assert llama.context_slope_s == pytest.approx(327_680 / 4 / 2039e9 / 0.5)
    assert table.token_time_s(16, 16 * 4096) > table.token_time_s(16) > table.token_time_s(16, 16)
    # 64 requests of 100 tokens read 30,000 fewer tokens of KV cache than the sweep's 64 x 576: ~10 ms.
    saved = table.token_time_s(64) - table.token_time_s(64, 6400)
    assert saved == pytest.approx(table.context_slope_s * 64 * 476)
    assert 0.005 < saved < 0.02


@pytest.mark.shared_data
def test_power_figures(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    power = tables[("bloom-176b", "a100-80gb", 8)].power_at(2048)
    assert power is not None
    assert power.peak == pytest.approx(1.021359375) and power.average == pytest.approx(0.61398125)
    assert tables[("bloom-176b", "h100-80gb", 8)].power_at(2048) is None


@pytest.mark.shared_data
def test_no_rows_for_the_asked_configuration_lists_what_the_file_has() -> None:
    with pytest.raises(ConfigError) as raised:
        ProfileTable.from_csv(needs_profile(), "llama3-8b", "a100", 1)
    assert "llama3-8b on a100-80gb at TP1" in str(raised.value)
    assert "bloom-176b on h100-80gb TP8" in str(raised.value)
    with pytest.raises(ConfigError, match="bloom-176b on a100-80gb at TP4"):
        ProfileTable.from_csv(needs_profile(), "bloom", "a100", 4)


# ------------------------------------------------------------------------------ profile table, small files


def test_interpolation_on_a_small_file(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path / "p.csv",
        [
            row(100, 1, 10, 10.0, 5.0),
            row(100, 1, 10, 12.0, 5.0),
            row(100, 1, 10, 14.0, 5.0),
            row(200, 1, 10, 30.0, 5.006),
            row(100, 2, 10, 24.0, 6.0),
            row(100, 4, 10, 50.0, 7.0),
        ],
    )
    table = ProfileTable.from_csv(path, "llama2-70b", "a100", 4)
    assert table.prompt_time_s(100) == pytest.approx(0.012)  # median of 10, 12, 14
    assert table.prompt_time_s(150) == pytest.approx(0.021)  # halfway between 12 and 30 ms
    # 200 tokens is covered by a batch-1 run, so the 2 x 100 run does not feed the prompt curve there.
    assert table.prompt_time_s(200, 2) == pytest.approx(0.030)
    assert table.prompt_time_s(400, 4) == pytest.approx(0.050)
    assert table.prompt_time_s(600, 6) == pytest.approx(0.070)  # last segment extended
    # At the batch sweep's own context (100 + 10/2 tokens per request) the measured times come back.
    assert table.reference_context == pytest.approx(105)
    assert table.token_time_s(1, 105) == pytest.approx(0.005)
    assert table.token_time_s(3, 315) == pytest.approx(0.0065)
    assert table.token_time_s(8, 840) == pytest.approx(0.009)
    # The batch-1 runs give 6 us per 100 tokens of context (within the 0.04-0.08 us per token that
    # reading Llama2-70B's KV cache costs at TP4); no context given means 576 tokens per request.
    assert table.context_slope_s == pytest.approx(6e-8)
    assert table.token_time_s(1) == pytest.approx(0.005 + 6e-8 * (576 - 105))
    assert table.token_time_s(4, 4) == pytest.approx(0.007 - 6e-8 * (420 - 4))
    mean = ProfileTable.from_csv(path, "llama2-70b", "a100", 4, aggregate="mean")
    assert mean.prompt_time_s(100) == pytest.approx(0.012)


def test_a_dip_is_smoothed_to_keep_the_curve_monotone(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path / "p.csv",
        [
            row(100, 1, 10, 20.0, 5.0),
            row(200, 1, 10, 16.0, 5.0),
            row(400, 1, 10, 40.0, 5.0),
            row(100, 2, 10, 30.0, 5.0),
        ],
    )
    table = ProfileTable.from_csv(path, "llama2-70b", "a100", 4)
    assert table.prompt_time_s(100) == table.prompt_time_s(200) == pytest.approx(0.018)
    assert table.prompt_time_s(400) == pytest.approx(0.040)


def test_names_in_the_file_are_matched_through_the_catalog(tmp_path: Path) -> None:
    path = write_profile(
        tmp_path / "p.csv", [row(100, 1, 10, 10.0, 5.0, model="Llama-2-70B", hardware="A100")]
    )
    assert ProfileTable.from_csv(path, "llama2-70b", "a100-80gb", 4).prompt_time_s(100) == pytest.approx(0.01)


def test_columns_may_be_reordered_and_extra(tmp_path: Path) -> None:
    columns = ["note", *reversed(PROFILE_COLUMNS)]
    values = row(100, 1, 10, 10.0, 5.0).split(",")
    line = ",".join(["x", *reversed(values)])
    path = write_profile(tmp_path / "p.csv", [line], header=",".join(columns))
    table = ProfileTable.from_csv(path, "llama2-70b", "a100", 4)
    assert table.prompt_time_s(100) == pytest.approx(0.010)
    assert table.token_time_s(1, 105) == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("lines", "row_number", "column", "words"),
    [
        ([row(100, 1, 10, 10.0, 5.0).replace(",10.0,", ",fast,")], 2, "prompt_time", "not a number"),
        ([row(100, 1, 10, 10.0, 5.0), row(100, 1, 10, 10.0, -5.0)], 3, "token_time", "must be positive"),
        ([row(100, 1, 10, 0.0, 5.0)], 2, "prompt_time", "must be positive"),
        ([row(100, 1, 10, 10.0, 5.0).replace(",100,", ",100.5,")], 2, "prompt_size", "whole number"),
        ([row(100, 1, 10, 10.0, 5.0).replace(",10.0,", ",nan,")], 2, "prompt_time", "finite"),
        ([row(100, 1, 10, 10.0, 5.0).replace("0.0,0.0", "-1,0.0")], 2, "peak_power", "negative"),
        ([row(100, 1, 10, 10.0, 5.0), "llama2-70b,a100-80gb,100"], 3, "batch_size", "truncated row"),
        ([row(100, 1, 10, 10.0, 5.0, tp=0)], 2, "tensor_parallel", "whole number"),
    ],
)
def test_malformed_rows_name_row_and_column(
    tmp_path: Path, lines: list[str], row_number: int, column: str | None, words: str
) -> None:
    path = write_profile(tmp_path / "bad.csv", lines)
    with pytest.raises(TraceFormatError) as raised:
        ProfileTable.from_csv(path, "llama2-70b", "a100", 4)
    assert raised.value.row == row_number
    assert raised.value.column == column
    assert words in str(raised.value)
    assert str(path) in str(raised.value)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = ",".join(c for c in PROFILE_COLUMNS if c not in ("token_time", "e2e_time"))
    path = write_profile(tmp_path / "bad.csv", ["x"], header=header)
    with pytest.raises(TraceFormatError) as raised:
        read_profile_rows(path)
    assert raised.value.row == 1
    assert "token_time, e2e_time" in str(raised.value)


def test_empty_missing_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TraceFormatError, match="empty file"):
        read_profile_rows(empty)
    with pytest.raises(TraceFormatError, match="missing file"):
        read_profile_rows(tmp_path / "absent.csv")
    with pytest.raises(TraceFormatError, match="no data rows"):
        read_profile_rows(write_profile(tmp_path / "header.csv", []))


def test_aggregate_must_be_known(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.csv", [row(100, 1, 10, 10.0, 5.0)])
    with pytest.raises(ConfigError, match="median"):
        ProfileTable.from_csv(path, "llama2-70b", "a100", 4, aggregate="max")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- analytic


@pytest.mark.shared_data
def test_analytic_model_error_against_the_profile(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    by_gpu: dict[str, list[dict[str, float]]] = defaultdict(list)
    print("\nanalytic model vs profile (MAPE %, worst point %)")
    for (model, hardware, tp), table in sorted(tables.items()):
        error = model_error(AnalyticModel(model, hardware, tp), table)
        by_gpu[hardware].append(error)
        print(
            f"  {model:11s} {hardware:15s} TP{tp}  prompt {error['prompt_mape']:5.1f} "
            f"(max {error['prompt_max']:5.1f})  token {error['token_mape']:5.1f} "
            f"(max {error['token_max']:5.1f})"
        )
        assert error["prompt_mape"] < PROMPT_MAPE_BOUND
        assert error["token_mape"] < TOKEN_MAPE_BOUND
    for hardware, errors in sorted(by_gpu.items()):
        prompt = float(np.mean([e["prompt_mape"] for e in errors]))
        token = float(np.mean([e["token_mape"] for e in errors]))
        print(f"  {hardware:15s} mean over {len(errors)} tables: prompt {prompt:5.1f}  token {token:5.1f}")
        assert prompt < PROMPT_MAPE_MEAN_BOUND
        assert token < TOKEN_MAPE_MEAN_BOUND


@pytest.mark.shared_data
def test_embedded_defaults_are_the_fit() -> None:
    fitted, generic = fit_default_efficiencies(needs_profile())
    assert set(fitted) == set(DEFAULT_EFFICIENCY)
    for part, efficiency in fitted.items():
        np.testing.assert_allclose(
            DEFAULT_EFFICIENCY[part].as_array(), efficiency.as_array(), rtol=0.02, atol=1e-7
        )
    np.testing.assert_allclose(GENERIC_EFFICIENCY.as_array(), generic.as_array(), rtol=0.02, atol=1e-7)


@pytest.mark.shared_data
def test_fit_improves_on_a_poor_start(tables: dict[tuple[str, str, int], ProfileTable]) -> None:
    table = tables[("llama2-70b", "h100-80gb", 4)]
    poor = Efficiency(
        compute=0.1,
        memory=0.2,
        network=0.9,
        layer_overhead_s=1e-3,
        allreduce_latency_s=0,
        request_overhead_s=0,
    )
    fitted = fit_efficiency(table, start=poor)
    before = model_error(AnalyticModel("llama2-70b", "h100", 4, poor), table)
    after = model_error(AnalyticModel("llama2-70b", "h100", 4, fitted), table)
    assert after["prompt_mape"] + after["token_mape"] < before["prompt_mape"] + before["token_mape"]
    assert after["token_mape"] < 5


def test_analytic_model_works_without_the_profile_for_every_catalog_model() -> None:
    for name in model_names():
        for machine in ("a100", "h100", "h100cap"):
            tp = next(tp for tp in (1, 2, 4, 8) if _fits(name, machine, tp))
            model = AnalyticModel(name, machine, tp)
            prompt, token = model.prompt_time_s(2048), model.token_time_s(32, 32 * 1024)
            assert 0 < token < prompt < 10, model.describe()


def _fits(model: str, machine: str, tp: int) -> bool:
    try:
        AnalyticModel(model, machine, tp)
    except ConfigError:
        return False
    return True


def test_prefill_is_compute_bound_and_decode_memory_bound() -> None:
    model = AnalyticModel("llama2-70b", "a100", 8)
    # Doubling a long prompt doubles its time (and more, from attention); doubling a decode batch does not.
    assert model.prompt_time_s(8192) / model.prompt_time_s(4096) > 1.9
    assert model.token_time_s(16) / model.token_time_s(8) < 1.2


def test_analytic_rejects_a_model_that_does_not_fit() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        AnalyticModel("bloom-176b", "a100", 1)


@pytest.mark.parametrize(("model", "tp"), [("bloom-176b", 8), ("llama2-70b", 2), ("llama2-70b", 8)])
def test_h100_is_faster_than_a100_in_both_phases(model: str, tp: int) -> None:
    kinds: list[str | Path] = ["analytic"]
    if PROFILE.exists():
        kinds.append(PROFILE)
    for kind in kinds:
        a100, h100 = load_perf_model(kind, model, "a100", tp), load_perf_model(kind, model, "h100", tp)
        for tokens in (128, 512, 2048, 8192):
            assert h100.prompt_time_s(tokens) < a100.prompt_time_s(tokens), (kind, tokens)
        for batch in (1, 8, 64):
            assert h100.token_time_s(batch) < a100.token_time_s(batch), (kind, batch)


def test_power_cap_slows_prompts_only() -> None:
    kinds: list[str | Path] = ["analytic"]
    if PROFILE.exists():
        kinds.append(PROFILE)
    for kind in kinds:
        h100, cap = (
            load_perf_model(kind, "llama2-70b", "h100", 4),
            load_perf_model(kind, "llama2-70b", "h100cap", 4),
        )
        assert cap.prompt_time_s(2048) == pytest.approx(1.30 * h100.prompt_time_s(2048), rel=0.01)
        assert cap.token_time_s(16) == pytest.approx(h100.token_time_s(16), rel=0.01)


def test_longer_context_costs_more_to_decode() -> None:
    model = AnalyticModel("bloom-176b", "a100", 8)
    assert model.token_time_s(32, 32 * 4096) > model.token_time_s(32, 32 * 512)
    assert model.token_time_s(32) == model.token_time_s(32, 32 * REFERENCE_CONTEXT_PER_REQUEST)


# --------------------------------------------------------------------------------- shared interface


@pytest.mark.parametrize("kind", ["analytic", "profile"])
def test_mixed_iterations(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "profile":
        monkeypatch.setenv("STRATO_DATA", str(needs_profile().parents[1]))
    model: PerfModel = load_perf_model(kind, "llama2-70b", "a100", 4)
    assert model.iteration_time_s(1024, 0) == model.prompt_time_s(1024)
    assert model.iteration_time_s(0, 16, context_tokens=16 * 900) == model.token_time_s(16, 16 * 900)
    mixed = model.iteration_time_s(1024, 16)
    expected = MIXED_BATCH_SLOWDOWN * max(model.prompt_time_s(1040, 17), model.token_time_s(16))
    assert mixed == pytest.approx(expected)
    assert model.iteration_time_s(1024, 16, mixed_slowdown=1.0) < mixed
    with pytest.raises(ConfigError, match="at least one"):
        model.iteration_time_s(0, 0)
    with pytest.raises(ConfigError, match="mixed_slowdown"):
        model.iteration_time_s(10, 1, mixed_slowdown=0.5)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda m: m.prompt_time_s(0), "prompt_tokens"),
        (lambda m: m.prompt_time_s(4, 5), "cannot hold"),
        (lambda m: m.prompt_time_s(1.5), "whole number"),
        (lambda m: m.token_time_s(0), "batch_size"),
        (lambda m: m.token_time_s(4, 3), "context_tokens"),
    ],
)
def test_bad_questions_are_config_errors(call: object, words: str) -> None:
    model = AnalyticModel("llama2-70b", "h100", 4)
    with pytest.raises(ConfigError, match=words):
        call(model)  # type: ignore[operator]


def test_load_perf_model_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(load_perf_model(None, "llama2-70b", "a100", 4), AnalyticModel)
    assert isinstance(load_perf_model("analytic", "llama2-70b", "a100", 4), AnalyticModel)
    path = write_profile(tmp_path / "p.csv", [row(100, 1, 10, 10.0, 5.0)])
    table = load_perf_model(str(path), "llama2-70b", "a100", 4)
    assert isinstance(table, ProfileTable) and table.source == str(path)
    with pytest.raises(ConfigError, match="analytic, profile"):
        load_perf_model("roofline", "llama2-70b", "a100", 4)
    monkeypatch.setenv("STRATO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="STRATO_DATA"):
        load_perf_model("profile", "llama2-70b", "a100", 4)


def test_efficiency_is_validated() -> None:
    with pytest.raises(ConfigError, match="compute"):
        Efficiency(
            compute=1.5,
            memory=0.5,
            network=0.5,
            layer_overhead_s=0,
            allreduce_latency_s=0,
            request_overhead_s=0,
        )
    with pytest.raises(ConfigError, match="layer_overhead_s"):
        Efficiency(
            compute=0.5,
            memory=0.5,
            network=0.5,
            layer_overhead_s=-1,
            allreduce_latency_s=0,
            request_overhead_s=0,
        )
    assert get_machine("h100cap").gpu.part in DEFAULT_EFFICIENCY
    assert not math.isnan(GENERIC_EFFICIENCY.compute)
