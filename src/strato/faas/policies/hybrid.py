"""The hybrid histogram keep-alive policy of "Serverless in the Wild" (Shahrad et al., ATC 2020).

Per application it keeps a histogram of idle times (ITs: end of an execution to the next invocation) in
``bin_s`` bins over ``range_s``. When the app goes idle:

1. fewer than ``min_samples`` ITs seen: fall back to a generous fixed keep-alive (pre-warm 0, keep the
   app for the whole range);
2. at least ``oob_threshold`` of the ITs were longer than the range (out of bound): predict the next IT
   with an ARIMA model over the latest ``arima_history`` ITs; pre-warm at prediction x (1 - arima_margin)
   and keep until prediction x (1 + arima_margin);
3. the histogram is not representative (coefficient of variation of its bin counts below
   ``cv_threshold``): the same fixed fallback as (1);
4. otherwise pre-warm at the head percentile (``head_pct``) less ``head_margin`` and keep until the tail
   percentile (``tail_pct``) plus ``tail_margin``. A pre-warm of 0 means the app is not unloaded.

Choices where the paper is silent (all parameters): a percentile falls in the first bin whose cumulative
count reaches it; the head is that bin's lower edge and the tail its upper edge, so ITs of under a minute
give a pre-warm of 0 and a keep-alive of one bin plus the margin. "Keep-alive window" is read as the time
since the app went idle until which it stays loaded. Idle times are in-bound when ``IT < range_s``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strato.core.timeseries import predict_next
from strato.core.units import format_duration
from strato.errors import ConfigError
from strato.faas.policies.base import AppInfo, KeepAlivePolicy, Window, spec_name, spec_number

_US_PER_MINUTE = 60e6
_CHUNK_CELLS = 2_000_000
"""Largest (decisions x distinct bins) block the batch path materialises at once."""


RULES: tuple[str, ...] = ("no history", "out of bound (ARIMA)", "not representative", "histogram")
"""Which rule decides a window: (1) too few idle times, (2) mostly out of bound, (3) a histogram whose bin
counts vary too little (CV below the threshold; with ARIMA off, also one with nothing in bound), (4) the
histogram's head and tail."""


@dataclass
class _HybridState:
    counts: NDArray[np.int64]
    out_of_bound: int = 0
    idle_times_us: list[int] = field(default_factory=list)


class HybridHistogram(KeepAlivePolicy):
    """Hybrid histogram policy; every parameter of the paper is a constructor argument."""

    def __init__(
        self,
        *,
        range_s: float = 4 * 3600,
        bin_s: float = 60,
        head_pct: float = 5.0,
        tail_pct: float = 99.0,
        head_margin: float = 0.10,
        tail_margin: float = 0.10,
        cv_threshold: float = 2.0,
        oob_threshold: float = 0.5,
        min_samples: int = 1,
        use_arima: bool = True,
        arima_order: tuple[int, int, int] = (1, 0, 0),
        arima_margin: float = 0.15,
        arima_history: int = 64,
    ) -> None:
        if not (bin_s > 0 and range_s >= bin_s):
            raise ConfigError(f"hybrid needs 0 < bin ({bin_s} s) <= range ({range_s} s)")
        if not (0 <= head_pct <= tail_pct <= 100):
            raise ConfigError(f"hybrid needs 0 <= head ({head_pct}) <= tail ({tail_pct}) <= 100 percentiles")
        for label, margin in (("head", head_margin), ("tail", tail_margin), ("arima", arima_margin)):
            if not 0 <= margin < 1:
                raise ConfigError(f"hybrid {label} margin must be in [0, 1), got {margin}")
        if not 0 < oob_threshold <= 1:
            raise ConfigError(f"hybrid out-of-bound threshold must be in (0, 1], got {oob_threshold}")
        if cv_threshold < 0 or min_samples < 0 or arima_history < 1:
            raise ConfigError("hybrid cv threshold, min samples and ARIMA history must be non-negative")
        self.bin_us = round(bin_s * 1e6)
        self.n_bins = max(1, round(range_s / bin_s))
        self.range_us = self.bin_us * self.n_bins
        self.head_pct = float(head_pct)
        self.tail_pct = float(tail_pct)
        self.head_factor = 1.0 - head_margin
        self.tail_factor = 1.0 + tail_margin
        self.cv_threshold = float(cv_threshold)
        self.oob_threshold = float(oob_threshold)
        self.min_samples = int(min_samples)
        self.use_arima = use_arima
        self.arima_order = arima_order
        self.arima_low = 1.0 - arima_margin
        self.arima_high = 1.0 + arima_margin
        self.arima_history = int(arima_history)
        arima = "off" if not use_arima else "-".join(str(x) for x in arima_order)
        # Spec keys as parse_policy reads them; each shown only where it differs from the signature's
        # default (read from the signature so a changed default cannot leave a wrong name behind).
        default = _DEFAULTS
        default_arima = "-".join(str(x) for x in default["arima_order"]) if default["use_arima"] else "off"
        given: tuple[tuple[str, object, object, str], ...] = (
            ("bin", bin_s, default["bin_s"], format_duration(self.bin_us / 1e6)),
            ("head", head_pct, default["head_pct"], spec_number(head_pct)),
            ("tail", tail_pct, default["tail_pct"], spec_number(tail_pct)),
            ("head-margin", head_margin, default["head_margin"], spec_number(head_margin)),
            ("tail-margin", tail_margin, default["tail_margin"], spec_number(tail_margin)),
            ("cv", cv_threshold, default["cv_threshold"], spec_number(cv_threshold)),
            ("oob", oob_threshold, default["oob_threshold"], spec_number(oob_threshold)),
            ("min-samples", min_samples, default["min_samples"], str(min_samples)),
            ("arima", arima, default_arima, arima),
            ("arima-margin", arima_margin, default["arima_margin"], spec_number(arima_margin)),
            ("arima-history", arima_history, default["arima_history"], str(arima_history)),
        )
        self.name = spec_name(
            "hybrid",
            format_duration(self.range_us / 1e6),
            [(key, text) for key, value, default, text in given if value != default],
        )

    # -- scalar path: the live platform and the reference simulator ---------------------------------
    def new_state(self, app: AppInfo | None = None) -> _HybridState:
        return _HybridState(counts=np.zeros(self.n_bins, dtype=np.int64))

    def on_idle_time(self, state: Any, idle_us: int) -> None:
        bin_index = idle_us // self.bin_us
        if bin_index < self.n_bins:
            state.counts[bin_index] += 1
        else:
            state.out_of_bound += 1
        state.idle_times_us.append(int(idle_us))

    def decide(self, state: Any) -> Window:
        total = len(state.idle_times_us)
        in_bound = total - state.out_of_bound
        if total < self.min_samples or total == 0:
            return self._fallback()
        if self.use_arima and state.out_of_bound >= self.oob_threshold * total:
            return self._arima_window(state.idle_times_us)
        if in_bound == 0:
            return self._fallback()
        counts = [int(c) for c in state.counts]
        sum_squares = sum(c * c for c in counts)
        if self._cv(in_bound, sum_squares) < self.cv_threshold:
            return self._fallback()
        head_bin = self._percentile_bin(counts, self.head_pct, in_bound)
        tail_bin = self._percentile_bin(counts, self.tail_pct, in_bound)
        return self._histogram_window(head_bin, tail_bin)

    def _percentile_bin(self, counts: list[int], pct: float, in_bound: int) -> int:
        threshold = pct * in_bound
        cumulative = 0
        for index, count in enumerate(counts):
            cumulative += count
            if 100 * cumulative >= threshold:
                return index
        return len(counts) - 1

    def _cv(self, in_bound: int, sum_squares: int) -> float:
        # CV of the bin counts from integers only, so both paths round identically.
        return math.sqrt(float(self.n_bins * sum_squares - in_bound * in_bound)) / in_bound

    def _fallback(self) -> Window:
        return Window(0, self.range_us)

    def _histogram_window(self, head_bin: int, tail_bin: int) -> Window:
        head_us = float(head_bin * self.bin_us)
        tail_us = float((tail_bin + 1) * self.bin_us)
        return Window(math.floor(head_us * self.head_factor), math.ceil(tail_us * self.tail_factor))

    def _arima_window(self, idle_times_us: list[int] | NDArray[np.int64]) -> Window:
        history = np.asarray(idle_times_us[-self.arima_history :], dtype=np.float64) / _US_PER_MINUTE
        predicted_us = predict_next(history, order=self.arima_order) * _US_PER_MINUTE
        return Window(math.floor(predicted_us * self.arima_low), math.ceil(predicted_us * self.arima_high))

    # -- vectorised path: the fast simulator ---------------------------------------------------------
    def batch_windows(self, idle_us: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        prewarm, unload, _ = self.batch_decisions(idle_us)
        return prewarm, unload

    def batch_decisions(
        self, idle_us: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
        """:meth:`batch_windows` plus, per decision, the rule that made it (an index into :data:`RULES`)."""
        n = idle_us.size
        bins = idle_us // self.bin_us
        in_bound_mask = bins < self.n_bins
        total = np.arange(n + 1, dtype=np.int64)
        out_of_bound = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(~in_bound_mask, out=out_of_bound[1:])
        in_bound = total - out_of_bound

        prewarm = np.zeros(n + 1, dtype=np.int64)
        unload = np.full(n + 1, self.range_us, dtype=np.int64)
        rule = np.full(n + 1, RULES.index("no history"), dtype=np.int8)

        learned = (total >= self.min_samples) & (total > 0)
        arima_mode = (
            learned & (out_of_bound >= self.oob_threshold * total)
            if self.use_arima
            else np.zeros(n + 1, dtype=bool)
        )
        rule[learned] = RULES.index("not representative")
        histogram_candidate = learned & ~arima_mode & (in_bound > 0)
        if histogram_candidate.any():
            chosen = self._fill_histogram_windows(
                bins, in_bound_mask, in_bound, histogram_candidate, prewarm, unload
            )
            rule[chosen] = RULES.index("histogram")
        rule[arima_mode] = RULES.index("out of bound (ARIMA)")
        for i in np.flatnonzero(arima_mode):
            window = self._arima_window(idle_us[:i])
            prewarm[i], unload[i] = window.prewarm_us, window.unload_us
        return prewarm, unload, rule

    def _fill_histogram_windows(
        self,
        bins: NDArray[np.int64],
        in_bound_mask: NDArray[np.bool_],
        in_bound: NDArray[np.int64],
        candidate: NDArray[np.bool_],
        prewarm: NDArray[np.int64],
        unload: NDArray[np.int64],
    ) -> NDArray[np.int64]:
        """Histogram windows for the decisions in ``candidate`` (CV check included), in place; returns the
        decisions that passed the CV check.

        Decision ``i`` sees the idle times before ``i``. Only the bins this app ever uses are tracked, so
        the prefix-count matrix is (decisions x distinct bins), built in row chunks to bound memory.
        """
        distinct, column = np.unique(bins[in_bound_mask], return_inverse=True)
        n_cols = distinct.size
        gap_rows = np.flatnonzero(in_bound_mask)
        rows_per_chunk = max(1, _CHUNK_CELLS // n_cols)
        carry = np.zeros(n_cols, dtype=np.int64)
        n_decisions = bins.size + 1
        passed: list[NDArray[np.int64]] = []
        for start in range(0, n_decisions, rows_per_chunk):
            stop = min(n_decisions, start + rows_per_chunk)
            # prefix[r] = counts of idle times [0, start + r); build increments for gaps start..stop-2.
            increments = np.zeros((stop - start, n_cols), dtype=np.int64)
            lo, hi = np.searchsorted(gap_rows, [start, stop - 1])
            rows = gap_rows[lo:hi]
            increments[rows - start + 1, column[lo:hi]] = 1
            prefix = np.cumsum(increments, axis=0)
            prefix += carry
            if stop - 1 < bins.size and in_bound_mask[stop - 1]:
                carry = prefix[-1].copy()
                carry[column[np.searchsorted(gap_rows, stop - 1)]] += 1
            else:
                carry = prefix[-1].copy()
            chosen = np.flatnonzero(candidate[start:stop])
            if chosen.size == 0:
                continue
            counts = prefix[chosen]
            n_in = in_bound[start:stop][chosen]
            sum_squares = (counts * counts).sum(axis=1)
            cv = np.sqrt((self.n_bins * sum_squares - n_in * n_in).astype(np.float64)) / n_in
            representative = cv >= self.cv_threshold
            if not representative.any():
                continue
            counts, n_in = counts[representative], n_in[representative]
            decision = start + chosen[representative]
            passed.append(decision)
            cumulative = 100 * np.cumsum(counts, axis=1)
            head = distinct[np.argmax(cumulative >= (self.head_pct * n_in)[:, None], axis=1)]
            tail = distinct[np.argmax(cumulative >= (self.tail_pct * n_in)[:, None], axis=1)]
            head_us = (head * self.bin_us).astype(np.float64)
            tail_us = ((tail + 1) * self.bin_us).astype(np.float64)
            prewarm[decision] = np.floor(head_us * self.head_factor).astype(np.int64)
            unload[decision] = np.ceil(tail_us * self.tail_factor).astype(np.int64)
        return np.concatenate(passed) if passed else np.zeros(0, dtype=np.int64)


_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(HybridHistogram.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
