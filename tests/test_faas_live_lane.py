"""The gateway's C lane on a real server: which invocations it answers, which it hands to the general
path, and that a client cannot tell the two apart."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from live_helpers import Server, running_server, write_function
from raw_http import address, exchange, request

pytestmark = pytest.mark.system

HANDLERS = {
    "echo": """
        def handle(event):
            if event.path == "/status":
                return event.body, 201, {"X-Custom": "kept"}
            if event.path == "/empty":
                return None, 204
            if event.path == "/big":
                return b"b" * (300 * 1024)
            if event.path == "/seen":
                return {"method": event.method, "path": event.path, "query": event.query,
                        "headers": event.headers, "body": event.text}
            return event.body
    """,
    "fragile": """
        import os, time
        def handle(event):
            if event.text == "die":
                os._exit(3)
            if event.text == "sleep":
                time.sleep(5)
            return "ok"
    """,
}


def lane(server: Server) -> tuple[int, int]:
    counts = server.client().stats()["lane"]
    return int(counts["answered"]), int(counts["demoted"])


@pytest.fixture(scope="module", params=["50us", "0"], ids=["polling", "epoll"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The gateway waits for an instance's answer by polling (low load, the default) or in epoll."""
    root = tmp_path_factory.mktemp("lane")
    with running_server(root / "state", "--backend", "lean", "--lane-poll", request.param) as running:
        client = running.client()
        for name, source in HANDLERS.items():
            client.deploy(name, directory=write_function(root / "code", name, source), timeout="1s")
        for name in HANDLERS:
            assert client.invoke(name, b"warm").status == 200  # the cold start goes the general path
        yield running


def test_warm_plain_invocations_are_answered_by_the_lane(server: Server) -> None:
    client = server.client()
    before = lane(server)
    for index in range(50):
        result = client.invoke("echo", b"call %d" % index)
        assert result.status == 200 and result.body == b"call %d" % index
    answered, demoted = lane(server)
    assert (answered - before[0], demoted - before[1]) == (50, 0)
    metrics = client.request("GET", "/metrics").body.decode()
    assert "# TYPE strato_faas_lane_invocations_total counter" in metrics
    assert f'strato_faas_lane_invocations_total{{outcome="answered"}} {answered}' in metrics


def test_the_lane_and_the_general_path_answer_byte_for_byte_the_same(server: Server) -> None:
    plain = request("POST", "/function/echo/seen?q=1", "X-Probe: yes", body=b"hello")
    # Chunked: llhttp parses it, the gateway renders the head, the general path dispatches it.
    chunked = (
        b"POST /function/echo/seen?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Probe: yes\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    exchange(server.url, plain, expect=1)  # a result head the lane has not seen yet: checked, then cached
    before = lane(server)
    fast = exchange(server.url, plain, expect=1)
    after_fast = lane(server)
    general = exchange(server.url, chunked, expect=1)
    after_general = lane(server)
    assert after_fast == (before[0] + 1, before[1])
    assert after_general == after_fast  # the chunked request never entered the lane
    assert fast.responses[0].status == general.responses[0].status == 200
    seen = json.loads(fast.responses[0].body)
    # The function saw the same request either way (framing headers are the gateway's own).
    assert seen == json.loads(general.responses[0].body)
    assert seen["headers"]["x-probe"] == "yes" and seen["query"] == "q=1" and seen["body"] == "hello"
    assert fast.raw == general.raw


def test_a_new_result_head_is_checked_by_the_general_path_then_passed_through(server: Server) -> None:
    client = server.client()
    answered, demoted = lane(server)
    first = client.invoke("echo", b"a", path="/status")
    assert (first.status, first.body, first.headers["x-custom"]) == (201, b"a", "kept")
    assert lane(server) == (answered, demoted + 1)  # not seen before: demoted, checked, then cached
    again = client.invoke("echo", b"b", path="/status")
    assert (again.status, again.body, again.headers["x-custom"]) == (201, b"b", "kept")
    assert lane(server) == (answered + 1, demoted + 1)
    empty = client.invoke("echo", path="/empty")
    assert empty.status == 204 and empty.body == b""
    assert lane(server)[1] == demoted + 2  # a 204 carries no length: always the general path
    big = client.invoke("echo", path="/big")
    assert big.status == 200 and big.body == b"b" * (300 * 1024)  # streamed by the general path
    assert lane(server)[1] == demoted + 3


def test_a_timeout_in_the_lane_is_a_504_and_kills_the_instance(server: Server) -> None:
    client = server.client()
    assert client.invoke("fragile", b"ok").body == b"ok"
    demoted = lane(server)[1]
    started = time.monotonic()
    result = client.invoke("fragile", b"sleep")
    elapsed = time.monotonic() - started
    assert result.status == 504 and "timed out" in json.loads(result.body)["error"]
    assert 0.9 < elapsed < 5.0
    assert lane(server)[1] == demoted + 1
    assert client.invoke("fragile", b"ok").body == b"ok"  # a new instance


def test_an_instance_dying_in_the_lane_is_a_502_and_the_next_call_works(server: Server) -> None:
    client = server.client()
    assert client.invoke("fragile", b"ok").body == b"ok"
    answered, demoted = lane(server)
    result = client.invoke("fragile", b"die")
    assert result.status == 502 and "died" in json.loads(result.body)["error"]
    assert lane(server)[1] == demoted + 1
    assert client.invoke("fragile", b"ok").body == b"ok"
    assert client.invoke("fragile", b"ok").body == b"ok"
    assert lane(server)[0] >= answered + 1


def test_keep_alive_pipelining_and_close_on_the_lane(server: Server) -> None:
    # Two requests in one write are not one plain request: llhttp takes them, in order.
    pipelined = exchange(
        server.url,
        request("POST", "/function/echo", body=b"one") + request("POST", "/function/echo", body=b"two"),
        expect=2,
    )
    assert [r.body for r in pipelined.responses] == [b"one", b"two"]
    closing = exchange(server.url, request("POST", "/function/echo", body=b"bye", close=True))
    assert closing.responses[0].body == b"bye" and closing.closed
    assert b"Connection: close" in closing.raw


def test_protected_invoke_keeps_the_token_check_and_the_token_never_reaches_the_function(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "state", "--protect-invoke") as running:
        running.client().deploy("echo", directory=write_function(tmp_path, "echo", HANDLERS["echo"]))
        client = running.client()
        assert client.invoke("echo", b"warm").status == 200
        assert running.client(token=False).invoke("echo", b"x").status == 401
        for _ in range(2):  # the first /seen result is checked by the general path, the second is not
            seen = json.loads(client.invoke("echo", b"x", path="/seen").body)
            assert "authorization" not in seen["headers"]
        assert int(client.stats()["lane"]["answered"]) >= 1


def test_a_held_body_that_stops_coming_times_out(tmp_path: Path) -> None:
    # An idle timeout shorter than the body timeout must not close a connection in the middle of a request.
    with running_server(tmp_path / "state", "--body-timeout", "2s", "--idle-timeout", "1s") as running:
        running.client().deploy("echo", directory=write_function(tmp_path, "echo", HANDLERS["echo"]))
        assert running.client().invoke("echo", b"warm").status == 200
        host, port = address(running.url)
        with socket.create_connection((host, port), timeout=10) as sock:
            # A plain invocation's head and the start of its body: the lane holds it for the rest...
            sock.sendall(b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
            started = time.monotonic()
            answer = sock.recv(65536)
            waited = time.monotonic() - started
        # ...which never comes: 408 after the body timeout (the sweep runs once a second), as for llhttp.
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 1.9 < waited < 6.0
        # A body that does come in pieces is answered by the lane.
        with socket.create_connection((host, port), timeout=10) as sock:
            before = lane(running)
            sock.sendall(b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
            time.sleep(0.05)
            sock.sendall(b"def")
            answer = sock.recv(65536)
        assert answer.endswith(b"\r\n\r\nabcdef")
        assert lane(running)[0] == before[0] + 1


def test_a_graceful_shutdown_lets_the_lane_finish_and_says_connection_close(tmp_path: Path) -> None:
    slow = "import time\ndef handle(event):\n    time.sleep(float(event.text))\n    return 'slept'\n"
    with running_server(tmp_path / "state", "--backend", "lean") as running:
        running.client().deploy("slow", directory=write_function(tmp_path, "slow", slow))
        for _ in range(2):  # a cold start, then a result head the lane has seen
            assert running.client().invoke("slow", b"0").body == b"slept"
        before = lane(running)[0]
        outcome: dict[str, object] = {}

        def call() -> None:
            answer = exchange(running.url, request("POST", "/function/slow", body=b"1.0"), expect=1)
            outcome.update(responses=answer.responses, raw=answer.raw)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the lane has the invocation in flight
            described = running.client().describe("slow")
            if any(instance["inflight"] for instance in described["instances"]):
                break
            time.sleep(0.02)
        running.process.send_signal(signal.SIGTERM)
        caller.join(15)
        responses = outcome["responses"]
        assert isinstance(responses, list) and responses[0].status == 200 and responses[0].body == b"slept"
        assert b"Connection: close" in cast(bytes, outcome["raw"])
        assert running.process.wait(10) == 0
        assert before >= 1  # the warm call before went through the lane
