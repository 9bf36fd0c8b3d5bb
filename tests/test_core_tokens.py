"""AdminToken: the one bearer-token check of the FaaS gateway and the monitor."""

from __future__ import annotations

import pytest

from strato.core.tokens import AdminToken
from strato.errors import ConfigError


def test_bearer_header_and_exact_match() -> None:
    admin = AdminToken("s3cret-token")
    for accepted in (
        "Bearer s3cret-token",
        "bearer s3cret-token",
        "BEARER  s3cret-token ",
        b"Bearer s3cret-token",
    ):
        assert admin.bearer(accepted), accepted
    refused_headers: list[str | bytes | None] = [
        None, "", "Bearer", "Bearer ", "Bearer s3cret", "Bearer s3cret-token2", "Basic s3cret-token",
        "s3cret-token", b"Bearer S3CRET-TOKEN",
    ]  # fmt: skip
    for refused in refused_headers:
        assert not admin.bearer(refused), refused
    assert admin.matches("s3cret-token") and admin.matches(b"s3cret-token")
    assert not admin.matches(" s3cret-token") and not admin.matches("")


def test_a_non_ascii_token_matches_the_bytes_that_were_sent() -> None:
    admin = AdminToken("clé")
    sent = "Bearer clé".encode()
    assert admin.bearer(sent)
    assert admin.bearer(sent.decode("latin-1"))  # how ASGI servers hand headers to the application
    assert admin.matches("clé")


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        AdminToken("")
