"""The gateway's HTTP front door under hostile bytes: one request must never hang it, smuggle a second
request past it, or hold its connections (issue 11, items 1, 9 and 10)."""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live_helpers import Server, running_server, write_function
from raw_http import InProcessTransport, address, exchange, request

pytestmark = pytest.mark.system

ECHO = "def handle(event):\n    return event.body\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("http")
    with running_server(
        root / "state",
        "--max-body",
        "64KiB",
        "--header-timeout",
        "3s",
        "--body-timeout",
        "3s",
        "--idle-timeout",
        "3s",
        "--max-connections",
        "64",
    ) as running:
        client = running.client()
        client.deploy("echo", directory=write_function(root / "code", "echo", ECHO))
        client.deploy("other", directory=write_function(root / "code", "other", ECHO))
        yield running


def healthy(server: Server) -> bool:
    return server.client(timeout_s=10).health()["status"] == "ok"


def invocations(server: Server, name: str) -> int:
    count: int = server.client().stats()["functions"][name]["invocations"]
    return count


def test_negative_chunk_size_is_refused_and_the_gateway_keeps_serving(server: Server) -> None:
    # On main this looped forever on the event loop: /healthz stopped answering, memory grew ~40 MB/s.
    payload = (
        b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"-6\r\nabcdef\r\n0\r\n\r\n"
    )
    result = exchange(server.url, payload)
    assert result.closed
    assert [response.status for response in result.responses] == [400]
    assert b"chunk size" in result.responses[0].body
    assert healthy(server)


SMUGGLING = {
    "content-length and transfer-encoding": (
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "xchunked": (b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    "identity, chunked": (b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    "content-length +3": (b"Content-Length: +3\r\n\r\nabc", 400),
    "content-length 0_3": (b"Content-Length: 0_3\r\n\r\nabc", 400),
    "two content-lengths": (b"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc", 400),
    "chunk size 0x3": (b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk size 0_3": (b"Transfer-Encoding: chunked\r\n\r\n0_3\r\nabc\r\n0\r\n\r\n", 400),
    "no CRLF after chunk data": (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n", 400),
    "space before colon": (b"Content-Length : 3\r\n\r\nabc", 400),
    "bare LF": (b"Content-Length: 3\n\nabc", 400),
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_shapes_are_refused_and_hide_no_second_request(server: Server, name: str) -> None:
    headers, status = SMUGGLING[name]
    hidden = request("POST", "/function/other", body=b"smuggled", close=True)
    before = invocations(server, "other")
    result = exchange(server.url, b"POST /function/echo HTTP/1.1\r\nHost: x\r\n" + headers + hidden)
    assert result.closed
    assert [response.status for response in result.responses] == [status]
    assert invocations(server, "other") == before
    assert healthy(server)


def test_http_versions_targets_and_upgrades_are_checked(server: Server) -> None:
    cases = {
        b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n": 505,
        b"GET /healthz HTTP/1.1\r\n\r\n": 400,  # no Host
        b"GET http://elsewhere/healthz HTTP/1.1\r\nHost: x\r\n\r\n": 400,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n": 501,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n": 501,
    }
    for payload, status in cases.items():
        result = exchange(server.url, payload)
        assert [response.status for response in result.responses] == [status], payload
        assert result.closed


def test_a_70_kb_header_arriving_whole_is_431(server: Server) -> None:
    # On main a head that arrived complete was accepted whatever its size.
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    result = exchange(server.url, payload)
    assert [response.status for response in result.responses] == [431]
    assert healthy(server)


@pytest.mark.parametrize("cut", [100, 40_000, 60_000])
def test_a_large_head_that_begins_in_one_read_and_ends_in_the_next_is_431(cut: int) -> None:
    """The head's size was checked when it arrived whole or grew over later reads, not when it began
    within one read and ended in the next: a 70 KB head then got a 200 (seen in CI under load)."""
    from strato.faas.live.httpio import ConnectionTracker, Response, ServerLimits, ServerProtocol

    seen: list[str] = []

    def handler(request: object) -> Response:
        seen.append(getattr(request, "target", ""))
        return Response(200, b"ok")

    protocol = ServerProtocol(handler, limits=ServerLimits(), tracker=ConnectionTracker())
    transport = InProcessTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    protocol.data_received(payload[:cut])
    protocol.data_received(payload[cut:])
    assert seen == []
    assert bytes(transport.out).startswith(b"HTTP/1.1 431 ")


def test_an_endless_header_line_is_cut_off(server: Server) -> None:
    # llhttp keeps an unfinished header line itself; the gateway bounds what it feeds it.
    answer = b""
    with socket.create_connection(address(server.url), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(100):  # 100 x 8 KiB: far past the 64 KiB head limit
                sock.sendall(b"a" * 8192)
                time.sleep(0.002)
            answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the 431 may be lost with the reset
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:40]
    assert not answer.startswith(b"HTTP/1.1 408")


def test_pipelined_requests_are_answered_in_order_and_bodies_kept(server: Server) -> None:
    chunked = (
        b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\none\r\n4\r\n-two\r\n0\r\nTrailer-Field: x\r\n\r\n"
    )
    payload = request("POST", "/function/echo", body=b"first") + chunked
    payload += request("GET", "/healthz") + request("POST", "/function/echo", body=b"last", close=True)
    result = exchange(server.url, payload)
    assert [response.status for response in result.responses] == [200, 200, 200, 200]
    assert [result.responses[i].body for i in (0, 1, 3)] == [b"first", b"one-two", b"last"]
    assert result.closed


def test_slow_and_idle_connections_are_closed_and_the_cap_holds(server: Server) -> None:
    # On main 4,000 half-sent heads stayed open 45 s and 19,900 idle connections were accepted.
    host, port = address(server.url)
    opened: list[socket.socket] = []
    try:
        for index in range(80):  # the cap is 64 connections
            sock = socket.create_connection((host, port), timeout=20)
            if index % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            opened.append(sock)
        refused = 0
        timed_out = 0
        closed_idle = 0
        for index, sock in enumerate(opened):
            data = b""
            try:
                while chunk := sock.recv(65536):  # the sweeps close every one within the timeouts
                    data += chunk
            except ConnectionResetError:  # refused at the cap with our half-sent head unread
                data = b"reset"
            if data.startswith(b"HTTP/1.1 503") or data == b"reset":
                refused += 1
            elif data.startswith(b"HTTP/1.1 408"):
                timed_out += 1
                assert index % 2
            else:
                assert data == b"" and index % 2 == 0
                closed_idle += 1
        assert refused >= 80 - 64
        assert timed_out >= 20 and closed_idle >= 20
    finally:
        for sock in opened:
            sock.close()
    metrics = server.client().request("GET", "/metrics").body.decode()
    assert "strato_faas_connections_refused" in metrics
    assert healthy(server)


def test_a_stalled_body_times_out(server: Server) -> None:
    started = time.monotonic()
    result = exchange(
        server.url, b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout_s=30
    )
    assert [response.status for response in result.responses] == [408]
    assert result.closed and time.monotonic() - started < 29


# ---- fuzzing ------------------------------------------------------------------------------------------

chunk_sizes = st.lists(st.integers(min_value=1, max_value=40), min_size=0, max_size=6)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A body and a valid chunked encoding of it, with random chunk boundaries and extensions."""
    body = draw(st.binary(max_size=200))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    encoded = b""
    for piece in pieces:
        extension = draw(st.sampled_from([b"", b";a=1", b";name"]))
        encoded += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
    return body, encoded + b"0\r\n\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoded=chunked_bodies(), split=st.integers(1, 50))
def test_fuzz_chunked_bodies_reach_the_function_intact(
    server: Server, encoded: tuple[bytes, bytes], split: int
) -> None:
    body, chunks = encoded
    payload = (
        b"POST /function/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
    )
    with socket.create_connection(address(server.url), timeout=20) as sock:
        for start in range(0, len(payload), split):  # the head and the chunks cut anywhere
            sock.sendall(payload[start : start + split])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, received = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert received == body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda line, noise: line + noise,
            st.sampled_from(
                [
                    b"POST /function/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n",
                    b"GET /healthz HTTP/1.1\r\n",
                ]
            ),
            st.binary(max_size=200),
        ),
    )
)
def test_fuzz_random_bytes_get_an_answer_or_a_close_and_never_a_hang(server: Server, garbage: bytes) -> None:
    with socket.create_connection(address(server.url), timeout=20) as sock:
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):  # a hang shows as a socket timeout
                data += chunk
    assert data == b"" or data.startswith(b"HTTP/1.1 ")
    assert healthy(server)


def test_after_the_fuzzing_the_gateway_still_serves(server: Server) -> None:
    assert healthy(server)
    assert server.client().invoke("echo", b"still here").body == b"still here"


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda head, noise: head + noise,
            st.sampled_from(
                [
                    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
                    b"GET /x HTTP/1.1\r\nHost: a\r\n",
                ]
            ),
            st.binary(max_size=300),
        ),
    ),
    cuts=st.lists(st.integers(0, 700), max_size=8),
)
def test_fuzz_the_parser_in_process_never_raises_and_answers_in_order(data: bytes, cuts: list[int]) -> None:
    from strato.faas.live.httpio import ConnectionTracker, Response, ServerLimits, ServerProtocol

    seen: list[str] = []

    def handler(request: object) -> Response:
        seen.append(getattr(request, "target", ""))
        return Response(200, b"ok")

    protocol = ServerProtocol(
        handler, limits=ServerLimits(max_body=256, max_head=512), tracker=ConnectionTracker()
    )
    transport = InProcessTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    for start, end in itertools.pairwise(bounds):
        if transport.closed:
            break
        protocol.data_received(data[start:end])
    answers = bytes(transport.out).count(b"HTTP/1.1 ")
    assert answers >= len(seen)  # every dispatched request was answered, errors after them
    assert all(target.startswith("/") for target in seen)
