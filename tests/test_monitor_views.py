"""The typed views the API answers and ``--json`` prints: one definition for both, JSON as they stand."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from pydantic import TypeAdapter

from strato.monitor.actions import BUILTIN_TEMPLATES, Template
from strato.monitor.groups import GroupEngine
from strato.monitor.model import Host, Metric, Snapshot
from strato.monitor.store import GroupDef
from strato.monitor.views import (
    GroupView,
    HostView,
    group_view,
    groups_by_host,
    history_view,
    host_view,
    to_json,
)


def _snapshot() -> Snapshot:
    hosts = {
        "web-1": Host("web-1", "10.0.0.1", metrics={"load_one": Metric("load_one", 2.0, "float")}),
        "web-2": Host(
            "web-2",
            "10.0.0.2",
            metrics={
                "load_one": Metric("load_one", math.inf, "float"),
                "role": Metric("role", "web", "string"),
                "temp": Metric("temp", math.nan, "double", units="C"),
            },
        ),
    }
    return Snapshot("test", 1000.0, hosts)


def test_views_are_json_as_they_stand_and_match_what_the_api_serialises() -> None:
    snapshot = _snapshot()
    web = GroupDef("web", 'name matches "web-*"', ("db-1",), "front ends")
    result = GroupEngine().update(snapshot, [web])
    groups = groups_by_host(result)
    assert groups == {"db-1": ["web"], "web-1": ["web"], "web-2": ["web"]}

    host = host_view(snapshot.hosts["web-2"], groups["web-2"], None)
    assert host.metrics["temp"].value is None and host.metrics["role"].value == "web"
    assert host.metrics["load_one"].value is None  # an infinity from Ganglia
    group = group_view(web, result.groups["web"])
    assert group.members == ("db-1", "web-1", "web-2") and group.down == ("db-1",)
    assert group.aggregates is not None and group.aggregates["load_one"]["max"] is None  # inf
    for view, kind in ((host, HostView), (group, GroupView)):
        cli = json.loads(json.dumps(to_json(view), allow_nan=False))
        api = json.loads(TypeAdapter(kind).dump_json(view))
        assert cli == api

    template = BUILTIN_TEMPLATES["df"]
    assert json.loads(json.dumps(to_json(template))) == json.loads(TypeAdapter(Template).dump_json(template))


def test_a_group_before_the_first_poll_has_null_membership() -> None:
    view = to_json(group_view(GroupDef("db", None, ("db-1",)), None))
    assert view["listed"] == ("db-1",) and view["rule"] is None
    assert all(view[field] is None for field in ("members", "up", "down", "entered", "left", "aggregates"))


def test_history_keeps_polls_that_have_the_metric() -> None:
    series = [(1.0, 2, {"load_one": (1.0, 0.5, 1.5)}), (2.0, 0, {}), (3.0, 1, {"load_one": (math.nan, 0, 0)})]
    view = to_json(history_view("web", "load_one", series))
    assert [(p["t"], p["members_up"], p["mean"]) for p in view["points"]] == [(1.0, 2, 1.0), (3.0, 1, None)]


def test_the_cli_does_not_import_the_web_server(tmp_path: Path) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from strato.cli.monitor import app\n"
        f"done = CliRunner().invoke(app, ['group', 'list', '--json', '--db', {str(tmp_path / 'm.db')!r}])\n"
        "assert done.exit_code == 0, done.output\n"
        "print(sorted(name for name in sys.modules if name.startswith(('strato.monitor.server', 'fastapi'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
