"""Object storage for the live platform: a real S3 server strato starts (:class:`StoreServer`), an
asyncio S3 client (:class:`S3Store`, obstore), a directory store for unit tests (:class:`LocalDirStore`)
and a shaping proxy that makes loopback look like a remote store (:class:`ShapingProxy`).

See docs/storage.md.
"""

from __future__ import annotations

import urllib.parse

from strato.errors import ConfigError
from strato.storage.errors import CorruptObject, ObjectNotFound, StorageError, StoreUnavailable
from strato.storage.localdir import LocalDirStore
from strato.storage.model import Fetched, ObjectMeta, ObjectStore
from strato.storage.proxy import Shaping, ShapingProxy
from strato.storage.s3 import S3Store
from strato.storage.server import StoreServer

__all__ = [
    "CorruptObject",
    "Fetched",
    "LocalDirStore",
    "ObjectMeta",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "Shaping",
    "ShapingProxy",
    "StorageError",
    "StoreServer",
    "StoreUnavailable",
    "open_store",
]


def open_store(
    url: str, *, timeout_s: float = 30.0, max_connections: int = 16, verify_etag: bool = True
) -> ObjectStore:
    """The store at ``url``: ``s3://HOST:PORT`` (S3 over HTTP, path-style; ``s3://KEY:SECRET@HOST:PORT``
    for other credentials) or ``dir:///abs/path`` (a local directory, unit tests only)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "s3":
        if not parts.hostname or parts.port is None or parts.path not in ("", "/"):
            raise ConfigError(f"object store URL {url!r} must be s3://HOST:PORT (e.g. s3://127.0.0.1:8333)")
        credentials = {}
        if parts.username:
            credentials = {
                "access_key": urllib.parse.unquote(parts.username),
                "secret_key": urllib.parse.unquote(parts.password or ""),
            }
        return S3Store(
            parts.hostname,
            parts.port,
            timeout_s=timeout_s,
            max_connections=max_connections,
            verify_etag=verify_etag,
            **credentials,
        )
    if parts.scheme == "dir":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"directory store URL {url!r} must be dir:///ABSOLUTE/PATH (three slashes)")
        return LocalDirStore(urllib.parse.unquote(parts.path))
    raise ConfigError(
        f"cannot open object store {url!r}: use s3://HOST:PORT (e.g. from `strato storage serve`) "
        "or dir:///ABSOLUTE/PATH (unit tests only)"
    )
