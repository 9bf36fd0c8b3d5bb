"""The error hierarchy and its two mappings: CLI exit codes (friendly_errors) and HTTP statuses (the monitor
server's exception handler), each checked on real raise sites."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from strato.cli.common import friendly_errors
from strato.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    StratoError,
    TraceFormatError,
    UnavailableError,
)
from strato.monitor.audit import AuditLog
from strato.monitor.config import load_config
from strato.monitor.dbfile import DatabaseBusyError
from strato.monitor.ganglia import GangliaError, fetch
from strato.monitor.server import create_app
from strato.monitor.service import Monitor
from strato.monitor.store import GroupExistsError, GroupNotFoundError, GroupStore

ADMIN = {"Authorization": "Bearer secret"}


def test_every_kind_is_a_strato_error_and_the_monitor_errors_have_their_kind() -> None:
    for kind in (ConfigError, NotFoundError, ConflictError, UnavailableError, TraceFormatError):
        assert issubclass(kind, StratoError)
    assert issubclass(TraceFormatError, ConfigError)  # a bad trace is bad input
    assert issubclass(GroupNotFoundError, NotFoundError)
    assert issubclass(GroupExistsError, ConflictError)
    assert issubclass(DatabaseBusyError, UnavailableError)
    assert issubclass(GangliaError, UnavailableError)
    assert UnavailableError("down").retry_after_s is None
    assert UnavailableError("busy", retry_after_s=2.5).retry_after_s == 2.5


def _app_raising(error: StratoError) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly_errors
    def fail() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad option --x"), 2),
        (TraceFormatError("t.csv", "not a number", row=3, column="count"), 2),
        (StratoError("some other failure"), 2),
        (NotFoundError("no group named 'g'"), 3),
        (ConflictError("group 'g' already exists"), 4),
        (UnavailableError("gmond is unreachable"), 5),
    ],
)
def test_cli_exit_code_per_kind(error: StratoError, code: int) -> None:
    result = CliRunner().invoke(_app_raising(error), [])
    assert result.exit_code == code
    assert result.output.strip() == f"error: {error}"
    assert "Traceback" not in result.output


def test_cli_exit_codes_on_real_commands(tmp_path: Path) -> None:
    from strato.cli.monitor import app

    db = ["--db", str(tmp_path / "m.db")]
    runner = CliRunner()
    made = runner.invoke(app, ["group", "create", "web", "-m", "web-1", "--no-check", *db])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["group", "create", "web", "--no-check", *db])
    assert again.exit_code == 4 and "already exists" in again.output
    missing = runner.invoke(app, ["group", "show", "nope", *db, "--source", "127.0.0.1:1"])
    assert missing.exit_code == 3 and "no group named 'nope'" in missing.output
    bad = runner.invoke(app, ["group", "create", "bad name", "--no-check", *db])
    assert bad.exit_code == 2 and "group name" in bad.output


def test_an_unreachable_ganglia_is_unavailable(tmp_path: Path) -> None:
    from strato.monitor import daemons

    with pytest.raises(UnavailableError, match="refused the connection"):
        fetch(f"127.0.0.1:{daemons.free_port()}")


Call = Callable[..., httpx.Response]


@pytest.fixture
def call(tmp_path: Path) -> Call:
    """One request to the monitor's app, in process (no socket, no poller)."""
    app = create_app(Monitor(load_config(None, db_path=tmp_path / "m.db", source="127.0.0.1:1")), "secret")

    def request(method: str, path: str, **options: object) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://monitor") as client:
                return await client.request(method, path, **options)  # type: ignore[arg-type]

        return asyncio.run(send())

    return request


def test_http_status_per_kind_on_real_routes(call: Call, tmp_path: Path) -> None:
    wrong = call("POST", "/api/groups", json={"name": "web"}, headers={"Authorization": "Bearer secreT"})
    assert wrong.status_code == 401 and call("GET", "/api/groups").json() == []
    created = call("POST", "/api/groups", json={"name": "web", "members": ["web-1"]}, headers=ADMIN)
    assert created.status_code == 201 and created.json()["listed"] == ["web-1"]

    duplicate = call("POST", "/api/groups", json={"name": "web"}, headers=ADMIN)
    assert duplicate.status_code == 409 and duplicate.json() == {"detail": "group 'web' already exists"}
    unknown = call("GET", "/api/groups/nope")
    assert unknown.status_code == 404 and "no group named 'nope'" in unknown.json()["detail"]
    assert call("GET", "/api/actions/999").status_code == 404
    assert call("GET", "/api/hosts/ghost").status_code == 404
    bad = call("POST", "/api/groups", json={"name": "bad name"}, headers=ADMIN)
    assert bad.status_code == 400 and "group name" in bad.json()["detail"]
    bad_rule = call("PATCH", "/api/groups/web", json={"rule": "load_one >"}, headers=ADMIN)
    assert bad_rule.status_code == 400 and "column" in bad_rule.json()["detail"]

    # Another process holds the write lock: the store gives up after its busy timeout, answered 503.
    holder = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        busy = call("POST", "/api/groups", json={"name": "db"}, headers=ADMIN)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert busy.status_code == 503 and "locked by another process" in busy.json()["detail"]
    assert busy.headers["retry-after"] == "2"
    assert call("POST", "/api/groups", json={"name": "db"}, headers=ADMIN).status_code == 201


def test_an_audit_write_failure_is_unavailable(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.db")
    audit.close()
    with pytest.raises(UnavailableError, match="write failed"):
        audit.start(who="ops", group="g", template="t", params={}, argv=["true"], members=[])


def test_store_errors_have_their_kind(tmp_path: Path) -> None:
    store = GroupStore(tmp_path / "m.db")
    store.create("web")
    with pytest.raises(ConflictError):
        store.create("web")
    with pytest.raises(NotFoundError):
        store.delete("nope")
    with pytest.raises(ConfigError):
        store.create("broken", rule="load_one >>")


def test_print_json_writes_non_finite_numbers_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    # json.dump writes NaN/Infinity (not JSON) and never passes floats to its default hook.
    import json

    import numpy as np

    from strato.cli.common import print_json

    print_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float64("-inf"), "d": (2, None)})
    assert json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(name)) == {
        "a": None,
        "b": [None, 1.5],
        "c": None,
        "d": [2, None],
    }


def test_every_error_kind_carries_its_exit_code_and_http_status() -> None:
    kinds = (ConfigError, NotFoundError, ConflictError, UnavailableError, StratoError)
    assert [(kind.exit_code, kind.http_status) for kind in kinds] == [
        (2, 400), (3, 404), (4, 409), (5, 503), (2, 400)
    ]  # fmt: skip
