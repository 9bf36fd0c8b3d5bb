"""A small Ganglia cluster made of network namespaces: one collector, N hosts, each with its own real gmond.

Topology (nothing is added to the root network namespace; every link is created inside our namespaces)::

    sm-XXXXXX-c   collector: lo, bridge br0 = 10.231.R.1/24, gmond (UDP+TCP 8649 on 10.231.R.1), gmetad
      |-- vh1 ==veth== eth0 in sm-XXXXXX-h1  10.231.R.11  gmond (deaf, sends to 10.231.R.1), gmetric
      |-- vh2 ==veth== eth0 in sm-XXXXXX-h2  10.231.R.12  ...

The test process stays in the root namespace and cannot reach 10.231.R.1, so every read of Ganglia runs a
short Python program inside the collector namespace (``ip netns exec``) that calls
:func:`strato.monitor.ganglia.fetch` and prints the snapshot as JSON. The group database is a file, so
the test edits groups in-process while the daemons run untouched.

Deleting a namespace deletes the veth pairs and the bridge in it; every daemon is stopped by PID first.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.monitor import daemons, ganglia
from strato.monitor.config import MonitorConfig
from strato.monitor.model import Host, Metric, Snapshot
from strato.monitor.service import Monitor
from strato.monitor.store import GroupStore

GMOND_PORT = 8649
"""The collector's UDP and TCP port: the namespace is ours, so Ganglia's defaults cannot clash."""
GMETAD_XML_PORT = 8651
GMETAD_QUERY_PORT = 8652
HOST_METRICS = ("load_one", "cpu_user", "mem_free", "proc_run")

# Runs inside the collector namespace: the real reader, its snapshot as JSON, a GangliaError as exit 3.
_FETCH = """\
import dataclasses, json, sys
from strato.monitor import ganglia
try:
    snapshot = ganglia.fetch(sys.argv[1], query=sys.argv[2] or None, read_timeout_s=10)
except ganglia.GangliaError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
json.dump(dataclasses.asdict(snapshot), sys.stdout)
"""
# The raw document, for checks on gmetad's nesting (GRID > CLUSTER > HOST) that a Snapshot flattens.
_RAW = """\
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port)), timeout=5) as sock:
    sock.settimeout(10)
    if sys.argv[2]:
        sock.sendall(sys.argv[2].encode() + b"\\n")
    while chunk := sock.recv(1 << 16):
        sys.stdout.buffer.write(chunk)
"""


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    hosts = {
        name: Host(**{**host, "metrics": {key: Metric(**metric) for key, metric in host["metrics"].items()}})
        for name, host in data["hosts"].items()
    }
    return Snapshot(source=data["source"], taken_at=data["taken_at"], hosts=hosts, clusters=data["clusters"])


def describe(snapshot: Snapshot) -> str:
    """One line per host for assertion messages: name, ip, how long silent, and a few values."""
    lines = []
    for name, host in sorted(snapshot.hosts.items()):
        values = {key: host.value(key) for key in ("load_one", "role") if key in host.metrics}
        lines.append(f"{name} ip={host.ip} tn={host.tn} metrics={len(host.metrics)} {values}")
    return f"{snapshot.source}: " + ("; ".join(lines) or "no hosts")


@dataclass
class LabHost:
    name: str
    """The host's Ganglia name (gmond's override_hostname)."""
    netns: str
    ip: str
    config: daemons.GmondConfig
    daemon: daemons.Daemon
    gmetric_conf: Path


@dataclass
class Lab:
    prefix: str
    network: str
    """The lab's private /24, e.g. ``10.231.7.0/24``; it exists only inside the lab's namespaces."""
    collector_ns: str
    collector_ip: str
    workdir: Path
    hosts: dict[str, LabHost] = field(default_factory=dict)
    collector: daemons.Daemon | None = None
    started: list[daemons.Daemon] = field(default_factory=list)
    """Every daemon started here, stopped (by PID) when the lab closes."""
    namespaces: list[str] = field(default_factory=list)

    @property
    def gmond_address(self) -> str:
        return f"{self.collector_ip}:{GMOND_PORT}"

    # ---- running things inside a namespace ---------------------------------------------------------

    def run_in(
        self, netns: str, argv: Sequence[str], *, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def python_in(self, netns: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        # The venv's interpreter: the namespace shares our filesystem, so strato imports there too.
        return self.run_in(netns, [sys.executable, "-c", code, *args])

    def fetch(self, address: str | None = None, query: str | None = None) -> Snapshot:
        """A snapshot read by :func:`ganglia.fetch` inside the collector namespace (default: its gmond)."""
        done = self.python_in(self.collector_ns, _FETCH, address or self.gmond_address, query or "")
        if done.returncode == 3:
            raise ganglia.GangliaError(done.stderr.strip())
        if done.returncode != 0:
            raise AssertionError(f"the in-namespace reader failed ({done.returncode}): {done.stderr.strip()}")
        return snapshot_from_json(json.loads(done.stdout))

    def fetch_raw(self, address: str, query: str | None = None) -> str:
        done = self.python_in(self.collector_ns, _RAW, address, query or "")
        assert done.returncode == 0, f"reading {address} {query or ''} failed: {done.stderr.strip()}"
        return done.stdout

    def wait_for(
        self,
        condition: Callable[[Snapshot], bool],
        what: str,
        *,
        timeout_s: float = 15.0,
        address: str | None = None,
        query: str | None = None,
    ) -> Snapshot:
        """Poll the collector (or ``address``) until ``condition`` holds; the failure shows every host."""
        deadline = time.monotonic() + timeout_s
        last = "nothing read yet"
        while True:
            try:
                snapshot = self.fetch(address, query)
                if condition(snapshot):
                    return snapshot
                last = describe(snapshot)
            except ganglia.GangliaError as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s:g} s; last read: {last}; {self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return " || ".join(f"{daemon.name}: {daemon.tail(3)}" for daemon in self.started)

    # ---- daemons -----------------------------------------------------------------------------------

    def start_host(self, name: str) -> daemons.Daemon:
        """(Re)start a host's gmond from its unchanged configuration file."""
        host = self.hosts[name]
        if not host.daemon.running():
            host.daemon.start()
        return host.daemon

    def stop_host(self, name: str) -> None:
        self.hosts[name].daemon.stop()

    def gmetric(self, name: str, metric: str, value: str, *, kind: str = "string", tmax: int = 60) -> None:
        """Publish a custom metric with Debian's gmetric from inside the host's namespace, as that host."""
        host = self.hosts[name]
        options = {"-c": str(host.gmetric_conf), "-n": metric, "-v": value, "-t": kind, "-x": str(tmax)}
        options.update({"-d": "0", "-S": f"{host.ip}:{host.name}"})  # spoofed as the host gmond names
        argv = [daemons.ganglia_binary("gmetric"), *(part for pair in options.items() for part in pair)]
        done = self.run_in(host.netns, argv)
        assert done.returncode == 0, f"gmetric in {host.netns} failed: {done.stdout} {done.stderr}"

    def start_gmetad(self, *, poll_s: int = 1) -> daemons.Daemon:
        """gmetad binds every interface: it runs only in the collector namespace, never outside."""
        config = daemons.GmetadConfig(
            sources={"lab": [self.gmond_address]},
            xml_port=GMETAD_XML_PORT,
            interactive_port=GMETAD_QUERY_PORT,
            poll_s=poll_s,
            grid="strato-lab",
        )
        daemon = daemons.gmetad(config, self.workdir / "gmetad", netns=self.collector_ns)
        self.started.append(daemon)
        return daemon.start()

    def monitor(self, config: MonitorConfig, store: GroupStore | None = None) -> NamespacedMonitor:
        return NamespacedMonitor(config, self, store)


class NamespacedMonitor(Monitor):
    """strato's Monitor, unchanged except that it reads Ganglia from inside the collector namespace."""

    def __init__(self, config: MonitorConfig, lab: Lab, store: GroupStore | None = None) -> None:
        super().__init__(config, store)
        self.lab = lab

    def read(self) -> Snapshot:
        return self.lab.fetch(self.config.source, self.config.query)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def lab(tmp_path: Path, hosts: int | Sequence[str] = 3) -> Iterator[Lab]:
    """Namespaces, links and gmonds for a collector and ``hosts`` (a count, or the hosts' Ganglia names)."""
    names = [f"host-{index}" for index in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
    if not 1 <= len(names) <= 200:
        raise ValueError("a lab holds 1 to 200 hosts")
    tag = secrets.token_hex(3)
    octet = secrets.randbelow(256)
    made = Lab(
        prefix=f"sm-{tag}",
        network=f"10.231.{octet}.0/24",
        collector_ns=f"sm-{tag}-c",
        collector_ip=f"10.231.{octet}.1",
        workdir=tmp_path / f"lab-{tag}",
    )
    try:
        ns = made.collector_ns
        _ip("netns", "add", ns)
        made.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", ns, "addr", "add", f"{made.collector_ip}/24", "dev", "br0")
        _ip("-n", ns, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            host_ns = f"{made.prefix}-h{index}"
            ip = f"10.231.{octet}.{10 + index}"
            _ip("netns", "add", host_ns)
            made.namespaces.append(host_ns)
            _ip("-n", host_ns, "link", "set", "lo", "up")
            # Created inside the collector namespace with its peer moved straight into the host's: the
            # pair never exists in the root namespace, and names only need to be unique per namespace.
            _ip(*f"-n {ns} link add vh{index} type veth peer name eth0 netns {host_ns}".split())
            _ip("-n", ns, "link", "set", f"vh{index}", "master", "br0", "up")
            _ip("-n", host_ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", host_ns, "link", "set", "eth0", "up")
            config = daemons.GmondConfig(
                udp_port=GMOND_PORT,
                tcp_port=GMOND_PORT,
                send_to=made.collector_ip,
                cluster="lab",
                deaf=True,
                override_hostname=name,
                override_ip=ip,
                collect_every_s=1,
                heartbeat_s=1,
                metadata_every_s=5,
                metrics=HOST_METRICS,
            )
            workdir = made.workdir / host_ns
            daemon = daemons.gmond(config, workdir, name="gmond", netns=host_ns)
            conf = workdir / "gmetric.conf"
            # gmetric reads only the send channel from a gmond-style file; nothing from /etc.
            channel = (
                f"udp_send_channel {{\n  host = {made.collector_ip}\n  port = {GMOND_PORT}\n  ttl = 1\n}}\n"
            )
            conf.write_text(channel)
            made.hosts[name] = LabHost(name, host_ns, ip, config, daemon, conf)

        # The collector only listens (mute, no metrics of its own), so Ganglia reports exactly our hosts.
        collector_config = daemons.GmondConfig(
            udp_port=GMOND_PORT,
            tcp_port=GMOND_PORT,
            bind=made.collector_ip,
            send_to=None,
            cluster="lab",
            metrics=(),
        )
        made.collector = daemons.gmond(collector_config, made.workdir / ns, name="gmond", netns=ns)
        made.started.append(made.collector)
        made.collector.start()
        for host in made.hosts.values():
            made.started.append(host.daemon)
            host.daemon.start()
        yield made
    finally:
        for daemon in made.started:
            try:
                daemon.stop()
            except Exception:  # keep cleaning up: the namespaces must go whatever happened
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.process.kill()
        for ns in reversed(made.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def leftover_namespaces(prefix: str = "sm-") -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


__all__ = [
    "Lab",
    "LabHost",
    "NamespacedMonitor",
    "describe",
    "lab",
    "leftover_namespaces",
    "snapshot_from_json",
]
