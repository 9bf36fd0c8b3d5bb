"""A throw-away OpenSSH server on 127.0.0.1 for tests: fresh host and client keys, a free port, key-only
login, killed (with its per-connection children) on exit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SSHServer:
    port: int
    client_key: Path
    known_hosts: Path
    host_key_pub: str
    """``type base64`` of the host key, as a known_hosts line wants it."""


def skip_reason() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the test sshd logs in as root (needs root to run sshd and accept that login)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    """Write an ed25519 key pair at ``path``; return the public key's ``type base64``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _openssh_version() -> tuple[int, int]:
    banner = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", banner)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def sshd_server(directory: Path, *, start_timeout_s: float = 10.0) -> Iterator[SSHServer]:
    """Run ``sshd -D -e`` from ``directory`` (keys, config, log) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    host_pub = keygen(directory / "host_ed25519", "strato-test-host")
    client_pub = keygen(directory / "client_ed25519", "strato-test-client")
    (directory / "authorized_keys").write_text(client_pub + "\n")
    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_ed25519'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        f"PidFile {directory / 'sshd.pid'}",
        # The keys live in a pytest tmp dir whose modes sshd's owner checks would refuse.
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        # Tests open a burst of connections at once; sshd's default 10:30:100 would drop some.
        "MaxStartups 200",
        "LogLevel INFO",
    ]
    if _openssh_version() >= (9, 8):
        # Newer sshd penalises sources whose connections fail (as the bad-host-key test does on purpose).
        lines.append("PerSourcePenalties no")
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    # sshd's privilege separation chroots into /run/sshd and refuses to start without it.
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    log_path = directory / "sshd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its per-connection children share the group, so one kill ends all
        )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _port_open(port):
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd did not listen on {port} in {start_timeout_s} s: {log_path.read_text()}"
                )
            time.sleep(0.05)
        yield SSHServer(
            port=port,
            client_key=directory / "client_ed25519",
            known_hosts=known_hosts,
            host_key_pub=host_pub,
        )
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
