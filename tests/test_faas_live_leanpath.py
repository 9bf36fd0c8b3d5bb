"""The lane's C recogniser against llhttp, and the lane's slots on their own (no server).

Whatever the recogniser takes off the wire must be what the general path (llhttp in strict mode, then the
gateway's rendering of the head an instance gets) makes of the same bytes; whatever it is unsure of it
must leave to llhttp. The live behaviour (a real gateway, real instances) is in test_faas_live_platform.py
and tests/security, which now run through the lane for every plain warm invocation.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from raw_http import InProcessTransport
from strato.core.tokens import AdminToken
from strato.faas import live
from strato.faas.live import _leanpath
from strato.faas.live._leanpath import Lane, Route, Slot, parse_invocation, split_result
from strato.faas.live.dispatch import request_head
from strato.faas.live.httpio import ConnectionTracker, Request, Response, ServerLimits, ServerProtocol

LIMITS = ServerLimits(max_body=4096, max_head=2048, max_headers=16)


def general_path(data: bytes) -> list[Request]:
    """The requests llhttp (strict) and the gateway's checks make of ``data``, answered at once."""
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"")

    protocol = ServerProtocol(handler, limits=LIMITS, tracker=ConnectionTracker())
    transport = InProcessTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(data)
    return seen


def recognise(data: bytes) -> tuple[str, bytes, bytes, bytes | None, bool, str] | None:
    return parse_invocation(data, LIMITS.max_head, LIMITS.max_body, LIMITS.max_headers)


def as_the_gateway_renders(request: Request) -> tuple[str, bytes]:
    """The function name and the head an instance gets, as gateway.handle and request_head make them."""
    path = request.path
    assert path.startswith("/function/")
    name, _, rest = path[len("/function/") :].partition("/")
    target = "/" + rest + ("?" + request.query if request.query else "")
    return name, request_head(request.method, target, {}, request.body, request.forward)


def assert_same_as_llhttp(data: bytes) -> None:
    found = recognise(data)
    if found is None:
        return
    name, head, body, authorization, keep_alive, method = found
    requests = general_path(data)
    assert len(requests) == 1, f"the lane took {data!r}, llhttp made {len(requests)} requests of it"
    request = requests[0]
    assert (name, head) == as_the_gateway_renders(request)
    assert body == request.body
    assert method == request.method
    assert keep_alive == request.keep_alive
    assert authorization == request.authorization


COMMON = [
    # wrk's default request, curl's, and the platform's own client's.
    b"GET /function/echo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"POST /function/echo HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
    b"Content-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nhello",
    b"POST /function/echo/sub/path?q=1&r=%20 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nhi",
    b"PUT /function/a-b_c?x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer abc\r\ncontent-length: 0\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-Strato-Instance: i-1\r\nX-Other:\r\n\r\n",
]


def test_the_lane_recognises_what_common_clients_send_exactly_as_llhttp_reads_it() -> None:
    for data in COMMON:
        assert recognise(data) is not None, data
        assert_same_as_llhttp(data)


LEFT_TO_LLHTTP = [
    b"HEAD /function/echo HTTP/1.1\r\nHost: h\r\n\r\n",  # no body in the answer: the general path's
    b"GET /function/echo HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\n\r\n",  # no Host
    b"GET /function/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 03\r\n\r\nabc",
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab",  # partial body
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET",  # pipelined
    b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,  # > max_body
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-A: b \r\n\r\n",  # trailing whitespace
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-A: \xff\r\n\r\n",  # 8-bit
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",  # obs-fold
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-A : a\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nX-A: a\n\r\n",  # bare LF
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, TE\r\n\r\n",
    b"GET /function/echo#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /function/echo? HTTP/1.1\r\nHost: h\r\n\r\n",  # an empty query is dropped by the general path
    b"GET /function/Echo HTTP/1.1\r\nHost: h\r\n\r\n",  # not a function name
    b"GET /function/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /functions/echo HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://h/function/echo HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(16)) + b"\r\n",
    b"GET /function/echo HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
]


def test_the_lane_leaves_everything_unusual_to_llhttp() -> None:
    for data in LEFT_TO_LLHTTP:
        assert recognise(data) is None, data


_NAME = st.sampled_from(["echo", "echo", "a-b_c", "x9", "Echo", "", "e.x", "e%41"])
_TAIL = st.one_of(
    st.sampled_from(["", "/", "/a/b", "?q=1", "/x?y=%20&z"]),
    st.text(alphabet="/?=&%:@!$'()*+,;~._-aZ09#\\ \"<>{}|^`[]", max_size=12),
)
_FIELD_NAME = st.one_of(
    st.sampled_from(
        [
            "Host",
            "host",
            "Content-Length",
            "content-length",
            "Authorization",
            "Connection",
            "Transfer-Encoding",
            "X-Strato-Hop",
            "Keep-Alive",
            "Accept",
            "X-A",
            "TE",
            "Expect",
            "Upgrade",
        ]
    ),
    st.text(alphabet="!#$%&'*+-.^_`|~aZ09 :(@\t", min_size=0, max_size=8),
)
_FIELD_VALUE = st.one_of(
    st.sampled_from(["", "3", "03", "+3", "3 ", " 3", "close", "Close", "keep-alive", "chunked", "Bearer t"]),
    st.binary(max_size=10).map(lambda raw: raw.decode("latin-1")),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Mostly well-formed requests, each with a few likely mistakes (so both sides of the line get hit)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get"]))
    target = "/function/" + draw(_NAME) + draw(_TAIL)
    version = draw(st.sampled_from(["HTTP/1.1"] * 12 + ["HTTP/1.0", "HTTP/2.0", "http/1.1"]))
    odd = st.tuples(_FIELD_NAME, _FIELD_VALUE)
    fields = draw(st.lists(odd, max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    plain = st.tuples(
        st.sampled_from(["Accept", "User-Agent", "X-Trace", "authorization", "Connection", "Cookie"]),
        st.sampled_from(["*/*", "wrk", "a b", "x\ty", "close", "keep-alive", "Bearer t", "c=1; d=2", ""]),
    )
    fields += draw(st.lists(plain, max_size=4))
    fields = draw(st.permutations(fields))
    body = draw(st.binary(max_size=6))
    if draw(st.integers(0, 9)) > 0:
        fields.insert(
            draw(st.integers(0, len(fields))), ("Host", draw(st.sampled_from(["h", "127.0.0.1:8080"])))
        )
    if body or draw(st.booleans()):
        length = str(len(body)) if draw(st.integers(0, 9)) > 1 else draw(st.sampled_from(["0", "9", "x"]))
        fields.insert(draw(st.integers(0, len(fields))), ("Content-Length", length))
    separator = draw(st.sampled_from([": "] * 6 + [":", ":  ", ":\t", " : "]))
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}{separator}{v}\r\n" for n, v in fields) + "\r\n"
    return head.encode("latin-1") + body


@settings(max_examples=3000, deadline=None)
@given(data=requests())
def test_whatever_the_lane_takes_llhttp_reads_the_same(data: bytes) -> None:
    assert_same_as_llhttp(data)


@settings(max_examples=2000, deadline=None)
@given(
    base=st.sampled_from(COMMON),
    position=st.integers(0, 300),
    replacement=st.binary(min_size=0, max_size=3),
    cut=st.integers(0, 3),
)
def test_mutated_requests_the_lane_takes_llhttp_reads_the_same(
    base: bytes, position: int, replacement: bytes, cut: int
) -> None:
    at = min(position, len(base))
    assert_same_as_llhttp(base[:at] + replacement + base[at + cut :])


def frame(request_id: int, kind: int, meta: bytes, body: bytes) -> bytes:
    return struct.pack("!IBII", request_id, kind, len(meta), len(body)) + meta + body


def test_split_result_takes_exactly_one_whole_result_frame() -> None:
    whole = frame(7, 11, b"200\r\n", b"body")
    assert split_result(whole, 7, 64, 100) == (b"200\r\n", b"body")
    assert split_result(whole, 8, 64, 100) is None  # another request's
    assert split_result(whole[:-1], 7, 64, 100) is None  # partial
    assert split_result(whole + b"x", 7, 64, 100) is None  # more behind it
    assert split_result(frame(7, 10, b"200\r\n", b""), 7, 64, 100) is None  # not a RESULT
    assert split_result(whole, 7, 4, 100) is None  # meta over the limit
    assert split_result(whole, 7, 64, 3) is None  # body over the limit


class _Client:
    def __init__(self) -> None:
        self.transport: InProcessTransport | None = InProcessTransport()
        self.done: list[bool] = []

    def lane_done(self, keep_alive: bool) -> None:
        self.done.append(keep_alive)


def _lane(
    dispatched: Any, finished: list[tuple[int, bool]], **overrides: Any
) -> tuple[Lane, Route, dict[str, Route]]:
    routes: dict[str, Route] = {}
    route = Route("echo", dispatched)
    routes["echo"] = route

    def finish(slot: Slot, status: int, client: _Client, keep_alive: bool) -> None:
        finished.append((status, keep_alive))
        client.lane_done(keep_alive)

    settings_: dict[str, Any] = {"bearer": None, "protect": False}
    settings_.update(overrides)
    lane = Lane(routes, finish, settings_["bearer"], settings_["protect"], 2048, 4096, 16)
    return lane, route, routes


REQUEST = b"POST /function/echo/p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"


def test_a_lane_round_trip_sends_one_frame_and_writes_the_checked_response() -> None:
    finished: list[tuple[int, bool]] = []
    lane, route, _ = _lane(lambda slot: None, finished)
    instance_side = InProcessTransport()
    slot = Slot(route, object(), instance_side, 1024)
    client = _Client()
    assert not lane.serve(client, REQUEST)  # nothing lent yet: the general path's
    slot.lend()
    assert route.idle_count() == 1
    assert lane.serve(client, REQUEST)
    assert slot.busy and route.idle_count() == 0
    request_id, kind, meta_size, body_size = struct.unpack("!IBII", instance_side.out[:13])
    assert kind == 1 and request_id & 0x80000000
    meta = bytes(instance_side.out[13 : 13 + meta_size])
    assert meta == b"POST /p?q=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 2"
    assert bytes(instance_side.out[13 + meta_size :]) == b"hi" and body_size == 2
    result = frame(request_id, 11, b"200\r\nContent-Type: text/plain\r\n", b"ok")
    # A result head the node has not checked yet is not passed through.
    assert not slot.complete(result)
    slot.cache(
        b"200\r\nContent-Type: text/plain\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", 200
    )
    assert not slot.complete(frame(request_id ^ 1, 11, b"200\r\nContent-Type: text/plain\r\n", b"ok"))
    assert not slot.complete(frame(request_id, 11, b"201\r\nContent-Type: text/plain\r\n", b"ok"))
    assert slot.complete(result)
    assert client.transport is not None
    assert bytes(client.transport.out) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    assert finished == [(200, True)] and client.done == [True]
    assert not slot.busy and not slot.complete(result)  # nothing in flight any more


def test_connection_close_is_answered_with_connection_close() -> None:
    finished: list[tuple[int, bool]] = []
    lane, route, _ = _lane(lambda slot: None, finished)
    instance_side = InProcessTransport()
    slot = Slot(route, object(), instance_side, 1024)
    slot.cache(b"200\r\n", b"HTTP/1.1 200 OK\r\n", 200)
    slot.lend()
    client = _Client()
    assert lane.serve(client, b"GET /function/echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    (request_id,) = struct.unpack("!I", instance_side.out[:4])
    assert slot.complete(frame(request_id, 11, b"200\r\n", b""))
    assert client.transport is not None
    assert bytes(client.transport.out) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert finished == [(200, False)]


def test_the_generators_reach_both_sides_of_the_line() -> None:
    assert find(requests(), lambda data: recognise(data) is not None)
    assert find(requests(), lambda data: recognise(data) is None and len(general_path(data)) == 1)


def test_the_lane_uses_only_lent_instances_and_tells_the_node_after_each_write() -> None:
    instance_side = InProcessTransport()
    noted: list[tuple[int, int]] = []

    def dispatched(slot: Slot) -> None:
        # Called once the frame is written: the node's bookkeeping is off the request's way.
        noted.append((slot.busy, len(instance_side.out)))

    lane, route, routes = _lane(dispatched, [])
    slot = Slot(route, object(), instance_side, 1024)
    client = _Client()
    assert lane.serve(client, REQUEST) == 0  # never lent
    slot.lend()
    slot.reclaim()  # e.g. the general path took the instance
    assert lane.serve(client, REQUEST) == 0 and noted == [] and not instance_side.out
    slot.lend()
    assert lane.serve(client, REQUEST) == 1
    assert noted == [(1, len(instance_side.out))] and len(instance_side.out) > 13
    assert lane.serve(_Client(), REQUEST) == 0  # busy: not lent until the node lends it again
    slot.demote()
    slot.lend()
    del routes["echo"]  # the function was removed
    assert lane.serve(client, REQUEST) == 0
    # The start of a plain invocation whose body is still on its way: "call again with more".
    assert lane.serve(client, REQUEST[:-1]) == 2 and len(noted) == 1


def test_lending_again_and_again_keeps_one_entry_per_instance() -> None:
    lane, route, _ = _lane(lambda slot: None, [])
    slots = [Slot(route, object(), InProcessTransport(), 1024) for _ in range(3)]
    for _ in range(1000):
        for slot in slots:
            slot.lend()
            slot.reclaim()
    slots[0].lend()
    assert route.idle_count() == 1
    assert lane.serve(_Client(), REQUEST) and slots[0].busy
    assert not lane.serve(_Client(), REQUEST)  # the stale entries of the other two were dropped, not used


def test_demote_hands_the_invocation_over_once() -> None:
    lane, route, _ = _lane(lambda slot: None, [])
    slot = Slot(route, object(), InProcessTransport(), 1024)
    slot.lend()
    client = _Client()
    assert lane.serve(client, REQUEST)
    taken = slot.demote()
    assert taken is not None
    request_id, who, keep_alive, method, started = taken
    assert request_id & 0x80000000 and who is client and keep_alive and method == "POST" and started > 0
    assert not slot.busy and slot.demote() is None
    with pytest.raises(RuntimeError):
        _busy_slot_lend(lane, route)


def _busy_slot_lend(lane: Lane, route: Route) -> None:
    slot = Slot(route, object(), InProcessTransport(), 1024)
    slot.lend()
    assert lane.serve(_Client(), REQUEST)
    slot.lend()  # an instance with a lane invocation in flight is not idle


def test_the_platform_token_is_checked_by_the_one_bearer_check_and_never_passed_on() -> None:
    token = AdminToken("s3cret")
    authorised = (
        b"POST /function/echo HTTP/1.1\r\nHost: h\r\n"
        b"Authorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n"
    )
    other = (
        b"POST /function/echo HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dTpw\r\nContent-Length: 0\r\n\r\n"
    )
    anonymous = b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    for protect in (False, True):
        lane, route, _ = _lane(lambda slot: None, [], bearer=token.bearer, protect=protect)
        heads = {}
        for label, data in (("authorised", authorised), ("other", other), ("anonymous", anonymous)):
            instance_side = InProcessTransport()
            slot = Slot(route, object(), instance_side, 1024)
            slot.lend()
            taken = lane.serve(_Client(), data)
            if not taken:
                slot.reclaim()
            heads[label] = bytes(instance_side.out[13:]) if taken else None
        assert heads["authorised"] == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0"
        if protect:  # the general path answers 401
            assert heads["other"] is None and heads["anonymous"] is None
        else:
            assert (
                heads["other"]
                == b"POST / HTTP/1.1\r\nhost: h\r\nauthorization: Basic dTpw\r\ncontent-length: 0"
            )
            assert heads["anonymous"] == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("STRATO_LANE_SANITIZED") == "1", reason="already running sanitized")
def test_the_recogniser_and_the_lane_are_clean_under_address_and_undefined_behaviour_sanitizers(
    tmp_path: Path,
) -> None:
    """These tests again, against a build of the C module with ASan and UBSan: an out-of-bounds read or
    write, a use after free or undefined behaviour anywhere the tests reach aborts the run."""
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("gcc is not installed (the sanitized build needs it)")
    source = Path(live.__file__).with_name("_leanpath.c")
    package = tmp_path / "strato" / "faas" / "live"
    package.mkdir(parents=True)
    built = package / Path(_leanpath.__file__).name
    include = sysconfig.get_paths()["include"]
    flags = ["-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
    subprocess.run(
        [compiler, *flags, "-fno-sanitize-recover=undefined", f"-I{include}", str(source), "-o", str(built)],
        check=True,
    )
    # The sanitized module shadows the installed one; everything else comes from the installed package.
    shim = tmp_path / "sitecustomize.py"
    shim.write_text(
        "import importlib.machinery, importlib.util, sys\n"
        "import strato.faas.live\n"
        f"spec = importlib.util.spec_from_file_location('strato.faas.live._leanpath', {str(built)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "sys.modules['strato.faas.live._leanpath'] = module\n"
    )
    runtime = [
        subprocess.run(
            [compiler, f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for name in ("libasan.so", "libubsan.so")
    ]
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(runtime),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "STRATO_LANE_SANITIZED": "1",
    }
    check = f"import strato.faas.live._leanpath as m; assert m.__file__ == {str(built)!r}, m.__file__"
    subprocess.run([sys.executable, "-c", check], env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "passed" in done.stdout


def test_the_lane_takes_no_request_while_the_client_leaves_its_answers_unread() -> None:
    """Write backpressure holds on the lane as on the general path: a client that pipelines requests
    and reads nothing cannot make the gateway buffer answer after answer."""
    lane, route, _ = _lane(lambda slot: None, [])
    instance_side = InProcessTransport()
    slot = Slot(route, object(), instance_side, 1024)
    slot.lend()
    handled: list[Request] = []

    def handler(request: Request) -> Response:
        handled.append(request)
        return Response(200, b"general")

    protocol = ServerProtocol(handler, limits=LIMITS, tracker=ConnectionTracker(), lane=lane)
    protocol.connection_made(InProcessTransport())  # type: ignore[arg-type]
    protocol.pause_writing()
    protocol.data_received(REQUEST)
    assert not instance_side.out and slot.lent  # the lane left it alone
    assert handled == []  # and the general path waits too
    protocol.resume_writing()
    assert len(handled) == 1


def test_a_reclaimed_instance_is_not_kept_alive_by_the_lane() -> None:
    lane, route, _ = _lane(lambda slot: None, [])
    instance = object()
    baseline = sys.getrefcount(instance)
    slot = Slot(route, instance, InProcessTransport(), 1024)
    slot.lend()
    slot.reclaim()
    del slot
    assert sys.getrefcount(instance) == baseline
    assert route.idle_count() == 0 and lane.serve(_Client(), REQUEST) == 0


def test_one_failing_completion_callback_does_not_stop_the_others_or_its_settler() -> None:
    import asyncio

    from strato.faas.live.completion import Completion

    reported: list[BaseException] = []
    seen: list[int] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context["exception"])
        )
        done: Completion[int] = Completion()

        def broken(_: Completion[int]) -> None:
            raise ValueError("a bug in a callback")

        done.add_done_callback(broken)
        done.add_done_callback(lambda completion: seen.append(completion.result()))
        done.set_result(7)  # does not raise
        done.add_done_callback(lambda completion: seen.append(completion.result() + 1))
        assert await done == 7

    asyncio.run(main())
    assert seen == [7, 8]
    assert [type(error) for error in reported] == [ValueError]


class _Bodies:
    """Response bodies, in order, as llhttp reads them off the client's side."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.bodies.append(self._body)
        self._body = b""


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["plain", "chunked", "other", "close-free"]), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_lane_and_llhttp_share_one_connection_without_losing_or_reordering_a_request(
    kinds: list[str], cuts: list[int]
) -> None:
    """Requests the lane takes, holds or leaves, cut anywhere: each is answered once, in order."""
    import httptools

    stream = b""
    for index, kind in enumerate(kinds):
        body = b"%d" % index
        if kind == "plain":
            stream += b"POST /function/echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        elif kind == "chunked":
            stream += (
                b"POST /function/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            )
        elif kind == "other":
            stream += b"POST /elsewhere HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        else:
            stream += (
                b"PATCH /function/echo HTTP/1.1\r\nHost: h\r\nX-A: b\r\nContent-Length: %d\r\n\r\n%s"
                % (
                    len(body),
                    body,
                )
            )

    instance_side = InProcessTransport()
    routes: dict[str, Route] = {}
    route = routes["echo"] = Route("echo", lambda slot: None)

    def finish(slot: Slot, status: int, client: ServerProtocol, keep_alive: bool) -> None:
        client.lane_done(keep_alive)
        slot.lend()

    lane = Lane(routes, finish, None, False, LIMITS.max_head, LIMITS.max_body, LIMITS.max_headers)
    slot = Slot(route, object(), instance_side, 1024)
    slot.cache(b"200\r\n", b"HTTP/1.1 200 OK\r\n", 200)
    slot.lend()

    def handler(request: Request) -> Response:
        return Response(200, request.body)

    protocol = ServerProtocol(handler, limits=LIMITS, tracker=ConnectionTracker(), lane=lane)
    client_side = InProcessTransport()
    protocol.connection_made(client_side)  # type: ignore[arg-type]
    taken = 0
    bounds = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    for start, end in itertools.pairwise(bounds):
        protocol.data_received(stream[start:end])
        while slot.busy:  # the instance answers the lane's invocation with the request's body
            request_id, _, meta_size, body_size = struct.unpack("!IBII", instance_side.out[:13])
            echoed = bytes(instance_side.out[13 + meta_size : 13 + meta_size + body_size])
            del instance_side.out[:]
            taken += 1
            assert slot.complete(frame(request_id, 11, b"200\r\n", echoed))
    bodies = _Bodies()
    httptools.HttpResponseParser(bodies).feed_data(bytes(client_side.out))
    assert bodies.bodies == [b"%d" % index for index in range(len(kinds))]
    assert protocol.tracker.in_flight == 0 and not protocol.busy
    if "plain" in kinds and len(bounds) == 2 and len(kinds) == 1:
        assert taken == 1  # one whole plain request in one read: the lane's
