"""Blob access traces (CSV, synthetic) and the cache simulator over them, library and CLI."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from strato.cli.faas_cache import app as cache_app
from strato.errors import ConfigError, TraceFormatError
from strato.faas.cache import simulate_cache
from strato.traces.blob import (
    BLOB_SIZE_MAX,
    AccessTrace,
    read_access_trace,
    sample_blob_sizes,
    synthetic_access_trace,
    write_access_trace,
)


def _trace(rows: list[tuple[float, str, str, int]]) -> AccessTrace:
    apps = tuple(dict.fromkeys(row[1] for row in rows))
    objects = tuple(dict.fromkeys(row[2] for row in rows))
    return AccessTrace(
        time_s=np.array([row[0] for row in rows], dtype=np.float64),
        app=np.array([apps.index(row[1]) for row in rows], dtype=np.int32),
        obj=np.array([objects.index(row[2]) for row in rows], dtype=np.int64),
        size_bytes=np.array([row[3] for row in rows], dtype=np.int64),
        apps=apps,
        objects=objects,
    )


def _reference_lru_hits(trace: AccessTrace, capacity: int) -> int:
    """An independent LRU over bytes, one per app, to check the simulator against."""
    caches: dict[int, OrderedDict[int, int]] = {}
    used: dict[int, int] = {}
    hits = 0
    for app, obj, size in zip(trace.app.tolist(), trace.obj.tolist(), trace.size_bytes.tolist(), strict=True):
        cache = caches.setdefault(app, OrderedDict())
        if cache.get(obj) == size:
            hits += 1
            cache.move_to_end(obj)
            continue
        used[app] = used.get(app, 0) - cache.pop(obj, 0)
        if size > capacity:
            continue
        while used[app] + size > capacity:
            used[app] -= cache.popitem(last=False)[1]
        cache[obj] = size
        used[app] += size
    return hits


def test_simulator_counts_a_hand_worked_lru_trace() -> None:
    rows = [
        (0.0, "A", "a", 40),
        (1.0, "A", "b", 40),
        (2.0, "A", "a", 40),  # hit
        (3.0, "A", "c", 40),  # evicts b
        (4.0, "A", "b", 40),  # miss, evicts a
        (5.0, "A", "c", 40),  # hit
        (6.0, "A", "huge", 500),  # larger than the cache: rejected
        (7.0, "B", "a", 10),  # another app's "a" is another object
        (8.0, "B", "a", 10),  # hit
    ]
    result = simulate_cache(_trace(rows), cache_bytes_per_app=100, policy="lru")
    by_app = {row.app: row for row in result.apps}
    assert (by_app["A"].accesses, by_app["A"].hits, by_app["A"].rejected) == (7, 2, 1)
    assert (by_app["A"].bytes_requested, by_app["A"].bytes_saved, by_app["A"].evictions) == (740, 80, 2)
    assert (by_app["B"].hits, by_app["B"].bytes_saved) == (1, 10)
    assert (result.total.accesses, result.total.hits) == (9, 3)
    assert result.total.hit_ratio == pytest.approx(3 / 9)
    assert [row.app for row in result.apps] == ["A", "B"]


def test_simulator_agrees_with_an_independent_lru() -> None:
    trace = synthetic_access_trace(apps=20, accesses=20_000, seed=3)
    for capacity in (64 * 1024, 4 * 2**20):
        result = simulate_cache(trace, cache_bytes_per_app=capacity, policy="lru")
        assert result.total.hits == _reference_lru_hits(trace, capacity)


def test_bigger_caches_hit_more_and_no_reuse_apps_never_hit() -> None:
    trace = synthetic_access_trace(apps=30, accesses=30_000, seed=1)
    small = simulate_cache(trace, cache_bytes_per_app=2**20)
    large = simulate_cache(trace, cache_bytes_per_app=256 * 2**20)
    assert 0 < small.total.hits < large.total.hits
    no_reuse = [row for row in large.apps if row.objects == row.accesses]
    assert len(no_reuse) == 15 and all(row.hits == 0 for row in no_reuse)


def test_keepalive_unload_drops_the_cache_and_prewarm_refills_it() -> None:
    rows: list[tuple[float, str, str, int]] = []
    for burst in range(5):  # five bursts an hour apart, each reading the same ten objects twice
        start = burst * 3600.0
        rows += [(start + i, "A", f"k{i % 10}", 1_000) for i in range(20)]
    trace = _trace(rows)
    kept = simulate_cache(trace, cache_bytes_per_app=100_000)
    unloaded = simulate_cache(trace, cache_bytes_per_app=100_000, keepalive_s=600)
    warmed = simulate_cache(trace, cache_bytes_per_app=100_000, keepalive_s=600, prewarm=True)
    assert kept.total.hits == 100 - 10
    assert unloaded.total.unloads == 4 and unloaded.total.hits == 5 * 10
    # After the first burst every object is pre-warmed: the four later bursts miss nothing.
    assert warmed.total.hits == 50 + 4 * 10 and warmed.total.prewarm_hits == 40
    assert warmed.total.prewarm_bytes == 4 * 10 * 1_000
    with pytest.raises(ConfigError, match="keep-alive"):
        simulate_cache(trace, cache_bytes_per_app=100_000, prewarm=True)


def test_simulator_spreads_an_app_over_shards_and_other_policies_run() -> None:
    trace = synthetic_access_trace(apps=10, accesses=10_000, seed=2)
    one = simulate_cache(trace, cache_bytes_per_app=8 * 2**20)
    four = simulate_cache(trace, cache_bytes_per_app=8 * 2**20, shards=4)
    gdsf = simulate_cache(trace, cache_bytes_per_app=8 * 2**20, policy="GDSF")
    assert four.shards == 4 and 0 < four.total.hits <= one.total.hits * 1.1
    assert gdsf.policy == "gdsf" and gdsf.total.hits > 0
    with pytest.raises(ConfigError, match="unknown eviction policy"):
        simulate_cache(trace, cache_bytes_per_app=2**20, policy="clock")


def test_blob_sizes_follow_the_published_quantiles() -> None:
    sizes = sample_blob_sizes(np.random.default_rng(7), 400_000)
    p50, p90, p99 = np.quantile(sizes, [0.5, 0.9, 0.99])
    # Tolerances: sampling error at 400k draws is well under these (p99 has 4,000 draws above it).
    assert p50 == pytest.approx(5_200, rel=0.03)
    assert p90 == pytest.approx(26_000, rel=0.05)
    assert p99 == pytest.approx(1_500_000, rel=0.10)
    assert sizes.min() >= 1 and sizes.max() <= BLOB_SIZE_MAX


def test_synthetic_trace_half_the_apps_never_reuse_and_it_is_seeded() -> None:
    trace = synthetic_access_trace(apps=200, accesses=50_000, seed=11)
    assert len(trace) == 50_000 and bool(np.all(np.diff(trace.time_s) >= 0))
    reuse = 0
    for app in range(len(trace.apps)):
        objects = trace.obj[trace.app == app]
        assert objects.size >= 2
        reuse += int(np.unique(objects).size < objects.size)
    assert reuse == 100
    again = synthetic_access_trace(apps=200, accesses=50_000, seed=11)
    assert np.array_equal(again.obj, trace.obj) and np.array_equal(again.size_bytes, trace.size_bytes)
    other = synthetic_access_trace(apps=200, accesses=50_000, seed=12)
    assert not np.array_equal(other.size_bytes, trace.size_bytes)
    with pytest.raises(ConfigError):
        synthetic_access_trace(apps=10, accesses=5)


def test_csv_round_trip(tmp_path: Path) -> None:
    trace = synthetic_access_trace(apps=5, accesses=500, seed=4)
    path = tmp_path / "trace.csv"
    write_access_trace(trace, path)
    back = read_access_trace(path)
    assert np.array_equal(back.time_s, trace.time_s)
    assert np.array_equal(back.size_bytes, trace.size_bytes)
    assert [back.apps[a] for a in back.app] == [trace.apps[a] for a in trace.app]
    assert [back.objects[o] for o in back.obj] == [trace.objects[o] for o in trace.obj]
    assert (
        simulate_cache(back, cache_bytes_per_app=2**20).total
        == simulate_cache(trace, cache_bytes_per_app=2**20).total
    )


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        ("time_s,app,object\n0,a,o\n", "row 1, column size_bytes", "missing required column"),
        ("time_s,app,object,size_bytes\n0,a,o,10\n1,a,o,-5\n", "row 3, column size_bytes", "negative"),
        ("time_s,app,object,size_bytes\n0,a,o,10\n5,a,o,10\n2,a,o,10\n", "row 4, column time_s", "sort"),
        ("time_s,app,object,size_bytes\n0,a,o,ten\n", "row 2, column size_bytes", "not a number"),
        ("time_s,app,object,size_bytes\n0,a,o,10\n1,a,o\n", "row 3", "truncated row"),
        ("time_s,app,object,size_bytes\n0,a,o,1.5\n", "row 2, column size_bytes", "whole number"),
        ("time_s,app,object,size_bytes\n0,,o,1\n", "row 2, column app", "empty"),
    ],
)
def test_malformed_csv_errors_name_file_line_and_column(
    tmp_path: Path, body: str, where: str, what: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceFormatError) as caught:
        read_access_trace(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, {where}") and what in message and "\n" not in message


def test_writer_refuses_names_the_csv_cannot_hold(tmp_path: Path) -> None:
    trace = _trace([(0.0, "a,b", "o", 1)])
    with pytest.raises(ConfigError, match="comma"):
        write_access_trace(trace, tmp_path / "x.csv")


def test_cli_trace_then_simulate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "blobs.csv"
    written = runner.invoke(cache_app, ["trace", "--out", str(out), "--apps", "8", "--accesses", "4000"])
    assert written.exit_code == 0, written.output
    assert read_access_trace(out).apps and "4,000 reads by 8 apps" in written.output
    table = runner.invoke(cache_app, ["simulate", "--trace", str(out), "--size", "4MiB", "--top", "3"])
    assert table.exit_code == 0, table.output
    assert "lru cache of 4.0 MiB per app" in table.output and "total" in table.output
    assert "5 more apps" in table.output
    raw = runner.invoke(
        cache_app,
        ["simulate", "--trace", str(out), "--size", "4MiB", "--keepalive", "10m", "--prewarm", "--json"],
    )
    assert raw.exit_code == 0, raw.output
    data = json.loads(raw.output)
    assert data["total"]["accesses"] == 4000 and len(data["apps"]) == 8 and data["keepalive_s"] == 600


def test_cli_synthetic_spec_and_friendly_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cache_app,
        ["simulate", "--trace", "synthetic:apps=5,accesses=1000,seed=2", "--size", "1MiB", "--json"],
    )
    assert result.exit_code == 0 and json.loads(result.output)["total"]["accesses"] == 1000
    cases = [
        (["simulate", "--size", "64"], "needs a unit"),
        (["simulate", "--trace", "synthetic:apps=x"], "apps='x' is not a whole number"),
        (["simulate", "--trace", "synthetic:colour=red"], "unknown key 'colour'"),
        (["simulate", "--prewarm"], "--keepalive"),
        (["simulate", "--policy", "mru"], "unknown eviction policy"),
        (["simulate", "--trace", str(tmp_path / "missing.csv")], "missing file"),
    ]
    for args, message in cases:
        failed = runner.invoke(cache_app, args)
        assert failed.exit_code == 2, (args, failed.output)
        assert message in failed.output and "Traceback" not in failed.output
