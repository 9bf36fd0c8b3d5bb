"""How long one iteration of an LLM inference machine takes.

Every simulated machine asks one :class:`PerfModel` three questions, all answered in seconds:

* :meth:`PerfModel.prompt_time_s` ``(prompt_tokens, batch_size=1)``: one prefill iteration over a batch of
  ``batch_size`` prompts holding ``prompt_tokens`` tokens in total. It produces every prompt's first output
  token and its KV cache.
* :meth:`PerfModel.token_time_s` ``(batch_size, context_tokens=None)``: one decode iteration producing one
  token for each of ``batch_size`` requests. ``context_tokens`` is the KV cache the batch reads: the sum,
  over its requests, of prompt plus tokens generated so far. ``None`` means every request has
  :data:`REFERENCE_CONTEXT_PER_REQUEST` tokens, the setting of the public profile's batch sweep.
* :meth:`PerfModel.iteration_time_s`: a mixed iteration (continuous batching, the Baseline designs), see
  its docstring.

Two implementations:

* :class:`ProfileTable`: the measured iteration times of the public Splitwise simulator's profile
  (``perf_model.csv``), interpolated piecewise-linearly: prefill on batch tokens, as that simulator does,
  decode on batch size (that simulator keys decode on prompt tokens x batch size too), plus a fitted
  cost per token of context.
* :class:`AnalyticModel`: a roofline with efficiency factors fitted to that profile by
  :func:`fit_efficiency`; it needs no file and works for every catalog model and machine. It is the
  default of :func:`load_perf_model`.

:func:`model_error` measures one model against a table's profiled points (mean absolute percentage error
per phase).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from strato.errors import ConfigError, TraceFormatError
from strato.llm.catalog import (
    LlmModel,
    Machine,
    check_tensor_parallel,
    get_machine,
    get_model,
    kv_bytes_per_token_per_gpu,
    kv_capacity_tokens,
    normalize_name,
    resolve_machine,
    resolve_model,
)
from strato.traces.csvio import read_table

FloatArray = NDArray[np.float64]

REFERENCE_CONTEXT_PER_REQUEST = 576
"""Context per request assumed when ``token_time_s`` gets no ``context_tokens``.

The profile's batch sweep decodes 128 tokens after 512-token prompts, and its ``token_time`` is the
average over those 128 iterations, so its requests attend to 512 + 128/2 tokens on average.
"""

MIXED_BATCH_SLOWDOWN = 1.10
"""Penalty on a mixed prompt+decode iteration. The public Splitwise simulator applies 10 %; it is a modelling
choice there too, not a measurement."""

CONTEXT_SLOPE_MIN_EFFICIENCY = 0.5
"""The profile's decode-time-per-context-token is clamped to the cost of reading that token's KV cache
at between this fraction of the HBM bandwidth and all of it.

With grouped-query attention a token of context costs Llama2-70B a few hundredths of a microsecond,
well under the run-to-run noise of its batch-1 decode times (which step by 6 % between 256- and
512-token prompts on A100 at TP4), so an unclamped fit reads noise as a slope 9x too steep."""

FAILED_RUN_RATIO = 0.5
"""A profiled prompt faster than this fraction of a smaller profiled batch is treated as a failed run."""


# ------------------------------------------------------------------------------------------- interface


class PerfModel(ABC):
    """Iteration times of one model instance (``tensor_parallel`` GPUs of one machine), in seconds."""

    model: LlmModel
    machine: Machine
    tensor_parallel: int

    @abstractmethod
    def prompt_time_s(self, prompt_tokens: int, batch_size: int = 1) -> float:
        """One prefill iteration over ``prompt_tokens`` tokens in total, from ``batch_size`` prompts."""

    @abstractmethod
    def token_time_s(self, batch_size: int, context_tokens: int | None = None) -> float:
        """One decode iteration: one new token for each of ``batch_size`` requests.

        ``context_tokens`` is the total KV cache the batch attends to (sum over requests of prompt plus
        tokens generated so far); ``None`` stands for ``batch_size * REFERENCE_CONTEXT_PER_REQUEST``.
        """

    def iteration_time_s(
        self,
        prompt_tokens: int,
        decode_requests: int,
        *,
        prompt_requests: int | None = None,
        context_tokens: int | None = None,
        mixed_slowdown: float = MIXED_BATCH_SLOWDOWN,
    ) -> float:
        """One iteration that may mix prompts and decodes (continuous batching).

        Without decodes this is :meth:`prompt_time_s`; without prompt tokens, :meth:`token_time_s`.
        A mixed iteration sends every prompt token and one token per decoding request through each layer
        together, so it costs at least a prefill of ``prompt_tokens + decode_requests`` tokens; it also reads
        the decoding requests' KV cache, so at least their decode iteration. The two share the pass over the
        weights, so the iteration takes the larger of the two, times ``mixed_slowdown`` for the
        interference of mixing (:data:`MIXED_BATCH_SLOWDOWN`).

        ``prompt_requests`` is how many prompts the ``prompt_tokens`` belong to (default 1);
        ``context_tokens`` is the decoding requests' total context, as in :meth:`token_time_s`.
        """
        _whole("prompt_tokens", prompt_tokens, minimum=0)
        _whole("decode_requests", decode_requests, minimum=0)
        if prompt_tokens == 0 and decode_requests == 0:
            raise ConfigError("an iteration needs at least one prompt token or one decoding request")
        prompts = (1 if prompt_tokens else 0) if prompt_requests is None else prompt_requests
        if prompt_tokens == 0:
            return self.token_time_s(decode_requests, context_tokens)
        if decode_requests == 0:
            return self.prompt_time_s(prompt_tokens, prompts)
        if not mixed_slowdown >= 1:
            raise ConfigError(f"mixed_slowdown must be >= 1, got {mixed_slowdown!r}")
        _check_prompt(prompt_tokens, prompts)
        prefill = self.prompt_time_s(prompt_tokens + decode_requests, prompts + decode_requests)
        decode = self.token_time_s(decode_requests, context_tokens)
        return mixed_slowdown * max(prefill, decode)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.model.name}, {self.machine.name}, TP{self.tensor_parallel})"


def _whole(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _check_prompt(prompt_tokens: int, batch_size: int) -> None:
    _whole("prompt_tokens", prompt_tokens, minimum=1)
    _whole("batch_size", batch_size, minimum=1)
    if batch_size > prompt_tokens:
        raise ConfigError(f"{batch_size} prompts cannot hold only {prompt_tokens} tokens")


def _context(batch_size: int, context_tokens: int | None) -> int:
    _whole("batch_size", batch_size, minimum=1)
    if context_tokens is None:
        return batch_size * REFERENCE_CONTEXT_PER_REQUEST
    _whole("context_tokens", context_tokens, minimum=batch_size)
    return int(context_tokens)


# ------------------------------------------------------------------------------------- profile table

PROFILE_COLUMNS = (
    "model",
    "hardware",
    "prompt_size",
    "batch_size",
    "token_size",
    "peak_power",
    "average_power",
    "prompt_time",
    "token_time",
    "e2e_time",
    "tensor_parallel",
)
_INT_COLUMNS = ("prompt_size", "batch_size", "token_size", "tensor_parallel")
_POSITIVE_COLUMNS = ("prompt_time", "token_time")
_NONNEGATIVE_COLUMNS = ("peak_power", "average_power", "e2e_time")

Aggregate = Literal["median", "mean"]


@dataclass(frozen=True)
class ProfileRow:
    """One parsed line of a profile file; times in milliseconds as the file stores them."""

    line: int
    model: str
    hardware: str
    tensor_parallel: int
    prompt_size: int
    batch_size: int
    token_size: int
    prompt_time_ms: float
    token_time_ms: float
    e2e_time_ms: float
    peak_power: float
    average_power: float

    def measurement(self) -> tuple[float, ...]:
        return (
            self.prompt_time_ms,
            self.token_time_ms,
            self.e2e_time_ms,
            self.peak_power,
            self.average_power,
        )


@dataclass(frozen=True)
class PowerDraw:
    """GPU power of a profiled run as fractions of TDP: its peak and its average over the whole run."""

    peak: float
    average: float


@dataclass(frozen=True)
class ProfilePoint:
    """One profiled configuration: its repeated runs, and their aggregate, in seconds.

    ``generated_tokens`` is how many tokens the runs actually produced, ``(e2e - prompt) / token + 1``,
    capped at ``token_size``: many long-generation runs stopped early (BLOOM on A100 asked for 8192 tokens
    generated about 4016), so ``token_size`` alone overstates their context.
    ``context_per_request`` is the mean context a decode iteration attended to, prompt plus half the
    generated tokens. ``power`` is ``None`` where the file has zeros (not measured).
    """

    prompt_size: int
    batch_size: int
    token_size: int
    prompt_samples_s: tuple[float, ...]
    token_samples_s: tuple[float, ...]
    prompt_time_s: float
    token_time_s: float
    generated_tokens: float
    power: PowerDraw | None

    @property
    def batch_tokens(self) -> int:
        return self.prompt_size * self.batch_size

    @property
    def context_per_request(self) -> float:
        return self.prompt_size + self.generated_tokens / 2

    @property
    def rows(self) -> int:
        return len(self.prompt_samples_s)


def read_profile_rows(path: str | Path) -> list[ProfileRow]:
    """Every row of a profile file in the public Splitwise simulator's format, validated.

    Columns may come in any order and extra columns are ignored. A missing column, a short row, a value
    that is not a number (a whole number for sizes), a non-positive prompt or token time, or a negative
    e2e time or power raises :class:`TraceFormatError` naming the row (1-based, header = 1) and column.
    """
    path = Path(path)
    table = read_table(path, PROFILE_COLUMNS)
    index = {name: table.index(name) for name in PROFILE_COLUMNS}
    rows = [
        _parse_row(path, line, fields, index)
        for line, fields in enumerate(table.rows, start=table.first_row)
        if any(text.strip() for text in fields)
    ]
    if not rows:
        raise TraceFormatError(path, "no data rows after the header")
    return rows


def _parse_row(path: Path, line: int, fields: list[str], index: dict[str, int]) -> ProfileRow:
    values: dict[str, float] = {}
    for column in PROFILE_COLUMNS[2:]:
        text = fields[index[column]].strip()
        try:
            value = float(text)
        except ValueError:
            raise TraceFormatError(path, f"{text!r} is not a number", row=line, column=column) from None
        if not math.isfinite(value):
            raise TraceFormatError(path, f"{text!r} is not a finite number", row=line, column=column)
        if column in _INT_COLUMNS and (value != int(value) or value < 1):
            raise TraceFormatError(path, f"{text!r} is not a whole number >= 1", row=line, column=column)
        if column in _POSITIVE_COLUMNS and value <= 0:
            raise TraceFormatError(
                path, f"{text} ms: an iteration time must be positive", row=line, column=column
            )
        if column in _NONNEGATIVE_COLUMNS and value < 0:
            raise TraceFormatError(path, f"{text}: must not be negative", row=line, column=column)
        values[column] = value
    model, hardware = fields[index["model"]].strip(), fields[index["hardware"]].strip()
    for column, text in (("model", model), ("hardware", hardware)):
        if not text:
            raise TraceFormatError(path, "empty name", row=line, column=column)
    return ProfileRow(
        line=line,
        model=model,
        hardware=hardware,
        tensor_parallel=int(values["tensor_parallel"]),
        prompt_size=int(values["prompt_size"]),
        batch_size=int(values["batch_size"]),
        token_size=int(values["token_size"]),
        prompt_time_ms=values["prompt_time"],
        token_time_ms=values["token_time"],
        e2e_time_ms=values["e2e_time"],
        peak_power=values["peak_power"],
        average_power=values["average_power"],
    )


def _canonical(name: str, kind: Literal["model", "machine"]) -> str:
    try:
        return get_model(name).name if kind == "model" else get_machine(name).name
    except ConfigError:
        return normalize_name(name)


def profile_configurations(rows: Iterable[ProfileRow]) -> list[tuple[str, str, int]]:
    """The (model, hardware, tensor_parallel) combinations a profile holds, catalog names where known."""
    found = {
        (_canonical(row.model, "model"), _canonical(row.hardware, "machine"), row.tensor_parallel)
        for row in rows
    }
    return sorted(found)


def _aggregate(values: Sequence[float], how: Aggregate) -> float:
    return float(np.median(values) if how == "median" else np.mean(values))


def monotone(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators).

    Points that already rise are returned unchanged; a run that dips is replaced by its weighted mean.
    """
    means: list[float] = []
    totals: list[float] = []
    counts: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mean, total, count = means.pop(), totals.pop(), counts.pop()
            merged = totals[-1] + total
            means[-1] = (means[-1] * totals[-1] + mean * total) / merged
            totals[-1] = merged
            counts[-1] += count
    return np.repeat(means, counts).astype(np.float64)


@dataclass(frozen=True)
class _Curve:
    """Piecewise-linear, extended along its first and last segments, never below ``floor``."""

    x: FloatArray
    y: FloatArray
    floor: float = 0.0

    def __call__(self, query: float) -> float:
        x, y = self.x, self.y
        if x.size == 1:
            value = float(y[0])
        elif query < x[0]:
            value = float(y[0] + (y[1] - y[0]) / (x[1] - x[0]) * (query - x[0]))
        elif query > x[-1]:
            value = float(y[-1] + (y[-1] - y[-2]) / (x[-1] - x[-2]) * (query - x[-1]))
        else:
            value = float(np.interp(query, x, y))
        return max(value, self.floor)


@dataclass(frozen=True)
class ProfileTable(PerfModel):
    """Measured iteration times of one model on one machine type at one tensor-parallel degree.

    Built from the public Splitwise simulator's profile, whose rows for one (model, hardware, TP) come from
    three sweeps around a centre point (512-token prompt, batch 1, 128 output tokens), each configuration
    run five times (the centre point's rows appear once per sweep, verbatim; such copies count once):

    * prompt sweep: prompt 128..8192 tokens, batch 1, 128 output tokens;
    * batch sweep: batch 1..64, 512-token prompts, 128 output tokens;
    * output sweep: 128..8192 output tokens, 512-token prompt, batch 1.

    Repeated runs are aggregated with ``aggregate``: the median by default, as the public simulator does
    (it keeps occasional straggler runs, such as one 272 ms run among 251-263 ms ones, from shifting a
    point; REFERENCE.md's 253 ms for BLOOM on H100 is that median), or the mean.

    Which rows feed which curve:

    * **Prompt curve**, interpolated on batch tokens (prompt tokens x batch size). At a batch-token count
      that batch-1 runs cover (128..8192) it aggregates every batch-1 run with that prompt size, whatever
      their output length (it does not affect the prefill); above (16384 and 32768 tokens) it uses the
      batch sweep. Where both sweeps reach the same batch tokens (1024..8192) they disagree, in both
      directions: batches of 512-token prompts take -14 % (BLOOM on H100, 8192 tokens) to +42 %
      (Llama2-70B TP4 on A100, 2048 tokens) of one prompt of the same total. Batch-1 runs win because a
      Splitwise prompt machine mostly runs one or two long prompts per batch (at most 2048 tokens).
    * **Context slope**: a least-squares line of decode time against context per request over every
      batch-1 run (prompt and output sweeps): the cost of one more token of KV cache in the batch, in
      seconds (``context_slope_s``), clamped to what reading that KV cache can cost
      (:data:`CONTEXT_SLOPE_MIN_EFFICIENCY`, :meth:`context_slope_bounds`).
    * **Token curve**, interpolated on batch size, from the batch sweep (the configurations sharing the
      prompt and output size of the runs with batch > 1), whose requests had ``reference_context`` tokens
      each. The curve holds each point's time less the slope times its total context, and a decode of
      ``context_tokens`` adds the slope times that context back; at the sweep's own context this returns
      the measured times.

    Both curves are made non-decreasing by pool-adjacent-violators (a point that dips below a smaller
    configuration is averaged with it; rising points are kept exactly), so decode time rises with batch
    size at any fixed context and with context at any batch size, after dropping a configuration
    whose prompt time is below :data:`FAILED_RUN_RATIO` of a smaller one (Llama2-70B at TP2 with batch 64
    reports 794 ms after 6633 ms at batch 32: a failed run); dropped configurations are in ``dropped``.

    Beyond the profiled range both curves extend their last segment linearly, as the public simulator's
    ``interp1d(fill_value="extrapolate")`` does; below it (prompts shorter than 128 tokens) the first
    segment is extended, but a prefill is never taken to be faster than a batch-1 decode iteration, since
    both pass over all the weights once.
    """

    model: LlmModel
    machine: Machine
    tensor_parallel: int
    points: tuple[ProfilePoint, ...]
    source: str = "<memory>"
    aggregate: Aggregate = "median"
    dropped: tuple[tuple[ProfilePoint, str], ...] = ()
    _prompt: _Curve = field(init=False, repr=False, compare=False)
    _token: _Curve = field(init=False, repr=False, compare=False)
    _reference_context: float = field(init=False, repr=False, compare=False)
    _context_slope: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError(
                f"{self.source}: no profiled points for {self.model.name} on "
                f"{self.machine.name} at TP{self.tensor_parallel}"
            )
        slope = self._fit_context_slope()
        token, reference_context = self._token_curve(slope)
        object.__setattr__(self, "_context_slope", slope)
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_reference_context", reference_context)
        object.__setattr__(self, "_prompt", self._prompt_curve(floor=self.token_time_s(1, 1)))

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        model: LlmModel | str,
        machine: Machine | str,
        tensor_parallel: int,
        *,
        aggregate: Aggregate = "median",
    ) -> ProfileTable:
        """Read ``path`` and keep the rows of ``model`` on ``machine`` at ``tensor_parallel``."""
        return cls.from_rows(
            read_profile_rows(path), model, machine, tensor_parallel, source=str(path), aggregate=aggregate
        )

    @classmethod
    def all_from_csv(cls, path: str | Path, *, aggregate: Aggregate = "median") -> list[ProfileTable]:
        """One table per (model, hardware, TP) in ``path`` whose model and hardware the catalog knows."""
        rows = read_profile_rows(path)
        tables = []
        for model, hardware, tp in profile_configurations(rows):
            try:
                get_model(model), get_machine(hardware)
            except ConfigError:
                continue
            tables.append(cls.from_rows(rows, model, hardware, tp, source=str(path), aggregate=aggregate))
        return tables

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[ProfileRow],
        model: LlmModel | str,
        machine: Machine | str,
        tensor_parallel: int,
        *,
        source: str = "<memory>",
        aggregate: Aggregate = "median",
    ) -> ProfileTable:
        model, machine = resolve_model(model), resolve_machine(machine)
        if aggregate not in ("median", "mean"):
            raise ConfigError(f"aggregate must be 'median' or 'mean', not {aggregate!r}")
        chosen = [
            row
            for row in rows
            if row.tensor_parallel == tensor_parallel
            and _canonical(row.model, "model") == model.name
            and _canonical(row.hardware, "machine") == machine.name
        ]
        if not chosen:
            have = "; ".join(f"{m} on {h} TP{tp}" for m, h, tp in profile_configurations(rows)) or "nothing"
            raise ConfigError(
                f"{source} has no rows for {model.name} on {machine.name} at "
                f"TP{tensor_parallel}; it has {have}"
            )
        runs: dict[tuple[int, int, int], dict[tuple[float, ...], ProfileRow]] = defaultdict(dict)
        for row in chosen:
            runs[(row.prompt_size, row.batch_size, row.token_size)].setdefault(row.measurement(), row)
        points = [_point(key, list(unique.values()), aggregate) for key, unique in sorted(runs.items())]
        kept, dropped = _drop_failed_runs(points)
        return cls(
            model,
            machine,
            tensor_parallel,
            tuple(kept),
            source=source,
            aggregate=aggregate,
            dropped=tuple(dropped),
        )

    def _prompt_curve(self, floor: float) -> _Curve:
        by_tokens: dict[int, list[ProfilePoint]] = defaultdict(list)
        for point in self.points:
            by_tokens[point.batch_tokens].append(point)
        xs, ys, weights = [], [], []
        for tokens in sorted(by_tokens):
            group = by_tokens[tokens]
            single = [point for point in group if point.batch_size == 1] or group
            samples = [sample for point in single for sample in point.prompt_samples_s]
            xs.append(float(tokens))
            ys.append(_aggregate(samples, self.aggregate))
            weights.append(float(len(samples)))
        y = monotone(np.asarray(ys), np.asarray(weights))
        return _Curve(np.asarray(xs), y, floor=floor)

    def _batch_sweep(self) -> list[ProfilePoint]:
        batched = Counter((p.prompt_size, p.token_size) for p in self.points if p.batch_size > 1)
        if batched:
            shape = min(batched, key=lambda key: (-batched[key], key))
        else:
            rows: Counter[tuple[int, int]] = Counter()
            for p in self.points:
                rows[(p.prompt_size, p.token_size)] += p.rows
            shape = min(rows, key=lambda key: (-rows[key], key))
        return sorted(
            (p for p in self.points if (p.prompt_size, p.token_size) == shape), key=lambda p: p.batch_size
        )

    def _token_curve(self, slope: float) -> tuple[_Curve, float]:
        """The decode time without its context cost, on batch size, and the sweep's context per request."""
        sweep = self._batch_sweep()
        reference = float(np.median([p.context_per_request for p in sweep]))
        x = np.asarray([float(p.batch_size) for p in sweep])
        base = np.asarray([p.token_time_s for p in sweep]) - slope * x * reference
        y = monotone(base, np.asarray([float(p.rows) for p in sweep]))
        return _Curve(x, y), reference

    def context_slope_bounds(self) -> tuple[float, float]:
        """Seconds to read one token of KV cache per GPU at full and at half the HBM bandwidth."""
        per_gpu = kv_bytes_per_token_per_gpu(self.model, self.tensor_parallel)
        fastest = per_gpu / self.machine.gpu.hbm_bytes_per_s
        return fastest, fastest / CONTEXT_SLOPE_MIN_EFFICIENCY

    def _fit_context_slope(self) -> float:
        low, high = self.context_slope_bounds()
        single = [p for p in self.points if p.batch_size == 1]
        contexts = np.asarray([p.context_per_request for p in single])
        if np.unique(contexts).size < 2:
            return low
        times = np.asarray([p.token_time_s for p in single])
        weights = np.sqrt([float(p.rows) for p in single])
        slope = float(np.polyfit(contexts, times, 1, w=weights)[0])
        return min(max(slope, low), high)

    # ---------------------------------------------------------------------------------- questions

    @property
    def reference_context(self) -> float:
        """Mean context per request of the batch sweep, in tokens."""
        return self._reference_context

    @property
    def context_slope_s(self) -> float:
        """Decode seconds added per extra token of context in the batch."""
        return self._context_slope

    def prompt_curve(self) -> tuple[FloatArray, FloatArray]:
        """The prompt curve's knots: batch tokens and seconds (after the monotone fit)."""
        return self._prompt.x.copy(), self._prompt.y.copy()

    def token_curve(self) -> tuple[FloatArray, FloatArray]:
        """The token curve's knots at the reference context: batch sizes and seconds."""
        x = self._token.x.copy()
        return x, self._token.y + self._context_slope * x * self._reference_context

    def prompt_time_s(self, prompt_tokens: int, batch_size: int = 1) -> float:
        _check_prompt(prompt_tokens, batch_size)
        return self._prompt(float(prompt_tokens))

    def token_time_s(self, batch_size: int, context_tokens: int | None = None) -> float:
        context = _context(batch_size, context_tokens)
        return self._token(float(batch_size)) + self._context_slope * context

    def power_at(self, prompt_tokens: int, batch_size: int = 1) -> PowerDraw | None:
        """Peak and average GPU power (fractions of TDP) of a profiled run of this many batch tokens.

        Interpolated on batch tokens over the configurations the file has power for (batch-1 runs first,
        as for the prompt curve) and held at the ends rather than extrapolated, since power saturates near
        TDP. The peak is set by the prompt phase and the average over the whole run mostly by decoding.
        ``None`` when the file has no power for this table (the public profile has it for A100 only).
        """
        _check_prompt(prompt_tokens, batch_size)
        measured = [p for p in self.points if p.power is not None]
        by_tokens: dict[int, list[ProfilePoint]] = defaultdict(list)
        for point in measured:
            by_tokens[point.batch_tokens].append(point)
        if not by_tokens:
            return None
        xs = sorted(by_tokens)
        peaks, averages = [], []
        for tokens in xs:
            group = [p for p in by_tokens[tokens] if p.batch_size == 1] or by_tokens[tokens]
            peaks.append(_aggregate([p.power.peak for p in group if p.power], self.aggregate))
            averages.append(_aggregate([p.power.average for p in group if p.power], self.aggregate))
        peak = float(np.interp(prompt_tokens, xs, peaks))
        return PowerDraw(peak, float(np.interp(prompt_tokens, xs, averages)))


def _point(key: tuple[int, int, int], rows: list[ProfileRow], how: Aggregate) -> ProfilePoint:
    prompt_size, batch_size, token_size = key
    prompts = tuple(row.prompt_time_ms / 1e3 for row in rows)
    tokens = tuple(row.token_time_ms / 1e3 for row in rows)
    generated = [(row.e2e_time_ms - row.prompt_time_ms) / row.token_time_ms + 1 for row in rows]
    generated = [min(float(token_size), max(1.0, count)) for count in generated]
    powered = [row for row in rows if row.peak_power > 0 or row.average_power > 0]
    power = (
        PowerDraw(
            _aggregate([row.peak_power for row in powered], how),
            _aggregate([row.average_power for row in powered], how),
        )
        if powered
        else None
    )
    return ProfilePoint(
        prompt_size,
        batch_size,
        token_size,
        prompts,
        tokens,
        _aggregate(prompts, how),
        _aggregate(tokens, how),
        _aggregate(generated, how),
        power,
    )


def _drop_failed_runs(
    points: list[ProfilePoint],
) -> tuple[list[ProfilePoint], list[tuple[ProfilePoint, str]]]:
    kept: list[ProfilePoint] = []
    dropped: list[tuple[ProfilePoint, str]] = []
    for point in sorted(points, key=lambda p: (p.batch_tokens, p.batch_size, p.token_size)):
        smaller = [p for p in kept if p.batch_tokens < point.batch_tokens]
        slowest = max(smaller, key=lambda p: p.prompt_time_s, default=None)
        if slowest is not None and point.prompt_time_s < FAILED_RUN_RATIO * slowest.prompt_time_s:
            dropped.append(
                (
                    point,
                    f"prompt of {point.batch_tokens} batch tokens took "
                    f"{point.prompt_time_s * 1e3:.0f} ms, under {FAILED_RUN_RATIO:.0%} of the "
                    f"{slowest.prompt_time_s * 1e3:.0f} ms of {slowest.batch_tokens} tokens",
                )
            )
        else:
            kept.append(point)
    kept.sort(key=lambda p: (p.prompt_size, p.batch_size, p.token_size))
    return kept, dropped


# ------------------------------------------------------------------------------------ analytic model


@dataclass(frozen=True)
class Efficiency:
    """How much of a GPU's datasheet the inference engine achieves, and its fixed costs.

    * ``compute``: fraction of the dense FP16 tensor peak the matrix multiplications reach.
    * ``memory``: fraction of the HBM bandwidth reached streaming weights and KV cache.
    * ``network``: fraction of the one-way NVLink bandwidth an all-reduce reaches.
    * ``layer_overhead_s``: fixed time per layer per iteration (kernel launches, norms, small ops).
    * ``allreduce_latency_s``: start-up time of one all-reduce per doubling of the GPU count.
    * ``request_overhead_s``: fixed time per request in the batch per iteration (sampling, stop checks,
      KV-cache bookkeeping); it is what makes a decode of 64 requests slower than its roofline.
    """

    compute: float
    memory: float
    network: float
    layer_overhead_s: float
    allreduce_latency_s: float
    request_overhead_s: float

    def __post_init__(self) -> None:
        for name in ("compute", "memory", "network"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"efficiency {name} must be in (0, 1], got {value!r}")
        for name in ("layer_overhead_s", "allreduce_latency_s", "request_overhead_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"efficiency {name} must be >= 0 seconds, got {value!r}")

    def as_array(self) -> FloatArray:
        return np.asarray(
            [
                self.compute,
                self.memory,
                self.network,
                self.layer_overhead_s,
                self.allreduce_latency_s,
                self.request_overhead_s,
            ],
            dtype=np.float64,
        )


# Fitted by fit_default_efficiencies() on the public Splitwise profile (perf_model.csv, median of the runs):
# every (model, TP) of each GPU, the capped H100 rows included (their x1.30 prompt slowdown is modelled
# separately), rounded to 4 digits. test_llm_perf refits them and fails if these fall behind.
DEFAULT_EFFICIENCY: dict[str, Efficiency] = {
    "A100-SXM4-80GB": Efficiency(
        compute=0.6834,
        memory=0.9628,
        network=0.2152,
        layer_overhead_s=1.943e-4,
        allreduce_latency_s=3.492e-5,
        request_overhead_s=3.578e-4,
    ),
    "H100-SXM5-80GB": Efficiency(
        compute=0.5967,
        memory=0.7597,
        network=0.2438,
        layer_overhead_s=5.738e-5,
        allreduce_latency_s=3.634e-5,
        request_overhead_s=2.592e-4,
    ),
}
GENERIC_EFFICIENCY = Efficiency(
    compute=0.6275,
    memory=0.6779,
    network=0.2275,
    layer_overhead_s=9.947e-6,
    allreduce_latency_s=4.500e-5,
    request_overhead_s=2.692e-4,
)
"""For GPUs without a fitted entry: the fit over every GPU of the profile together."""


def default_efficiency(machine: Machine | str) -> Efficiency:
    return DEFAULT_EFFICIENCY.get(resolve_machine(machine).gpu.part, GENERIC_EFFICIENCY)


@dataclass(frozen=True)
class _Shape:
    """The numbers of one (model, machine, TP) the roofline needs, in SI units."""

    params: float
    layers: float
    hidden: float
    weight_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    activation_bytes: float
    tp: float
    flops_per_s: float
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float
    prompt_slowdown: float

    @classmethod
    def of(cls, model: LlmModel, machine: Machine, tp: int) -> _Shape:
        return cls(
            params=model.params,
            layers=float(model.layers),
            hidden=float(model.hidden_size),
            weight_bytes_per_gpu=model.weight_bytes / tp,
            kv_bytes_per_token_per_gpu=float(kv_bytes_per_token_per_gpu(model, tp)),
            activation_bytes=float(model.dtype_bytes),
            tp=float(tp),
            flops_per_s=machine.gpu.flops_per_s,
            hbm_bytes_per_s=machine.gpu.hbm_bytes_per_s,
            nvlink_bytes_per_s=machine.gpu.nvlink_bytes_per_s,
            prompt_slowdown=machine.gpu.capped_prompt_slowdown,
        )

    def iteration(
        self,
        eff: Sequence[float] | FloatArray,
        new_tokens: Num,
        requests: Num,
        attention_flops: Num,
        kv_read_tokens: Num,
    ) -> Num:
        """One iteration's time; the loads are floats (the engine, once per iteration) or arrays (the
        fit, over every profiled point at once): the same formula either way."""
        compute, memory, network, layer_overhead, latency, request_overhead = eff
        flops = 2 * self.params * new_tokens + attention_flops
        t_compute = flops / (self.tp * self.flops_per_s * compute)
        bytes_per_gpu = (
            self.weight_bytes_per_gpu + (kv_read_tokens + new_tokens) * self.kv_bytes_per_token_per_gpu
        )
        t_memory = bytes_per_gpu / (self.hbm_bytes_per_s * memory)
        t_comm = 0.0 * new_tokens
        if self.tp > 1:
            # Two all-reduces per layer (after attention, after the MLP) of one hidden vector per token;
            # a ring moves 2 (n-1)/n of it through each GPU's link.
            volume = 2 * (self.tp - 1) / self.tp * new_tokens * self.hidden * self.activation_bytes
            transfer = volume / (self.nvlink_bytes_per_s * network)
            t_comm = 2 * self.layers * (latency * math.log2(self.tp) + transfer)
        fixed = self.layers * layer_overhead + requests * request_overhead
        return _larger(t_compute, t_memory) + t_comm + fixed

    def prompt(self, eff: Sequence[float] | FloatArray, tokens: Num, requests: Num) -> Num:
        # Causal attention of a p-token prompt costs 2 p^2 hidden FLOPs per layer (QK^T and AV, half the
        # square each); a batch of r equal prompts of t tokens in total, 2 t^2 hidden / r.
        attention = 2 * self.layers * self.hidden * tokens**2 / requests
        zero = 0.0 * tokens
        return self.prompt_slowdown * self.iteration(eff, tokens, requests, attention, zero)

    def token(self, eff: Sequence[float] | FloatArray, requests: Num, context: Num) -> Num:
        # Each new token attends to its request's whole context: 4 context hidden FLOPs per layer.
        attention = 4 * self.layers * self.hidden * context
        return self.iteration(eff, requests, requests, attention, context)


Num = TypeVar("Num", float, FloatArray)


def _larger(a: Num, b: Num) -> Num:
    if isinstance(a, float) and isinstance(b, float):
        return a if a >= b else b
    return np.maximum(a, b)


class AnalyticModel(PerfModel):
    """A roofline of one iteration, with efficiency factors fitted to the public profile.

    Per iteration, with ``n`` = tensor-parallel GPUs, ``N`` parameters, ``L`` layers, ``h`` hidden size:

    * compute time = FLOPs / (n x dense FP16 peak x ``compute``), FLOPs = 2 N x new tokens + attention
      (prefill: 2 L h t^2 / r for t tokens in r prompts; decode: 4 L h x total context);
    * memory time = bytes per GPU / (HBM bandwidth x ``memory``), bytes = weights / n + KV cache read
      (decode: the batch's context) and written (new tokens), per GPU;
    * the iteration takes the larger of the two, plus tensor-parallel communication (2 all-reduces per
      layer: ``allreduce_latency_s`` x log2 n each, plus the ring's 2 (n-1)/n of a hidden vector per token
      over NVLink at ``network`` efficiency), plus ``layer_overhead_s`` per layer and
      ``request_overhead_s`` per request in the batch;
    * a power-capped GPU's prompt iterations take ``capped_prompt_slowdown`` times longer.

    Prefill is compute-bound and decode memory-bound for every realistic batch, and this falls out of the
    max rather than being assumed. ``efficiency`` defaults to :func:`default_efficiency` of the machine's
    GPU, the factors :func:`fit_efficiency` finds on the public profile.
    """

    def __init__(
        self,
        model: LlmModel | str,
        machine: Machine | str,
        tensor_parallel: int,
        efficiency: Efficiency | None = None,
    ) -> None:
        self.model, self.machine = resolve_model(model), resolve_machine(machine)
        check_tensor_parallel(self.model, self.machine, tensor_parallel)
        kv_capacity_tokens(self.model, self.machine, tensor_parallel)
        self.tensor_parallel = tensor_parallel
        self.efficiency = efficiency or default_efficiency(self.machine)
        self._shape = _Shape.of(self.model, self.machine, tensor_parallel)
        self._eff = tuple(float(value) for value in self.efficiency.as_array())

    def prompt_time_s(self, prompt_tokens: int, batch_size: int = 1) -> float:
        _check_prompt(prompt_tokens, batch_size)
        return float(self._shape.prompt(self._eff, float(prompt_tokens), float(batch_size)))

    def token_time_s(self, batch_size: int, context_tokens: int | None = None) -> float:
        context = _context(batch_size, context_tokens)
        return float(self._shape.token(self._eff, float(batch_size), float(context)))


# ------------------------------------------------------------------------------------------ fitting

_FIT_START = np.asarray([0.5, 0.7, 0.5, 2e-4, 3e-5, 1e-4])
_FIT_LOWER = np.asarray([0.01, 0.01, 0.01, 0.0, 0.0, 0.0])
_FIT_UPPER = np.asarray([1.0, 1.0, 1.0, 5e-3, 1e-3, 5e-3])
_FIT_SCALE = np.asarray([0.1, 0.1, 0.1, 1e-4, 1e-5, 1e-4])


@dataclass(frozen=True)
class _Observations:
    shape: _Shape
    prompt_tokens: FloatArray
    prompt_requests: FloatArray
    prompt_time: FloatArray
    token_requests: FloatArray
    token_context: FloatArray
    token_time: FloatArray

    @classmethod
    def of(cls, table: ProfileTable) -> _Observations:
        points = table.points
        return cls(
            shape=_Shape.of(table.model, table.machine, table.tensor_parallel),
            prompt_tokens=np.asarray([float(p.batch_tokens) for p in points]),
            prompt_requests=np.asarray([float(p.batch_size) for p in points]),
            prompt_time=np.asarray([p.prompt_time_s for p in points]),
            token_requests=np.asarray([float(p.batch_size) for p in points]),
            token_context=np.asarray([p.batch_size * p.context_per_request for p in points]),
            token_time=np.asarray([p.token_time_s for p in points]),
        )

    def log_errors(self, eff: FloatArray) -> FloatArray:
        prompt = self.shape.prompt(eff, self.prompt_tokens, self.prompt_requests)
        token = self.shape.token(eff, self.token_requests, self.token_context)
        return np.concatenate([np.log(prompt / self.prompt_time), np.log(token / self.token_time)])


def fit_efficiency(
    tables: ProfileTable | Sequence[ProfileTable], *, start: Efficiency | None = None
) -> Efficiency:
    """Efficiency factors that best reproduce the tables' profiled points, by least squares.

    Minimises the sum of squared log-ratios of predicted to measured time over every profiled
    configuration, both phases weighted equally (the log makes it a relative error, so short decode
    iterations count as much as long prefills). Tables of different models, TP degrees, or capped and
    uncapped versions of a GPU can be fitted together; fitting different GPUs together gives one
    compromise set.
    """
    group = [tables] if isinstance(tables, ProfileTable) else list(tables)
    if not group:
        raise ConfigError("fit_efficiency needs at least one profile table")
    observations = [_Observations.of(table) for table in group]

    def residuals(eff: FloatArray) -> FloatArray:
        return np.concatenate([obs.log_errors(eff) for obs in observations])

    x0 = np.clip(start.as_array() if start else _FIT_START, _FIT_LOWER, _FIT_UPPER)
    result = least_squares(residuals, x0, bounds=(_FIT_LOWER, _FIT_UPPER), x_scale=_FIT_SCALE)
    compute, memory, network, overhead, latency, per_request = (float(v) for v in result.x)
    return Efficiency(
        compute=compute,
        memory=memory,
        network=network,
        layer_overhead_s=overhead,
        allreduce_latency_s=latency,
        request_overhead_s=per_request,
    )


def fit_default_efficiencies(path: str | Path) -> tuple[dict[str, Efficiency], Efficiency]:
    """Refit :data:`DEFAULT_EFFICIENCY` (per GPU part) and :data:`GENERIC_EFFICIENCY` from a profile."""
    tables = ProfileTable.all_from_csv(path)
    by_part: dict[str, list[ProfileTable]] = defaultdict(list)
    for table in tables:
        by_part[table.machine.gpu.part].append(table)
    return {part: fit_efficiency(group) for part, group in sorted(by_part.items())}, fit_efficiency(tables)


# ----------------------------------------------------------------------------------- error, loading


def model_error(model: PerfModel, table: ProfileTable) -> dict[str, float]:
    """How far ``model`` is from ``table``'s profiled configurations, in percent.

    Keys: ``prompt_mape``/``token_mape`` (mean absolute percentage error), ``prompt_max``/``token_max``
    (worst point), and ``points`` (configurations compared; dropped failed runs are not). Each prompt is
    asked at the configuration's batch tokens and batch size; each decode at its batch size and measured
    context (batch x prompt plus half the generated tokens).
    """
    prompt_errors, token_errors = [], []
    for point in table.points:
        predicted = model.prompt_time_s(point.batch_tokens, point.batch_size)
        prompt_errors.append(abs(predicted / point.prompt_time_s - 1))
        context = max(point.batch_size, round(point.batch_size * point.context_per_request))
        predicted = model.token_time_s(point.batch_size, context)
        token_errors.append(abs(predicted / point.token_time_s - 1))
    return {
        "prompt_mape": 100 * float(np.mean(prompt_errors)),
        "token_mape": 100 * float(np.mean(token_errors)),
        "prompt_max": 100 * float(np.max(prompt_errors)),
        "token_max": 100 * float(np.max(token_errors)),
        "points": float(len(table.points)),
    }


PERF_MODEL_KINDS = ("analytic", "profile")


def profile_path() -> Path:
    """The public profile CSV: the named set ``splitwise-profiles`` below the data root
    (:func:`strato.traces.datasets.data_root`)."""
    # Imported here so the analytic default does not pull in the data layer.
    from strato.traces.datasets import DATA_SETS

    return DATA_SETS.get("splitwise-profiles").locate(None)


def load_perf_model(
    kind_or_path: str | Path | None, model: LlmModel | str, machine: Machine | str, tensor_parallel: int
) -> PerfModel:
    """The performance model a configuration names.

    ``"analytic"`` (or ``None``): :class:`AnalyticModel` with the default efficiencies. ``"profile"``: the
    public profile (:func:`profile_path`).
    Anything else is read as the path of a profile CSV.
    """
    if kind_or_path is None or kind_or_path == "analytic":
        return AnalyticModel(model, machine, tensor_parallel)
    if kind_or_path == "profile":
        return ProfileTable.from_csv(profile_path(), model, machine, tensor_parallel)
    path = Path(kind_or_path)
    if not path.is_file():
        raise ConfigError(
            f"performance model {str(kind_or_path)!r} is neither one of "
            f"{', '.join(PERF_MODEL_KINDS)} nor a profile CSV file"
        )
    return ProfileTable.from_csv(path, model, machine, tensor_parallel)
