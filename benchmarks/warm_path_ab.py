"""The live platform's warm path, this checkout against an earlier revision, interleaved on one machine.

    python benchmarks/warm_path_ab.py --base 1a788f0 [--rounds 3] [--duration 8]

Checks the base revision out into a temporary git worktree, then alternates base and this checkout:
each round starts a lean server with an echo function and measures, with the platform's own load
generator in its own process, one connection sending back to back (latency without queueing) and 16
connections (throughput; with `wrk -t1 -c16` when wrk is installed, which costs a third of the Python
generator's CPU), plus the CPU per request of the gateway, of the rest of the server's process tree (the
instances) and of the whole machine. Prints the median of each measure and the ratio after/before. The
machine's other load shows up as spread between rounds; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path
from strato.faas.live.loadgen import LoadResult
from strato.faas.live.serverproc import ServerProcess

duration = sys.argv[1]
tick = os.sysconf("SC_CLK_TCK")

def process_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def machine_cpu():
    values = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return (sum(values) - values[3] - values[4]) / tick

def tree_cpu(root):
    # CPU of root's descendants alive now (the instances, the fork-server), by pid.
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                pass
    cpu = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, root):
            ancestor = parents.get(ancestor)
        if ancestor == root:
            try:
                cpu[pid] = process_cpu(pid)
            except OSError:
                pass
    return cpu

def many_connections(url):
    # 16 connections, closed loop: (completed requests, rps).
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{round(float(duration))}s", url],
                             capture_output=True, text=True, check=True).stdout
        done = int(re.search(r"(\d+) requests in", out).group(1))
        return done, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    result = load("--connections", "16", "--duration", duration)
    return result.completed, result.summary()["achieved_rps"]

server = ServerProcess(Path(tempfile.mkdtemp()), args=["--backend", "lean"])
server.start(120)
try:
    server.client().deploy("echo", files={"handler.py": "def handle(event):\n    return event.body\n"},
                           maxConcurrency=64)
    url = server.url + "/function/echo"

    def load(*args):
        command = [sys.executable, "-m", "strato.faas.live.loadgen", "--url", url, "--body-bytes", "64",
                   "--json", "--mode", "closed", *args]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return LoadResult.from_json(json.loads(output))

    load("--connections", "16", "--duration", "2")
    gateway, machine = process_cpu(server.process.pid), machine_cpu()
    one = load("--connections", "1", "--duration", duration)
    gateway, machine = process_cpu(server.process.pid) - gateway, machine_cpu() - machine
    pid = server.process.pid
    gateway_16, tree_16, machine_16 = process_cpu(pid), tree_cpu(pid), machine_cpu()
    completed, rps = many_connections(url)
    gateway_16 = process_cpu(server.process.pid) - gateway_16
    tree_after = tree_cpu(server.process.pid)
    instances_16 = sum(cpu - tree_16.get(pid, 0.0) for pid, cpu in tree_after.items())
    machine_16 = machine_cpu() - machine_16
    print(json.dumps({
        "p50_ms": one.summary()["p50"] * 1e3,
        "p99_ms": one.summary()["p99"] * 1e3,
        "sequential_rps": one.summary()["achieved_rps"],
        "gateway_cpu_us": gateway / one.completed * 1e6,
        "machine_cpu_us": machine / one.completed * 1e6,
        "throughput_rps": rps,
        "gateway_cpu_16_us": gateway_16 / completed * 1e6,
        "instances_cpu_16_us": instances_16 / completed * 1e6,
        "machine_cpu_16_us": machine_16 / completed * 1e6,
    }))
finally:
    server.stop()
"""

MEASURES = (
    ("p50_ms", "one connection: p50 latency, ms"),
    ("p99_ms", "one connection: p99 latency, ms"),
    ("gateway_cpu_us", "gateway CPU per request, us"),
    ("machine_cpu_us", "machine CPU per request, us"),
    ("sequential_rps", "one connection: requests/s"),
    ("throughput_rps", "16 connections: requests/s"),
    ("gateway_cpu_16_us", "16 connections: gateway CPU/request, us"),
    ("instances_cpu_16_us", "16 connections: instances CPU/req., us"),
    ("machine_cpu_16_us", "16 connections: machine CPU/req., us"),
)


def measure(source: Path, duration: float) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(source))
    finished = subprocess.run(
        [sys.executable, "-c", RUNNER, f"{duration:g}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"a run against {source} failed:\n{finished.stderr[-3000:]}")
    result: dict[str, float] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each load run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strato-ab-") as scratch:
        worktree = Path(scratch) / "base"
        subprocess.run(
            ["git", "-C", str(CHECKOUT), "worktree", "add", "--detach", str(worktree), args.base],
            check=True,
            capture_output=True,
        )
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for round_number in range(1, args.rounds + 1):
                for label, source in (("before", worktree / "src"), ("after", CHECKOUT / "src")):
                    print(f"round {round_number}: {label}", file=sys.stderr, flush=True)
                    runs[label].append(measure(source, args.duration))
        finally:
            subprocess.run(
                ["git", "-C", str(CHECKOUT), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )
    print(
        f"{'measure':40} {'before':>10} {'after':>10} {'after/before':>13}   medians of {args.rounds} rounds"
    )
    for key, title in MEASURES:
        before = statistics.median(run[key] for run in runs["before"])
        after = statistics.median(run[key] for run in runs["after"])
        print(f"{title:40} {before:10.3f} {after:10.3f} {after / before:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
