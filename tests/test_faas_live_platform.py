"""The live platform end to end: real gateway processes, real instances, real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from live_helpers import Server, running_server, write_function
from strato.faas.live.client import ApiError, FaasClient
from strato.faas.live.isolation import probe_host

pytestmark = pytest.mark.system

BACKENDS = ["lean", "faasd"]


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    with running_server(root / "state", "--backend", request.param, "--max-body", "64KiB") as running:
        client = running.client()
        code = root / "code"
        for kind in ("echo", "raises", "crash", "snoop", "writer"):
            client.deploy(kind, directory=write_function(code, kind))
        client.deploy("slow", directory=write_function(code, "slow"), timeout="1s", maxConcurrency=2)
        yield running


def test_body_status_and_headers_round_trip(server: Server) -> None:
    client = server.client()
    result = client.invoke("echo", b"\x00binary\xffbody")
    assert result.status == 200
    assert result.body == b"\x00binary\xffbody"
    custom = client.invoke("echo", b"made", path="/status")
    assert custom.status == 201
    assert custom.headers["x-custom"] == "kept"
    assert custom.headers["content-type"] == "text/x-strato"
    assert custom.body == b"made"
    seen = json.loads(
        client.invoke(
            "echo", b"payload", method="PUT", path="/request?a=1&b=two", headers={"X-Probe": "yes"}
        ).body
    )
    assert seen == {
        "method": "PUT",
        "path": "/request",
        "query": "a=1&b=two",
        "header": "yes",
        "body": "payload",
    }


def test_handler_exception_is_a_json_500(server: Server) -> None:
    result = server.client().invoke("raises", b"xyz")
    assert result.status == 500
    error = json.loads(result.body)
    assert "ValueError: bad input: xyz" in error["error"]
    assert server.client().invoke("raises", b"again").status == 500


def test_crash_mid_request_is_502_and_the_next_call_works(server: Server) -> None:
    client = server.client()
    result = client.invoke("crash")
    assert result.status == 502
    assert "died" in json.loads(result.body)["error"]
    assert client.invoke("echo", b"still fine").body == b"still fine"
    assert client.invoke("crash").status == 502


def test_killed_instance_is_replaced(server: Server) -> None:
    client = server.client()
    assert client.invoke("slow", b"0.01").status == 200
    outcome: dict[str, int] = {}
    caller = threading.Thread(
        target=lambda: outcome.update(status=server.client().invoke("slow", b"0.8").status)
    )
    caller.start()
    pid = None
    deadline = time.monotonic() + 5
    while pid is None and time.monotonic() < deadline:
        busy = [i for i in client.describe("slow")["instances"] if i["inflight"] and i["state"] == "ready"]
        pid = busy[0]["pid"] if busy else None
        time.sleep(0.02)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    caller.join(10)
    assert outcome["status"] == 502
    assert client.invoke("slow", b"0.01").body == b"slept"


def test_timeout_is_504_and_kills_the_instance(server: Server) -> None:
    client = server.client()
    started = time.monotonic()
    result = client.invoke("slow", b"5")
    elapsed = time.monotonic() - started
    assert result.status == 504
    assert 0.9 < elapsed < 3.0
    assert "timed out" in json.loads(result.body)["error"]
    time.sleep(0.2)
    assert all(i["state"] != "ready" or i["inflight"] == 0 for i in client.describe("slow")["instances"])
    assert client.invoke("slow", b"0.01").status == 200


def test_oversized_body_is_413_and_the_server_carries_on(server: Server) -> None:
    client = server.client()
    result = client.invoke("echo", b"x" * (65 * 1024))
    assert result.status == 413
    assert client.invoke("echo", b"x" * (63 * 1024)).status == 200


def test_unknown_function_is_404(server: Server) -> None:
    result = server.client().invoke("nobody-here", b"")
    assert result.status == 404
    assert "nobody-here" in json.loads(result.body)["error"]


def test_one_instance_runs_concurrent_invocations_in_threads(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.deploy("threaded", directory=write_function(tmp_path, "slow"), concurrency=16, maxConcurrency=32)
    assert client.invoke("threaded", b"0.01").status == 200
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: server.client().invoke("threaded", b"0.5").status, range(16)))
    assert statuses == [200] * 16
    assert time.monotonic() - started < 2.0, "the 16 calls ran one after another"
    instances = client.describe("threaded")["instances"]
    assert len(instances) == 1


def test_concurrency_limit_is_429(server: Server) -> None:
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: server.client().invoke("slow", b"0.5").status, range(4)))
    assert sorted(statuses) == [200, 200, 429, 429]


def test_broken_code_is_refused_and_nothing_is_half_deployed(server: Server, tmp_path: Path) -> None:
    client = server.client()
    with pytest.raises(ApiError) as syntax:
        client.deploy("broken", files={"handler.py": "def handle(event):\n    return (\n"})
    assert syntax.value.status == 400
    assert "handler.py, line" in str(syntax.value)
    with pytest.raises(ApiError) as missing:
        client.deploy(
            "broken", files={"handler.py": "import no_such_module_here\ndef handle(e):\n    pass\n"}
        )
    assert missing.value.status == 400
    assert "no_such_module_here" in str(missing.value)
    with pytest.raises(ApiError) as attribute:
        client.deploy("broken", files={"handler.py": "x = 1\n"})
    assert "handle" in str(attribute.value)
    assert "broken" not in [f["name"] for f in client.list()]
    assert not (server.state_dir / "functions" / "broken").exists()
    assert client.invoke("broken").status == 404
    # A broken update leaves the running version serving.
    with pytest.raises(ApiError):
        client.deploy("echo", files={"handler.py": "raise RuntimeError('boom at import')\n"})
    assert client.invoke("echo", b"survived").body == b"survived"


def test_admin_routes_need_the_token(server: Server) -> None:
    anonymous = server.client(token=False)
    with pytest.raises(ApiError) as error:
        anonymous.list()
    assert error.value.status == 401
    with pytest.raises(ApiError):
        FaasClient(server.url, "wrong-token").deploy(
            "x", files={"handler.py": "def handle(e):\n  return 1\n"}
        )
    assert anonymous.invoke("echo", b"open").status == 200
    mode = (server.state_dir / "token").stat().st_mode & 0o777
    assert mode == 0o600


def test_health_and_metrics(server: Server) -> None:
    client = server.client(token=False)
    assert json.loads(client.request("GET", "/healthz").body)["status"] == "ok"
    client.invoke("echo", b"count me")
    text = client.request("GET", "/metrics").body.decode()
    assert 'strato_faas_invocations_total{code="200",function="echo"}' in text
    assert "strato_faas_cold_starts_total" in text
    assert "strato_faas_request_duration_seconds_bucket" in text
    assert 'strato_faas_instances{function="echo",state="ready"}' in text
    assert "strato_faas_memory_allocated_mb" in text


needs_sandbox = pytest.mark.skipif(
    not {"mount", "pid"} <= probe_host().namespaces or not probe_host().setuid,
    reason="mount/pid namespaces and setuid need root on Linux",
)


@needs_sandbox
def test_functions_cannot_read_the_token_or_each_other(server: Server) -> None:
    client = server.client()
    token_probe = json.loads(client.invoke("snoop", str(server.state_dir / "token").encode()).body)
    assert token_probe["read"] is False
    other = next((server.state_dir / "functions" / "echo").glob("v*/code/handler.py"))
    assert json.loads(client.invoke("snoop", str(other).encode()).body)["read"] is False
    own = next((server.state_dir / "functions" / "snoop").glob("v*/code/handler.py"))
    assert json.loads(client.invoke("snoop", str(own).encode()).body)["read"] is True
    whoami = json.loads(client.invoke("echo", path="/whoami").body)
    assert whoami["uid"] != 0
    assert whoami["pid"] <= 2  # first processes of their own pid namespace
    assert json.loads(client.invoke("writer").body)["dir"] == "/tmp"
    assert not Path("/tmp/mark").exists() or Path("/tmp/mark").read_text() != "x"


def test_graceful_shutdown_drains_in_flight_requests(tmp_path: Path) -> None:
    with running_server(tmp_path / "state") as running:
        running.client().deploy("slow", directory=write_function(tmp_path, "slow"))
        outcome: dict[str, object] = {}

        def call() -> None:
            result = running.client().invoke("slow", b"1.0")
            outcome.update(status=result.status, body=result.body)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.4)
        running.process.send_signal(signal.SIGTERM)
        caller.join(10)
        assert outcome == {"status": 200, "body": b"slept"}
        assert running.process.wait(10) == 0


def test_deployments_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_server(state) as running:
        running.client().deploy("echo", directory=write_function(tmp_path, "echo"))
    with running_server(state) as running:
        assert running.client().invoke("echo", b"back").body == b"back"


def test_protected_invoke_and_fresh_spawn(tmp_path: Path) -> None:
    with running_server(tmp_path / "state", "--protect-invoke", "--spawn", "fresh") as running:
        running.client().deploy("echo", directory=write_function(tmp_path, "echo"))
        assert running.client(token=False).invoke("echo", b"x").status == 401
        assert running.client().invoke("echo", b"with token").body == b"with token"
        text = running.client().request("GET", "/metrics").body.decode()
        assert 'strato_faas_instance_start_seconds_count{spawn="fresh"} 1' in text


def _strato(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "strato", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_cli_wrappers_deploy_invoke_list_remove(tmp_path: Path) -> None:
    with running_server(tmp_path / "state") as running:
        where = ["--url", running.url, "--state-dir", str(running.state_dir)]
        code = write_function(tmp_path, "echo")
        deployed = _strato(
            "faas", "deploy", "echo", "--dir", str(code), "--memory", "64Mi", "--env", "A=1", "--json", *where
        )
        assert deployed.returncode == 0, deployed.stderr
        assert json.loads(deployed.stdout)["limits"]["memory"] == "64Mi"
        invoked = _strato("faas", "invoke", "echo", "-d", "-", *where, stdin=b"from stdin")
        assert invoked.returncode == 0 and invoked.stdout == b"from stdin"
        listed = json.loads(_strato("faas", "list", "--json", *where).stdout)
        assert [f["name"] for f in listed] == ["echo"] and listed[0]["envVars"] == {"A": "1"}
        missing = _strato("faas", "invoke", "nope", *where)
        assert missing.returncode == 1 and b"HTTP 404" in missing.stderr
        no_logs = _strato("faas", "logs", "nope", *where)
        assert (
            no_logs.returncode == 2
            and no_logs.stderr.count(b"\n") == 1
            and b"no function named" in no_logs.stderr
        )
        bad_lines = running.client().request("GET", "/system/logs/echo?lines=0")
        assert bad_lines.status == 400 and b"lines must be" in bad_lines.body
        assert _strato("faas", "remove", "echo", *where).returncode == 0
        assert json.loads(_strato("faas", "list", "--json", *where).stdout) == []
        refused = _strato("faas", "list", "--url", running.url, "--token", "wrong")
        assert refused.returncode == 2 and b"401" in refused.stderr
    dead = _strato("faas", "list", "--url", running.url, "--token", "x")
    assert dead.returncode == 2 and b"no strato faas server" in dead.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "quick"], "backend must be one of"),
        (["--policy", "sometimes"], "unknown policy"),
        (["--time-scale", "0"], "time scale must be positive"),
        (["--max-response", "0MiB"], "--max-response must be positive"),
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (["--pids-limit", "0"], "limits must be positive"),
        (["--code-root", "/nonexistent/strato-code"], "is not a directory"),
        (["--lane-poll", "5ms"], "longer than 1ms"),
        (["--lane-poll", "50xs"], "unknown duration unit"),
    ],
)
def test_serve_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = _strato("faas", "serve", "--port", "0", "--state-dir", str(tmp_path / "s"), *args)
    assert result.returncode == 2
    assert message.encode() in result.stderr
