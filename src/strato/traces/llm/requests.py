"""LLM inference requests: the Azure 2023 traces, Poisson resampling and embedded synthetic workloads.

A request is (arrival time, prompt tokens, output tokens). Three sources, one type:

* ``read_llm_requests(path)``: a trace in the public Azure layout (``TIMESTAMP,ContextTokens,
  GeneratedTokens``, arrival times shifted to start at 0) or the public Splitwise simulator's
  (``arrival_timestamp,prompt_size,token_size`` among others), told apart by the header;
* ``poisson(requests, rate_rps, duration_s, seed)``: Poisson arrivals at a chosen rate, each request's token
  pair drawn (jointly, with replacement) from a base set, as the Splitwise paper's experiments do;
* ``synthetic(kind, rate_rps, duration_s, seed)``: Poisson arrivals with token counts drawn from the embedded
  percentile tables of the real traces (:mod:`strato.traces.llm.token_sizes`): offline, no files needed.

``load_requests(spec, ...)`` resolves what a ``--trace`` option names (:mod:`strato.traces.spec`):
``synthetic[:kind=code|conv]``, the named set ``azure-llm-2023:code|conv``, or a path; with ``rate_rps`` it
resamples Poisson arrivals from that source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import Table, read_table
from strato.traces.llm import token_sizes
from strato.traces.spec import parse_workload_spec

TraceKind = Literal["code", "conv"]
_PERCENTILES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "code": (
        token_sizes.CODE_PROMPT_PERCENTILES,
        token_sizes.CODE_OUTPUT_PERCENTILES,
        token_sizes.CODE_MEAN_RATE_RPS,
    ),
    "conv": (
        token_sizes.CONV_PROMPT_PERCENTILES,
        token_sizes.CONV_OUTPUT_PERCENTILES,
        token_sizes.CONV_MEAN_RATE_RPS,
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


_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_SPLITWISE_COLUMNS = ("arrival_timestamp", "prompt_size", "token_size")


def read_llm_requests(path: str | Path) -> LlmRequests:
    """Read a request trace in the Azure LLM inference 2023 layout or the public Splitwise simulator's
    (``request_id, request_type, application_id, arrival_timestamp, batch_size, prompt_size, token_size``),
    told apart by the header; gzip allowed. Bad rows raise with their line and column."""
    path = Path(path)
    table = read_table(path)
    splitwise = set(_SPLITWISE_COLUMNS) <= set(table.header)
    if not splitwise:
        table.require(_AZURE_COLUMNS)
    if not table.rows:
        raise TraceFormatError(path, "no requests")
    if splitwise:
        tokens = ("prompt_size", "token_size")
        arrival = table.floats("arrival_timestamp")
    else:
        tokens = ("ContextTokens", "GeneratedTokens")
        arrival = _azure_seconds(table)
    prompts, outputs = (table.whole(column, minimum=1) for column in tokens)
    order = np.argsort(arrival, kind="stable")
    name = path.name.removesuffix(".gz").removesuffix(".csv")
    return LlmRequests(name, arrival[order], prompts[order], outputs[order])


def _azure_seconds(table: Table) -> NDArray[np.float64]:
    """TIMESTAMP column -> seconds since the earliest request."""
    try:
        times = np.array([text.strip() for text in table.column("TIMESTAMP")], dtype="datetime64[ns]")
    except ValueError as error:
        raise TraceFormatError(table.path, f"unreadable TIMESTAMP ({error})", column="TIMESTAMP") from None
    seconds: NDArray[np.float64] = ((times - times.min()) / np.timedelta64(1, "s")).astype(np.float64)
    return seconds


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
    """Percentiles 0..100 of ``values``, the form :mod:`strato.traces.llm.token_sizes` stores."""
    return tuple(round(float(v), 1) for v in np.percentile(values, np.arange(101)))


_SYNTHETIC_KEYS = ("kind",)


def load_requests(
    spec: str, *, rate_rps: float | None = None, duration_s: float | None = None, seed: int = 0
) -> LlmRequests:
    """Resolve a ``--trace`` value; with ``rate_rps``, Poisson arrivals resampling its token sizes.

    ``synthetic[:kind=code|conv]`` (default ``code``) draws from the embedded tables at ``rate_rps`` (default
    the trace's mean rate) for ``duration_s`` (default 600 s); ``azure-llm-2023:code|conv`` and paths are
    read by :func:`read_llm_requests`.
    """
    parsed = parse_workload_spec(spec, "llm")
    if parsed.kind == "synthetic":
        for key in parsed.options:
            if key not in _SYNTHETIC_KEYS:
                raise ConfigError(f"synthetic LLM spec {spec!r}: unknown key {key!r} (known keys: kind)")
        kind = parsed.options.get("kind", "code")
        return synthetic(kind, rate_rps, duration_s or 600.0, seed=seed)
    assert parsed.path is not None
    requests = read_llm_requests(parsed.path)
    if rate_rps is not None:
        return poisson(requests, rate_rps, duration_s or 600.0, seed=seed)
    return requests.window(duration_s) if duration_s is not None else requests
