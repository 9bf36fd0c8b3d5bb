"""The public Splitwise simulator's modelling choices, so strato can be compared with it point for point.

``docs/splitwise-sim.md`` describes them; strato's defaults differ where the public simulator is
known to be wrong or the paper says otherwise (GQA-correct KV sizing, layer-wise KV transfer, context-aware
decode times). :class:`BatchTokenTable` is its iteration-time model: the profile's rows grouped by
``prompt_size x batch_size`` ("batch tokens"), the median time per group, and one piecewise-linear curve
per phase over that axis, extended linearly beyond both ends. A decode iteration is looked up at the
number of decoding requests; a mixed iteration costs 1.1 times the prompt curve at prompt tokens plus
decoding requests.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from strato.errors import ConfigError
from strato.llm.catalog import LlmModel, Machine, resolve_machine, resolve_model
from strato.llm.perf import PerfModel, read_profile_rows

MIXED_FACTOR = 1.1


def _extrapolating(xs: np.ndarray, ys: np.ndarray, x: float) -> float:
    if x <= xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return float(ys[0] + slope * (x - xs[0]))
    if x >= xs[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(ys[-1] + slope * (x - xs[-1]))
    return float(np.interp(x, xs, ys))


class BatchTokenTable(PerfModel):
    """Iteration times exactly as the public Splitwise simulator computes them (seconds)."""

    def __init__(
        self, path: str | Path, model: LlmModel | str, machine: Machine | str, tensor_parallel: int
    ) -> None:
        self.model = resolve_model(model)
        self.machine = resolve_machine(machine)
        self.tensor_parallel = tensor_parallel
        groups: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for row in read_profile_rows(path):
            if (
                _same(row.model, self.model.name)
                and _same(row.hardware, self.machine.name)
                and row.tensor_parallel == tensor_parallel
            ):
                prompt_times, token_times = groups[row.prompt_size * row.batch_size]
                prompt_times.append(row.prompt_time_ms / 1e3)
                token_times.append(row.token_time_ms / 1e3)
        if len(groups) < 2:
            raise ConfigError(
                f"{path}: fewer than two profiled points for {self.model.name} on "
                f"{self.machine.name} with TP{tensor_parallel}"
            )
        self.xs = np.array(sorted(groups), dtype=np.float64)
        self.prompt_s = np.array([np.median(groups[int(x)][0]) for x in self.xs])
        self.token_s = np.array([np.median(groups[int(x)][1]) for x in self.xs])

    def prompt_time_s(self, prompt_tokens: int, batch_size: int = 1) -> float:
        return _extrapolating(self.xs, self.prompt_s, prompt_tokens)

    def token_time_s(self, batch_size: int, context_tokens: int | None = None) -> float:
        return _extrapolating(self.xs, self.token_s, batch_size)

    def iteration_time_s(
        self,
        prompt_tokens: int,
        decode_requests: int,
        *,
        prompt_requests: int | None = None,
        context_tokens: int | None = None,
        mixed_slowdown: float = MIXED_FACTOR,
    ) -> float:
        if prompt_tokens == 0:
            return self.token_time_s(decode_requests)
        if decode_requests == 0:
            return self.prompt_time_s(prompt_tokens)
        return mixed_slowdown * self.prompt_time_s(prompt_tokens + decode_requests)


def _same(name: str, canonical: str) -> bool:
    try:
        return resolve_model(name).name == canonical
    except ConfigError:
        try:
            return resolve_machine(name).name == canonical
        except ConfigError:
            return False
