"""What a function can reach and start on the host (issue 11, items 8, 11 and 16): processes, files,
the platform's own internal hops."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import strato
from live_helpers import Server, running_server, write_function
from strato.faas.live.isolation import probe_host

pytestmark = pytest.mark.system

SUPPORT = probe_host()

FORKER = """
import os
def handle(event):
    forked = 0
    error = None
    for _ in range(int(event.text)):
        try:
            pid = os.fork()
        except OSError as failure:
            error = type(failure).__name__
            break
        if pid == 0:
            os._exit(0)
        forked += 1
    return {"forked": forked, "error": error}
"""

PROCESSES = """
import os, time
def states():
    seen = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    seen[name] = stat.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                pass
    return seen

def handle(event):
    if event.path == "/daemon":
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:  # a double-forked daemon burning CPU between invocations
                    pass
            os._exit(0)
        time.sleep(0.2)
    return states()
"""

FILES = """
import os
def handle(event):
    checks = {}
    for path in event.json()["read"]:
        try:
            with open(path, "rb") as file:
                file.read(1)
            checks[path] = "read"
        except OSError as error:
            checks[path] = type(error).__name__
    for path in event.json()["list"]:
        try:
            checks[path] = sorted(os.listdir(path))
        except OSError as error:
            checks[path] = type(error).__name__
    for path in event.json()["write"]:
        try:
            with open(path, "w") as file:
                file.write("planted")
            checks[path] = "written"
        except OSError as error:
            checks[path] = type(error).__name__
    return checks
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if "pid" not in SUPPORT.namespaces or "mount" not in SUPPORT.namespaces or SUPPORT.cgroup is None:
        pytest.skip("needs root with pid and mount namespaces and a memory cgroup (the full sandbox)")
    root = tmp_path_factory.mktemp("sandbox")
    with running_server(root / "state", "--pids-limit", "20") as running:
        client = running.client()
        for name, source in (("forker", FORKER), ("processes", PROCESSES), ("files", FILES)):
            client.deploy(name, directory=write_function(root / "code", name, source))
        client.deploy("files-too", directory=write_function(root / "code", "files-too", FILES))
        yield running


def test_a_fork_bomb_stops_at_the_pids_limit_and_leaves_no_zombies(server: Server) -> None:
    # On main a function forked 2,500 processes, which stayed as zombies until the instance was unloaded.
    if SUPPORT.pids_base is None:
        pytest.skip("no pids cgroup on this host")
    client = server.client()
    outcome = json.loads(client.invoke("forker", b"2500").body)
    assert outcome["error"] == "BlockingIOError"  # EAGAIN from the pids cgroup
    assert outcome["forked"] <= 20 + 16
    # The same instance, next invocation: every child was reaped in between (the instance is pid 1).
    outcome = json.loads(client.invoke("forker", b"5").body)
    assert outcome == {"forked": 5, "error": None}


def test_processes_left_running_after_an_invocation_are_killed(server: Server) -> None:
    # On main a double-forked daemon kept running through keep-alive, with no CPU limit.
    client = server.client()
    states = json.loads(client.invoke("processes", path="/daemon").body)
    assert len(states) >= 2  # the instance and the spinning daemon
    deadline = time.monotonic() + 30
    while "still running after the invocations ended" not in client.logs("processes"):
        assert time.monotonic() < deadline, "the stray daemon was not killed"
        time.sleep(0.5)  # the logs are read without touching the instance, which must stay idle
    states = json.loads(client.invoke("processes").body)
    assert set(states) == {"1"}, states  # only the instance itself: no daemon, no zombie


def test_the_host_tree_is_out_of_reach(server: Server, tmp_path: Path) -> None:
    # On main functions could read the checkout (with .git), the folders beside it, and /var/tmp.
    checkout = Path(strato.__file__).resolve().parents[2]
    planted = f"/var/tmp/left-behind-{uuid.uuid4().hex}"
    shared = checkout.parent / "shared"
    state = server.state_dir
    request = {
        "read": [
            str(checkout / ".git" / "HEAD"),
            str(checkout / "README.md"),
            str(state / "token"),
            "/etc/shadow",
            str(shared / "REFERENCE.md"),
            str(server.log_path),
        ],
        "list": [str(state / "functions"), "/root", "/home", str(checkout)],
        "write": [planted, "/etc/passwd", "/planted"],
    }
    seen = json.loads(server.client().invoke("files", json.dumps(request).encode()).body)
    for path in request["read"]:
        assert seen[path] in ("FileNotFoundError", "PermissionError"), (path, seen[path])
    assert ".git" not in seen[str(checkout)] if isinstance(seen[str(checkout)], list) else True
    assert seen[planted] == "written"
    assert seen["/etc/passwd"] == seen["/planted"] == "OSError"  # the root is read-only
    # What one function wrote to /var/tmp is neither on the host nor visible to another function.
    assert not Path(planted).exists()
    other = json.loads(
        server.client()
        .invoke("files-too", json.dumps({"read": [planted], "list": [], "write": []}).encode())
        .body
    )
    assert other[planted] == "FileNotFoundError"


PROBER = """
import socket

def listening():
    ports = set()
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            address, state = fields[1], fields[3]
            if state == "0A" and address.startswith("0100007F:"):
                ports.add(int(address.split(":")[1], 16))
    return sorted(ports)

def ask(port, payload):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
            connection.sendall(payload)
            return connection.recv(200).split(b"\\r\\n", 1)[0].decode(errors="replace")
    except OSError as error:
        return type(error).__name__

def handle(event):
    body = b'{"port": 1, "secret": "mine"}'
    head = b"PUT /system/instances/victim-1 HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n"
    register = head % len(body)
    call = b"GET /steal HTTP/1.1\\r\\nHost: x\\r\\nX-Strato-Instance: victim-1\\r\\n\\r\\n"
    return {port: [ask(port, register + body), ask(port, call)] for port in listening()}
"""


def listening_ports(pid: int) -> set[int]:
    """The loopback TCP ports process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def test_a_function_with_network_cannot_call_the_internal_hops(tmp_path: Path) -> None:
    # The faasd-like backend's provider and watchdogs listen on the host's loopback, which a function
    # deployed with network access shares: without the hop secret it could register itself as another
    # function's instance at the provider, or call another function's watchdog past the gateway.
    with running_server(tmp_path / "state", "--backend", "faasd") as server:
        client = server.client()
        victim = write_function(tmp_path / "code", "victim", "def handle(event):\n    return 'victim'\n")
        client.deploy("victim", directory=victim)
        prober = write_function(tmp_path / "code", "prober", PROBER)
        client.deploy("prober", directory=prober, network=True, timeout="60s")
        assert client.invoke("victim").body == b"victim"
        victim_ports = {i["port"] for i in client.describe("victim")["instances"]}
        assert server.process is not None
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        provider_ports = set().union(*(listening_ports(int(child)) for child in children))
        answers = json.loads(client.invoke("prober").body)
        ours = {
            int(port): seen for port, seen in answers.items() if int(port) in provider_ports | victim_ports
        }
        assert provider_ports and victim_ports and len(ours) == len(provider_ports | victim_ports)
        for port, (register, call) in ours.items():
            assert register.startswith("HTTP/1.1 403") and call.startswith("HTTP/1.1 403"), (
                port,
                register,
                call,
            )
        assert client.invoke("victim").body == b"victim"
