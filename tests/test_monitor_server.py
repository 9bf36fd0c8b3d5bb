"""``strato monitor serve`` as a real child process over a real gmond: JSON API, admin token, actions,
Prometheus ``/metrics``, Ganglia going away, and bad startup input."""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor_helpers import Collector, collector
from monitor_server_helpers import (
    FLEET,
    WEB,
    FakeHost,
    MonitorServer,
    monitor_server,
    one,
    parse_exposition,
    send_load,
    serve_command,
    spoof_hosts,
    wait_for_hosts,
    wait_until,
)
from strato.monitor import daemons
from strato.monitor.audit import AuditLog

pytestmark = pytest.mark.system

WEB_RULE = 'name matches "web-*"'
WEB_NAMES = [host.name for host in WEB]
WEB_LOADS = [host.load_one for host in WEB]


@dataclass
class Stack:
    gmond: Collector
    server: MonitorServer
    hosts: dict[str, FakeHost]


@contextmanager
def stack(
    tmp_path: Path, *, config_toml: str | None = None, groups: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A collector gmond with the spoofed fleet, a server polling it, and groups created via the API."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address, config_toml=config_toml) as server,
    ):
        hosts = spoof_hosts(gmond.udp_address, server)
        with server.client() as admin:
            for name, rule in (groups if groups is not None else {"web": WEB_RULE}).items():
                created = admin.post("/api/groups", json={"name": name, "rule": rule})
                assert created.status_code == 201, created.text
        yield Stack(gmond, server, hosts)


def members(server: MonitorServer, group: str) -> list[str]:
    # null until the server has polled since the group was made
    return list(server.get(f"/api/groups/{group}")["members"] or [])


def wait_members(server: MonitorServer, group: str, expected: list[str], timeout_s: float = 10.0) -> None:
    wait_until(
        lambda: members(server, group) == expected,
        timeout_s=timeout_s,
        what=lambda: f"group {group} members {expected} (now {members(server, group)})",
    )


def finished(server: MonitorServer, action_id: int, timeout_s: float = 15.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        record: dict[str, Any] = server.get(f"/api/actions/{action_id}")
        return record if record["status"] != "running" else None

    return wait_until(done, timeout_s=timeout_s, what=f"action {action_id} to finish")


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


# ---- reads --------------------------------------------------------------------------------------------


def test_read_api(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        server = running.server
        # A group made by the CLI in the same database shows up at the next poll (the server rereads it).
        made = subprocess.run(
            [sys.executable, "-m", "strato", "monitor", "group", "create", "db", "--member", "db-1",
             "--db", str(server.db), "--no-check"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        wait_members(server, "db", ["db-1"])

        status = server.get("/api/status")
        assert status["source"] == running.gmond.xml_address and status["interval_s"] == 0.3
        assert status["polls"] >= 1 and status["failures"] == 0 and status["last_error"] is None
        assert status["last_success_at"] is not None and status["groups"] == 2
        assert status["hosts"] >= len(FLEET) and status["hosts_up"] >= len(FLEET)

        listing = {item["name"]: item for item in server.get("/api/hosts")}
        for host in FLEET:
            item = listing[host.name]
            assert item["ip"] == host.ip and item["up"] is True and item["cluster"] == "strato"
            assert item["metrics"]["load_one"]["value"] == host.load_one
            assert item["metrics"]["load_one"]["type"] == "float"
            assert (item["metrics"]["role"]["value"], item["metrics"]["role"]["type"]) == (
                host.role,
                "string",
            )
            assert item["groups"] == (["web"] if host.name.startswith("web-") else ["db"])
        one = server.get("/api/hosts/web-2")
        assert (one["name"], one["ip"], one["groups"]) == ("web-2", "10.20.0.2", ["web"])
        with server.client(auth=False) as anon:
            missing = anon.get("/api/hosts/nope")
            assert missing.status_code == 404
            assert detail(missing) == "Ganglia reports no host named 'nope'"
            unknown = anon.get("/api/groups/nope")
            assert unknown.status_code == 404
            assert detail(unknown) == "no group named 'nope' (groups: db, web)"
            assert anon.get("/api/groups/nope/history").status_code == 404
            assert anon.get("/api/actions/999").status_code == 404

            groups = {group["name"]: group for group in server.get("/api/groups")}
            assert sorted(groups) == ["db", "web"]
            web = groups["web"]
            assert (web["rule"], web["listed"], web["members"]) == (WEB_RULE, [], WEB_NAMES)
            assert (web["up"], web["down"], web["error"], web["warnings"]) == (WEB_NAMES, [], None, [])
            load = web["aggregates"]["load_one"]
            assert load["count"] == 3 and load["mean"] == pytest.approx(statistics.mean(WEB_LOADS))
            assert (load["min"], load["max"], load["sum"]) == (1.5, 4.0, pytest.approx(sum(WEB_LOADS)))
            assert "role" not in web["aggregates"]
            assert groups["db"]["listed"] == ["db-1"] and groups["db"]["rule"] is None
            single = server.get("/api/groups/web")
            assert (single["name"], single["rule"], single["members"]) == ("web", WEB_RULE, WEB_NAMES)

            # History: one point per poll, accumulating.
            before = server.get("/api/groups/web/history", metric="load_one")["points"]
            server.wait_polls(3)
            history = server.get("/api/groups/web/history", metric="load_one")
            assert history["group"] == "web" and history["metric"] == "load_one"
            points = history["points"]
            assert len(points) >= len(before) + 2
            assert [p["t"] for p in points] == sorted(p["t"] for p in points)
            last = points[-1]
            assert last["members_up"] == 3 and last["mean"] == pytest.approx(statistics.mean(WEB_LOADS))
            assert (last["min"], last["max"]) == (1.5, 4.0)
            assert server.get("/api/groups/web/history", metric="no_such_metric")["points"] == []

            templates = {t["name"]: t for t in server.get("/api/templates")}
            assert sorted(templates) == ["df", "echo", "sleep", "uptime"]
            assert templates["echo"]["argv"] == ["echo", "{message}"]
            assert templates["echo"]["params"]["message"]["type"] == "str"
            assert templates["df"]["params"]["path"]["default"] == "/"
            assert templates["sleep"]["params"]["seconds"]["type"] == "float"
            assert server.get("/api/actions") == []

            docs = anon.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            schema = anon.get("/openapi.json").json()
            assert schema["info"]["title"] == "strato monitor"
            for path in ("/api/status", "/api/hosts/{name}", "/api/groups/{name}/actions", "/metrics"):
                assert path in schema["paths"], path
            assert "/" not in schema["paths"] and "/login" not in schema["paths"]
            health = anon.get("/healthz")
            assert (health.status_code, health.text) == (200, "ok\n")


# ---- admin endpoints ------------------------------------------------------------------------------------


def test_admin_endpoints_need_the_token_and_edit_groups(tmp_path: Path) -> None:
    with (
        stack(tmp_path, groups={}) as running,
        running.server.client() as admin,
        running.server.client(auth=False) as anon,
        running.server.client(auth=False, headers={"Authorization": "Bearer not-the-token"}) as wrong,
    ):
        server = running.server
        busy = {"name": "busy", "rule": "load_one > 2"}
        for client in (anon, wrong):
            refused = client.post("/api/groups", json=busy)
            assert refused.status_code == 401 and "admin token" in detail(refused)
        assert server.get("/api/groups") == []
        created = admin.post("/api/groups", json={**busy, "description": "loaded hosts"})
        assert created.status_code == 201, created.text
        assert created.json()["members"] == ["web-2", "web-3"]  # recomputed from the last snapshot at once
        server.wait_polls()
        group = server.get("/api/groups/busy")
        assert (group["members"], group["rule"], group["description"]) == (
            ["web-2", "web-3"], "load_one > 2", "loaded hosts",
        )  # fmt: skip

        # Every write refuses a missing or wrong token and changes nothing.
        writes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("PATCH", "/api/groups/busy", {"rule": "load_one > 0"}),
            ("POST", "/api/groups/busy/members", {"hosts": ["db-1"]}),
            ("DELETE", "/api/groups/busy/members/web-2", None),
            ("DELETE", "/api/groups/busy", None),
            ("POST", "/api/groups/busy/actions", {"template": "uptime"}),
        ]
        for method, path, body in writes:
            for client in (anon, wrong):
                response = client.request(method, path, json=body)
                assert response.status_code == 401, (method, path, response.text)
        assert server.get("/api/groups/busy") == group
        assert server.get("/api/actions") == []

        # The dashboard's login sets an HttpOnly, SameSite=Strict cookie that also authorises the API.
        with server.client(auth=False, follow_redirects=False) as browser:
            assert browser.post("/login", data={"token": "nope", "next": "/"}).status_code == 401
            login = browser.post("/login", data={"token": server.token, "next": "/groups/busy"})
            assert login.status_code == 303 and login.headers["location"] == "/groups/busy"
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            # With the server's own Origin, as a browser on the dashboard sends it; without one, refused.
            change, own = {"rule": "load_one > 3"}, {"Origin": server.url}
            assert browser.patch("/api/groups/busy", json=change, headers=own).status_code == 200
            assert browser.patch("/api/groups/busy", json=change).status_code == 403

        patched = admin.patch("/api/groups/busy", json={"rule": 'load_one > 1 and role == "frontend"'})
        assert patched.status_code == 200 and patched.json()["members"] == ["web-1", "web-2"]
        server.wait_polls()
        assert members(server, "busy") == ["web-1", "web-2"]

        added = admin.post("/api/groups/busy/members", json={"hosts": ["db-1", "gone-1"]})
        assert added.status_code == 200 and added.json()["listed"] == ["db-1", "gone-1"]
        server.wait_polls()
        group = server.get("/api/groups/busy")
        assert group["members"] == ["db-1", "gone-1", "web-1", "web-2"]
        assert group["down"] == ["gone-1"]  # listed, absent from Ganglia: a member reported as down

        removed = admin.delete("/api/groups/busy/members/gone-1")
        assert removed.status_code == 200 and removed.json()["listed"] == ["db-1"]
        not_listed = admin.delete("/api/groups/busy/members/web-1")
        assert not_listed.status_code == 400
        assert "web-1 is not listed in group 'busy'" in detail(not_listed)
        server.wait_polls()
        assert members(server, "busy") == ["db-1", "web-1", "web-2"]

        # Clear 400s for bad input; nothing is stored.
        syntax = admin.post("/api/groups", json={"name": "broken", "rule": "load_one >"})
        assert syntax.status_code == 400 and "expected a value after '>'" in detail(syntax)
        assert "column 11" in detail(syntax)
        bad_patch = admin.patch("/api/groups/busy", json={"rule": "load_one >>> 2"})
        assert bad_patch.status_code == 400 and "unknown operator '>>>'" in detail(bad_patch)
        bad_name = admin.post("/api/groups", json={"name": "bad name!"})
        assert bad_name.status_code == 400 and "group name 'bad name!'" in detail(bad_name)
        twice = admin.post("/api/groups", json=busy)
        assert twice.status_code == 409 and "already exists" in detail(twice)
        bad_host = admin.post("/api/groups/busy/members", json={"hosts": ["has space"]})
        assert bad_host.status_code == 400 and "host name 'has space'" in detail(bad_host)
        assert [g["name"] for g in server.get("/api/groups")] == ["busy"]
        assert server.get("/api/groups/busy")["rule"] == 'load_one > 1 and role == "frontend"'

        # 404 for unknown groups, on every admin endpoint too.
        for method, path, body in [
            ("PATCH", "/api/groups/nope", {"rule": "load_one > 1"}),
            ("POST", "/api/groups/nope/members", {"hosts": ["db-1"]}),
            ("DELETE", "/api/groups/nope/members/db-1", None),
            ("DELETE", "/api/groups/nope", None),
            ("POST", "/api/groups/nope/actions", {"template": "uptime"}),
        ]:
            response = admin.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert "no group named 'nope'" in detail(response)

        # An empty rule removes it: only listed hosts stay.
        cleared = admin.patch("/api/groups/busy", json={"rule": ""})
        assert cleared.status_code == 200 and cleared.json()["rule"] is None
        assert cleared.json()["members"] == ["db-1"]

        deleted = admin.delete("/api/groups/busy")
        assert deleted.status_code == 204
        assert anon.get("/api/groups/busy").status_code == 404
        server.wait_polls()
        assert server.get("/api/groups") == [] and server.get("/api/status")["groups"] == 0
        assert server.get("/api/hosts/web-1")["groups"] == []


def test_membership_follows_a_metric_crossing_the_rule(tmp_path: Path) -> None:
    with stack(tmp_path, groups={"hot": "load_one > 3"}) as running:
        server, udp = running.server, running.gmond.udp_address
        assert members(server, "hot") == ["web-3"]
        for host, load, expected in [
            (running.hosts["web-1"], 5.0, ["web-1", "web-3"]),
            (running.hosts["web-3"], 1.0, ["web-1"]),
            (running.hosts["db-1"], 3.5, ["db-1", "web-1"]),
            (running.hosts["web-1"], 0.25, ["db-1"]),
        ]:
            polls_before = server.polls()
            send_load(udp, host, load)
            wait_members(server, "hot", expected)
            # The poll in flight may have read gmond before the send; the next one sees it.
            assert server.polls() <= polls_before + 3, (host.name, server.polls(), polls_before)
            assert server.get(f"/api/hosts/{host.name}")["metrics"]["load_one"]["value"] == load


# ---- actions --------------------------------------------------------------------------------------------


def test_actions_through_the_api(tmp_path: Path) -> None:
    with stack(tmp_path) as running, running.server.client() as admin:
        server = running.server
        marker = tmp_path / "pwned"
        payload = f"$(touch {marker}); echo x"
        request = {"template": "echo", "params": {"message": payload}, "operator": "alice"}
        with server.client(auth=False) as anon:
            assert anon.post("/api/groups/web/actions", json=request).status_code == 401
        assert server.get("/api/actions") == []  # refused for the token: nothing ran, nothing to audit

        started = admin.post("/api/groups/web/actions", json=request)
        assert started.status_code == 202, started.text
        action_id = started.json()["id"]
        assert started.json()["url"] == f"/api/actions/{action_id}"
        record = finished(server, action_id)
        assert record["status"] == "ok" and record["error"] is None
        assert record["group"] == "web" and record["template"] == "echo"
        assert record["who"].startswith("alice (api 127.0.0.1")
        assert record["members"] == WEB_NAMES and record["params"] == {"message": payload}
        assert record["argv"] == ["echo", payload]
        assert sorted(r["host"] for r in record["results"]) == WEB_NAMES
        for result in record["results"]:
            assert result["exit_code"] == 0 and not result["timed_out"] and result["error"] is None
            assert result["stdout"] == payload + "\n"
        assert not marker.exists(), "the parameter went through a shell"

        bad = admin.post(
            "/api/groups/web/actions",
            json={"template": "df", "params": {"path": "/; rm -rf /"}, "operator": "mallory"},
        )
        assert bad.status_code == 400
        assert detail(bad) == (
            "parameter 'path': value '/; rm -rf /' does not match the allowed pattern /[A-Za-z0-9._/-]{0,255}"
        )
        audit = server.get("/api/actions", group="web")
        assert [a["status"] for a in audit] == ["rejected", "ok"]  # newest first
        rejected = audit[0]
        assert rejected["template"] == "df" and rejected["error"] == detail(bad)
        assert rejected["params"] == {"path": "/; rm -rf /"} and rejected["results"] == []
        assert rejected["who"].startswith("mallory (api ") and rejected["members"] == WEB_NAMES

        unknown = admin.post("/api/groups/web/actions", json={"template": "reboot", "operator": "alice"})
        assert unknown.status_code == 400
        assert detail(unknown) == "no template named 'reboot' (templates: df, echo, sleep, uptime)"
        extra = admin.post(
            "/api/groups/web/actions", json={"template": "echo", "params": {"message": "hi", "x": "1"}}
        )
        assert extra.status_code == 400 and "unknown parameter(s) 'x'" in detail(extra)
        operator = admin.post("/api/groups/web/actions", json={"template": "uptime", "operator": "bob smith"})
        assert operator.status_code == 400 and "operator must be" in detail(operator)
        assert len(server.get("/api/actions")) == 3  # the parameter errors are audited too


def test_action_timeout_from_the_config(tmp_path: Path) -> None:
    with (
        stack(tmp_path, config_toml="[actions]\ntimeout_s = 0.5\n") as running,
        running.server.client() as admin,
    ):
        server = running.server
        clock = time.monotonic()
        started = admin.post(
            "/api/groups/web/actions",
            json={"template": "sleep", "params": {"seconds": 5}, "operator": "carol"},
        )
        assert started.status_code == 202, started.text
        record = finished(server, started.json()["id"])
        assert time.monotonic() - clock < 4.5, "the per-host timeout did not stop the sleeps"
        assert record["status"] == "failed" and record["members"] == WEB_NAMES
        assert sorted(r["host"] for r in record["results"]) == WEB_NAMES
        for result in record["results"]:
            assert result["timed_out"] is True and result["exit_code"] is None
            assert result["error"] == "timed out after 0.5 s" and result["duration_s"] < 4
        assert [a["id"] for a in server.get("/api/actions")] == [record["id"]]


def processes(argv: list[str]) -> list[int]:
    """PIDs of live processes (zombies have no cmdline) whose command line is exactly ``argv``."""
    wanted = b"".join(arg.encode() + b"\0" for arg in argv)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_stopping_the_server_interrupts_running_actions(tmp_path: Path) -> None:
    """SIGTERM (how a service manager stops it): no command outlives the server, the audit says so."""
    with stack(tmp_path) as running, running.server.client() as admin:
        server = running.server
        started = admin.post(
            "/api/groups/web/actions",
            json={"template": "sleep", "params": {"seconds": 37.25}, "operator": "finn"},
        )
        assert started.status_code == 202, started.text
        action_id = started.json()["id"]
        argv = server.get(f"/api/actions/{action_id}")["argv"]
        assert argv[0] == "sleep"
        wait_until(lambda: len(processes(argv)) == len(WEB), what=f"{len(WEB)} processes {argv}")
        server.stop()  # SIGTERM by PID
        assert server.process.returncode is not None
        orphans = processes(argv)
        for pid in orphans:  # ours, found by exact command line: do not leave them behind on failure
            os.kill(pid, signal.SIGKILL)
        assert orphans == [], "action commands outlived the server"
    with AuditLog(server.db) as audit:
        record = audit.get(action_id)
    assert record.status == "interrupted" and record.finished_at is not None
    assert record.results == [] and record.pending == WEB_NAMES


# ---- Prometheus ----------------------------------------------------------------------------------------


def test_prometheus_metrics(tmp_path: Path) -> None:
    groups = {"web": WEB_RULE, "frontend": 'role == "frontend"'}
    with stack(tmp_path, groups=groups) as running, running.server.client(auth=False) as anon:
        server = running.server
        server.wait_polls()
        response = anon.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse_exposition(response.text)

        for host in FLEET:
            load = one(samples, "ganglia_load_one", host=host.name)
            assert load.value == host.load_one and load.labels["cluster"] == "strato"
            expected = sorted(name for name in ("frontend", "web") if host.name in members(server, name))
            assert load.labels["groups"] == "," + ",".join(expected) + ","
            assert one(samples, "ganglia_role_info", host=host.name, value=host.role).value == 1
            assert one(samples, "strato_host_up", host=host.name).value == 1
        web1 = one(samples, "ganglia_load_one", host="web-1")
        assert web1.labels["groups"] == ",frontend,web,"

        assert one(samples, "strato_group_members", group="web").value == 3
        assert one(samples, "strato_group_members_up", group="web").value == 3
        assert one(samples, "strato_group_members", group="frontend").value == 2
        assert {
            s.labels["host"]
            for s in samples
            if s.name == "strato_group_member" and s.labels["group"] == "web"
        } == set(WEB_NAMES)
        stats = {
            s.labels["stat"]: s.value
            for s in samples
            if s.name == "strato_group_metric"
            and s.labels["group"] == "web"
            and s.labels["metric"] == "load_one"
        }
        assert stats["mean"] == pytest.approx(statistics.mean(WEB_LOADS))
        assert (stats["count"], stats["min"], stats["max"]) == (3, 1.5, 4.0)
        assert stats["sum"] == pytest.approx(sum(WEB_LOADS))
        api = server.get("/api/groups/web")["aggregates"]["load_one"]
        assert stats == pytest.approx(api)
        frontend = one(samples, "strato_group_metric", group="frontend", metric="load_one", stat="mean")
        assert frontend.value == pytest.approx(2.0)

        assert one(samples, "strato_monitor_polls_total").value >= 1
        assert one(samples, "strato_monitor_poll_failures_total").value == 0
        assert math.isfinite(one(samples, "strato_monitor_last_success_timestamp_seconds").value)


# ---- Ganglia down, bad input ---------------------------------------------------------------------------


def test_ganglia_down_keeps_the_last_groups_and_says_why(tmp_path: Path) -> None:
    with stack(tmp_path) as running, running.server.client(auth=False) as anon:
        server, gmond = running.server, running.gmond
        server.wait_polls()
        groups_before = server.get("/api/groups")
        success_before = server.get("/api/status")["last_success_at"]
        gmond.daemon.stop()  # by PID
        assert not gmond.daemon.running()

        def failing() -> dict[str, Any] | None:
            status: dict[str, Any] = server.get("/api/status")
            return status if status["failures"] > 0 and status["last_error"] else None

        status = wait_until(failing, what="a failed poll in /api/status")
        assert "refused" in status["last_error"] and gmond.xml_address.split(":")[1] in status["last_error"]
        assert status["last_success_at"] == success_before
        server.wait_polls()  # it keeps polling, and keeps answering
        assert server.get("/api/status")["failures"] >= status["failures"] + 1
        assert server.get("/api/groups") == groups_before
        assert members(server, "web") == WEB_NAMES
        assert {host["name"] for host in server.get("/api/hosts")} >= {host.name for host in FLEET}
        assert anon.get("/healthz").text == "ok\n"
        page = anon.get("/")
        assert page.status_code == 200
        error = re.search(r'<p class="error" id="poll-error">(.*?)</p>', page.text, re.S)
        assert error and "refused the connection" in error[1], page.text
        assert re.search(r'<tr data-group="web">.*?<td class="members">3</td>', page.text, re.S)
        metrics = parse_exposition(anon.get("/metrics").text)
        assert one(metrics, "strato_monitor_poll_failures_total").value >= 1

        # Ganglia comes back (empty): the error clears; the fleet reappears once it is published again.
        gmond.daemon.start()
        wait_until(lambda: server.get("/api/status")["last_error"] is None, what="a successful poll")
        assert "poll-error" not in anon.get("/").text
        spoof_hosts(gmond.udp_address, server)
        wait_for_hosts(server, FLEET)
        wait_members(server, "web", WEB_NAMES)


def test_bad_startup_input_exits_2_with_one_line(tmp_path: Path) -> None:
    common = ["--db", tmp_path / "m.db", "--listen", f"127.0.0.1:{daemons.free_port()}",
              "--ready-file", tmp_path / "ready", "--token-file", tmp_path / "token"]  # fmt: skip
    bad_source = subprocess.run(
        serve_command("--source", "nonsense:port", *common), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert bad_source.returncode == 2, bad_source.stderr
    lines = bad_source.stderr.strip().splitlines()
    assert lines == ["error: address 'nonsense:port': port 'port' is not a number"], bad_source.stderr
    assert not (tmp_path / "ready").exists() and not (tmp_path / "token").exists()

    config = tmp_path / "monitor.toml"
    config.write_text('[ganglia]\nsource = "127.0.0.1:8649"\n[dashbaord]\nport = 1\n')
    # A wide COLUMNS: rich wraps stderr at 80 columns when it is not a terminal, and the path is long.
    bad_config = subprocess.run(
        serve_command("--config", config, *common), capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "500"},
    )  # fmt: skip
    assert bad_config.returncode == 2, bad_config.stderr
    lines = bad_config.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad_config.stderr
    assert f"{config}: unknown section(s) dashbaord (known: " in lines[0]
    assert not (tmp_path / "ready").exists()


def test_openapi_documents_every_json_response(tmp_path: Path) -> None:
    from strato.monitor.config import load_config
    from strato.monitor.server import create_app
    from strato.monitor.service import Monitor

    monitor = Monitor(load_config(None, db_path=tmp_path / "m.db", source=f"127.0.0.1:{daemons.free_port()}"))
    schema = create_app(monitor, "secret").openapi()
    documented = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status == "204" or path == "/metrics":
                    continue  # no body; Prometheus text
                body = response["content"]["application/json"]["schema"]
                named = body.get("$ref") or body.get("items", {}).get("$ref")
                assert named, f"{method.upper()} {path} {status} has no schema: {body}"
                if status in ("400", "401", "403", "404", "409", "413", "503"):
                    assert named == "#/components/schemas/Problem", (method, path, status)
                documented += 1
    assert documented > 30
    views = schema["components"]["schemas"]
    assert views["GroupView"]["properties"]["listed"]["description"].startswith("Hosts listed explicitly")
    assert set(views["ActionRecord"]["properties"]) >= {"id", "who", "members", "status", "results", "error"}
    assert schema["paths"]["/api/groups/{name}"]["get"]["responses"]["404"]
