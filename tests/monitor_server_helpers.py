"""Run the real ``strato monitor serve`` as a child process, and feed it spoofed Ganglia hosts.

:func:`monitor_server` starts the CLI exactly as an operator would (its own interpreter, its own port on
127.0.0.1, a SQLite file and a 0600 token file in the test's directory), waits for the ready file and
stops the process by PID at the end. :func:`spoof_hosts` publishes a small fleet into a real gmond with
:class:`GmetricSender` and waits until the server's ``/api/hosts`` shows every host.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from strato.monitor import daemons
from strato.monitor.gmetric import GmetricSender, MetricSpec, spoof_id

T = TypeVar("T")

START_TIMEOUT_S = 20.0
LOAD = MetricSpec("load_one", "float", tmax=20)
ROLE = MetricSpec("role", "string", tmax=20)


def wait_until(
    condition: Callable[[], T],
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Call ``condition`` until it returns something truthy (returned) or ``timeout_s`` passes (fails)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"{detail}: not met within {timeout_s:g} s")
        time.sleep(interval_s)


@dataclass
class MonitorServer:
    """A running ``strato monitor serve`` child process."""

    url: str
    token: str
    db: Path
    log: Path
    process: subprocess.Popen[bytes]
    _reader: httpx.Client | None = field(default=None, repr=False)

    def client(
        self, auth: bool = True, *, headers: dict[str, str] | None = None, **options: Any
    ) -> httpx.Client:
        """An httpx client on the server's URL; with ``auth`` it sends the admin token as a Bearer header."""
        sent = {"Authorization": f"Bearer {self.token}"} if auth else {}
        sent.update(headers or {})
        return httpx.Client(base_url=self.url, headers=sent, timeout=10.0, trust_env=False, **options)

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON API path (unauthenticated, as any reader), failing on a non-2xx answer."""
        if self._reader is None:
            self._reader = self.client(auth=False)
        response = self._reader.get(path, params=params)
        assert response.is_success, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def polls(self) -> int:
        return int(self.get("/api/status")["polls"])

    def wait_polls(self, count: int = 2, timeout_s: float = 10.0) -> int:
        """Wait until ``count`` more polls have started than now (2: one whole poll after this call)."""
        target = self.polls() + count

        def reached() -> int:
            now = self.polls()
            return now if now >= target else 0

        return wait_until(
            reached,
            timeout_s=timeout_s,
            what=lambda: f"{count} more polls (status: {self.get('/api/status')})",
        )

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        _stop(self.process, timeout_s)


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def serve_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "strato", "monitor", "serve", *(str(arg) for arg in args)]


@contextmanager
def monitor_server(
    tmp_path: Path,
    source: str,
    *,
    interval: float = 0.3,
    config_toml: str | None = None,
    db: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[MonitorServer]:
    """Start ``strato monitor serve`` on a free 127.0.0.1 port, polling ``source`` every ``interval`` s.

    ``db`` defaults to ``m.db`` in the server's work directory (``tmp_path/server``)."""
    workdir = tmp_path / "server"
    workdir.mkdir(parents=True, exist_ok=True)
    port = daemons.free_port()
    ready, token_file, log = (workdir / name for name in ("ready", "token", "server.log"))
    db = db or workdir / "m.db"
    args: list[str | Path] = [
        "--source", source, "--db", db, "--listen", f"127.0.0.1:{port}", "--interval", str(interval),
        "--ready-file", ready, "--token-file", token_file, *extra_args,
    ]  # fmt: skip
    if config_toml is not None:
        config = workdir / "monitor.toml"
        config.write_text(config_toml)
        args += ["--config", config]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            serve_command(*args), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, env=env,
        )  # fmt: skip
    server: MonitorServer | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (ready.exists() and ready.read_text().strip()):
            failure = None
            if process.poll() is not None:
                failure = f"exited with status {process.returncode} before it was ready"
            elif time.monotonic() > deadline:
                failure = f"was not ready within {START_TIMEOUT_S:g} s"
            if failure is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise AssertionError(f"strato monitor serve {failure}; log {log}:\n{tail}")
            time.sleep(0.05)
        url = ready.read_text().strip()
        assert url == f"http://127.0.0.1:{port}", url
        mode = stat.S_IMODE(token_file.stat().st_mode)
        assert mode == 0o600, f"{token_file} has mode {mode:o}, not 600"
        token = token_file.read_text().strip()
        assert token, f"{token_file} is empty"
        server = MonitorServer(url=url, token=token, db=db, log=log, process=process)
        yield server
    finally:
        if server is not None:
            server.stop()
        else:
            _stop(process)


# ---- spoofed hosts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeHost:
    name: str
    ip: str
    load_one: float
    role: str

    @property
    def spoof(self) -> str:
        return spoof_id(self.ip, self.name)


FLEET: tuple[FakeHost, ...] = (
    FakeHost("web-1", "10.20.0.1", 1.5, "frontend"),
    FakeHost("web-2", "10.20.0.2", 2.5, "frontend"),
    FakeHost("web-3", "10.20.0.3", 4.0, "batch"),
    FakeHost("db-1", "10.20.1.1", 0.5, "database"),
)
WEB = tuple(host for host in FLEET if host.name.startswith("web-"))


def send_load(udp_address: str, host: FakeHost, value: float) -> None:
    """Publish a new load_one for one spoofed host (a fresh sender resends the metadata too)."""
    with GmetricSender(udp_address) as sender:
        sender.send(LOAD, value, spoof=host.spoof)


def spoof_hosts(
    udp_address: str, server: MonitorServer, hosts: Sequence[FakeHost] = FLEET, timeout_s: float = 10.0
) -> dict[str, FakeHost]:
    """Publish ``hosts`` (load_one and role) into gmond and wait until ``/api/hosts`` shows all of them."""
    with GmetricSender(udp_address) as sender:
        for host in hosts:
            sender.send(LOAD, host.load_one, spoof=host.spoof)
            sender.send(ROLE, host.role, spoof=host.spoof)
    wait_for_hosts(server, hosts, timeout_s=timeout_s)
    return {host.name: host for host in hosts}


def wait_for_hosts(server: MonitorServer, hosts: Iterable[FakeHost], timeout_s: float = 10.0) -> None:
    expected = {host.name: host for host in hosts}

    def shown() -> bool:
        listing = {item["name"]: item for item in server.get("/api/hosts")}
        for name, host in expected.items():
            item = listing.get(name)
            if item is None or item["ip"] != host.ip:
                return False
            metrics = item["metrics"]
            if metrics.get("load_one", {}).get("value") != host.load_one:
                return False
            if metrics.get("role", {}).get("value") != host.role:
                return False
        return True

    wait_until(
        shown,
        timeout_s=timeout_s,
        what=lambda: (
            f"hosts {sorted(expected)} in /api/hosts (shown: {[h['name'] for h in server.get('/api/hosts')]})"
        ),
    )


# ---- Prometheus ----------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"(?:,|$)')


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str) -> list[Sample]:
    """A strict reader of the text format: HELP and TYPE once per family, before its samples."""
    helps: set[str] = set()
    types: dict[str, str] = {}
    samples: list[Sample] = []
    assert text.endswith("\n"), "the exposition must end with a newline"
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert len(parts) >= 3 and parts[1] in ("HELP", "TYPE"), f"line {number}: {line!r}"
            name = parts[2]
            if parts[1] == "HELP":
                assert name not in helps, f"line {number}: second HELP for {name}"
                helps.add(name)
            else:
                assert name not in types, f"line {number}: second TYPE for {name}"
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[name] = parts[3]
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"line {number} is not a sample: {line!r}"
        name = match["name"]
        assert name in helps and name in types, f"line {number}: {name} has no HELP/TYPE before it"
        labels: dict[str, str] = {}
        raw = match["labels"] or ""
        position = 0
        while position < len(raw):
            label = _LABEL.match(raw, position)
            assert label, f"line {number}: bad labels at {raw[position:]!r}"
            key = label["key"]
            assert key not in labels, f"line {number}: label {key} twice"
            labels[key] = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], label["value"])
            position = label.end()
        value = float(match["value"])  # NaN and +Inf parse too
        samples.append(Sample(name, labels, value))
    assert helps == set(types), f"families with HELP but no TYPE or back: {helps ^ set(types)}"
    return samples


def one(samples: list[Sample], name: str, **labels: str) -> Sample:
    found = [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]
