"""Admin tokens: kept in a 0600 file beside a server's state, created on first start, and checked by
:class:`AdminToken`, the one bearer-token check both servers (the FaaS gateway, the monitor) use."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from strato.errors import ConfigError, StratoError


class AdminToken:
    """A server's admin token, encoded once; every comparison is constant-time (:func:`hmac.compare_digest`),
    so the time an answer takes says nothing about how much of a guess was right."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("the admin token is empty")
        self._expected = token.encode()

    def matches(self, given: str | bytes) -> bool:
        """Whether ``given`` is the token, exactly (a ``str`` is compared as its UTF-8 bytes)."""
        return hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected)

    def bearer(self, header: str | bytes | None) -> bool:
        """Whether an ``Authorization`` header value is ``Bearer <token>`` (the scheme in any case, spaces
        around the token ignored). A ``str`` header is taken as ASGI servers decode headers, Latin-1, so
        it is compared as the bytes that were sent."""
        if header is None:
            return False
        raw = header.encode("latin-1", "replace") if isinstance(header, str) else header
        scheme, _, credential = raw.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._expected)


def ensure_token_file(path: Path) -> str:
    """Read the token at ``path``, creating it (random, 0600) when it does not exist yet.

    The token is written to a temporary file, flushed, and linked into place only when complete, so a
    crash or a full disk never leaves an empty token file behind (which would stop every later start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        token = secrets.token_urlsafe(32)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(token + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, path)  # fails if another process created it meanwhile: theirs is read below
            return token
        except FileExistsError:
            pass
        except OSError as error:
            raise StratoError(f"cannot create the token file {path}: {error.strerror or error}") from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()
    if path.stat().st_mode & 0o077:
        raise StratoError(f"{path} is readable by other users; run chmod 600 {path}")
    token = path.read_text().strip()
    if not token:
        raise StratoError(f"{path} is empty; delete it to generate a new token")
    return token
