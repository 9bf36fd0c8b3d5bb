"""The gateway's own state under attack and under faults (issue 11, items 4, 12, 14 and 15): directory
deploys, a damaged spec.json, a full disk, racing edits, bodies built to crash a parser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_helpers import running_server, write_function
from strato.errors import StratoError
from strato.faas.live.client import ApiError, FaasClient
from strato.faas.live.serverproc import ServerProcess

pytestmark = pytest.mark.system

HANDLER = "def handle(event):\n    return open(event.text, 'rb').read() if event.text else 'ok'\n"
ROOT = os.geteuid() == 0


@pytest.fixture
def world_readable_root() -> Iterator[Path]:
    """A code root that the unprivileged reader can traverse (pytest's own temporary tree is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="strato-code-root-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def deploy_directory(client: FaasClient, name: str, directory: Path) -> tuple[int, str]:
    result = client.request(
        "PUT",
        "/system/functions",
        json.dumps({"service": name, "directory": str(directory)}).encode(),
        {"Content-Type": "application/json"},
    )
    return result.status, json.loads(result.body).get("error", "")


def test_directory_deploys_are_off_without_a_code_root(tmp_path: Path) -> None:
    code = write_function(tmp_path / "code", "plain", HANDLER)
    with running_server(tmp_path / "state") as server:
        status, error = deploy_directory(server.client(), "plain", code)
    assert status == 400 and "--code-root" in error


def test_directory_deploys_read_only_below_the_root_without_links_or_privileges(
    tmp_path: Path, world_readable_root: Path
) -> None:
    # On main {"directory": "/var/tmp/x"} was read as root and followed symlinks: a link planted by a
    # function to a root-only file was served back.
    secret = tmp_path / "root-only.txt"
    secret.write_text("only root may read this")
    secret.chmod(0o600)
    good = world_readable_root / "good"
    good.mkdir(mode=0o755)
    (good / "handler.py").write_text(HANDLER)
    (good / "handler.py").chmod(0o644)
    thief = world_readable_root / "thief"
    thief.mkdir(mode=0o755)
    (thief / "handler.py").write_text(HANDLER)
    (thief / "loot.txt").symlink_to(secret)
    linked_dir = world_readable_root / "linked"
    linked_dir.symlink_to(tmp_path)
    private = world_readable_root / "private"
    private.mkdir(mode=0o700)
    (private / "handler.py").write_text(HANDLER)
    (private / "handler.py").chmod(0o600)
    fifo = world_readable_root / "fifo"
    fifo.mkdir(mode=0o755)
    (fifo / "handler.py").write_text(HANDLER)
    (fifo / "handler.py").chmod(0o644)
    os.mkfifo(fifo / "pipe")
    with running_server(tmp_path / "state", "--code-root", str(world_readable_root)) as server:
        client = server.client()
        assert deploy_directory(client, "good", good)[0] == 201
        assert client.invoke("good").body == b"ok"
        status, error = deploy_directory(client, "thief", thief)
        assert status == 400 and "symbolic link" in error
        status, error = deploy_directory(client, "outside", tmp_path)
        assert status == 400 and "not below the server's code root" in error
        status, error = deploy_directory(client, "linked", linked_dir)
        assert status == 400 and "not below the server's code root" in error
        status, error = deploy_directory(client, "fifo", fifo)
        assert status == 400 and "not a regular file" in error  # a FIFO would have blocked the reader
        if ROOT:
            status, error = deploy_directory(client, "private", private)
            assert status == 400 and "nobody" in error
        assert [function["name"] for function in client.list()] == ["good"]


def test_a_damaged_spec_is_skipped_and_every_other_function_starts(tmp_path: Path) -> None:
    # On main one truncated spec.json made the server refuse to start: every function was down.
    state = tmp_path / "state"
    with running_server(state) as server:
        client = server.client()
        for name in ("alpha", "beta"):
            client.deploy(name, directory=write_function(tmp_path / "code", name, HANDLER))
    spec = state / "functions" / "alpha" / "spec.json"
    spec.write_bytes(spec.read_bytes()[:25])
    with running_server(state) as server:
        client = server.client()
        assert client.invoke("beta").body == b"ok"
        assert client.invoke("alpha").status == 404
        assert f"warning: {spec}: unreadable function spec, skipped" in server.log()
        assert any(str(spec) in line for line in client.stats()["skipped_at_start"])
        # A new function gets a uid of its own, not the damaged one's.
        client.deploy("gamma", directory=write_function(tmp_path / "code", "gamma", HANDLER))
        if ROOT:
            owners = {(state / "functions" / n / "v1" / "code").stat().st_uid for n in ("alpha", "gamma")}
            assert len(owners) == 2


def in_a_tiny_tmpfs(mount_point: Path, size: str) -> list[str]:
    """Run the server in its own mount namespace with ``mount_point`` on a tmpfs of ``size``: a real
    full disk, invisible to the rest of the machine and gone with the server."""
    script = 'mount -t tmpfs -o size="$1" strato-full "$0" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(mount_point), size]


@pytest.mark.skipif(not ROOT or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_full_disk_answers_507_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    # On main deploys answered 500 and left half-written version directories behind.
    state = tmp_path / "state"
    state.mkdir()
    with running_server(state, wrapper=in_a_tiny_tmpfs(state, "256k")) as server:
        client = server.client()
        client.deploy("small", files={"handler.py": HANDLER})
        big = {"handler.py": HANDLER, "data.txt": "x" * 400_000}
        result = client.request(
            "PUT",
            "/system/functions",
            json.dumps({"service": "big", "files": big}).encode(),
            {"Content-Type": "application/json"},
        )
        assert result.status == 507
        assert "No space left on device" in json.loads(result.body)["error"]
        assert server.process is not None
        seen_by_server = Path(f"/proc/{server.process.pid}/root") / str(state).lstrip("/") / "functions"
        assert sorted(path.name for path in seen_by_server.iterdir()) == ["small"]
        assert client.invoke("small").body == b"ok"


@pytest.mark.skipif(not ROOT or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_token_is_never_left_empty_by_a_full_disk(tmp_path: Path) -> None:
    # On main a first start on a full disk left a 0-byte token that blocked every later start.
    probe = """
import sys
from pathlib import Path
from strato.core.tokens import ensure_token_file
from strato.errors import StratoError
disk = Path(sys.argv[1])
filler = disk / "filler"
with open(filler, "wb", buffering=0) as file:
    try:
        while True:
            file.write(b"x" * 4096)
    except OSError:
        pass
try:
    ensure_token_file(disk / "token")
    print("created on a full disk?")
except StratoError as error:
    print("refused:", error)
print("left:", sorted(path.name for path in disk.iterdir()))
filler.unlink()
print("token length:", len(ensure_token_file(disk / "token")))
"""
    disk = tmp_path / "disk"
    disk.mkdir()
    command = [*in_a_tiny_tmpfs(disk, "64k"), sys.executable, "-c", probe, str(disk)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "refused: cannot create the token file" in output and "No space left on device" in output
    assert "left: ['filler']" in output
    assert "token length: 43" in output


def test_bodies_built_to_crash_the_parser_are_400(tmp_path: Path) -> None:
    # On main deeply nested JSON raised RecursionError: a 500.
    with running_server(tmp_path / "state") as server:
        client = server.client()
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"functionName":' * 50_000):
            for method, path in (("PUT", "/system/functions"), ("DELETE", "/system/functions")):
                result = client.request(method, path, body, {"Content-Type": "application/json"})
                assert result.status == 400, (method, result.body[:200])
        assert client.health()["status"] == "ok"


def test_racing_deploys_removes_and_invocations_get_clear_answers(tmp_path: Path) -> None:
    # On main these races gave ModuleNotFoundError 500s and 502s.
    with running_server(tmp_path / "state") as server:
        deadline = time.monotonic() + 8
        statuses: Counter[tuple[str, int]] = Counter()
        bodies: list[bytes] = []
        lock = threading.Lock()

        def record(kind: str, status: int, body: bytes) -> None:
            with lock:
                statuses[(kind, status)] += 1
                if status >= 500:
                    bodies.append(body[:300])

        def deployer() -> None:
            client = server.client()
            version = 0
            while time.monotonic() < deadline:
                version += 1
                source = f"import time\nVERSION = {version}\ndef handle(event):\n    return str(VERSION)\n"
                payload = {"service": "racer", "files": {"handler.py": source}}
                result = client.request("PUT", "/system/functions", json.dumps(payload).encode())
                record("deploy", result.status, result.body)

        def remover() -> None:
            client = server.client()
            while time.monotonic() < deadline:
                result = client.request("DELETE", "/system/functions/racer")
                record("remove", result.status, result.body)
                time.sleep(0.05)

        def invoker() -> None:
            client = server.client()
            while time.monotonic() < deadline:
                result = client.invoke("racer")
                record("invoke", result.status, result.body)

        threads = [threading.Thread(target=target) for target in (deployer, remover, invoker, invoker)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        allowed = {200, 201, 404, 409, 503}
        assert all(status in allowed for (_, status) in statuses), (statuses, sorted(set(bodies)))
        assert statuses[("invoke", 200)] > 0 and statuses[("remove", 200)] > 0
        with pytest.raises(ApiError):
            server.client().describe("no-such-function")


@pytest.mark.parametrize("backend", ["lean", "faasd"])
def test_sigterm_under_load_drains_without_a_traceback(tmp_path: Path, backend: str) -> None:
    # Reported on main: SIGTERM under load logged a BrokenPipeError traceback.
    server = ServerProcess(tmp_path, args=["--backend", backend, "--drain-timeout", "5s"])
    server.start(60)
    try:
        server.client().deploy("echo", files={"handler.py": "def handle(event):\n    return event.body\n"})
        stop = threading.Event()
        answered = Counter()

        def load() -> None:
            client = server.client(timeout_s=30)
            while not stop.is_set():
                try:
                    answered[client.invoke("echo", b"x").status] += 1
                except StratoError:
                    return  # the server went away: expected at the end

        threads = [threading.Thread(target=load) for _ in range(12)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while sum(answered.values()) < 300:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(60)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        server.stop()
    assert code == 0
    assert "Traceback" not in server.log() and "Error" not in server.log()
    log = server.state_dir / "logs" / "echo.log"
    assert not log.exists() or "Traceback" not in log.read_text()
    assert set(answered) <= {200, 503}
