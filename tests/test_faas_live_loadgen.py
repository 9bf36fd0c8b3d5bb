"""The load generator against a real HTTP/1.1 server on 127.0.0.1 (no mocks).

The server lives in this file too and runs in a subprocess (``python this_file.py --serve``), so it does
not share a GIL with the generator under test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from strato.errors import ConfigError, StratoError
from strato.faas.live import loadgen
from strato.faas.live.loadgen import (
    LoadResult,
    PerRequestResults,
    ScheduledRequest,
    Target,
    find_wrk,
    main,
    make_schedule,
    parse_wrk_output,
    run_closed_loop,
    run_in_subprocess,
    run_open_loop,
    run_schedule,
    run_wrk,
    wrk_script,
)

needs_wrk = pytest.mark.skipif(
    find_wrk() is None, reason="wrk is not installed (scripts/bench-deps.sh installs it)"
)

# ------------------------------------------------------------------------------------------ test server

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


class _Handler(asyncio.Protocol):
    """One request at a time per connection, like the clients it serves."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = bytearray()
        self.busy = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        if self.busy or self.transport.is_closing():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        self._handle(method, path, headers, body)

    def _reply(
        self, status: int, body: bytes = b"", *, close: bool = False, silent_close: bool = False
    ) -> None:
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'X')}\r\nContent-Length: {len(body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        self.transport.write(head.encode() + b"\r\n" + body)
        if close or silent_close:
            self.transport.close()
            return
        self.busy = False
        self._next()

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.busy = True
        if method == "HEAD":
            # Announces a body it does not send, as HEAD answers do.
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            self.busy = False
            self._next()
        elif path == "/echo":
            self._reply(200, body)
        elif path == "/slow":
            asyncio.get_running_loop().call_later(0.05, self._reply, 200, body)
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b"status")
        elif path == "/close":
            self._reply(200, body, close=True)
        elif path == "/drop":
            # Closes after answering without announcing it, as a server whose keep-alive ran out would.
            self._reply(200, body, silent_close=True)
        elif path == "/chunked":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n"
                + f"{len(body) + 1:x}\r\n".encode()
                + b" "
                + body
                + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
            )
            self.busy = False
            self._next()
        elif path == "/eof":
            self.transport.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
            self.transport.close()
        elif path == "/expect":
            good = body == b"\x00bin\xff" and headers.get("x-token") == "abc" and method == "PUT"
            self._reply(200 if good else 400)
        elif path == "/hang":
            pass  # never answers
        else:
            self._reply(404)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Handler, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def _serve_main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve())
    else:
        uvloop.run(_serve())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Base URL of the test server."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ------------------------------------------------------------------------------------------ tests


def test_open_loop_constant_rate(server: str) -> None:
    target = Target.from_url(server + "/echo", body=b"x" * 100)
    result = run_open_loop(target, 200, 1.0, warmup_s=0.2)
    assert result.mode == "open"
    assert result.offered_rps == 200
    assert result.sent == 200
    assert result.completed == 200
    assert result.status_counts == {200: 200}
    assert len(result.latencies_s) == 200
    assert (result.latencies_s > 0).all()
    assert 0 < result.percentile(50) < 0.02
    assert result.percentile(50) <= result.percentile(99) <= result.summary()["max"]  # type: ignore[operator]
    assert 150 < result.achieved_rps < 250
    # Keep-alive: a trivial server needs only a handful of connections.
    assert 1 <= result.connections_opened <= 10
    assert result.dispatch_lag_max_s < 0.05
    assert result.generator_cpu_s > 0
    json.dumps(result.summary())  # JSON-friendly


def test_poisson_schedule_is_reproducible() -> None:
    a = make_schedule(1000, 5.0, "poisson", seed=7)
    b = make_schedule(1000, 5.0, "poisson", seed=7)
    c = make_schedule(1000, 5.0, "poisson", seed=8)
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)
    assert 4700 < len(a) < 5300
    assert (np.diff(a) >= 0).all() and a[0] >= 0 and a[-1] < 5.0
    # Exponential gaps: coefficient of variation ~1, unlike the constant schedule's 0.
    gaps = np.diff(a)
    assert 0.9 < gaps.std() / gaps.mean() < 1.1
    constant = make_schedule(200, 1.0)
    assert len(constant) == 200 and np.allclose(np.diff(constant), 1 / 200)


def test_poisson_open_loop_sends_the_seeded_schedule(server: str) -> None:
    target = Target.from_url(server + "/echo")
    schedule = make_schedule(300, 0.6, "poisson", seed=3)
    result = run_open_loop(target, 300, 0.4, warmup_s=0.2, arrival="poisson", seed=3)
    assert result.sent == int((schedule >= 0.2).sum())
    assert result.status_counts == {200: result.sent}


def test_queueing_shows_in_open_loop_latency(server: str) -> None:
    # One connection serves 20 requests/s at 50 ms each; offered 100/s the queue grows and the latency
    # from the intended send time must show it (a closed-system measurement would say ~50 ms).
    target = Target.from_url(server + "/slow")
    result = run_open_loop(target, 100, 0.3, warmup_s=0.0, max_connections=1)
    assert result.status_counts == {200: 30}
    assert result.connections_opened == 1
    assert result.percentile(99) > 0.8
    assert result.percentile(50) > 0.3
    assert result.latencies_s.min() >= 0.05
    # The server fell behind: it answered only ~20/s within the window.
    assert result.achieved_rps < 40


def test_closed_loop(server: str) -> None:
    target = Target.from_url(server + "/echo", body=b"hello")
    result = run_closed_loop(target, 4, 0.5, warmup_s=0.2)
    assert result.mode == "closed"
    assert result.offered_rps is None
    assert result.completed > 50
    assert result.achieved_rps > 100
    assert result.status_counts == {200: result.completed}
    assert len(result.latencies_s) == result.completed
    assert abs(result.sent - result.completed) <= 4
    assert result.connections_opened == 4
    # The generator's own CPU across the measured window only: set-up and drain are left out.
    assert result.window_wall_s is not None and 0.45 < result.window_wall_s < 0.7
    assert result.window_cpu_s is not None and 0 < result.window_cpu_s <= result.generator_cpu_s
    assert result.cpu_per_request_s == pytest.approx(result.window_cpu_s / result.completed)
    assert result.core_share == pytest.approx(result.window_cpu_s / result.window_wall_s)


def test_status_codes_are_counted(server: str) -> None:
    result = run_open_loop(Target.from_url(server + "/status/503"), 100, 0.3, warmup_s=0.1)
    assert result.status_counts == {503: 30}
    assert result.completed == 30
    summary = result.summary()
    assert summary["ok"] == 0 and summary["non_2xx"] == 30 and summary["errors"] == 0


def test_connection_refused_counts_errors_without_hanging() -> None:
    target = Target.from_url(f"http://127.0.0.1:{_free_port()}/echo")
    start = time.monotonic()
    result = run_open_loop(target, 100, 0.3, warmup_s=0.0, timeout_s=2.0)
    assert time.monotonic() - start < 2.0
    assert result.status_counts == {0: 30}
    assert result.completed == 0 and result.errors == 30 and result.timeouts == 0
    assert len(result.latencies_s) == 0
    assert result.summary()["p99"] is None
    closed = run_closed_loop(target, 2, 0.3, warmup_s=0.0, timeout_s=2.0)
    assert time.monotonic() - start < 4.0
    assert closed.completed == 0 and closed.errors > 0
    assert set(closed.status_counts) == {0}


def test_timeouts(server: str) -> None:
    target = Target.from_url(server + "/hang")
    start = time.monotonic()
    result = run_open_loop(target, 20, 0.2, warmup_s=0.0, timeout_s=0.3)
    assert time.monotonic() - start < 2.5
    assert result.status_counts == {0: 4}
    assert result.timeouts == 4


@pytest.mark.parametrize("path", ["/close", "/drop", "/eof", "/chunked"])
def test_connections_closed_or_unframed_by_server(server: str, path: str) -> None:
    result = run_open_loop(Target.from_url(server + path, body=b"abc"), 100, 0.3, warmup_s=0.0)
    assert result.status_counts == {200: 30}
    if path != "/chunked":
        assert result.connections_opened >= 30  # a new connection for every request
    else:
        assert result.connections_opened <= 5


def test_head_responses_have_no_body(server: str) -> None:
    target = Target.from_url(server + "/echo", method="HEAD")
    result = run_open_loop(target, 100, 0.2, warmup_s=0.0, timeout_s=1.0)
    assert result.status_counts == {200: 20}
    assert result.connections_opened <= 2


def test_without_uvloop_or_timerfd(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fall-backs: asyncio's own loop, and the loop's millisecond timers instead of a timerfd.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    target = Target.from_url(server + "/echo", body=b"abc")
    result = run_open_loop(target, 100, 0.2, warmup_s=0.0)
    assert result.status_counts == {200: 20}
    assert result.dispatch_lag_max_s < 0.05

    def no_timerfd(self: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loadgen._Sleeper, "_open", no_timerfd)
    result = run_open_loop(target, 100, 0.2, warmup_s=0.0, arrival="poisson")
    assert result.sent == result.status_counts[200] > 5
    closed = run_closed_loop(target, 2, 0.2, warmup_s=0.0)
    assert closed.completed > 10 and set(closed.status_counts) == {200}


def test_closed_loop_against_a_closing_server(server: str) -> None:
    result = run_closed_loop(Target.from_url(server + "/close"), 2, 0.3, warmup_s=0.0)
    assert result.completed > 10
    assert result.status_counts == {200: result.completed}


def test_run_in_subprocess(server: str) -> None:
    target = Target.from_url(
        server + "/expect", body=b"\x00bin\xff", headers=[("X-Token", "abc")], method="PUT"
    )
    result = run_in_subprocess(target, "open", rate_rps=100, duration_s=0.3, warmup_s=0.1)
    assert isinstance(result, LoadResult)
    assert result.mode == "open" and result.offered_rps == 100
    assert result.status_counts == {200: 30}  # body, header and method made it through
    assert len(result.latencies_s) == 30 and result.latencies_s.dtype == np.float64
    assert result.generator_cpu_s > 0
    # The whole child (interpreter start, imports, output) costs more than its run alone.
    assert result.process_cpu_s is not None and result.process_cpu_s > result.generator_cpu_s
    assert result.window_cpu_s is not None and 0 < result.window_cpu_s < result.process_cpu_s
    assert result.cpu_per_request_s is not None and result.cpu_per_request_s > 0
    closed = run_in_subprocess(Target.from_url(server + "/echo"), "closed", connections=2, duration_s=0.3)
    assert closed.mode == "closed" and closed.completed > 0


def test_run_in_subprocess_reports_failures(server: str) -> None:
    with pytest.raises(StratoError, match="rate"):
        run_in_subprocess(Target.from_url(server + "/echo"), "open", duration_s=0.1)
    with pytest.raises(ConfigError):
        run_in_subprocess(Target.from_url(server + "/echo"), "open", rate=5)


def test_run_schedule_per_request(server: str) -> None:
    other = Target.from_url(server + "/expect", method="PUT", headers=[("X-Token", "abc")])
    entries: list[ScheduledRequest] = []
    for i in range(60):
        offset = 0.005 * i
        match i % 4:
            case 0:
                entries.append((offset, "/echo", b"a" * i, ()))
            case 1:
                entries.append((offset, "/status/503", b"", [("X-Index", str(i))]))
            case 2:
                entries.append((offset, other, b"\x00bin\xff", ()))
            case _:
                entries.append((offset, "/status/404", b"", ()))
    entries.reverse()  # out of order on purpose: replay sorts by offset, results stay in input order
    result = run_schedule(Target.from_url(server + "/unused"), entries, keep_per_request=True)
    assert result.mode == "schedule"
    assert result.sent == 60 and result.completed == 60
    assert result.status_counts == {200: 30, 404: 15, 503: 15}
    per = result.per_request
    assert isinstance(per, PerRequestResults)
    expected = {0: 200, 1: 503, 2: 200, 3: 404}
    for index, status, latency in per.rows():
        original = 59 - index
        assert status == expected[original % 4]
        assert latency > 0
    assert (per.service_s <= per.latency_s + 1e-9).all()
    # Warm-up excludes the early part of the schedule but still replays it.
    warm = run_schedule(Target.from_url(server + "/unused"), entries, warmup_s=0.15)
    assert warm.sent == 30


def test_run_schedule_from_a_given_origin(server: str) -> None:
    # The caller fixes which clock reading offset 0 stands for, and can write it into the requests.
    origin = time.perf_counter() + 0.2
    entries: list[ScheduledRequest] = [
        (0.05 * i, "/echo", b"%.6f" % (origin + 0.05 * i), ()) for i in range(3)
    ]
    result = run_schedule(Target.from_url(server + "/unused"), entries, keep_per_request=True, origin=origin)
    per = result.per_request
    assert per is not None and per.status.tolist() == [200, 200, 200]
    finished = origin + np.array([0.0, 0.05, 0.1]) + per.latency_s
    sent = finished - per.service_s
    assert (sent >= origin + np.array([0.0, 0.05, 0.1]) - 1e-6).all()
    # An origin already past: everything goes at once, each request as late as the clock says.
    late = run_schedule(
        Target.from_url(server + "/unused"), entries, keep_per_request=True, origin=time.perf_counter() - 1.0
    )
    assert late.per_request is not None
    assert (late.per_request.latency_s - late.per_request.service_s >= 0.9).all()


def test_result_json_round_trip(server: str) -> None:
    result = run_schedule(
        Target.from_url(server + "/echo"),
        [(0.01 * i, "/echo", b"", ()) for i in range(20)],
        keep_per_request=True,
    )
    for encoding in ("f64", "list"):
        back = LoadResult.from_json(json.loads(json.dumps(result.to_json(encoding))))
        np.testing.assert_array_equal(back.latencies_s, result.latencies_s)
        assert back.status_counts == result.status_counts
        assert back.summary() == result.summary()
        assert back.per_request is not None
        np.testing.assert_array_equal(back.per_request.status, result.per_request.status)  # type: ignore[union-attr]
    f32 = LoadResult.from_json(result.to_json("f32"))
    np.testing.assert_allclose(f32.latencies_s, result.latencies_s, rtol=1e-6)
    none = LoadResult.from_json(result.to_json("none"))
    assert len(none.latencies_s) == 0 and none.sent == result.sent
    assert result.window_cpu_s is not None and result.window_wall_s is not None
    assert (none.window_cpu_s, none.window_wall_s) == (result.window_cpu_s, result.window_wall_s)
    assert none.core_share == result.core_share
    with pytest.raises(StratoError):
        LoadResult.from_json({"format": "something else"})


def test_target_parsing() -> None:
    t = Target.from_url("http://127.0.0.1:8080/function/echo?x=1", body=b"hi", headers=[("A", "b")])
    assert (t.host, t.port, t.path, t.method) == ("127.0.0.1", 8080, "/function/echo?x=1", "POST")
    assert t.url == "http://127.0.0.1:8080/function/echo?x=1"
    assert t.request_bytes() == (
        b"POST /function/echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nA: b\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert Target.from_url("http://localhost").port == 80
    assert Target("::1", 9, "/", method="GET").request_bytes() == b"GET / HTTP/1.1\r\nHost: [::1]:9\r\n\r\n"
    for bad in ("https://x/", "ftp://x", "http:///nohost", "http://h:99999/"):
        with pytest.raises(ConfigError):
            Target.from_url(bad)
    with pytest.raises(ConfigError):
        Target("h", 80, "/", headers=(("X", "a\r\nInjected: 1"),))
    with pytest.raises(ConfigError):
        run_open_loop(t, 0, 1.0)
    with pytest.raises(ConfigError):
        run_open_loop(t, 10, 1.0, arrival="bursty")


_WRK_REPORT = """Running 2s test @ http://127.0.0.1:8080/function/echo
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms    2.20ms  45.06ms   94.19%
    Req/Sec    12.70k     1.01k   13.91k    85.00%
  Latency Distribution
     50%  812.00us
     75%    1.22ms
     90%    2.05ms
     99%    1.02s
  25304 requests in 2.01s, 3.45MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  12589.55
Transfer/sec:      1.72MB
"""


def test_wrk_report_is_read_with_its_units() -> None:
    numbers = parse_wrk_output(_WRK_REPORT)
    assert numbers["requests"] == 25304 and numbers["duration_s"] == pytest.approx(2.01)
    assert numbers["rps"] == pytest.approx(12589.55)
    assert numbers["p50_s"] == pytest.approx(812e-6) and numbers["p75_s"] == pytest.approx(1.22e-3)
    assert numbers["p99_s"] == pytest.approx(1.02)
    assert (numbers["socket_errors"], numbers["timeouts"], numbers["error_statuses"]) == (6, 2, 7)
    without_latency = _WRK_REPORT.replace("     50%  812.00us\n", "")
    with pytest.raises(StratoError, match="50%"):
        parse_wrk_output(without_latency)
    with pytest.raises(StratoError, match="wrk's report"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused")


def test_wrk_script_escapes_every_byte() -> None:
    target = Target.from_url(
        "http://127.0.0.1:1/x", body=b'\x00"\\]]\n9', headers=[("X-Token", 'a"b')], method="PUT"
    )
    script = wrk_script(target)
    assert 'wrk.method = "\\080\\085\\084"' in script
    assert 'wrk.body = "\\000\\034\\092\\093\\093\\010\\057"' in script
    assert 'wrk.headers["\\088' in script and "Content-Length" not in script


@needs_wrk
@pytest.mark.system
def test_wrk_sends_the_targets_method_body_and_headers(server: str) -> None:
    # /expect answers 200 only to a PUT with this binary body and header, 400 otherwise.
    good = Target.from_url(
        server + "/expect", body=b"\x00bin\xff", headers=[("X-Token", "abc")], method="PUT"
    )
    result = run_wrk(good, connections=2, duration_s=1.0)
    assert result.requests > 10 and result.errors == 0
    assert result.rps == pytest.approx(result.requests / result.duration_s, rel=0.02)
    assert 0 < result.p50_s <= result.p75_s <= result.p90_s <= result.p99_s
    assert result.cpu_s > 0 and result.cpu_per_request_s is not None and result.cpu_per_request_s > 0
    assert result.core_share is not None and result.core_share > 0
    assert result.command[1:4] == ("-t1", "-c2", "-d1s")
    wrong_body = Target.from_url(
        server + "/expect", body=b"\x00bin", headers=[("X-Token", "abc")], method="PUT"
    )
    refused = run_wrk(wrong_body, connections=1, duration_s=1.0)
    assert refused.requests > 10 and refused.error_statuses == refused.requests


def test_wrk_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_wrk() is None
    with pytest.raises(ConfigError, match="wrk is not on PATH"):
        run_wrk(Target.from_url("http://127.0.0.1:1/"), connections=1, duration_s=1.0)


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:1/x", "--mode", "open"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_cli_prints_summary(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", server + "/echo", "--mode", "closed", "--connections", "1", "--duration", "0.2"]
    assert main([*argv, "--warmup", "0"]) == 0
    assert "achieved_rps" in capsys.readouterr().out


if __name__ == "__main__" and "--serve" in sys.argv:
    _serve_main()
