"""Blob access traces: which app read which object, when, and how big it was.

The CSV layout is ``time_s,app,object,size_bytes`` (header first, rows sorted by time, sizes in bytes);
object names are per application (the same name in two apps is two objects). :func:`read_access_trace`
names the file, line and column of anything malformed; :func:`write_access_trace` writes the same layout.

:func:`synthetic_access_trace` draws a trace from the published statistics of Azure's 2020 blob-access
study (Faa$T, SoCC 2021): object sizes with median 5.2 KB, p90 26 KB, p99 1.5 MB and at most 1.8 GB;
about half of the applications never read an object twice; the others draw objects by Zipf popularity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

from strato.core.specs import split_spec
from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import read_table

COLUMNS = ("time_s", "app", "object", "size_bytes")

# (quantile, bytes) of object sizes, decimal units as published.
BLOB_SIZE_QUANTILES = ((0.5, 5_200), (0.9, 26_000), (0.99, 1_500_000))
BLOB_SIZE_MAX = 1_800_000_000
# The published maximum is taken as the one-in-a-million object: the Pareto tail above p99 reaches it there.
_MAX_TAIL_SHARE = 1e-6


@dataclass(frozen=True)
class AccessTrace:
    """Columns of equal length, sorted by time. ``app[i]`` indexes ``apps``, ``obj[i]`` indexes
    ``objects`` (names as in the file)."""

    time_s: NDArray[np.float64]
    app: NDArray[np.int32]
    obj: NDArray[np.int64]
    size_bytes: NDArray[np.int64]
    apps: tuple[str, ...]
    objects: tuple[str, ...]
    source: str = "trace"

    def __len__(self) -> int:
        return int(self.time_s.shape[0])


def _codes(values: list[str]) -> tuple[NDArray[np.int64], tuple[str, ...]]:
    index: dict[str, int] = {}
    codes = [index.setdefault(value, len(index)) for value in values]
    return np.asarray(codes, dtype=np.int64), tuple(index)


def read_access_trace(path: str | Path) -> AccessTrace:
    """Read a ``time_s,app,object,size_bytes`` CSV (gzip too). Raises
    :class:`~strato.errors.TraceFormatError` naming file, line and column on the first bad row."""
    path = Path(path)
    table = read_table(path, COLUMNS)
    table.check_not_empty(["app", "object"])
    times = table.floats("time_s")
    table.floats("size_bytes")  # says "negative" for a negative size, which whole() reports less plainly
    sizes = table.whole("size_bytes")
    if times.size > 1:
        backwards = np.flatnonzero(np.diff(times) < 0)
        if backwards.size:
            i = int(backwards[0]) + 1
            raise TraceFormatError(
                path,
                f"time {times[i]:g} is before the previous row's ({times[i - 1]:g}): sort the trace by time",
                row=table.first_row + i,
                column="time_s",
            )
    apps, app_names = _codes([value.strip() for value in table.column("app")])
    objects, object_names = _codes([value.strip() for value in table.column("object")])
    return AccessTrace(
        time_s=times,
        app=apps.astype(np.int32),
        obj=objects,
        size_bytes=sizes,
        apps=app_names,
        objects=object_names,
        source=str(path),
    )


def _check_name(kind: str, name: str) -> None:
    if not name or any(char in name for char in ',"\n\r'):
        raise ConfigError(
            f"{kind} name {name!r} cannot be written to an access-trace CSV (empty, or a comma, "
            "quote or line break in it)"
        )


def write_access_trace(trace: AccessTrace, path: str | Path) -> None:
    for name in trace.apps:
        _check_name("app", name)
    for name in trace.objects:
        _check_name("object", name)
    apps, objects = trace.apps, trace.objects
    lines = [",".join(COLUMNS)]
    lines += [
        f"{t!r},{apps[a]},{objects[o]},{s}"
        for t, a, o, s in zip(
            trace.time_s.tolist(),
            trace.app.tolist(),
            trace.obj.tolist(),
            trace.size_bytes.tolist(),
            strict=True,
        )
    ]
    try:
        Path(path).write_text("\n".join(lines) + "\n")
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None


def blob_size_quantile(u: NDArray[np.float64]) -> NDArray[np.float64]:
    """Object size (bytes) at quantile ``u`` in [0, 1): log-normal through the median and p90 below p90,
    log-normal again from p90 to p99, a Pareto tail from p99 that reaches the maximum at the one-in-a-
    million object, capped there."""
    (_, s50), (q90, s90), (q99, s99) = BLOB_SIZE_QUANTILES
    z = ndtri(np.clip(u, 1e-12, 1 - 1e-12))
    z90, z99 = float(ndtri(q90)), float(ndtri(q99))
    body_sigma = math.log(s90 / s50) / z90
    upper_slope = math.log(s99 / s90) / (z99 - z90)
    tail_exponent = math.log(BLOB_SIZE_MAX / s99) / math.log((1 - q99) / _MAX_TAIL_SHARE)
    body = np.exp(math.log(s50) + body_sigma * z)
    upper = np.exp(math.log(s90) + upper_slope * (z - z90))
    tail = s99 * (np.maximum(1 - u, 1e-300) / (1 - q99)) ** -tail_exponent
    sizes = np.where(u <= q90, body, np.where(u <= q99, upper, tail))
    return np.clip(sizes, 1.0, float(BLOB_SIZE_MAX))


def sample_blob_sizes(rng: np.random.Generator, n: int) -> NDArray[np.int64]:
    return np.rint(blob_size_quantile(rng.random(n))).astype(np.int64)


def synthetic_access_trace(
    *,
    apps: int = 100,
    accesses: int = 100_000,
    seed: int = 0,
    no_reuse_share: float = 0.5,
    zipf_s: float = 1.0,
    objects_per_access: float = 0.2,
    duration_s: float = 86_400.0,
    app_skew: float = 1.5,
) -> AccessTrace:
    """A seeded trace of ``accesses`` reads by ``apps`` applications over ``duration_s``.

    Apps' volumes are log-normal (sigma ``app_skew``), each app reads at least twice.
    ``round(no_reuse_share x apps)`` apps read a new object every time; every other app has a catalogue
    of ``objects_per_access`` x its reads objects (fewer than its reads, so it reuses) drawn by Zipf
    popularity (exponent ``zipf_s``). Each object's size is drawn once from :func:`blob_size_quantile`.
    Arrivals are uniform over the duration (a Poisson process given the count).
    """
    if apps < 1 or accesses < 2 * apps:
        raise ConfigError(
            f"a synthetic blob trace needs apps >= 1 and accesses >= 2 x apps, got {apps}, {accesses}"
        )
    if not 0 <= no_reuse_share <= 1 or zipf_s < 0 or not 0 < objects_per_access <= 1 or duration_s <= 0:
        raise ConfigError(
            "synthetic blob trace: no_reuse_share in [0, 1], zipf_s >= 0, objects_per_access in (0, 1] and "
            "duration_s > 0"
        )
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, app_skew, apps)
    counts = 2 + rng.multinomial(accesses - 2 * apps, weights / weights.sum())
    no_reuse = np.zeros(apps, dtype=bool)
    no_reuse[rng.choice(apps, size=round(no_reuse_share * apps), replace=False)] = True
    app_codes: list[NDArray[np.int64]] = []
    obj_codes: list[NDArray[np.int64]] = []
    next_object = 0
    for app in range(apps):
        n = int(counts[app])
        if no_reuse[app]:
            drawn = np.arange(n, dtype=np.int64)
            catalogue = n
        else:
            catalogue = min(n - 1, max(1, math.ceil(n * objects_per_access)))
            popularity = np.arange(1, catalogue + 1, dtype=np.float64) ** -zipf_s
            drawn = rng.choice(catalogue, size=n, p=popularity / popularity.sum())
        app_codes.append(np.full(n, app, dtype=np.int64))
        obj_codes.append(drawn + next_object)
        next_object += catalogue
    order = rng.permutation(accesses)
    app_column = np.concatenate(app_codes)[order]
    obj_column = np.concatenate(obj_codes)[order]
    object_sizes = sample_blob_sizes(rng, next_object)
    return AccessTrace(
        time_s=np.sort(rng.uniform(0.0, duration_s, accesses)),
        app=app_column.astype(np.int32),
        obj=obj_column,
        size_bytes=object_sizes[obj_column],
        apps=tuple(f"app{index}" for index in range(apps)),
        objects=tuple(f"o{index}" for index in range(next_object)),
        source=f"synthetic:apps={apps},accesses={accesses},seed={seed}",
    )


_SYNTHETIC_KEYS = {
    "apps": int,
    "accesses": int,
    "seed": int,
    "no_reuse_share": float,
    "zipf_s": float,
    "objects_per_access": float,
    "duration_s": float,
}


def load_access_trace(spec: str) -> AccessTrace:
    """``synthetic[:apps=N,accesses=M,seed=S,...]`` (keys of :func:`synthetic_access_trace`) or a path."""
    text = spec.strip()
    if text.partition(":")[0].strip() != "synthetic":
        return read_access_trace(text)
    parts = split_spec(text, what="--trace")
    if parts.positional is not None:
        raise ConfigError(f"--trace {text!r}: {parts.positional!r} is not key=value")
    options: dict[str, float] = {}
    for key, value in parts.params.items():
        kind = _SYNTHETIC_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"--trace {text!r}: unknown key {key!r} (known: {', '.join(_SYNTHETIC_KEYS)})")
        try:
            options[key] = kind(value)
        except ValueError:
            raise ConfigError(
                f"--trace {text!r}: {key}={value!r} is not {'a whole number' if kind is int else 'a number'}"
            ) from None
    return synthetic_access_trace(**options)  # type: ignore[arg-type]
