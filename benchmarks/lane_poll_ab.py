"""The lean gateway waiting for an instance's answer by polling (`--lane-poll`) or in epoll, side by side.

    python benchmarks/lane_poll_ab.py [--rounds 5] [--poll 50us] [--duration 2]

Starts two lean servers (`--lane-poll POLL` and `--lane-poll 0`) with the bench's echo function and a
plain Python echo server, then in each round drives each with `wrk -t1 -c1` (the low-load floor) and
`wrk -t1 -c16` (throughput), interleaved. Prints one row a round: p50 at one connection and requests per
second at 16. Needs wrk (`scripts/bench-deps.sh`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from strato.faas.live.bench import ECHO_HANDLER, FUNCTION
from strato.faas.live.loadgen import Target, run_wrk
from strato.faas.live.plain_echo import plain_echo_server
from strato.faas.live.serverproc import ServerProcess, running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poll", default="50us", help="--lane-poll of the polling server")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of each wrk run")
    args = parser.parse_args()
    body = b"x" * 64
    with tempfile.TemporaryDirectory(prefix="strato-poll-") as scratch, contextlib.ExitStack() as stack:
        targets: dict[str, Target] = {}
        for poll in (args.poll, "0"):
            server = stack.enter_context(
                running_server(
                    ServerProcess.for_backend(
                        Path(scratch) / poll.replace(".", "_"),
                        backend="lean",
                        spawn="fork",
                        policy="never-unload",
                        sandbox=True,
                        extra=["--lane-poll", poll],
                    ),
                    timeout_s=60,
                )
            )
            with contextlib.closing(server.client()) as client:
                client.deploy(FUNCTION, files={"handler.py": ECHO_HANDLER}, concurrency=1, maxConcurrency=256)
            target = Target.from_url(f"{server.url}/function/{FUNCTION}", body)
            run_wrk(target, 16, 2)  # warm-up: the instances for 16 connections start here
            targets[f"poll {poll}"] = target
        echo_url, _ = stack.enter_context(plain_echo_server())
        echo = Target.from_url(echo_url, body)
        names = list(targets)
        print(
            f"{'round':>5}  "
            + "  ".join(f"{name + ': c1 p50':>18} {'c16 rps':>9}" for name in names)
            + f"  {'plain echo c1 p50':>18}"
        )
        for round_number in range(1, args.rounds + 1):
            cells = []
            for name in names:
                one = run_wrk(targets[name], 1, args.duration)
                many = run_wrk(targets[name], 16, args.duration)
                cells.append(f"{one.p50_s * 1e6:15.0f} us {many.rps:9,.0f}")
            plain = run_wrk(echo, 1, args.duration)
            print(f"{round_number:>5}  " + "  ".join(cells) + f"  {plain.p50_s * 1e6:15.0f} us", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
