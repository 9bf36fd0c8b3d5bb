"""LLM inference requests: the Azure 2023 traces, Poisson resampling and embedded synthetic workloads.

A request is (arrival time, prompt tokens, output tokens). Three sources, one type:

* ``read_azure_llm2023(path)``: a trace in the public format (``TIMESTAMP,ContextTokens,GeneratedTokens``),
  arrival times taken from the file and shifted to start at 0.
* ``poisson(requests, rate_rps, duration_s, seed)``: Poisson arrivals at a chosen rate, each request's token
  pair drawn (jointly, with replacement) from a base set, as the Splitwise paper's experiments do.
* ``synthetic(kind, rate_rps, duration_s, seed)``: Poisson arrivals with token counts drawn from the embedded
  percentile tables of the real traces (:mod:`strato.traces.llm_profiles`): offline, no files needed.

``load_requests(spec, ...)`` resolves what a ``--trace`` option names: ``azure-code``/``azure-conv`` (the
trace file under ``$STRATO_DATA``, else ``../shared/data``), ``synthetic-code``/``synthetic-conv``, or a
path; with ``rate_rps`` it resamples Poisson arrivals from that source.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, TraceFormatError
from strato.traces import llm_profiles

TraceKind = Literal["code", "conv"]
TRACE_FILES = {"code": "AzureLLMInferenceTrace_code.csv", "conv": "AzureLLMInferenceTrace_conv.csv"}
_PERCENTILES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "code": (
        llm_profiles.CODE_PROMPT_PERCENTILES,
        llm_profiles.CODE_OUTPUT_PERCENTILES,
        llm_profiles.CODE_MEAN_RATE_RPS,
    ),
    "conv": (
        llm_profiles.CONV_PROMPT_PERCENTILES,
        llm_profiles.CONV_OUTPUT_PERCENTILES,
        llm_profiles.CONV_MEAN_RATE_RPS,
    ),
}


@dataclass(frozen=True)
class LlmRequests:
    """Requests sorted by arrival; times in seconds from the first arrival window's start."""

    name: str
    arrival_s: NDArray[np.float64]
    prompt_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = self.arrival_s.size
        if self.prompt_tokens.size != n or self.output_tokens.size != n:
            raise ConfigError(f"{self.name}: arrival, prompt and output arrays differ in length")
        if n and (np.diff(self.arrival_s) < 0).any():
            raise ConfigError(f"{self.name}: arrivals must be sorted")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ConfigError(f"{self.name}: every request needs at least one prompt and one output token")

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def window(self, duration_s: float) -> LlmRequests:
        """The requests arriving in ``[0, duration_s)``."""
        keep = self.arrival_s < duration_s
        return LlmRequests(
            f"{self.name}[:{duration_s:g}s]",
            self.arrival_s[keep],
            self.prompt_tokens[keep],
            self.output_tokens[keep],
        )

    def describe(self) -> dict[str, Any]:
        def spread(values: NDArray[np.int64]) -> dict[str, float]:
            return {f"p{q}": float(np.percentile(values, q)) for q in (10, 50, 90, 99)} if values.size else {}

        return {
            "name": self.name,
            "requests": len(self),
            "duration_s": self.duration_s,
            "rate_rps": len(self) / self.duration_s if self.duration_s > 0 else None,
            "prompt_tokens": spread(self.prompt_tokens),
            "output_tokens": spread(self.output_tokens),
        }


def read_azure_llm2023(path: str | Path) -> LlmRequests:
    """Read a trace in the Azure LLM inference 2023 layout; bad rows raise with their line number."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise TraceFormatError(path, f"cannot open: {error.strerror or error}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        expected = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
        if header is None or [column.strip() for column in header[:3]] != expected:
            raise TraceFormatError(path, f"expected the header {','.join(expected)}, found {header!r}", row=1)
        stamps: list[str] = []
        prompts: list[int] = []
        outputs: list[int] = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise TraceFormatError(path, f"expected 3 columns, found {len(row)}", row=line)
            stamps.append(row[0].strip())
            columns = (("ContextTokens", row[1], prompts), ("GeneratedTokens", row[2], outputs))
            for column, text, out in columns:
                try:
                    value = int(text)
                except ValueError:
                    raise TraceFormatError(
                        path, f"{text!r} is not a whole number of tokens", row=line, column=column
                    ) from None
                if value < 1:
                    raise TraceFormatError(
                        path, f"{value} tokens: a request needs at least one", row=line, column=column
                    )
                out.append(value)
    if not stamps:
        raise TraceFormatError(path, "no requests")
    try:
        times = np.array(stamps, dtype="datetime64[ns]")
    except ValueError as error:
        raise TraceFormatError(path, f"unreadable TIMESTAMP ({error})", column="TIMESTAMP") from None
    seconds = (times - times.min()) / np.timedelta64(1, "s")
    order = np.argsort(seconds, kind="stable")
    return LlmRequests(
        path.stem,
        seconds[order].astype(np.float64),
        np.asarray(prompts, dtype=np.int64)[order],
        np.asarray(outputs, dtype=np.int64)[order],
    )


def read_splitwise_sim_trace(path: str | Path) -> LlmRequests:
    """A request trace in the public Splitwise simulator's layout (``request_id, request_type,
    application_id, arrival_timestamp, batch_size, prompt_size, token_size``; gzip allowed)."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise TraceFormatError(path, f"cannot read: {error.strerror or error}") from None
    if not rows:
        raise TraceFormatError(path, "empty file")
    header = [column.strip() for column in rows[0]]
    needed = ("arrival_timestamp", "prompt_size", "token_size")
    if not all(column in header for column in needed):
        raise TraceFormatError(path, f"expected columns {', '.join(needed)}, found {header}", row=1)
    columns = [header.index(column) for column in needed]
    values: list[tuple[float, int, int]] = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            arrival, prompt, output = (
                float(row[columns[0]]),
                int(float(row[columns[1]])),
                int(float(row[columns[2]])),
            )
        except (ValueError, IndexError):
            raise TraceFormatError(path, f"unreadable row {row!r}", row=line) from None
        if prompt < 1 or output < 1 or not arrival >= 0:
            raise TraceFormatError(path, "negative time or a request without tokens", row=line)
        values.append((arrival, prompt, output))
    data = np.array(sorted(values), dtype=np.float64).reshape(-1, 3)
    return LlmRequests(
        path.name.removesuffix(".gz").removesuffix(".csv"),
        data[:, 0],
        data[:, 1].astype(np.int64),
        data[:, 2].astype(np.int64),
    )


def splitwise_sim_requests(
    base: LlmRequests, rate_rps: float, duration_s: float, *, seed: int = 0, draws: int = 1_000_000
) -> LlmRequests:
    """The public Splitwise simulator's trace recipe, seeded: the same requests as its generator run after
    ``numpy.random.seed(seed)`` on the same Azure file (``docs/splitwise-sim.md`` section 3).

    Exponential gaps and, independently, prompt and output sizes resampled from the base trace's columns
    (so their pairing is not kept), all drawn from one legacy ``RandomState`` in that order.
    """
    if not rate_rps > 0 or not duration_s > 0:
        raise ConfigError("rate and duration must be positive")
    state = np.random.RandomState(seed)
    arrivals = np.cumsum(state.standard_exponential(draws) / rate_rps)
    prompt_rows = state.randint(0, len(base), draws)
    output_rows = state.randint(0, len(base), draws)
    keep = arrivals < duration_s
    return LlmRequests(
        f"{base.name}@{rate_rps:g}rps(splitwise-sim seed {seed})",
        arrivals[keep],
        base.prompt_tokens[prompt_rows[keep]],
        base.output_tokens[output_rows[keep]],
    )


def poisson_arrivals(rate_rps: float, duration_s: float, rng: np.random.Generator) -> NDArray[np.float64]:
    if not rate_rps > 0:
        raise ConfigError(f"request rate must be positive, got {rate_rps!r}")
    if not duration_s > 0:
        raise ConfigError(f"duration must be positive, got {duration_s!r}")
    expected = rate_rps * duration_s
    gaps = rng.exponential(1.0 / rate_rps, size=int(expected + 10 * np.sqrt(expected) + 10))
    arrivals = np.cumsum(gaps)
    while arrivals[-1] < duration_s:  # astronomically rare; keeps the process exact
        arrivals = np.concatenate([arrivals, arrivals[-1] + np.cumsum(rng.exponential(1.0 / rate_rps, 1000))])
    return arrivals[arrivals < duration_s]


def poisson(base: LlmRequests, rate_rps: float, duration_s: float, *, seed: int = 0) -> LlmRequests:
    """Poisson arrivals at ``rate_rps`` for ``duration_s``, token pairs resampled from ``base``."""
    if len(base) == 0:
        raise ConfigError(f"{base.name}: no requests to resample from")
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(rate_rps, duration_s, rng)
    picks = rng.integers(0, len(base), size=arrivals.size)
    return LlmRequests(
        f"{base.name}@{rate_rps:g}rps", arrivals, base.prompt_tokens[picks], base.output_tokens[picks]
    )


def _draw(percentiles: tuple[float, ...], size: int, rng: np.random.Generator) -> NDArray[np.int64]:
    # Inverse CDF through the percentile table, interpolating in log space: token counts span 3 decades.
    table = np.log(np.asarray(percentiles, dtype=np.float64))
    quantiles = np.linspace(0.0, 1.0, table.size)
    values = np.exp(np.interp(rng.random(size), quantiles, table))
    return np.maximum(np.rint(values), 1).astype(np.int64)


def synthetic(
    kind: str, rate_rps: float | None = None, duration_s: float = 600.0, *, seed: int = 0
) -> LlmRequests:
    """Embedded workload with the token-size distribution of the Azure ``code`` or ``conv`` trace."""
    if kind not in _PERCENTILES:
        raise ConfigError(f"synthetic LLM workload kind must be code or conv, not {kind!r}")
    prompt_table, output_table, mean_rate = _PERCENTILES[kind]
    rate = mean_rate if rate_rps is None else rate_rps
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(rate, duration_s, rng)
    return LlmRequests(
        f"synthetic-{kind}@{rate:g}rps",
        arrivals,
        _draw(prompt_table, arrivals.size, rng),
        _draw(output_table, arrivals.size, rng),
    )


def percentile_table(values: NDArray[np.int64]) -> tuple[float, ...]:
    """Percentiles 0..100 of ``values``, the form :mod:`strato.traces.llm_profiles` stores."""
    return tuple(round(float(v), 1) for v in np.percentile(values, np.arange(101)))


def data_dir() -> Path:
    configured = os.environ.get("STRATO_DATA")
    return Path(configured) if configured else Path.cwd().parent / "shared" / "data"


def load_requests(
    spec: str, *, rate_rps: float | None = None, duration_s: float | None = None, seed: int = 0
) -> LlmRequests:
    """Resolve a ``--trace`` value; with ``rate_rps``, Poisson arrivals resampling its token sizes."""
    kind = spec.removeprefix("azure-").removeprefix("synthetic-")
    if spec.startswith("synthetic-"):
        return synthetic(kind, rate_rps, duration_s or 600.0, seed=seed)
    if spec in ("azure-code", "azure-conv"):
        path = data_dir() / "azure-llm-2023" / TRACE_FILES[kind]
        if not path.exists():
            raise ConfigError(
                f"{spec}: {path} is missing; set STRATO_DATA to the folder holding "
                f"azure-llm-2023/, give the CSV's path, or use synthetic-{kind} (embedded)"
            )
    else:
        path = Path(spec)
        if not path.exists():
            raise ConfigError(
                f"trace {spec!r} is neither a file nor one of azure-code, azure-conv, "
                "synthetic-code, synthetic-conv"
            )
    requests = read_azure_llm2023(path)
    if rate_rps is not None:
        return poisson(requests, rate_rps, duration_s or 600.0, seed=seed)
    return requests.window(duration_s) if duration_s is not None else requests
