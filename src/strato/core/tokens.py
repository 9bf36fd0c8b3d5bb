"""Admin tokens kept in a 0600 file beside a server's state, created on first start."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from strato.errors import StratoError


def ensure_token_file(path: Path) -> str:
    """Read the token at ``path``, creating it (random, 0600) when it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise StratoError(f"{path} is readable by other users; run chmod 600 {path}") from None
        token = path.read_text().strip()
        if not token:
            raise StratoError(f"{path} is empty; delete it to generate a new token") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token
