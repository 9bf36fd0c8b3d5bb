"""The instance side: handler loading, the response conventions, the request head, the CPU-time limit."""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from live_helpers import write_function
from strato.faas.live import frames, runtime
from strato.faas.live.runtime import (
    FATAL_HEADER,
    Event,
    FrameReader,
    InstanceSpec,
    LoadedFunction,
    http_response,
    parse_head,
)

pytestmark = pytest.mark.system


@pytest.fixture(autouse=True)
def fresh_handler_module() -> None:
    # Every test's code is a module named "handler"; in a real instance it is imported once per process.
    sys.modules.pop("handler", None)


def load(tmp_path: Path, source: str, **spec: object) -> LoadedFunction:
    code = write_function(tmp_path, "custom", source)
    return LoadedFunction(
        InstanceSpec(
            instance_id="t-1", function="custom", handler="handler:handle", code_dir=str(code), **spec
        )
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("returned", "status", "content_type", "body"),
    [
        ("b'raw'", 200, "application/octet-stream", b"raw"),
        ("'text'", 200, "text/plain; charset=utf-8", b"text"),
        ("{'a': 1}", 200, "application/json", b'{"a": 1}'),
        ("('made', 201)", 201, "text/plain; charset=utf-8", b"made"),
        ("('x', 202, {'Content-Type': 'text/x-mine'})", 202, "text/x-mine", b"x"),
        (
            "{'statusCode': 418, 'body': 'teapot', 'headers': {'X-T': '1'}}",
            418,
            "text/plain; charset=utf-8",
            b"teapot",
        ),
        ("None", 200, None, b""),
    ],
)
def test_response_conventions(
    tmp_path: Path, returned: str, status: int, content_type: str | None, body: bytes
) -> None:
    function = load(tmp_path, f"def handle(event):\n    return {returned}\n")
    got_status, headers, got_body = function.invoke("POST", "/", {}, b"")
    assert got_status == status
    assert dict(headers).get("Content-Type") == content_type
    assert got_body == body


def test_handler_with_context_and_event_fields(tmp_path: Path) -> None:
    function = load(
        tmp_path,
        "def handle(event, context):\n"
        "    return {'fn': context.function, 'q': event.query, 'j': event.json()}\n",
    )
    status, _, body = function.invoke("POST", "/x?k=v", {}, b'{"n": 3}')
    assert status == 200
    assert json.loads(body) == {"fn": "custom", "q": "k=v", "j": {"n": 3}}


def test_bad_handler_specs_fail_to_load(tmp_path: Path) -> None:
    with pytest.raises(AttributeError, match="no callable"):
        load(tmp_path, "handle = 3\n")
    with pytest.raises(ValueError, match="module:function"):
        code = write_function(tmp_path, "other", "def handle(e):\n    return 1\n")
        LoadedFunction(InstanceSpec(instance_id="t", function="f", handler="handler", code_dir=str(code)))


def test_parse_head_reads_the_gateway_rendered_head() -> None:
    head = b"PUT /x?y=1 HTTP/1.1\r\nhost: h\r\nx-probe:  yes "
    method, target, headers = parse_head(head)
    assert (method, target) == ("PUT", "/x?y=1")
    assert headers == {"host": "h", "x-probe": "yes"}


def test_http_response_drops_internal_and_hop_by_hop_headers() -> None:
    payload = http_response(201, [("X-Keep", "1"), (FATAL_HEADER, "1"), ("Connection", "close")], b"abc")
    assert payload.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"X-Keep: 1" in payload and FATAL_HEADER.encode() not in payload and b"Connection" not in payload
    assert payload.endswith(b"Content-Length: 3\r\n\r\nabc")
    assert FATAL_HEADER.encode() in http_response(504, [(FATAL_HEADER, "1")], b"", internal=True)
    # No body and no length where HTTP forbids one: the next hop's parser would read the body as a response.
    assert http_response(204, [], b"ignored") == b"HTTP/1.1 204 No Content\r\n\r\n"


def _spin_with_cpu_limit(code_dir: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    function = LoadedFunction(
        InstanceSpec(
            instance_id="t-2", function="spin", handler="handler:handle", code_dir=code_dir, cpu_timeout_s=1.0
        )
    )
    from strato.faas.live.runtime import _on_cpu_limit

    signal.signal(signal.SIGXCPU, _on_cpu_limit)
    queue.put(function.invoke("POST", "/", {}, b""))


def test_cpu_time_limit_ends_a_spinning_handler_with_a_fatal_504(tmp_path: Path) -> None:
    code = write_function(tmp_path, "spin")
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    process = context.Process(target=_spin_with_cpu_limit, args=(str(code), queue))
    process.start()
    status, headers, body = queue.get(timeout=15)
    process.join(5)
    assert status == 504
    assert (FATAL_HEADER, "1") in headers
    assert "CPU-time limit" in json.loads(body)["error"]


# The lean loop's reading, rendering and CPU budget.


class ChunkedSocket:
    """A socket whose reads return the stream in the given chunk sizes (the kernel may split or merge
    writes on a stream socket however it likes)."""

    def __init__(self, stream: bytes, chunks: list[int]) -> None:
        self.stream = stream
        self.chunks = chunks
        self.position = 0
        self.reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        data = b""
        while True:
            step = self.chunks[self.reads % len(self.chunks)]
            self.reads += 1
            chunk = self.stream[self.position : self.position + min(size - len(data), step)]
            self.position += len(chunk)
            data += chunk
            # MSG_WAITALL: as much as asked for, unless the stream ends first.
            if not flags & socket.MSG_WAITALL or len(data) == size or not chunk:
                return data


def invoke_frame(request_id: int, head: bytes, body: bytes) -> bytes:
    return frames.encode(request_id, frames.INVOKE, head, body)


def read_all(reader: FrameReader) -> list[tuple[int, int, bytes, bytes]]:
    got = []
    with pytest.raises(EOFError):
        while True:
            got.append(reader.read())
    return got


def test_frame_reader_reassembles_split_frames_and_keeps_bytes_past_a_frame() -> None:
    sent = [
        (7, frames.INVOKE, b"GET /a HTTP/1.1", b""),
        (8, frames.INVOKE, b"POST / HTTP/1.1\r\nx: 1", b"xyz"),
    ]
    stream = b"".join(frames.encode(*frame) for frame in sent)
    # One byte per read, then the whole stream in one read (two frames at once), then odd splits.
    for chunks in ([1], [len(stream)], [5, 14, 3]):
        assert read_all(FrameReader(ChunkedSocket(stream, chunks))) == sent  # type: ignore[arg-type]


def test_frame_reader_loses_no_bytes_whatever_the_read_sizes() -> None:
    generator = random.Random(14)
    for _ in range(300):
        sent = [
            (
                generator.randrange(1 << 32),
                frames.INVOKE,
                generator.randbytes(generator.randrange(0, 40)),
                generator.randbytes(generator.randrange(0, 120)),
            )
            for _ in range(generator.randrange(1, 8))
        ]
        stream = b"".join(frames.encode(*frame) for frame in sent)
        chunks = [generator.randrange(1, 90) for _ in range(5)]
        # Reads smaller than a frame, some even smaller than its header.
        reader = FrameReader(ChunkedSocket(stream, chunks), size=generator.randrange(1, 200))  # type: ignore[arg-type]
        assert read_all(reader) == sent


def test_frame_reader_treats_a_close_inside_a_frame_as_the_end() -> None:
    stream = invoke_frame(1, b"GET / HTTP/1.1", b"body")
    for cut in (5, frames.HEADER_SIZE, len(stream) - 1):
        reader = FrameReader(ChunkedSocket(stream[:cut], [3]))  # type: ignore[arg-type]
        with pytest.raises(EOFError):
            reader.read()
    with pytest.raises(EOFError):  # while reading the rest of a frame larger than one read
        FrameReader(ChunkedSocket(stream[:-1], [64]), size=20).read()  # type: ignore[arg-type]


def test_event_headers_are_parsed_on_first_use_as_parse_head_would() -> None:
    head = b"PUT /x?y=1 HTTP/1.1\r\nHost: h\r\nx-probe:  yes \r\nx-empty:"
    event = Event.from_head(head, b"b")
    assert (event.method, event.path, event.query, event.body) == ("PUT", "/x", "y=1", b"b")
    assert event._headers is None
    assert event.headers == parse_head(head)[2] == {"host": "h", "x-probe": "yes", "x-empty": ""}
    assert event.headers is event.headers
    event.headers = {"replaced": "1"}
    assert event.headers == {"replaced": "1"}
    assert Event.from_head(b"GET / HTTP/1.1", b"").headers == {}
    with pytest.raises(ValueError):
        Event.from_head(b"GET\r\nhost: h", b"")


def test_result_metas_are_rendered_once_and_the_table_stays_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_RESULT_METAS", {})
    headers = [("Content-Type", "text/x"), ("Connection", "close"), ("X-Strato-Secret", "s")]
    rendered = frames.result_meta(201, runtime._header_block(headers, internal=False), fatal=False)
    assert runtime._result_meta(201, headers) == (rendered, False)
    assert runtime._result_meta(201, list(headers)) == (rendered, False)
    assert len(runtime._RESULT_METAS) == 1
    assert runtime._result_meta(504, [(FATAL_HEADER, "1")]) == (b"504 fatal\r\n", True)
    for number in range(3 * runtime.RESULT_METAS_KEPT):
        assert runtime._result_meta(200, [("X-Id", str(number))]) == (b"200\r\nX-Id: %d\r\n" % number, False)
    assert len(runtime._RESULT_METAS) <= runtime.RESULT_METAS_KEPT
    runtime._RESULT_METAS.clear()
    large = [("X-Large", "v" * runtime.RESULT_META_KEPT_SIZE)]
    assert runtime._result_meta(200, large)[0].endswith(b"v\r\n")
    assert not runtime._RESULT_METAS


def _cpu_limit_states(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import resource
    import time

    budget = 5.0
    calls = []
    setrlimit = resource.setrlimit

    def counted(which: int, limits: tuple[int, int]) -> None:
        calls.append(limits)
        setrlimit(which, limits)

    resource.setrlimit = counted  # type: ignore[assignment]

    def headroom() -> float:
        return resource.getrlimit(resource.RLIMIT_CPU)[0] - time.process_time()

    states = []
    runtime._arm_cpu_limit(budget)  # from no limit
    states.append((len(calls), headroom()))
    # A forked child starts at 0 s of CPU, far from the next whole second: these stay inside the window.
    for _ in range(1000):
        runtime._arm_cpu_limit(budget)
    states.append((len(calls), headroom()))
    used = time.process_time()
    setrlimit(resource.RLIMIT_CPU, (int(used) + 1, resource.RLIM_INFINITY))  # the handler lowered it
    runtime._arm_cpu_limit(budget)
    states.append((len(calls), headroom()))
    setrlimit(resource.RLIMIT_CPU, (int(used + 3 * budget), resource.RLIM_INFINITY))  # ...or raised it
    runtime._arm_cpu_limit(budget)
    states.append((len(calls), headroom()))
    setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    queue.put(states)


def test_cpu_budget_is_rearmed_only_when_the_limit_left_its_window() -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    process = context.Process(target=_cpu_limit_states, args=(queue,))
    process.start()
    states = queue.get(timeout=30)
    process.join(5)
    assert [calls for calls, _ in states] == [1, 1, 2, 3]
    # Each invocation starts with more than its budget of 5 s and at most a second more.
    assert all(5.0 < room <= 6.0 for _, room in states), states


SPIN_OR_ECHO = "def handle(event):\n    while event.body == b'spin':\n        pass\n    return event.body\n"


def _serve_in_child(
    sock: socket.socket, other_end: socket.socket, code_dir: str, cpu_timeout_s: float | None
) -> None:
    other_end.close()  # or the loop would never see the test close it
    function = LoadedFunction(
        InstanceSpec(
            instance_id="t-3",
            function="loop",
            handler="handler:handle",
            code_dir=code_dir,
            cpu_timeout_s=cpu_timeout_s,
        )
    )
    signal.signal(signal.SIGXCPU, runtime._on_cpu_limit)
    runtime.serve_lean(sock, function)


@contextmanager
def lean_child(tmp_path: Path, cpu_timeout_s: float | None = None) -> Iterator[tuple[socket.socket, Any]]:
    """serve_lean in a forked process; the test's end of its socket and the process."""
    code = write_function(tmp_path, "loop", SPIN_OR_ECHO)
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("fork").Process(
        target=_serve_in_child, args=(theirs, ours, str(code), cpu_timeout_s)
    )
    process.start()
    theirs.close()
    ours.settimeout(30)
    try:
        yield ours, process
    finally:
        ours.close()
        process.join(10)
        if process.exitcode is None:
            process.kill()
            process.join()


def test_lean_loop_answers_frames_that_arrive_together_or_in_pieces(tmp_path: Path) -> None:
    with lean_child(tmp_path) as (sock, process):
        answers = _three_answers(sock)
    assert [(request_id, kind, body) for request_id, kind, _, body in answers] == [
        (1, frames.RESULT, b"a"),
        (2, frames.RESULT, b"b"),
        (3, frames.RESULT, b"c"),
    ]
    assert answers[0][2] == b"200\r\nContent-Type: application/octet-stream\r\n"
    assert process.exitcode == 0  # the loop returned when the socket closed


def _three_answers(sock: socket.socket) -> list[tuple[int, int, bytes, bytes]]:
    reader = FrameReader(sock)
    head = b"POST / HTTP/1.1\r\ncontent-length: 1"
    sock.sendall(invoke_frame(1, head, b"a") + invoke_frame(2, head, b"b"))
    piece = invoke_frame(3, head, b"c")
    sock.sendall(piece[:6])
    time.sleep(0.05)
    sock.sendall(piece[6:])
    return [reader.read() for _ in range(3)]


def _cpu_seconds(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def test_cpu_limit_still_stops_a_runaway_after_many_invocations(tmp_path: Path) -> None:
    with lean_child(tmp_path, cpu_timeout_s=1.0) as (sock, process):
        reader = FrameReader(sock)
        head = b"POST / HTTP/1.1"
        for request_id in range(1, 20001):
            sock.sendall(invoke_frame(request_id, head, b"%d" % request_id))
            assert reader.read()[3] == b"%d" % request_id
        before = _cpu_seconds(process.pid)
        sock.sendall(invoke_frame(0, head, b"spin"))
        request_id, _, meta, body = reader.read()
        spent = _cpu_seconds(process.pid) - before
        assert (request_id, meta.split(b"\r\n")[0]) == (0, b"504 fatal")
        # Its whole budget, and stopped within the second of rounding the whole-second limit allows (the
        # kernel checks it on its clock tick, hence the margins).
        assert 0.95 <= spent <= 2.3, spent
        assert "CPU-time limit of 1 s" in json.loads(body)["error"]
        process.join(10)
        assert process.exitcode == 0  # the loop returned after the fatal answer, not at the close
