"""A small synchronous client of the gateway's API, used by the CLI wrappers, the replay and the tests."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from strato.errors import StratoError
from strato.faas.live.codedir import CodeDirError, read_tree

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(StratoError):
    """The gateway answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class InvokeResult:
    status: int
    headers: dict[str, str]
    body: bytes


def resolve_token(token: str | None, state_dir: Path | None = None) -> str | None:
    """The token from the option, ``STRATO_FAAS_TOKEN`` or the local server's token file, in that order."""
    if token:
        return token
    if os.environ.get("STRATO_FAAS_TOKEN"):
        return os.environ["STRATO_FAAS_TOKEN"]
    from strato.faas.live.gateway import default_state_dir

    path = (state_dir or default_state_dir()) / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class FaasClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 120.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise StratoError(f"gateway URL {url!r} must look like http://HOST:PORT")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token = token
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> InvokeResult:
        sent = dict(headers or {})
        if auth and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._connection.request(method, path, body=body, headers=sent)
                response = self._connection.getresponse()
                data = response.read()
                return InvokeResult(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
            except ConnectionRefusedError:
                self.close()
                raise StratoError(
                    f"no strato faas server at {self.url} (start one with `strato faas serve`)"
                ) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed: retry once on a fresh one.
                self.close()
                if attempt:
                    raise StratoError(f"the server at {self.url} closed the connection") from None
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else b""
        result = self.request(method, path, body, {"Content-Type": "application/json"} if body else None)
        try:
            data = json.loads(result.body) if result.body else None
        except ValueError:
            data = None
        if result.status >= 400:
            message = (
                data.get("error") if isinstance(data, dict) else result.body[:200].decode(errors="replace")
            )
            raise ApiError(result.status, str(message))
        return data

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", "/healthz")
        return data

    def deploy(
        self,
        name: str,
        *,
        directory: Path | None = None,
        files: dict[str, str] | None = None,
        handler: str = "handler:handle",
        memory: str | None = None,
        timeout: str | None = None,
        env: dict[str, str] | None = None,
        update: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """Deploy code read here (a directory) or given inline, so the server never needs our paths."""
        if (directory is None) == (files is None):
            raise StratoError("deploy needs exactly one of a directory or files")
        if directory is not None:
            if not directory.is_dir():
                raise StratoError(f"{directory} is not a directory")
            try:
                raw = read_tree(directory, limit_bytes=64 * 1024 * 1024, strict=False)
            except CodeDirError as error:
                raise StratoError(str(error)) from None
            try:
                files = {path: content.decode() for path, content in raw.items()}
            except UnicodeDecodeError as error:
                raise StratoError(f"{directory}: only text files can be uploaded ({error})") from None
        payload: dict[str, Any] = {"service": name, "handler": handler, "files": files, **options}
        if memory is not None:
            payload["limits"] = {"memory": memory}
        if timeout is not None:
            payload["timeout"] = timeout
        if env:
            payload["envVars"] = env
        data: dict[str, Any] = self._json("PUT" if update else "POST", "/system/functions", payload)
        return data

    def invoke(
        self,
        name: str,
        body: bytes = b"",
        *,
        method: str = "POST",
        path: str = "",
        headers: dict[str, str] | None = None,
    ) -> InvokeResult:
        return self.request(method, f"/function/{name}{path}", body, headers)

    def list(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._json("GET", "/system/functions")
        return data

    def describe(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", f"/system/functions/{name}")
        return data

    def remove(self, name: str) -> None:
        self._json("DELETE", f"/system/functions/{name}")

    def logs(self, name: str, lines: int = 100) -> str:
        result = self.request("GET", f"/system/logs/{name}?lines={lines}")
        if result.status >= 400:
            try:
                message = json.loads(result.body).get("error")
            except (ValueError, AttributeError):
                message = result.body[:200].decode(errors="replace")
            raise ApiError(result.status, str(message))
        return result.body.decode(errors="replace")

    def unload(self, name: str) -> int:
        """Stop the function's idle instances (and drop their cache); how many stopped."""
        data: dict[str, Any] = self._json("POST", f"/system/functions/{name}/unload")
        return int(data["stopped"])

    def cache_stats(self, name: str) -> dict[str, Any]:
        """The function's cache counters from ``/system/stats``."""
        storage = self.stats().get("storage")
        if storage is None:
            raise StratoError("this server has no object store (it was started without --storage)")
        apps: dict[str, Any] = storage["apps"]
        if name not in apps:
            raise StratoError(f"no cache for {name!r} yet: it has not used storage since the server started")
        return {**apps[name], "cache": storage["cache"], "consistency": storage["consistency"]}

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._json("GET", "/system/stats")
        return data
