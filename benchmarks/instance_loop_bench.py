"""The lean instance loop alone: CPU per warm invocation and round trip, this checkout against a revision.

    .venv/bin/python benchmarks/instance_loop_bench.py --base HEAD~1 [--rounds 5] [--invocations 20000]
    .venv/bin/python benchmarks/instance_loop_bench.py --base HEAD~1 --profile /tmp/loop-profile

No gateway, no sandbox: each variant's ``runtime.serve_lean`` runs in a child process on one end of a
socketpair with the bench's echo handler (``bench.ECHO_HANDLER``) loaded by ``LoadedFunction`` under a
CPU-time limit (what a deployed function has), and this process sends it invocation frames one at a time,
reading each result before the next, as the gateway does for an instance of concurrency 1 (waiting in
epoll, as the gateway's event loop does). The base variant is the revision's ``runtime.py`` (from ``git
show``) loaded as a module beside this checkout's package, so only the instance loop differs. Rounds
alternate the variants' order, each round with fresh children; the table is the median over rounds of
the child's CPU per invocation (on-CPU time from /proc/PID/schedstat; the user and system split from
/proc/PID/stat, sampled at the clock tick), of the round trip's p50 and p99, and the ratio current/base.
``--profile`` also records each variant with py-spy (the frames holding the GIL, native ones included)
and perf (kernel and interpreter) and prints their top items.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
RUNTIME_PATH = "src/strato/faas/live/runtime.py"
CPU_TIMEOUT_S = 30.0
"""The bench's deployed echo has timeout 30s, which an instance enforces as its CPU-time budget."""

CHILD = r"""
import importlib.util, signal, socket, sys
from pathlib import Path
runtime_path, fd, code_dir, cpu_timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
spec = importlib.util.spec_from_file_location("bench_runtime", runtime_path)
runtime = importlib.util.module_from_spec(spec)
sys.modules["bench_runtime"] = runtime
spec.loader.exec_module(runtime)
function = runtime.LoadedFunction(runtime.InstanceSpec(
    instance_id="bench-1", function="echo", handler="handler:handle", code_dir=code_dir,
    sandbox=False, cpu_timeout_s=cpu_timeout))
# What bootstrap() installs before serving.
signal.signal(signal.SIGXCPU, runtime._on_cpu_limit)
runtime.watch_children()
runtime.serve_lean(socket.socket(fileno=fd), function)
"""

HEADER = struct.Struct("!IBII")
INVOKE = 1
RESULT = 11


@dataclass(frozen=True)
class Sample:
    """One variant's block of invocations in one round."""

    cpu_us: float
    user_us: float
    system_us: float
    p50_us: float
    p99_us: float


def request_frame(request_id: int, body: bytes) -> bytes:
    # What the gateway renders for a small request (dispatch.request_head): its lower-cased header lines
    # without framing headers, then the body's length.
    head = (
        b"POST / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: strato-loadgen\r\n"
        b"accept: */*\r\ncontent-type: application/octet-stream\r\ncontent-length: %d" % len(body)
    )
    return HEADER.pack(request_id, INVOKE, len(head), len(body)) + head + body


def read_result(sock: socket.socket, selector: selectors.BaseSelector, buffer: bytearray) -> bytes:
    # Waits in epoll like the gateway's event loop: a blocking recv() would have the instance's kernel side
    # wake this process when it consumes a frame (the socket's write-space wake-up), which epoll filters.
    view = memoryview(buffer)
    got = 0
    total = HEADER.size
    while got < total:
        selector.select()
        try:
            count = sock.recv_into(view[got:])
        except BlockingIOError:
            continue
        if not count:
            raise EOFError("the instance closed its socket")
        got += count
        if total == HEADER.size and got >= HEADER.size:
            _, kind, meta_size, body_size = HEADER.unpack_from(buffer)
            total = HEADER.size + meta_size + body_size
            if kind != RESULT or total > len(buffer) or got > total:
                raise RuntimeError(f"unexpected frame kind {kind} of {total} bytes ({got} read)")
    _, _, meta_size, _ = HEADER.unpack_from(buffer)
    return bytes(buffer[HEADER.size + meta_size : total])


def on_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def user_system_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


class Instance:
    """A child process serving one variant's lean loop on a socketpair."""

    def __init__(self, runtime_path: Path, code_dir: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, PYTHONPATH=str(CHECKOUT / "src"))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(runtime_path),
                str(theirs.fileno()),
                str(code_dir),
                str(CPU_TIMEOUT_S),
            ],
            pass_fds=(theirs.fileno(),),
            env=env,
            cwd=tempfile.gettempdir(),
        )
        theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.selector = selectors.EpollSelector()
        self.selector.register(ours, selectors.EVENT_READ)
        self.buffer = bytearray(1 << 20)
        self.next_id = 1

    def drive(self, count: int, body: bytes) -> list[int]:
        """Send ``count`` invocations one at a time; their round trips in ns."""
        times = []
        for _ in range(count):
            frame = request_frame(self.next_id, body)
            self.next_id += 1
            start = time.perf_counter_ns()
            self.sock.sendall(frame)
            answer = read_result(self.sock, self.selector, self.buffer)
            times.append(time.perf_counter_ns() - start)
            if answer != body:
                raise RuntimeError(f"the echo answered {answer[:40]!r}")
        return times

    def measure(self, count: int, body: bytes) -> Sample:
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        pid = self.process.pid
        cpu, (user, system) = on_cpu_ns(pid), user_system_ticks(pid)
        times = self.drive(count, body)
        cpu, (user_after, system_after) = on_cpu_ns(pid) - cpu, user_system_ticks(pid)
        times.sort()
        return Sample(
            cpu_us=cpu / 1e3 / count,
            user_us=(user_after - user) * tick_us / count,
            system_us=(system_after - system) * tick_us / count,
            p50_us=times[len(times) // 2] / 1e3,
            p99_us=times[int(len(times) * 0.99)] / 1e3,
        )

    def close(self) -> None:
        self.selector.close()
        self.sock.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def profile(instance: Instance, count: int, body: bytes, out: Path, label: str) -> None:
    """py-spy over one block of ``count`` invocations (the frames of the thread holding the GIL, native
    ones included: CPU, not waits), then perf over another (the whole process, kernel included): one at a
    time, so neither's sampling shows in the other."""
    pid = str(instance.process.pid)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    collapsed = out / f"{label}.py-spy.txt"
    perf_data = out / f"{label}.perf.data"
    spy_command = [spy, "record", "--pid", pid, "--rate", "2000", "--gil", "--native"]
    commands = [[*spy_command, "--format", "raw", "-o", str(collapsed)]]
    if shutil.which("perf"):
        commands.append(["perf", "record", "-F", "5000", "-g", "-o", str(perf_data), "-p", pid])
    for command in commands:
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        instance.drive(count, body)
        recorder.send_signal(signal.SIGINT)
        recorder.wait(60)
    print(f"\n== {label}: py-spy, CPU samples by function, self (top 15), {collapsed}")
    print_top_self(collapsed)
    if perf_data.exists():
        for sort, top in (("dso", 4), ("dso,sym", 20)):
            command = ["perf", "report", "-i", str(perf_data), "--no-children", "--sort", sort]
            report = subprocess.run(
                [*command, "--stdio", "-g", "none"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            lines = [line for line in report.splitlines() if line.strip() and not line.startswith("#")]
            print(f"== {label}: perf, self overhead by {sort} (top {top}), {perf_data}")
            print("\n".join(lines[:top]))


def print_top_self(collapsed: Path) -> None:
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        # "function (file:line)": the line dropped, so a function's samples add up.
        leaf = stack.rsplit(";", 1)[-1]
        name, _, where = leaf.partition(" (")
        leaf = f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name
        counts[leaf] = counts.get(leaf, 0) + int(samples)
        total += int(samples)
    for leaf, count in sorted(counts.items(), key=lambda item: -item[1])[:15]:
        print(f"{100 * count / max(total, 1):6.1f} %  {leaf}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision whose runtime.py is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--invocations", type=int, default=20000, help="measured invocations per block")
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--body-bytes", type=int, default=64)
    parser.add_argument("--profile", type=Path, help="directory for py-spy and perf profiles of each variant")
    args = parser.parse_args()
    body = bytes(range(256)) * (args.body_bytes // 256) + bytes(range(args.body_bytes % 256))
    with tempfile.TemporaryDirectory(prefix="strato-loop-") as scratch:
        root = Path(scratch)
        base_runtime = root / "base_runtime.py"
        shown = subprocess.run(
            ["git", "-C", str(CHECKOUT), "show", f"{args.base}:{RUNTIME_PATH}"],
            capture_output=True,
            check=False,
        )
        if shown.returncode != 0:
            raise SystemExit(f"git show {args.base}:{RUNTIME_PATH} failed: {shown.stderr.decode().strip()}")
        base_runtime.write_bytes(shown.stdout)
        code_dir = root / "code"
        code_dir.mkdir()
        sys.path.insert(0, str(CHECKOUT / "src"))
        from strato.faas.live.bench import ECHO_HANDLER

        (code_dir / "handler.py").write_text(ECHO_HANDLER)
        variants = {"base": base_runtime, "current": CHECKOUT / RUNTIME_PATH}
        samples: dict[str, list[Sample]] = {"base": [], "current": []}
        for round_number in range(args.rounds):
            order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
            for label in order:
                instance = Instance(variants[label], code_dir)
                try:
                    instance.drive(args.warmup, body)
                    samples[label].append(instance.measure(args.invocations, body))
                finally:
                    instance.close()
                print(f"round {round_number + 1} {label}: {samples[label][-1]}", file=sys.stderr, flush=True)
        print(
            f"{args.invocations} invocations x {args.rounds} rounds, body {args.body_bytes} B, "
            f"base {args.base}; medians over rounds"
        )
        print(f"{'measure':<28}{'base':>10}{'current':>10}{'ratio':>8}")
        for field, name in (
            ("cpu_us", "instance CPU / invocation us"),
            ("user_us", "  user us"),
            ("system_us", "  system us"),
            ("p50_us", "round trip p50 us"),
            ("p99_us", "round trip p99 us"),
        ):
            before = statistics.median(getattr(sample, field) for sample in samples["base"])
            after = statistics.median(getattr(sample, field) for sample in samples["current"])
            ratio = f"{after / before:8.2f}" if before else f"{'-':>8}"
            print(f"{name:<28}{before:10.1f}{after:10.1f}{ratio}")
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for label, path in variants.items():
                instance = Instance(path, code_dir)
                try:
                    instance.drive(args.warmup, body)
                    profile(instance, args.invocations, body, args.profile, label)
                finally:
                    instance.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
