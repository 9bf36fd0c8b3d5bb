"""``strato faas bench-cache``: its judging on known numbers, its options, and a short real run of its
machinery (a real store behind the shaping proxy, a real server, tiny objects)."""

from __future__ import annotations

import math

import pytest

from strato.errors import ConfigError
from strato.faas.live.cachebench import (
    AppResult,
    CacheBenchOptions,
    Latency,
    Workload,
    judge,
    reductions,
    run_cache_bench,
)


def _result(app: str, mode: str, warm_s: float, reload_s: float, prewarm: float | None = None) -> AppResult:
    return AppResult(
        app=app,
        mode=mode,
        warm=Latency.of([warm_s] * 3),
        first_cold=Latency.of([reload_s]),
        after_reload=Latency.of([reload_s] * 3),
        warm_hit_ratio=None if mode == "off" else 1.0,
        prewarm_share=prewarm,
        reload_hit_ratio=None,
        bytes_per_invocation=1.0,
    )


def test_reductions_and_targets_follow_the_numbers() -> None:
    results = [
        _result("model", "off", 1.0, 2.0),
        _result("model", "lru", 0.1, 2.0, 0.0),
        _result("model", "faast", 0.05, 0.5, 0.9),
        _result("small", "off", 0.1, 0.3),
        _result("small", "lru", 0.08, 0.3, 0.0),
        _result("small", "faast", 0.08, 0.2, 0.5),
        _result("noreuse", "off", 0.1, 0.2),
        _result("noreuse", "faast", 0.103, 0.2),
    ]
    cuts = {(c.app, c.mode): c for c in reductions(results)}
    assert cuts["model", "faast"].warm == pytest.approx(0.95)
    assert cuts["model", "faast"].after_reload == pytest.approx(0.75)
    assert cuts["small", "lru"].warm == pytest.approx(0.2)
    average = next(t for t in judge(results, list(cuts.values())) if "average" in t.name)
    assert average.value == pytest.approx((0.95 + 0.2) / 2) and average.met is True
    best = next(t for t in judge(results, list(cuts.values())) if "best" in t.name)
    assert best.value == pytest.approx(0.95) and best.met is True
    noreuse = next(t for t in judge(results, list(cuts.values())) if "noreuse" in t.name)
    assert noreuse.value == pytest.approx(0.03) and noreuse.met is False
    reload = next(t for t in judge(results, list(cuts.values())) if "after a reload" in t.name)
    assert reload.met is True and reload.value == pytest.approx(0.7)


def test_targets_not_met_are_said_so() -> None:
    results = [_result("table", "off", 1.0, 1.0), _result("table", "faast", 0.6, 1.1, 0.0)]
    results.append(_result("table", "lru", 0.6, 1.0, 0.0))
    targets = judge(results, reductions(results))
    assert [t.met for t in targets if "reduction" in t.name] == [False, False]
    assert next(t for t in targets if "noreuse" in t.name).met is None  # not measured
    assert next(t for t in targets if "after a reload" in t.name).met is False


def test_latency_summary() -> None:
    latency = Latency.of([0.3, 0.1, 0.2])
    assert latency.count == 3
    assert latency.mean_s == pytest.approx(0.2) and latency.p50_s == pytest.approx(0.2)
    assert math.isnan(Latency.of([]).mean_s)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modes": ("off", "fifo")}, "unknown cache mode 'fifo'"),
        ({"apps": ("video",)}, "unknown app 'video'"),
        ({"warm": 0}, "--warm"),
        ({"latency": "ten"}, "duration"),
        ({"cache_size": "lots"}, "memory size"),
        ({"bandwidth": "fast"}, "--bandwidth"),
        ({"consistency": "eventual"}, "--consistency"),
        ({"ranged_instances": (0,)}, "--ranged-instances"),
        ({"working_set": (-1.0,)}, "--working-set"),
    ],
)
def test_bad_options_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CacheBenchOptions(**overrides)  # type: ignore[arg-type]


@pytest.mark.system
@pytest.mark.slow
def test_a_short_real_run_measures_every_mode_it_was_asked() -> None:
    pytest.importorskip("strato.storage")
    pytest.importorskip("pyarrow")
    workload = Workload(
        seed=1,
        model_bytes=256 * 1024,
        model_features=64,
        images=((400, 300),),
        table_bytes=64 * 1024,
        small_objects=20,
        noreuse_objects=16,
        noreuse_bytes=2048,
    )
    options = CacheBenchOptions(
        modes=("faast",),
        apps=("model", "small", "noreuse"),
        warm=3,
        cycles=1,
        first=2,
        latency="5ms",
        jitter="0ms",
        cache_size="4MiB",
        workload=workload,
    )
    lines: list[str] = []
    report = run_cache_bench(options, progress=lines.append)
    assert [(r.app, r.mode) for r in report.results] == [
        ("model", "faast"),
        ("small", "faast"),
        ("noreuse", "faast"),
    ]
    by_app = {r.app: r for r in report.results}
    for result in report.results:
        assert result.warm.count == 3 and result.after_reload.count == 2 and result.first_cold.count == 1
        # Every invocation crossed the proxy's 5 ms each way at least once (a GET or a validation).
        assert result.warm.p50_s >= 0.010
    # The model is read on every invocation: after the first one it is a hit each time.
    assert by_app["model"].warm_hit_ratio == 1.0
    # Nothing the noreuse app reads is ever read again.
    assert by_app["noreuse"].warm_hit_ratio == 0.0
    # After the reload, faast had pre-warmed the model from the app's history.
    assert by_app["model"].prewarm_share is not None and by_app["model"].prewarm_share > 0
    # No off run to compare with: no reduction is claimed.
    assert all(r.warm is None and r.after_reload is None for r in report.reductions)
    assert report.seeded_bytes["noreuse"] == 16 * 2048
    assert any("cache faast" in line for line in lines)
