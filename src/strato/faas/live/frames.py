"""The lean backend's wire format between the gateway and an instance: one frame per message.

A frame is a fixed 13-byte header (request id, kind, meta length, body length) followed by ``meta`` and
``body``. An ``INVOKE``'s ``meta`` is the HTTP/1.1 request head the gateway wrote from the request it
parsed and checked (target without the ``/function/NAME`` prefix), its body the request body. A
``RESULT``'s ``meta`` is ``STATUS[ fatal]`` (``fatal``: the instance exits after this answer), CRLF, then
the response's header lines (``Name: value`` CRLF each); its body is the response body. The instance runs
code the platform does not trust, so the gateway checks every frame (sizes before buffering, status,
header lines) and writes the HTTP response head itself.
"""

from __future__ import annotations

import re
import struct

# HTTP facts every hop shares; here because instances import this module and nothing heavier.
REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)

TOKEN_PATTERN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
"""A header name (RFC 9110 token)."""
VALUE_PATTERN = rb"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?"
"""A header value the platform passes: visible ASCII, inner spaces and tabs; no CR, LF, NUL, no 8-bit."""
HEADER_NAME = re.compile(TOKEN_PATTERN.decode())
HEADER_TEXT = re.compile(VALUE_PATTERN.decode())

HEADER = struct.Struct("!IBII")
HEADER_SIZE = HEADER.size

INVOKE = 1
SPEC = 2
READY = 10
RESULT = 11
LOAD_FAILED = 12
STORAGE = 20
"""Instance to node: a handler's storage call (meta: the call as JSON; body: the data of a put)."""
STORAGE_REPLY = 21
"""Node to instance: the answer to a STORAGE frame with the same id (meta: JSON; body: the data)."""


MAX_META = 64 * 1024
"""A result's status and header lines; a frame declaring more is refused before it is buffered."""


def encode(request_id: int, kind: int, meta: bytes, body: bytes = b"") -> bytes:
    return HEADER.pack(request_id, kind, len(meta), len(body)) + meta + body


def result_meta(status: int, header_block: bytes, *, fatal: bool) -> bytes:
    return b"%d%s\r\n%s" % (status, b" fatal" if fatal else b"", header_block)


def parse_result_meta(meta: bytes) -> tuple[int, bool, bytes] | None:
    """(status, fatal, header lines) of a RESULT, or None when the status line is malformed."""
    line, sep, block = meta.partition(b"\r\n")
    status, _, flag = line.partition(b" ")
    if not sep or len(status) != 3 or not status.isdigit() or flag not in (b"", b"fatal"):
        return None
    return int(status), flag == b"fatal", block
