"""LLM request traces: the Azure 2023 reader, Poisson resampling, the embedded synthetic workloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strato.errors import ConfigError, TraceFormatError
from strato.traces.llm import (
    LlmRequests,
    load_requests,
    percentile_table,
    poisson,
    read_azure_llm2023,
    synthetic,
)
from strato.traces.llm_profiles import CODE_OUTPUT_PERCENTILES, CODE_PROMPT_PERCENTILES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "azure-llm-2023"


def needs(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real trace {path} is absent (it lives in ../shared/data beside the checkout)")
    return path


@pytest.mark.shared_data
def test_real_code_trace_matches_the_papers_medians() -> None:
    requests = read_azure_llm2023(needs("AzureLLMInferenceTrace_code.csv"))
    assert len(requests) == 8819
    assert requests.arrival_s[0] == 0.0 and 3400 < requests.duration_s < 3500
    assert 1400 < np.median(requests.prompt_tokens) < 1600  # paper: ~1500
    assert np.median(requests.output_tokens) == 13  # paper: 13


@pytest.mark.shared_data
def test_embedded_tables_are_the_real_traces_percentiles() -> None:
    requests = read_azure_llm2023(needs("AzureLLMInferenceTrace_code.csv"))
    assert percentile_table(requests.prompt_tokens) == CODE_PROMPT_PERCENTILES
    assert percentile_table(requests.output_tokens) == CODE_OUTPUT_PERCENTILES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message", "row"),
    [
        ("when,a,b\n", "expected the header", 1),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12,x\n", "not a whole number", 2),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,-4,3\n", "at least one", 2),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,5,3\n2023-11-16 18:17:04,5\n",
            "expected 3 columns",
            3,
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests", None),
    ],
)
def test_malformed_traces_name_the_row(tmp_path: Path, text: str, message: str, row: int | None) -> None:
    with pytest.raises(TraceFormatError, match=message) as error:
        read_azure_llm2023(write(tmp_path, text))
    assert error.value.row == row


def test_unreadable_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,3\n")
    with pytest.raises(TraceFormatError, match="TIMESTAMP"):
        read_azure_llm2023(path)


def test_reader_sorts_and_shifts_times(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:05.5000000,10,2\n2023-11-16 18:17:03.5000000,20,4\n",
    )
    requests = read_azure_llm2023(path)
    assert requests.arrival_s.tolist() == [0.0, 2.0]
    assert requests.prompt_tokens.tolist() == [20, 10]


def test_poisson_has_the_rate_and_is_reproducible() -> None:
    base = synthetic("conv", 5.0, 100.0, seed=1)
    first = poisson(base, 50.0, 200.0, seed=7)
    again = poisson(base, 50.0, 200.0, seed=7)
    assert np.array_equal(first.arrival_s, again.arrival_s)
    assert abs(len(first) - 10_000) < 400  # 4 standard deviations
    gaps = np.diff(first.arrival_s)
    assert 0.9 < np.std(gaps) / np.mean(gaps) < 1.1  # exponential gaps have CV 1
    assert set(first.prompt_tokens.tolist()) <= set(base.prompt_tokens.tolist())


def test_synthetic_follows_the_embedded_distributions() -> None:
    code = synthetic("code", 100.0, 300.0, seed=3)
    assert 1300 < np.median(code.prompt_tokens) < 1650
    assert 11 <= np.median(code.output_tokens) <= 15
    conv = synthetic("conv", 100.0, 300.0, seed=3)
    assert 900 < np.median(conv.prompt_tokens) < 1150
    assert 110 < np.median(conv.output_tokens) < 150


def test_load_requests_resolves_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_requests("synthetic-code", rate_rps=10, duration_s=20).name.startswith("synthetic-code")
    monkeypatch.setenv("STRATO_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match="synthetic-code"):
        load_requests("azure-code")
    (tmp_path / "azure-llm-2023").mkdir()
    write(
        tmp_path / "azure-llm-2023",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.5,10,2\n2023-11-16 18:17:09.5,20,4\n",
    ).rename(tmp_path / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv")
    assert len(load_requests("azure-code")) == 2
    assert len(load_requests("azure-code", duration_s=5)) == 1
    assert len(load_requests("azure-code", rate_rps=2, duration_s=50, seed=1)) > 50
    with pytest.raises(ConfigError, match="neither a file"):
        load_requests("no-such-trace")
    with pytest.raises(ConfigError, match="rate must be positive"):
        load_requests("synthetic-conv", rate_rps=0)


def test_requests_validate_their_arrays() -> None:
    with pytest.raises(ConfigError, match="sorted"):
        LlmRequests("x", np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ConfigError, match="at least one"):
        LlmRequests("x", np.array([0.0]), np.array([0]), np.array([1]))
