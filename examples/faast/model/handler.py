"""ML inference: a linear classifier whose weight matrix (a 50-200 MB ``.npy``) lives in the object store.

Request (JSON): ``{"bucket": "faast-model", "key": "weights.npy", "seed": 7, "top": 5}``; ``"x": [...]``
(one float per input feature) instead of ``seed`` classifies that vector. Answer: the ``top`` classes with
their scores. The model is fetched on every invocation, as a stateless function does: keeping it across
invocations is exactly what the platform's cache does for the function, transparently.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np


def handle(event: Any, context: Any) -> Any:
    request = event.json() or {}
    data = context.storage.get(request.get("bucket", "faast-model"), request.get("key", "weights.npy"))
    weights = np.load(io.BytesIO(data), allow_pickle=False)
    features = weights.shape[0]
    if "x" in request:
        x = np.asarray(request["x"], dtype=np.float32)
        if x.shape != (features,):
            return json.dumps({"error": f"x needs {features} values, got {x.size}"}), 400
    else:
        x = np.random.default_rng(int(request.get("seed", 0))).standard_normal(features, dtype=np.float32)
    scores = x @ weights
    top = int(request.get("top", 5))
    best = np.argsort(scores)[::-1][:top]
    return {
        "classes": [int(i) for i in best],
        "scores": [round(float(scores[i]), 4) for i in best],
        "shape": list(weights.shape),
    }
