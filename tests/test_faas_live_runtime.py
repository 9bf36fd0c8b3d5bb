"""The instance side: handler loading, the response conventions, the request head, the CPU-time limit."""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
from pathlib import Path

import pytest

from live_helpers import write_function
from strato.faas.live.runtime import FATAL_HEADER, InstanceSpec, LoadedFunction, http_response, parse_head

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
