"""What a function sees and what it can send back: instances are hostile code, their output is hostile data
(issue 11, items 2, 3, 5, 6, 15 and 16)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_helpers import Server, running_server, write_function
from raw_http import address, exchange, request
from strato.faas.live.isolation import probe_host

pytestmark = pytest.mark.system

SECRET = "s3cr3t-admin-token-from-the-environment"

ENVIRON = """
import os
def handle(event):
    return dict(os.environ)
"""

DESCRIPTORS = """
import os, stat
def handle(event):
    seen = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            seen[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, gone by now
    if event.path == "/forge":
        os.write(1, b"2026-01-01T00:00:00 strato faas: forged server line\\n")
        print("\\x1b[31mred\\x1b[0m from print", flush=True)
        try:
            os.ftruncate(2, 0)
            seen["truncated"] = "yes"
        except OSError as error:
            seen["truncated"] = type(error).__name__
    return seen
"""

# Finds its own control socket and writes a forged RESULT frame for request 1 (a new instance's first).
FORGER = """
import os, struct, time

def control():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return int(name)
        except OSError:
            pass

def frame(meta, body, declared=None):
    size = len(body) if declared is None else declared
    return struct.pack("!IBII", 1, 11, len(meta), size) + meta + body

def handle(event):
    fd = control()
    kind = event.path
    if kind == "/split":
        meta = b"200\\r\\nSet-Cookie: a=b\\r\\n\\r\\nHTTP/1.1 200 OK\\r\\nSet-Cookie: injected=1\\r\\n"
        os.write(fd, frame(meta, b"x"))
    elif kind == "/status":
        os.write(fd, frame(event.text.encode() + b"\\r\\n", b"x"))
    elif kind == "/huge":
        os.write(fd, frame(b"200\\r\\n", b"", declared=4 * 1024**3 - 1))
        chunk = b"z" * (1 << 20)
        for _ in range(400):
            os.write(fd, chunk)
    elif kind == "/stall":
        os.write(fd, frame(b"200\\r\\n", b"", declared=8 * 1024**2))
        os.write(fd, b"z" * (1 << 20))
    time.sleep(30)
    return "not reached"
"""

BAD_RESULTS = """
def handle(event):
    kind = event.path
    if kind == "/crlf":
        return "x", 200, {"X-Note": "a\\r\\nSet-Cookie: injected=1"}
    if kind == "/nonascii":
        return "x", 200, {"X-Name": "caf\\u00e9"}
    if kind == "/badname":
        return "x", 200, {"Bad Name": "1"}
    if kind == "/status":
        return "x", int(event.text)
    if kind == "/nobody":
        return "ignored", 204
    return "fine"
"""

BIG = """
def handle(event):
    return b"x" * int(event.text)
"""

HOG = """
def handle(event):
    hog = bytearray(int(event.text) * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    return str(len(hog))
"""


def deploy(server: Server, root: Path, name: str, source: str, **options: object) -> None:
    code = write_function(root / "code", name, source)
    server.client().deploy(name, directory=code, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("functions")
    with running_server(
        root / "state",
        "--log-limit",
        "4KiB",
        env={"STRATO_FAAS_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": "also-secret"},
    ) as running:
        deploy(running, root, "environ", ENVIRON, env={"GREETING": "hi"})
        deploy(running, root, "descriptors", DESCRIPTORS)
        deploy(running, root, "forger", FORGER, timeout="20s")
        deploy(running, root, "bad-results", BAD_RESULTS)
        deploy(running, root, "big", BIG, memory="1Gi")
        deploy(running, root, "headers", "def handle(event):\n    return event.headers\n")
        yield running


def wrote_no_secret(values: dict[str, str]) -> bool:
    return not any(SECRET in value or "also-secret" in value for value in values.values())


ALLOWED_ENVIRONMENT = {"PATH", "LANG", "HOME", "TMPDIR", "GREETING"}


def test_functions_see_only_their_own_environment(server: Server) -> None:
    # On main `return dict(os.environ)` from an anonymous invocation returned STRATO_FAAS_TOKEN.
    seen = json.loads(server.client(token=False).invoke("environ").body)
    assert set(seen) <= ALLOWED_ENVIRONMENT
    assert seen["GREETING"] == "hi"
    assert wrote_no_secret(seen)


def test_fresh_interpreters_get_the_same_clean_environment(tmp_path: Path) -> None:
    with running_server(tmp_path / "state", "--spawn", "fresh", env={"STRATO_FAAS_TOKEN": SECRET}) as fresh:
        deploy(fresh, tmp_path, "environ", ENVIRON, env={"GREETING": "hi"})
        seen = json.loads(fresh.client(token=False).invoke("environ").body)
    assert set(seen) <= ALLOWED_ENVIRONMENT
    assert wrote_no_secret(seen)


def test_functions_hold_no_descriptor_of_the_server(server: Server) -> None:
    # On main fds 1 and 2 were the server's log: a function forged lines in it and truncated it to 0 bytes.
    log_before = server.log()
    seen = json.loads(server.client().invoke("descriptors", path="/forge").body)
    truncated = seen.pop("truncated")
    assert seen.pop("0") == "/dev/null"
    assert seen["1"] == seen["2"] and seen.pop("1").startswith("pipe:")
    seen.pop("2")
    assert len(seen) == 1 and next(iter(seen.values())).startswith("socket:"), seen  # the control socket
    assert truncated == "OSError" or truncated == "yes"  # a pipe cannot be truncated; nothing else is fd 2
    log_after = server.log()
    assert "forged server line" not in log_after and log_after.startswith(log_before)
    logs = server.client().logs("descriptors")
    assert "forged server line" in logs
    assert "\\x1b[31mred\\x1b[0m from print" in logs and "\x1b" not in logs


def test_logs_are_capped_and_readable_from_the_cli(server: Server) -> None:
    for _ in range(40):  # 40 x ~150 bytes through a 4 KiB cap: rotated, never more than twice the cap
        server.client().invoke("descriptors", path="/forge")
    directory = server.state_dir / "logs"
    sizes = {path.name: path.stat().st_size for path in directory.iterdir()}
    assert sizes["descriptors.log"] <= 4096 and sizes.get("descriptors.log.1", 0) <= 4096
    assert (directory / "descriptors.log").stat().st_mode & 0o777 == 0o600
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "strato",
            "faas",
            "logs",
            "descriptors",
            "-n",
            "3",
            "--url",
            server.url,
            "--token",
            server.token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(printed) == 3 and all("descriptors-" in line for line in printed)


def test_the_platform_token_and_platform_headers_never_reach_a_function(server: Server) -> None:
    seen = json.loads(server.client().invoke("headers", headers={"X-Strato-Instance": "forged"}).body)
    assert "authorization" not in seen and "x-strato-instance" not in seen
    assert seen["host"].startswith("127.0.0.1:")
    # An Authorization that is not the platform's belongs to the function (its own API keys).
    mine = {"Authorization": "Basic dXNlcjpwYXNz"}
    seen = json.loads(server.client(token=False).invoke("headers", headers=mine).body)
    assert seen["authorization"] == "Basic dXNlcjpwYXNz"


def pipeline_of_two(path: str, body: bytes = b"") -> bytes:
    return request("POST", f"/function/bad-results{path}", body=body) + request(
        "POST", "/function/bad-results", close=True
    )


@pytest.mark.parametrize("path", ["/crlf", "/nonascii", "/badname"])
def test_bad_headers_from_a_handler_are_a_clear_500_and_split_nothing(server: Server, path: str) -> None:
    # On main a header value with CR LF made the gateway write a whole extra response (and a Set-Cookie).
    result = exchange(server.url, pipeline_of_two(path))
    assert [response.status for response in result.responses] == [500, 200]
    assert result.closed
    assert "header" in json.loads(result.responses[0].body)["error"]
    assert all(response.header("set-cookie") is None for response in result.responses)


@pytest.mark.parametrize("status", ["-1", "0", "99", "101", "600", "99999"])
def test_statuses_outside_200_599_from_a_handler_are_refused(server: Server, status: str) -> None:
    # On main -1, 0 and 99999 were passed on to the client as they were.
    result = exchange(server.url, pipeline_of_two("/status", status.encode()))
    assert [response.status for response in result.responses] == [500, 200]
    assert f"status {status}" in json.loads(result.responses[0].body)["error"]


def test_no_body_statuses_and_head_requests_keep_the_stream_in_step(server: Server) -> None:
    payload = request("POST", "/function/bad-results/nobody")
    result = exchange(server.url, payload + request("POST", "/function/bad-results", close=True))
    assert [response.status for response in result.responses] == [204, 200]
    assert [response.body for response in result.responses] == [b"", b"fine"]
    # A response parser cannot tell a HEAD answer's end by itself: read it raw, to the close.
    head = exchange(server.url, request("HEAD", "/function/bad-results", close=True)).raw
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 4\r\n" in head
    assert head.endswith(b"\r\n\r\n")


def test_a_forged_frame_that_splits_the_response_kills_the_instance(server: Server) -> None:
    payload = request("POST", "/function/forger/split") + request("GET", "/healthz", close=True)
    result = exchange(server.url, payload)
    assert [response.status for response in result.responses] == [502, 200]
    assert all(response.header("set-cookie") is None for response in result.responses)
    assert "killed" in json.loads(result.responses[0].body)["error"]
    assert server.client().describe("forger")["instances"] == []


@pytest.mark.parametrize("status_line", ["099", "101", "600", "2000", "200 please", "-20"])
def test_a_forged_frame_with_a_bad_status_is_a_502(server: Server, status_line: str) -> None:
    result = server.client().invoke("forger", status_line.encode(), path="/status")
    assert result.status == 502
    assert "killed" in json.loads(result.body)["error"]


def gateway_memory_kib(server: Server, field: str) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def reset_peak(server: Server) -> int:
    """Reset the gateway's peak RSS (VmHWM) to now and return its RSS in KiB."""
    assert server.process is not None
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")
    return gateway_memory_kib(server, "VmRSS")


def test_a_frame_declaring_4_gib_is_refused_before_it_is_buffered(server: Server) -> None:
    # On main a forged header declaring ~4 GiB with 400 MB streamed grew the gateway by 410 MB.
    before = reset_peak(server)
    result = server.client().invoke("forger", path="/huge")
    assert result.status == 502
    assert "4294967295 bytes" in json.loads(result.body)["error"]
    assert gateway_memory_kib(server, "VmHWM") - before < 32 * 1024


def test_a_response_over_the_limit_is_a_clear_502_and_the_instance_lives(server: Server) -> None:
    # On main a 200 MB response peaked the gateway at 646 MB.
    client = server.client()
    before = reset_peak(server)
    result = client.invoke("big", b"200000000")
    assert result.status == 502
    assert "exceeds the platform's limit of 67108864 bytes" in json.loads(result.body)["error"]
    assert gateway_memory_kib(server, "VmHWM") - before < 32 * 1024
    assert client.invoke("big", b"10").body == b"x" * 10


def test_large_responses_stream_through_without_being_buffered(tmp_path: Path) -> None:
    with running_server(tmp_path / "state", "--max-response", "256MiB") as big_server:
        deploy(big_server, tmp_path, "big", BIG, memory="1Gi")
        assert big_server.client().invoke("big", b"1").status == 200  # warm, so the peak is the response's
        before = reset_peak(big_server)
        size = 200_000_000
        digest = hashlib.sha256()
        received = 0
        with socket.create_connection(address(big_server.url), timeout=60) as sock:
            sock.sendall(request("POST", "/function/big", body=str(size).encode(), close=True))
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            head, _, rest = head.partition(b"\r\n\r\n")
            digest.update(rest)
            received = len(rest)
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
                received += len(chunk)
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head
        assert received == size and digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
        assert gateway_memory_kib(big_server, "VmHWM") - before < 48 * 1024


def test_a_streamed_body_that_stops_coming_ends_its_instance(tmp_path: Path) -> None:
    with running_server(tmp_path / "state") as stall_server:
        deploy(stall_server, tmp_path, "forger", FORGER, timeout="2s")
        started = time.monotonic()
        result = exchange(
            stall_server.url, request("POST", "/function/forger/stall", close=True), timeout_s=60
        )
        assert result.closed and time.monotonic() - started < 30
        assert result.responses == []  # the head promised 8 MiB; the connection ended after 1 MiB
        assert result.raw.startswith(b"HTTP/1.1 200") and len(result.raw) < 2 * 1024 * 1024
        assert "stopped sending its response body" in stall_server.client().logs("forger")


def test_a_memory_limit_kill_says_so(tmp_path: Path) -> None:
    if probe_host().cgroup is None:
        pytest.skip("no memory cgroup here: the limit is RLIMIT_AS, which cannot tell an OOM kill apart")
    with running_server(tmp_path / "state") as oom_server:
        deploy(oom_server, tmp_path, "hog", HOG, memory="64Mi")
        client = oom_server.client()
        assert client.invoke("hog", b"1").status == 200
        result = client.invoke("hog", b"200")
        assert result.status == 502
        assert "killed by its memory limit of 64 MiB" in json.loads(result.body)["error"]
        assert "memory limit" in client.logs("hog")
        assert client.invoke("hog", b"1").status == 200
