"""Keep-alive simulation speed: strato's fast engine against the plain event-driven reference.

    make bench            # or: .venv/bin/python benchmarks/run.py [--full-scale-apps N]

Prints one table. Both engines run in the same process on the same expanded invocations, so the ratio
is meaningful even though absolute times vary between machines. The real-trace cases need
the named set azure-functions-2019:sampled/1350 in the data folder (``strato data list``; skipped with a
note when it is absent).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from strato.errors import ConfigError
from strato.faas.policies import PAPER_POLICY_SET, parse_policy
from strato.faas.simulator import EventSimulator, simulate_fast
from strato.traces.faas.idle import IdleProfile
from strato.traces.faas.loader import load_workload
from strato.traces.faas.model import Workload
from strato.traces.faas.synth import SynthConfig, generate

SAMPLED = "azure-functions-2019:sampled/1350"


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def fast_run(workload: Workload, specs: tuple[str, ...]) -> tuple[int, float]:
    """Whole job as a user runs it: expand, profile, every policy. Returns (invocations, seconds)."""

    def job() -> int:
        invocations = workload.expand(seed=0)
        profile = IdleProfile.from_invocations(invocations)
        for spec in specs:
            simulate_fast(profile, parse_policy(spec), workload.app_memory_mb)
        return len(invocations)

    n, seconds = timed(job)
    return int(n), seconds


def reference_rate(workload: Workload, spec: str) -> tuple[float, float]:
    """Invocations per second of the event engine and of the fast engine for one policy."""
    invocations = workload.expand(seed=0)
    engine = EventSimulator(invocations, workload.app_memory_mb)
    _, reference_s = timed(lambda: engine.run(parse_policy(spec)))
    _, fast_s = timed(
        lambda: simulate_fast(
            IdleProfile.from_invocations(invocations), parse_policy(spec), workload.app_memory_mb
        )
    )
    return len(invocations) / reference_s, len(invocations) / fast_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full-scale-apps",
        type=int,
        default=15_200,
        help="apps in the synthetic full-scale day (default gives ~46k functions)",
    )
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    try:
        workload: Workload | None = load_workload(SAMPLED)
    except ConfigError as missing:
        workload = None
        print(f"note: {missing}; real-trace cases skipped")
    if workload is not None:
        n, seconds = fast_run(workload, PAPER_POLICY_SET)
        rows.append(
            ("paper policy set (13) on sampled/1350, 1 day", f"{n:,}", f"{seconds:.2f} s", "target < 10 s")
        )
        for spec in ("fixed:10m", "hybrid"):
            reference, fast = reference_rate(workload, spec)
            rows.append(
                (
                    f"{spec} on sampled/1350: fast vs reference engine",
                    f"{n:,}",
                    f"{fast:,.0f} vs {reference:,.0f} inv/s",
                    f"{fast / reference:.0f}x",
                )
            )

    config = SynthConfig(n_apps=args.full_scale_apps, seed=0)
    synthetic, gen_s = timed(lambda: generate(config))
    n, seconds = fast_run(synthetic, ("hybrid",))
    rows.append((f"generate synthetic day ({synthetic.n_functions:,} functions)", "-", f"{gen_s:.2f} s", ""))
    rows.append(
        (
            "hybrid:4h on that synthetic full-scale day",
            f"{n:,}",
            f"{seconds:.2f} s",
            f"{n / seconds:,.0f} inv/s; target < 60 s",
        )
    )

    widths = [max(len(r[i]) for r in [*rows, ("case", "invocations", "time", "note")]) for i in range(4)]
    header = ("case", "invocations", "time", "note")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
