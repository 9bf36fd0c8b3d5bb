"""The lean backend's wire format between the gateway and an instance: one frame per message.

A frame is a fixed 13-byte header (request id, kind, meta length, body length) followed by ``meta`` and
``body``. For an invocation ``meta`` is an HTTP/1.1 request head: with ``INVOKE_RAW`` it is the client's
own head, passed through untouched (the instance drops the ``/function/NAME`` prefix of the target); with
``INVOKE`` the gateway rewrote it. A ``RESULT``'s ``meta`` is the status (and `` fatal`` when the
instance is about to exit) and its body the complete HTTP response, encoded by the instance so that the
gateway only writes it to the client. The gateway, the one process every request crosses, thus neither
re-encodes requests nor builds responses.
"""

from __future__ import annotations

import struct

# HTTP facts every hop shares; here because instances import this module and nothing heavier.
REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
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

HEADER = struct.Struct("!IBII")
HEADER_SIZE = HEADER.size

INVOKE = 1
SPEC = 2
INVOKE_RAW = 3
READY = 10
RESULT = 11
LOAD_FAILED = 12


def encode(request_id: int, kind: int, meta: bytes, body: bytes = b"") -> bytes:
    return HEADER.pack(request_id, kind, len(meta), len(body)) + meta + body
