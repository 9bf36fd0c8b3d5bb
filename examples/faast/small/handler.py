"""Small-object reader: the objects named in the request, 5-30 KB each (the Azure blob trace's median
sizes), drawn by the caller from a Zipf popularity, so a few objects are read again and again.

Request (JSON): ``{"bucket": "faast-small", "keys": ["obj-00003", "obj-00017"]}``. Answer: how many
objects and bytes were read and a CRC-32 over them all (so the bytes are really looked at).
"""

from __future__ import annotations

import zlib
from typing import Any


def handle(event: Any, context: Any) -> Any:
    request = event.json() or {}
    bucket = request.get("bucket", "faast-small")
    crc = 0
    total = 0
    keys = list(request.get("keys", []))
    for key in keys:
        data = context.storage.get(bucket, key)
        crc = zlib.crc32(data, crc)
        total += len(data)
    return {"objects": len(keys), "bytes": total, "crc32": crc}
