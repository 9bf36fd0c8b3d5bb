"""C2MS monitor at scale: one poll of 1,000 spoofed hosts x 30 metrics, and a 100-host group action.

    .venv/bin/python benchmarks/monitor_bench.py [--hosts 1000] [--metrics 30] [--polls 10]

A real gmond (Debian's ganglia-monitor) is started on 127.0.0.1; 1,000 hosts are spoofed into it with
Ganglia's wire format (what ``gmetric -S`` sends), 30 metrics each, one of them a string (``role``).
A poll = read gmond's XML over TCP, parse it, evaluate ten groups (glob, CIDR, thresholds, strings,
a catch-all), update every group's aggregates and history. The baseline in the same run parses the same
bytes with ElementTree into a DOM and aggregates each group with plain Python loops. The action is the
built-in ``sleep`` template (0.1 s: about an SSH round trip and a short command) on a 100-host
group through the local executor, parallelism 32 against
parallelism 1, and the audit log is read back to check that all 100 results are recorded.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from strato.core.console import print_table
from strato.monitor import daemons
from strato.monitor.actions import BUILTIN_TEMPLATES, ActionRunner, HostTarget, LocalExecutor
from strato.monitor.audit import AuditLog
from strato.monitor.config import load_config
from strato.monitor.gmetric import GmetricSender, MetricSpec, spoof_id
from strato.monitor.rules import parse_rule
from strato.monitor.service import Monitor

GROUPS = {
    "web": 'name matches "host-0*"',
    "subnet-a": 'ip in "10.60.0.0/24"',
    "hot": "m00 > 0.9",
    "cold": "m01 < 0.05 and m02 < 0.5",
    "prompt": 'role == "prompt"',
    "token-busy": 'role == "token" and m03 > 0.5',
    "mixed": 'role in ["mixed", "prompt"] or m04 >= 0.99',
    "regex": 'name =~ "^host-[0-9]*7$"',
    "not-hot": "not m00 > 0.5",
    "all": "has(m00)",
}


def publish(address: str, hosts: int, metrics: int) -> None:
    specs = [MetricSpec(f"m{index:02d}", "double", tmax=3600) for index in range(metrics - 1)]
    role = MetricSpec("role", "string", tmax=3600)
    with GmetricSender(address) as sender:
        for host in range(hosts):
            spoof = spoof_id(
                f"10.{60 + host // 250}.{host % 250 // 250}.{host % 250 + 1}", f"host-{host:04d}"
            )
            for index, spec in enumerate(specs):
                sender.send(spec, ((host * 7919 + index * 104729) % 1000) / 1000, spoof=spoof)
            sender.send(role, ("prompt", "token", "mixed")[host % 3], spoof=spoof)
            time.sleep(0.0005 * metrics / 10)  # let gmond drain its socket buffer


def naive_poll(raw: bytes, groups: dict[str, str]) -> int:
    """The baseline: a DOM parse, then per-group Python loops over hosts and metrics."""
    root = ElementTree.fromstring(raw)
    hosts = []
    for element in root.iter("HOST"):
        values: dict[str, float | str] = {}
        for metric in element.iter("METRIC"):
            try:
                values[metric.get("NAME", "")] = float(metric.get("VAL", ""))
            except ValueError:
                values[metric.get("NAME", "")] = metric.get("VAL", "")
        hosts.append((element.get("NAME", ""), element.get("IP", ""), values))
    from strato.monitor.model import Host, Metric

    rules = {name: parse_rule(text) for name, text in groups.items()}
    members = 0
    for rule in rules.values():
        chosen = []
        for name, ip, values in hosts:
            host = Host(
                name,
                ip,
                metrics={
                    k: Metric(k, v, "string" if isinstance(v, str) else "double") for k, v in values.items()
                },
            )
            if rule.matches(host):
                chosen.append(values)
        members += len(chosen)
        for metric in {key for values in chosen for key, v in values.items() if not isinstance(v, str)}:
            column = sorted(
                float(v[metric]) for v in chosen if metric in v and not isinstance(v[metric], str)
            )
            statistics.fmean(column), min(column), max(column), sum(column)
            for q in (0.5, 0.9, 0.99):
                column[min(len(column) - 1, int(q * len(column)))]
    return members


def read_raw(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        chunks = []
        while chunk := sock.recv(1 << 18):
            chunks.append(chunk)
    return b"".join(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=30)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--action-hosts", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strato-monitor-bench-"))
    udp, tcp = daemons.free_port(), daemons.free_port()
    config = daemons.GmondConfig(udp_port=udp, tcp_port=tcp, metrics=())
    rows = []
    with daemons.gmond(config, work) as gmond:
        started = time.perf_counter()
        expected = args.hosts * args.metrics
        seen = 0
        for _attempt in range(4):  # UDP: resend until gmond holds every value
            publish(f"127.0.0.1:{udp}", args.hosts, args.metrics)
            time.sleep(0.5)
            monitor = Monitor(load_config(None, source=f"127.0.0.1:{tcp}", db_path=work / "m.db"))
            snapshot = monitor.read()
            seen = sum(len(host.metrics) for host in snapshot.hosts.values())
            if seen >= expected:
                break
        print(
            f"published {seen:,} of {expected:,} values for {len(snapshot.hosts):,} hosts "
            f"in {time.perf_counter() - started:.1f} s (gmond pid {gmond.pid})",
            file=sys.stderr,
        )
        for name, rule in GROUPS.items():
            monitor.store.create(name, rule=rule)
        raw = read_raw(tcp)
        ours, reads = [], []
        for _ in range(args.polls):
            began = time.perf_counter()
            result = monitor.poll()
            ours.append(time.perf_counter() - began)
            reads.append(monitor.status.last_read_s)
        baseline = []
        for _ in range(max(3, args.polls // 3)):
            began = time.perf_counter()
            naive_members = naive_poll(raw, GROUPS)
            baseline.append(time.perf_counter() - began)
        members = sum(len(state.members) for state in result.groups.values())
        assert members == naive_members, (members, naive_members)
        median, base = statistics.median(ours), statistics.median(baseline)
        rows.append(
            {
                "job": f"poll: {result.hosts:,} hosts x {args.metrics} metrics, {len(GROUPS)} groups",
                "strato_s": median,
                "baseline_s": base,
                "ratio": base / median,
                "note": f"read+parse {statistics.median(reads):.3f} s, max {max(ours):.3f} s, "
                f"{len(raw) / 2**20:.1f} MiB XML, target < 1 s: {'met' if median < 1 else 'MISSED'}",
            }
        )

    audit = AuditLog(work / "audit.db")
    targets = [
        HostTarget(name=f"host-{index:04d}", address="127.0.0.1") for index in range(args.action_hosts)
    ]
    timings = {}
    for parallelism in (32, 1):
        runner = ActionRunner(audit, parallelism=parallelism)
        began = time.perf_counter()
        record = runner.run_sync(
            who="bench",
            group="bench-100",
            template=BUILTIN_TEMPLATES["sleep"],
            values={"seconds": 0.1},
            targets=targets,
            executor=LocalExecutor(),
        )
        timings[parallelism] = time.perf_counter() - began
        stored = audit.get(record.id)
        assert stored.status == "ok" and len(stored.results) == args.action_hosts == len(stored.members), (
            stored
        )
    rows.append(
        {
            "job": f"action: 0.1 s command on {args.action_hosts} hosts, parallelism 32 vs 1",
            "strato_s": timings[32],
            "baseline_s": timings[1],
            "ratio": timings[1] / timings[32],
            "note": f"all {args.action_hosts} results audited",
        }
    )
    print_table(
        rows,
        [
            ("job", "job"),
            ("strato_s", "strato s"),
            ("baseline_s", "baseline s"),
            ("ratio", "baseline/strato"),
            ("note", "note"),
        ],
        formats={"strato_s": ".3f", "baseline_s": ".3f", "ratio": ".1f"},
    )


if __name__ == "__main__":
    main()
