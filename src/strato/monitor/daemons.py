"""Start and stop real Ganglia daemons with generated configurations (tests, benchmarks, the demo).

gmond is configured for a shared machine: unicast only (never multicast), every channel bound to one
address (127.0.0.1 by default), modules loaded by absolute path, nothing read from /etc. gmetad binds
every interface and cannot be told otherwise, so :class:`Gmetad` refuses to start outside a network
namespace unless the caller says it accepts that. Daemons run in the foreground as our children and are
stopped by PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from strato.errors import ConfigError, UnavailableError

DEFAULT_METRICS = (
    "load_one",
    "load_five",
    "cpu_user",
    "cpu_system",
    "cpu_idle",
    "mem_free",
    "mem_total",
    "bytes_in",
    "bytes_out",
    "proc_run",
)


def ganglia_binary(name: str) -> str:
    """The absolute path of gmond/gmetad/gmetric, or a ConfigError saying how to install it."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        package = "gmetad" if name == "gmetad" else "ganglia-monitor"
        raise ConfigError(f"{name} is not installed (Debian: apt-get install {package})")
    return found


def module_dir() -> str:
    for candidate in [*sorted(glob.glob("/usr/lib/*/ganglia")), "/usr/lib/ganglia", "/usr/lib64/ganglia"]:
        if os.path.exists(os.path.join(candidate, "modcpu.so")):
            return candidate
    raise ConfigError("gmond's metric modules (modcpu.so ...) were not found under /usr/lib/*/ganglia")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP right now (gmond uses the same number for neither)."""
    with socket.socket() as tcp:
        tcp.bind((host, 0))
        return int(tcp.getsockname()[1])


def _quote(value: str) -> str:
    if any(ch in value for ch in '"\n\\'):
        raise ConfigError(f"{value!r} cannot be written into a Ganglia configuration")
    return f'"{value}"'


@dataclass
class GmondConfig:
    """One gmond: what it listens on, where it sends, and how chatty it is."""

    udp_port: int
    tcp_port: int
    bind: str = "127.0.0.1"
    """Address of the UDP receive and TCP XML channels."""
    send_to: str | None = "127.0.0.1"
    """Unicast destination of this gmond's own metrics (a collector); None sends nothing."""
    send_port: int | None = None
    cluster: str = "strato"
    deaf: bool = False
    """A deaf gmond only sends (a leaf host); the collector is not deaf."""
    host_dmax: int = 0
    host_tmax: int = 20
    override_hostname: str | None = None
    override_ip: str | None = None
    collect_every_s: int = 10
    heartbeat_s: int = 20
    metadata_every_s: int = 10
    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Built-in metrics this gmond measures itself; empty for a pure collector of sent metrics."""

    def render(self) -> str:
        lines = [
            "globals {",
            "  daemonize = no",
            "  setuid = no",
            "  debug_level = 0",
            "  max_udp_msg_len = 1472",
            f"  mute = {'yes' if self.send_to is None else 'no'}",
            f"  deaf = {'yes' if self.deaf else 'no'}",
            "  allow_extra_data = yes",
            f"  host_dmax = {self.host_dmax}",
            f"  host_tmax = {self.host_tmax}",
            "  cleanup_threshold = 5",
            "  gexec = no",
            f"  send_metadata_interval = {self.metadata_every_s}",
        ]
        if self.override_hostname:
            lines.append(f"  override_hostname = {_quote(self.override_hostname)}")
        if self.override_ip:
            lines.append(f"  override_ip = {_quote(self.override_ip)}")
        lines += ["}", f'cluster {{\n  name = {_quote(self.cluster)}\n  owner = "strato"\n}}']
        if self.send_to is not None:
            port = self.send_port or self.udp_port
            lines.append(f"udp_send_channel {{\n  host = {self.send_to}\n  port = {port}\n  ttl = 1\n}}")
        if not self.deaf:
            lines.append(f"udp_recv_channel {{\n  bind = {self.bind}\n  port = {self.udp_port}\n}}")
            lines.append(f"tcp_accept_channel {{\n  bind = {self.bind}\n  port = {self.tcp_port}\n}}")
        if self.metrics:
            path = module_dir()
            modules = {
                "cpu_module": "modcpu.so",
                "load_module": "modload.so",
                "mem_module": "modmem.so",
                "net_module": "modnet.so",
                "proc_module": "modproc.so",
                "sys_module": "modsys.so",
            }
            lines.append('modules {\n  module {\n    name = "core_metrics"\n  }')
            for name, library in modules.items():
                lines.append(f'  module {{\n    name = "{name}"\n    path = "{path}/{library}"\n  }}')
            lines.append("}")
        lines.append(
            f"collection_group {{\n  collect_once = yes\n  time_threshold = {self.heartbeat_s}\n"
            '  metric {\n    name = "heartbeat"\n  }\n}'
        )
        if self.metrics:
            body = "".join(
                f'  metric {{\n    name = {_quote(name)}\n    value_threshold = "-1"\n  }}\n'
                for name in self.metrics
            )
            lines.append(
                f"collection_group {{\n  collect_every = {self.collect_every_s}\n"
                f"  time_threshold = {self.collect_every_s}\n{body}}}"
            )
        return "\n".join(lines) + "\n"


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def port_open(port: int, host: str = "127.0.0.1", netns: str | None = None) -> bool:
    if netns is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    listing = subprocess.run(
        [*_netns_prefix(netns), "ss", "-Htln", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(listing.stdout.strip())


@dataclass
class Daemon:
    """A foreground daemon we started, stopped by PID."""

    argv: list[str]
    workdir: Path
    name: str
    ready_port: int | None = None
    ready_host: str = "127.0.0.1"
    netns: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ConfigError(f"{self.name} is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout_s: float = 15.0) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*_netns_prefix(self.netns), *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while self.ready_port is not None and not port_open(self.ready_port, self.ready_host, self.netns):
            if self.process.poll() is not None:
                raise UnavailableError(
                    f"{self.name} exited with {self.process.returncode} at start: {self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise UnavailableError(
                    f"{self.name} did not open port {self.ready_port} in {timeout_s:g} s: {self.tail()}"
                )
            time.sleep(0.05)
        return self

    def tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Daemon:
        return self if self.running() else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def gmond(
    config: GmondConfig, workdir: str | Path, *, name: str = "gmond", netns: str | None = None
) -> Daemon:
    """A gmond daemon (not started) with ``config`` written to ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(config.render())
    return Daemon(
        [ganglia_binary("gmond"), "-f", "-c", str(conf)],
        workdir,
        name,
        ready_port=None if config.deaf else config.tcp_port,
        ready_host=config.bind,
        netns=netns,
    )


@dataclass
class GmetadConfig:
    sources: dict[str, list[str]]
    """data source name -> gmond/gmetad addresses (host:port), polled every ``poll_s``."""
    xml_port: int = 8651
    interactive_port: int = 8652
    poll_s: int = 5
    grid: str = "strato"

    def render(self, rrd_dir: Path) -> str:
        lines = [
            f"data_source {_quote(name)} {self.poll_s} {' '.join(addresses)}"
            for name, addresses in self.sources.items()
        ]
        lines += [
            f"gridname {_quote(self.grid)}",
            "setuid off",
            "all_trusted on",
            f"xml_port {self.xml_port}",
            f"interactive_port {self.interactive_port}",
            f"rrd_rootdir {_quote(str(rrd_dir))}",
            "server_threads 2",
        ]
        return "\n".join(lines) + "\n"


def gmetad(
    config: GmetadConfig, workdir: str | Path, *, netns: str | None, all_interfaces_ok: bool = False
) -> Daemon:
    """gmetad listens on every interface: only inside a network namespace unless told it is fine."""
    if netns is None and not all_interfaces_ok:
        raise ConfigError("gmetad binds all interfaces; run it in a network namespace (netns=...)")
    workdir = Path(workdir)
    rrd_dir = workdir / "rrds"
    rrd_dir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "gmetad.conf"
    conf.write_text(config.render(rrd_dir))
    return Daemon(
        [ganglia_binary("gmetad"), "-d", "1", "-c", str(conf)],
        workdir,
        "gmetad",
        ready_port=config.xml_port,
        netns=netns,
    )
