"""Real Ganglia daemons for the monitor tests: gmond on 127.0.0.1, network-namespace hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from strato.monitor import daemons, ganglia
from strato.monitor.model import Snapshot


def require(binary: str, why: str = "") -> str:
    """The binary's path; skip (fail under CI, where STRATO_REQUIRE_SYSTEM=1) when it is missing."""
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = f"{binary} is not installed{': ' + why if why else ''} (make test installs it as root)"
        if os.environ.get("STRATO_REQUIRE_SYSTEM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def require_root_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    require("ip")
    probe = f"strato-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        message = f"cannot create network namespaces here: {made.stderr.strip()}"
        if os.environ.get("STRATO_REQUIRE_SYSTEM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(["ip", "netns", "del", probe], check=False)


class Collector:
    """One gmond on 127.0.0.1 that collects sent (spoofed) metrics; optionally measuring itself."""

    def __init__(self, workdir: Path, *, metrics: tuple[str, ...] = (), **config: object) -> None:
        self.udp_port = daemons.free_port()
        self.tcp_port = daemons.free_port()
        self.config = daemons.GmondConfig(
            udp_port=self.udp_port,
            tcp_port=self.tcp_port,
            metrics=metrics,
            **config,  # type: ignore[arg-type]
        )
        self.daemon = daemons.gmond(self.config, workdir)

    @property
    def xml_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def udp_address(self) -> str:
        return f"127.0.0.1:{self.udp_port}"

    def fetch(self) -> Snapshot:
        return ganglia.fetch(self.xml_address)

    def wait_for(self, condition: Callable[[Snapshot], bool], timeout_s: float = 10.0) -> Snapshot:
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = self.fetch()
            if condition(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout_s} s; hosts: {sorted(snapshot.hosts)}")
            time.sleep(0.05)


@contextmanager
def collector(workdir: Path, **config: object) -> Iterator[Collector]:
    require("gmond", "Debian package ganglia-monitor")
    made = Collector(workdir, **config)  # type: ignore[arg-type]
    with made.daemon:
        yield made
