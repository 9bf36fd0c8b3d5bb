"""Image thumbnailing: a 1-8 MB JPEG from the object store, scaled to fit a box, returned as JPEG or PNG.

Request (JSON): ``{"bucket": "faast-images", "key": "photo-0.jpg", "size": [256, 256], "format": "JPEG"}``.
``Image.draft`` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding, so the decode costs a
fraction of a full one and the fetch dominates, as in the paper's image functions.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}


def handle(event: Any, context: Any) -> Any:
    request = event.json() or {}
    fmt = str(request.get("format", "JPEG")).upper()
    if fmt not in FORMATS:
        return json.dumps({"error": f"format must be one of {sorted(FORMATS)}, not {fmt!r}"}), 400
    width, height = (int(v) for v in request.get("size", (256, 256)))
    data = context.storage.get(request.get("bucket", "faast-images"), request.get("key", "photo-0.jpg"))
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, height))
        thumb = image.convert("RGB")
    thumb.thumbnail((width, height))
    out = io.BytesIO()
    options = {"quality": 85} if fmt == "JPEG" else {}
    thumb.save(out, fmt, **options)
    return out.getvalue(), 200, {"Content-Type": FORMATS[fmt]}
