"""LLM request traces: the Azure 2023 reader, Poisson resampling, the embedded synthetic workloads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.traces.llm import (
    LlmRequests,
    load_requests,
    percentile_table,
    poisson,
    read_llm_requests,
    synthetic,
)
from strato.traces.llm.token_sizes import CODE_OUTPUT_PERCENTILES, CODE_PROMPT_PERCENTILES


def needs(name: str) -> Path:
    path = shared_data() / "azure-llm-2023" / name
    if not path.exists():
        pytest.skip(f"real trace {path} is absent (the data folder: strato data list)")
    return path


@pytest.mark.shared_data
def test_real_code_trace_matches_the_papers_medians() -> None:
    requests = read_llm_requests(needs("AzureLLMInferenceTrace_code.csv"))
    assert len(requests) == 8819
    assert requests.arrival_s[0] == 0.0 and 3400 < requests.duration_s < 3500
    assert 1400 < np.median(requests.prompt_tokens) < 1600  # paper: ~1500
    assert np.median(requests.output_tokens) == 13  # paper: 13


@pytest.mark.shared_data
def test_embedded_tables_are_the_real_traces_percentiles() -> None:
    requests = read_llm_requests(needs("AzureLLMInferenceTrace_code.csv"))
    assert percentile_table(requests.prompt_tokens) == CODE_PROMPT_PERCENTILES
    assert percentile_table(requests.output_tokens) == CODE_OUTPUT_PERCENTILES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message", "row"),
    [
        ("when,a,b\n", "missing required column.s. TIMESTAMP, ContextTokens, GeneratedTokens", 1),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12,x\n", "'x' is not a number", 2),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,-4,3\n", ">= 1", 2),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,5,3\n2023-11-16 18:17:04,5\n",
            "truncated row: 2 fields",
            3,
        ),
        ("arrival_timestamp,prompt_size,token_size\n0.5,12,3\n0.7,2.5,3\n", "'2.5' is not a whole number", 3),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests", None),
    ],
)
def test_malformed_traces_name_the_row(tmp_path: Path, text: str, message: str, row: int | None) -> None:
    with pytest.raises(TraceFormatError, match=message) as error:
        read_llm_requests(write(tmp_path, text))
    assert error.value.row == row


def test_unreadable_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,3\n")
    with pytest.raises(TraceFormatError, match="TIMESTAMP"):
        read_llm_requests(path)


def test_reader_sorts_and_shifts_times(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:05.5000000,10,2\n2023-11-16 18:17:03.5000000,20,4\n",
    )
    requests = read_llm_requests(path)
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
    assert load_requests("synthetic", rate_rps=10, duration_s=20).name.startswith("synthetic-code")
    assert load_requests("synthetic:kind=conv", rate_rps=10, duration_s=20).name.startswith("synthetic-conv")
    monkeypatch.setenv("STRATO_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match=r"AzureLLMInferenceTrace_code\.csv is missing; set STRATO_DATA"):
        load_requests("azure-llm-2023:code")
    (tmp_path / "azure-llm-2023").mkdir()
    write(
        tmp_path / "azure-llm-2023",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.5,10,2\n2023-11-16 18:17:09.5,20,4\n",
    ).rename(tmp_path / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv")
    assert len(load_requests("azure-llm-2023:code")) == 2
    assert len(load_requests("azure-llm-2023:code", duration_s=5)) == 1
    assert len(load_requests("azure-llm-2023:code", rate_rps=2, duration_s=50, seed=1)) > 50
    assert len(load_requests(str(tmp_path / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv"))) == 2
    for spec, message in (
        ("no-such-trace", "no such file or directory, and not a data set; accepted: synthetic"),
        ("azure-llm-2023", "needs a member: azure-llm-2023:code, azure-llm-2023:conv"),
        ("azure-llm-2023:chat", "has no member 'chat'"),
        ("azure-vm-2017:periodic", "azure-vm-2017 holds VM CPU usage, not LLM requests"),
        ("synthetic:kind=chat", "code or conv"),
        ("synthetic:colour=red", r"unknown key 'colour' \(known keys: kind\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_requests(spec)
    with pytest.raises(ConfigError, match="rate must be positive"):
        load_requests("synthetic:kind=conv", rate_rps=0)


def test_reads_the_public_simulator_layout(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv.gz"
    body = "request_id,arrival_timestamp,prompt_size,token_size\n1,2.5,100,7\n0,0.5,30,2\n"
    path.write_bytes(gzip.compress(body.encode()))
    requests = read_llm_requests(path)
    assert requests.name == "trace"
    assert requests.arrival_s.tolist() == [0.5, 2.5] and requests.prompt_tokens.tolist() == [30, 100]


def test_requests_validate_their_arrays() -> None:
    with pytest.raises(ConfigError, match="sorted"):
        LlmRequests("x", np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(ConfigError, match="at least one"):
        LlmRequests("x", np.array([0.0]), np.array([0]), np.array([1]))
