"""An app that never reads an object twice (half of Azure's apps, by the blob trace): each invocation
reads the one object the request names, a new one every time, and answers its digest.

Request (JSON): ``{"bucket": "faast-noreuse", "key": "once-00042"}``. A cache cannot help this app; the
benchmark checks it does not slow it down either.
"""

from __future__ import annotations

import hashlib
from typing import Any


def handle(event: Any, context: Any) -> Any:
    request = event.json() or {}
    data = context.storage.get(request.get("bucket", "faast-noreuse"), request["key"])
    return {"key": request["key"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
