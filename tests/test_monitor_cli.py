"""`strato monitor` end to end: the CLI against a real gmond, as an administrator would type it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor_helpers import collector
from strato.monitor import daemons

pytestmark = pytest.mark.system


def strato(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRATO_MONITOR_DB": str(db), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "strato", "monitor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_groups_actions_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with collector(tmp_path, metrics=()) as gmond:
        source = ["--source", gmond.xml_address]
        for index, load in enumerate((0.5, 3.0, 4.0)):
            spoof = f"10.8.0.{index + 1}:web-{index + 1}"
            sent = strato(
                "send", "load_one", str(load), "--spoof", spoof, "--gmond", gmond.udp_address, db=db
            )
            assert sent.returncode == 0, sent.stderr
            strato(
                "send",
                "role",
                "web",
                "--type",
                "string",
                "--spoof",
                spoof,
                "--gmond",
                gmond.udp_address,
                db=db,
            )
        gmond.wait_for(lambda s: len(s.hosts) == 3 and all("role" in h.metrics for h in s.hosts.values()))

        hosts = json.loads(strato("hosts", "--json", *source, db=db).stdout)
        assert [(h["name"], h["ip"], h["metrics"]["load_one"]["value"]) for h in hosts] == [
            ("web-1", "10.8.0.1", 0.5),
            ("web-2", "10.8.0.2", 3.0),
            ("web-3", "10.8.0.3", 4.0),
        ]

        made = strato(
            "group", "create", "busy", "--rule", "load_one > 2", "-m", "db-9", "--json", *source, db=db
        )
        assert made.returncode == 0, made.stderr
        group = json.loads(made.stdout)
        assert group["members"] == ["db-9", "web-2", "web-3"] and group["down"] == ["db-9"]
        assert group["aggregates"]["load_one"]["mean"] == 3.5

        typo = strato("group", "create", "typo", "--rule", "lod_one > 2", *source, db=db)
        assert typo.returncode == 2
        assert "unknown metric 'lod_one'" in typo.stderr and "load_one" in typo.stderr
        assert len(typo.stderr.strip().splitlines()) == 1 and "Traceback" not in typo.stderr
        later = strato("group", "create", "gpu", "--rule", "gpu_temp > 80", "--no-check", *source, db=db)
        assert later.returncode == 0, later.stderr
        broken = strato("group", "create", "broken", "--rule", "load_one >> 2", *source, db=db)
        assert broken.returncode == 2 and "column" in broken.stderr

        assert strato("group", "remove", "busy", "db-9", *source, db=db).returncode == 0
        assert strato("group", "add", "busy", "web-1", *source, db=db).returncode == 0
        shown = json.loads(strato("group", "show", "busy", "--json", *source, db=db).stdout)
        assert shown["members"] == ["web-1", "web-2", "web-3"] and shown["listed"] == ["web-1"]
        listing = json.loads(strato("group", "list", "--json", *source, db=db).stdout)
        assert {g["name"]: g["members"] for g in listing} == {"busy": ["web-1", "web-2", "web-3"], "gpu": []}
        missing = strato("group", "remove", "busy", "web-7", *source, db=db)
        assert missing.returncode == 2 and "not listed in group 'busy'" in missing.stderr

        ran = strato(
            "action", "run", "busy", "echo", "message=hi $(id)", "--operator", "ops", "--json", *source, db=db
        )
        assert ran.returncode == 0, ran.stderr
        record = json.loads(ran.stdout)
        assert record["status"] == "ok" and record["who"] == "ops (cli)"
        assert sorted(r["host"] for r in record["results"]) == ["web-1", "web-2", "web-3"]
        assert all(r["stdout"] == "hi $(id)\n" for r in record["results"])
        failed = strato("action", "run", "busy", "df", "path=/no/such/dir", *source, db=db)
        assert failed.returncode == 1  # every host's df failed: scripts can tell
        refused = strato("action", "run", "busy", "df", "path=/; reboot", *source, db=db)
        assert refused.returncode == 2 and "path" in refused.stderr
        audit = json.loads(strato("action", "list", "--json", db=db).stdout)
        assert [a["status"] for a in audit] == ["rejected", "failed", "ok"]
        assert audit[0]["members"] == ["web-1", "web-2", "web-3"]

    down = strato("hosts", "--source", f"127.0.0.1:{daemons.free_port()}", db=db)
    assert down.returncode == 5 and "refused the connection" in down.stderr
