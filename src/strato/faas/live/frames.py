"""The lean backend's wire format between the gateway and an instance: one frame per message.

A frame is a fixed 13-byte header (request id, kind, meta length, body length) followed by ``meta`` and
``body``. For an invocation ``meta`` is ``METHOD SP TARGET LF`` followed by the client's header lines as
``name: value`` separated by LF; for a response it is ``STATUS LF`` and the handler's header lines. The
body travels untouched, so a request costs the gateway one write and the instance one read of each part.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!IBII")
HEADER_SIZE = HEADER.size

INVOKE = 1
SPEC = 2
READY = 10
RESULT = 11
LOAD_FAILED = 12


def encode(request_id: int, kind: int, meta: bytes, body: bytes = b"") -> bytes:
    return HEADER.pack(request_id, kind, len(meta), len(body)) + meta + body


def encode_headers(headers: list[tuple[str, str]] | dict[str, str]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    return "\n".join(f"{name}: {value}" for name, value in items).encode("latin-1")


def decode_headers(text: bytes) -> list[tuple[str, str]]:
    pairs = []
    for line in text.split(b"\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name.decode("latin-1"), value.decode("latin-1")))
    return pairs
