"""Attacks on ``strato monitor serve`` (C2MS), each replayed against a real server process over a real
gmond, and the fuzzing behind the rule language's guarantees.

Who attacks (docs/security.md, "The monitor"): anyone who can send UDP to gmond publishes hosts with any
name and metric values (``gmetric -S``); anyone who can reach the bind address reads every page and
sends any request, from a script or from a page in the operator's browser; token holders edit groups.
Each test names what the code before these defences (commit 1a788f0) did with the same input.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from monitor_helpers import Collector, collector
from monitor_server_helpers import (
    LOAD,
    WEB,
    MonitorServer,
    monitor_server,
    one,
    parse_exposition,
    serve_command,
    spoof_hosts,
    wait_until,
)
from strato.monitor import daemons
from strato.monitor.gmetric import GmetricSender, MetricSpec, encode, spoof_id
from strato.monitor.groups import GroupEngine
from strato.monitor.model import Host, Metric, Snapshot
from strato.monitor.rules import RuleSyntaxError, parse_rule
from strato.monitor.store import GroupDef, GroupStore

pytestmark = pytest.mark.system

WEB_RULE = 'name matches "web-*"'
WEB_NAMES = [host.name for host in WEB]
# Forty-eight 'a' and a '!': a backtracking matcher tries about 2**48 ways before it gives up on it.
EVIL_NAME = "a" * 48 + "!"
CATASTROPHIC = ("^(a+)+$", "^(a|aa)+$", "^(a|a?)+$", "^(a*)*b$")


def members(server: MonitorServer, group: str) -> list[str]:
    # null until the server has polled since the group was made
    return list(server.get(f"/api/groups/{group}")["members"] or [])


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def publish(gmond: Collector, name: str, ip: str, load: float = 1.0) -> None:
    with GmetricSender(gmond.udp_address) as sender:
        sender.send(LOAD, load, spoof=spoof_id(ip, name))


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


# ---- 1. one rule must not hang the monitor ------------------------------------------------------------


def test_a_catastrophic_rule_and_a_spoofed_host_name_do_not_hang_the_server(tmp_path: Path) -> None:
    """Before: rules were Python ``re``; the stored rule's first poll backtracked for hours holding the
    GIL, so the restarted server never answered (not ready within 20 s), whatever its port."""
    with collector(tmp_path, metrics=()) as gmond:
        publish(gmond, EVIL_NAME, "10.66.0.1")
        publish(gmond, "aaaa", "10.66.0.2")
        gmond.wait_for(lambda snapshot: {EVIL_NAME, "aaaa"} <= set(snapshot.hosts))
        # Stored as the API accepted it before: the server meets it at start, as after a restart.
        db = tmp_path / "server" / "m.db"
        store = GroupStore(db)
        store.create("evil", rule=f'name =~ "{CATASTROPHIC[0]}"')
        store.close()
        with monitor_server(tmp_path, gmond.xml_address) as server, server.client() as admin:
            server.wait_polls()
            assert members(server, "evil") == ["aaaa"]
            for number, regex in enumerate(CATASTROPHIC[1:]):
                created = admin.post(
                    "/api/groups", json={"name": f"evil-{number}", "rule": f'name =~ "{regex}"'}
                )
                assert created.status_code == 201, created.text
                assert created.json()["members"] == (["aaaa"] if regex.endswith("+$") else [])
            with server.client(auth=False) as anon:
                for path in ("/", "/hosts", "/groups/evil", "/metrics", "/api/hosts", "/api/status"):
                    assert anon.get(path).status_code == 200, path
            server.wait_polls()
            assert server.get("/api/status")["group_errors"] == []


@pytest.mark.parametrize(
    ("regex", "offset", "words"),
    [
        (r"^(web)-\1$", 7, "backreference"),
        ("^(?=web)", 1, "lookahead"),
        ("^web-(?!9)", 5, "negative lookahead"),
        ("(?<=web)-1$", 0, "lookbehind"),
        ("(?<!db)-1$", 0, "negative lookbehind"),
        ("^(?>a+)b", 1, "atomic group"),
        ("^a++b", 3, "possessive"),
        ("^a{2}+b", 5, "possessive"),
        ("^(?P<x>a)(?P=x)$", 9, "named backreference"),
        ("^(a)?(?(1)b|c)$", 5, "conditional"),
        (r"web\Z", 3, "\\Z"),
        ("(?x) web", 0, "flag x"),
        ("^a{,3}$", 2, "{0,n}"),
        ("^[[:digit:]]+$", 2, "POSIX class"),
    ],
)
def test_regex_features_that_need_backtracking_are_refused_with_a_caret(
    regex: str, offset: int, words: str
) -> None:
    """Before: all of these compiled (Python ``re``), so a rule could use the backtracking they need."""
    rule = f'name =~ "{regex}"'
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule(rule)
    error = caught.value
    assert words in error.reason, error.reason
    assert error.column == rule.index(regex) + offset + 1, (error.column, str(error))
    caret = str(error).splitlines()[-1]
    assert caret.index("^") == 4 + error.column - 1 and caret.endswith(f"column {error.column}"), str(error)


def test_a_stored_rule_that_no_longer_compiles_is_reported_not_fatal(tmp_path: Path) -> None:
    """A rule stored by an older version that RE2 refuses: the server starts, the group says why (API,
    dashboard, status, /metrics) and keeps its listed hosts. Before: the lookahead compiled, and the
    group showed no error."""
    db = tmp_path / "server" / "m.db"
    GroupStore(db).close()
    with sqlite3.connect(db) as connection:  # as an older version wrote it: no check on the way in
        connection.execute(
            "INSERT INTO group_defs VALUES ('ahead', ?, '', 0, 0)", ('name =~ "^(?=web)web-[12]$"',)
        )
        connection.execute("INSERT INTO group_members VALUES ('ahead', 'db-1')")
        connection.execute("INSERT INTO group_defs VALUES ('web', ?, '', 0, 0)", (WEB_RULE,))
    connection.close()
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client() as admin,
        server.client(auth=False) as anon,
    ):
        spoof_hosts(gmond.udp_address, server)
        server.wait_polls()
        ahead = server.get("/api/groups/ahead")
        assert "lookahead" in ahead["error"] and "column 11" in ahead["error"], ahead["error"]
        assert ahead["members"] == ["db-1"]
        assert members(server, "web") == WEB_NAMES and server.get("/api/groups/web")["error"] is None
        assert server.get("/api/status")["group_errors"] == ["ahead"]
        assert "lookahead" in anon.get("/groups/ahead").text
        overview = anon.get("/").text
        assert "rule not used" in overview and 'id="group-errors"' in overview
        samples = parse_exposition(anon.get("/metrics").text)
        assert one(samples, "strato_group_rule_error", group="ahead").value == 1
        assert one(samples, "strato_group_rule_error", group="web").value == 0

        refused = admin.post("/api/groups", json={"name": "again", "rule": 'name =~ "^(?=web)web-[12]$"'})
        assert (
            refused.status_code == 400 and "lookahead" in detail(refused) and "^ column 11" in detail(refused)
        )
        fixed = admin.patch("/api/groups/ahead", json={"rule": 'name =~ "^web-[12]$"'})
        assert fixed.status_code == 200 and fixed.json()["error"] is None
        assert fixed.json()["members"] == ["db-1", "web-1", "web-2"]
        assert server.get("/api/status")["group_errors"] == []


def test_a_poll_past_its_deadline_marks_its_rule_groups_as_errored(tmp_path: Path) -> None:
    """A deadline shorter than reading Ganglia: no rule gets its turn, and each such group says so while
    listed hosts still count and the server keeps polling. Before: the setting did not exist (ignored),
    and a slow rule simply held the poll."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(
            tmp_path, gmond.xml_address, config_toml="[ganglia]\npoll_deadline_s = 1e-9\n"
        ) as server,
        server.client() as admin,
        server.client(auth=False) as anon,
    ):
        spoof_hosts(gmond.udp_address, server)
        for body in ({"name": "web", "rule": WEB_RULE}, {"name": "db", "members": ["db-1"]}):
            assert admin.post("/api/groups", json=body).status_code == 201
        server.wait_polls()
        web = server.get("/api/groups/web")
        assert web["members"] == [] and "deadline (1e-09 s) passed before this group's turn" in web["error"]
        assert members(server, "db") == ["db-1"] and server.get("/api/groups/db")["error"] is None
        status = server.get("/api/status")
        assert status["group_errors"] == ["web"] and status["deadline_exceeded"] >= 1
        assert status["failures"] == 0
        assert "deadline" in anon.get("/groups/web").text
        samples = parse_exposition(anon.get("/metrics").text)
        assert one(samples, "strato_monitor_deadline_exceeded_total").value >= 1
        assert one(samples, "strato_group_rule_error", group="web").value == 1
        polls = server.polls()
        server.wait_polls()
        assert server.polls() > polls


class _SlowMetrics(dict[str, Metric]):
    """Host metrics whose every read advances a fake clock by one second: a rule that is slow to run."""

    def __init__(self, clock: list[float], **items: Metric) -> None:
        super().__init__(items)
        self.clock = clock

    def get(self, key: str, default: Any = None) -> Any:
        self.clock[0] += 1.0
        return super().get(key, default)


def test_the_deadline_stops_a_slow_rule_and_cheaper_rules_go_first_next_poll() -> None:
    """On a fake clock: the slow rule is cut after one batch of hosts and the group after it is not
    reached; in the next poll the cheap rule goes first and completes. Before: no deadline existed."""
    now = [0.0]
    engine = GroupEngine(deadline_s=20.0, clock=lambda: now[0])
    hosts = {}
    for index in range(100):
        made = Host(name=f"web-{index}", ip=f"10.0.0.{index}", tmax=20)
        made.metrics = _SlowMetrics(now, slow=Metric("slow", 1.0, "float"))
        hosts[made.name] = made
    snapshot = Snapshot("fake", 0.0, hosts)
    groups = [GroupDef("a-slow", "slow > 0", ()), GroupDef("b-cheap", 'name == "web-1"', ("db-1",))]

    first = engine.update(snapshot, groups)
    assert first.deadline_exceeded and first.errors == ["a-slow", "b-cheap"]
    assert "deadline (20 s) after 32 of 100 hosts" in str(first.groups["a-slow"].error)
    assert "before this group's turn" in str(first.groups["b-cheap"].error)
    assert first.groups["b-cheap"].members == ["db-1"]  # listed hosts still count

    second = engine.update(snapshot, groups)
    assert second.errors == ["a-slow"]
    assert second.groups["b-cheap"].members == ["db-1", "web-1"]


# ---- 2. the database is private -----------------------------------------------------------------------


def test_the_database_its_side_files_and_its_directories_are_private(tmp_path: Path) -> None:
    """Under an ordinary umask (022). Before: the database, -wal and -shm were 0644 and the directories
    0755, so every local user could read the audit log (every command's output) and the rules."""
    db = tmp_path / "fresh" / "state" / "m.db"
    with (
        umask(0o022),
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address, db=db) as server,
        server.client() as admin,
    ):
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        for path in (db, db.with_name("m.db-wal"), db.with_name("m.db-shm")):
            assert mode(path) == 0o600, f"{path.name} is {mode(path):o}"
        for folder in (db.parent, db.parent.parent):
            assert mode(folder) == 0o700, f"{folder} is {mode(folder):o}"


def test_an_existing_database_open_to_others_is_tightened_with_a_warning(tmp_path: Path) -> None:
    """Before: a 0666 database stayed 0666, silently."""
    db = tmp_path / "server" / "m.db"
    db.parent.mkdir(parents=True)
    sqlite3.connect(db).close()
    os.chmod(db, 0o666)
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address, db=db) as server,
    ):
        assert mode(db) == 0o600
        assert f"{db} was open to other users (mode 666); changed it to 600" in server.log.read_text()


def _refused_start(tmp_path: Path, db: Path) -> str:
    """Run ``serve`` on ``db``; it must exit 2 with one line. Returns that line."""
    args = ["--db", db, "--source", f"127.0.0.1:{daemons.free_port()}", "--listen",
            f"127.0.0.1:{daemons.free_port()}", "--ready-file", tmp_path / "ready", "--token-file",
            tmp_path / "token"]  # fmt: skip
    try:
        done = subprocess.run(
            serve_command(*args), capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "500"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"strato monitor serve accepted {db} and kept running")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not (tmp_path / "ready").exists()
    return lines[0]


def test_a_database_other_users_control_is_refused(tmp_path: Path) -> None:
    """A directory every user may write (no sticky bit: anyone can swap the file) and a file another
    user owns. Before: both were used, and the server ran."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    line = _refused_start(tmp_path, shared / "m.db")
    assert f"{shared} is writable by every user" in line and "chmod o-w" in line
    assert not (shared / "m.db").exists()
    if os.geteuid() != 0:
        return  # handing a file to another user needs root
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o755)
    sqlite3.connect(planted / "m.db").close()
    os.chown(planted / "m.db", 65534, 65534)
    assert "belongs to another user (uid 65534)" in _refused_start(tmp_path, planted / "m.db")


# ---- 3. cross-origin requests with the dashboard's cookie --------------------------------------------


def test_a_cross_origin_post_with_the_dashboard_cookie_is_refused(tmp_path: Path) -> None:
    """A page on another port of the same host is the same *site*, so the SameSite=Strict cookie goes
    along. Before: its form ran the action (303 to the audited action)."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client() as admin,
    ):
        spoof_hosts(gmond.udp_address, server)
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        foreign = f"http://127.0.0.1:{daemons.free_port()}"
        form = {"operator": "mallory", "template": "echo", "param.echo.message": "forged"}
        with server.client(auth=False, follow_redirects=False) as browser:
            login = browser.post("/login", data={"token": server.token, "next": "/"})
            assert login.status_code == 303 and browser.cookies.get("strato_monitor_token")
            for headers in ({"Origin": foreign}, {"Referer": f"{foreign}/cats.html"}, {"Origin": "null"}, {}):
                refused = browser.post("/groups/web/actions", data=form, headers=headers)
                assert refused.status_code == 403, (headers, refused.status_code, refused.text)
                assert "cross-origin request refused" in detail(refused)
            for method, path, body in [
                ("PATCH", "/api/groups/web", {"rule": "load_one > 0"}),
                ("POST", "/api/groups", {"name": "forged"}),
                ("POST", "/api/groups/web/members", {"hosts": ["db-1"]}),
                ("POST", "/api/groups/web/actions", {"template": "uptime"}),
                ("DELETE", "/api/groups/web", None),
            ]:
                refused = browser.request(method, path, json=body, headers={"Origin": foreign})
                assert refused.status_code == 403, (method, path, refused.text)
            assert browser.post("/logout", headers={"Origin": foreign}).status_code == 403
            assert server.get("/api/actions") == []  # nothing ran, nothing was audited
            assert server.get("/api/groups") == [server.get("/api/groups/web")]
            assert server.get("/api/groups/web")["rule"] == WEB_RULE and members(server, "web") == WEB_NAMES

            # The dashboard's own pages still work: its Origin (what browsers send), or a Referer alone.
            for headers in ({"Origin": server.url}, {"Referer": f"{server.url}/groups/web"}):
                ran = browser.post("/groups/web/actions", data=form, headers=headers)
                assert ran.status_code == 303 and ran.headers["location"].startswith("/actions/"), ran.text
        # A Bearer token is not something a browser attaches by itself: no Origin is needed.
        with server.client(headers={"Origin": foreign}) as scripted:
            assert scripted.patch("/api/groups/web", json={"rule": WEB_RULE}).status_code == 200


# ---- 4. clear statuses instead of 500s --------------------------------------------------------------


def test_concurrent_edits_of_one_group_are_serialised_not_500(tmp_path: Path) -> None:
    """Eight clients create, change, list hosts in and delete the same group at once. Before: 500s (an
    edit racing a delete read the group back and hit AssertionError or "no group named"; a create racing
    a create hit IntegrityError) and connections reset."""
    with collector(tmp_path, metrics=()) as gmond, monitor_server(tmp_path, gmond.xml_address) as server:
        spoof_hosts(gmond.udp_address, server)
        operations: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/api/groups", {"name": "race", "rule": WEB_RULE}),
            ("POST", "/api/groups", {"name": "race", "members": ["db-1"]}),
            ("PATCH", "/api/groups/race", {"rule": "load_one > 2"}),
            ("POST", "/api/groups/race/members", {"hosts": ["db-1", "web-9"]}),
            ("DELETE", "/api/groups/race/members/web-9", None),
            ("DELETE", "/api/groups/race", None),
            ("GET", "/api/groups/race", None),
        ]

        def client_run(seed: int) -> list[tuple[str, str, int, str]]:
            chooser = random.Random(seed)
            answers = []
            with server.client() as admin:
                for _ in range(40):
                    method, path, body = chooser.choice(operations)
                    try:
                        response = admin.request(method, path, json=body)
                    except httpx.TransportError as error:  # the server dropped the connection
                        answers.append((method, path, 599, repr(error)))
                        continue
                    answers.append((method, path, response.status_code, response.text[:200]))
            return answers

        with ThreadPoolExecutor(8) as pool:
            answers = [answer for batch in pool.map(client_run, range(8)) for answer in batch]
        failures = [answer for answer in answers if answer[2] >= 500]
        assert failures == [], failures[:5]
        assert {status for _, _, status, _ in answers} <= {200, 201, 204, 400, 404, 409}
        for _, _, status, text in answers:
            if status == 400:
                assert "not listed in group 'race'" in text, text
        final = server.client().get("/api/groups/race")
        assert final.status_code in (200, 404)
        server.wait_polls()  # and the poller did not mind


_HOLD_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_database_answers_503_at_once(tmp_path: Path) -> None:
    """Another process (a CLI command, an open sqlite3 shell) holds the write lock. Before: every write
    waited 10 s and then failed with OperationalError (500)."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client() as admin,
    ):
        spoof_hosts(gmond.udp_address, server)
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(server.db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            for method, path, body in [
                ("POST", "/api/groups", {"name": "db", "members": ["db-1"]}),
                ("PATCH", "/api/groups/web", {"rule": "load_one > 2"}),
                ("POST", "/api/groups/web/actions", {"template": "uptime", "operator": "ops"}),
            ]:
                began = time.monotonic()
                refused = admin.request(method, path, json=body, timeout=60)  # long enough to see a 500
                took = time.monotonic() - began
                assert refused.status_code == 503, (path, refused.status_code, refused.text)
                assert "is locked by another process" in detail(refused) and refused.headers["retry-after"]
                assert took < 8.0, f"{path}: answered after {took:.1f} s"
            assert members(server, "web") == WEB_NAMES  # reads go on (WAL), and so does polling
            server.wait_polls()
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
        created = admin.post("/api/groups", json={"name": "db", "members": ["db-1"]})
        assert created.status_code == 201, created.text


def test_deep_or_huge_json_bodies_are_refused_cleanly(tmp_path: Path) -> None:
    """Before: 950 levels parsed, then rendering FastAPI's validation error recursed past Python's limit
    (500, or a reset connection), and any anonymous client could make the server read and parse a body
    of any size (64 MiB answered 401 only after reading all of it)."""
    with (
        monitor_server(tmp_path, f"127.0.0.1:{daemons.free_port()}") as server,
        server.client() as admin,
        server.client(auth=False) as anon,
    ):
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        json_header = {"Content-Type": "application/json"}
        for depth in (950, 33, 300, 700, 5000, 200_000):  # 950 first: the depth that gave 500 before
            nested = "[" * depth + "]" * depth
            for client, path, body in [
                (admin, "/api/groups", f'{{"name": "deep", "members": {nested}}}'),
                (
                    admin,
                    "/api/groups/web/actions",
                    f'{{"template": "echo", "params": {{"message": {nested}}}}}',
                ),
                (anon, "/api/groups", nested),
            ]:
                refused = client.post(path, content=body, headers=json_header)
                assert refused.status_code == 400, (depth, path, refused.status_code, refused.text[:200])
                # FastAPI reads a body without a Content-Type as JSON as well.
                refused = client.post(path, content=body.encode())
                assert refused.status_code == 400, (depth, path, refused.status_code, refused.text[:200])
                assert detail(refused) == "the JSON body nests deeper than 32 levels"
        # Strings are data, not nesting.
        shallow = admin.post(
            "/api/groups", json={"name": "text", "description": "[" * 5000, "members": ["x"]}
        )
        assert shallow.status_code == 201, shallow.text

        huge = b'{"name": "' + b"x" * (64 << 20) + b'"}'
        for client in (anon, admin):
            refused = client.post("/api/groups", content=huge, headers=json_header)
            assert refused.status_code == 413 and "over 1024 KiB" in detail(refused)
        # Without a Content-Length (chunked), it is cut while it arrives.
        chunks = (b"[" + b"1," * 1000 for _ in range(2000))
        refused = anon.post("/api/groups", content=chunks, headers=json_header)
        assert refused.status_code == 413
        assert anon.get("/healthz").text == "ok\n"
        assert [group["name"] for group in server.get("/api/groups")] == ["text", "web"]


# ---- other hostile input found on the way -----------------------------------------------------------


def test_an_infinite_metric_value_does_not_break_the_group_page(tmp_path: Path) -> None:
    """``gmetric -S`` lets anyone report load_one = inf (or 1e308 next to -1e308). Before: the group's
    chart axis overflowed and /groups/web answered 500 while the value lasted."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client() as admin,
        server.client(auth=False) as anon,
    ):
        spoof_hosts(gmond.udp_address, server)
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        for first, second in ((float("inf"), 1.0), (1e308, -1e308), (float("-inf"), float("inf"))):
            publish(gmond, "web-1", "10.20.0.1", first)
            publish(gmond, "web-2", "10.20.0.2", second)
            wait_until(
                lambda first=first: (
                    server.get("/api/hosts/web-1")["metrics"]["load_one"]["value"]
                    == (first if abs(first) < float("inf") else None)
                ),
                what=f"web-1 reporting {first}",
            )
            server.wait_polls()
            page = anon.get("/groups/web", params={"metric": "load_one"})
            assert page.status_code == 200, page.text[:300]
            assert "<svg" in page.text


def _raw_packets(name: str, value: float | str, kind: str, spoof: str) -> list[bytes]:
    """Ganglia's wire format for a metric name and host that GmetricSender refuses, as an attacker sends."""
    spec = MetricSpec("placeholder", kind, tmax=20)
    object.__setattr__(spec, "name", name)
    return encode(spec, value, spoof=spoof)


def test_a_host_name_gmond_does_not_escape_does_not_blind_the_monitor(tmp_path: Path) -> None:
    """gmond 3.7 writes host and metric names into its XML unescaped, so one UDP packet from a host named
    'evil"<&1' made every dump malformed. Before: every poll failed from then on (until gmond forgot the
    host) and the groups froze."""
    hostile = 'evil"<&1'
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client() as admin,
    ):
        assert admin.post("/api/groups", json={"name": "web", "rule": WEB_RULE}).status_code == 201
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in _raw_packets('x"<y', 2.5, "double", f"10.66.0.7:{hostile}"):
                sender.sendto(packet, ("127.0.0.1", gmond.udp_port))
        spoof_hosts(gmond.udp_address, server)  # waits until every fleet host shows in /api/hosts
        server.wait_polls()
        status = server.get("/api/status")
        assert status["last_error"] is None and members(server, "web") == WEB_NAMES, status
        evil = next(item for item in server.get("/api/hosts") if item["name"] == hostile)
        assert evil["metrics"]['x"<y']["value"] == 2.5


class _HostileGanglia:
    """A TCP listener that answers every connection with the same XML, as a hostile gmetad would."""

    def __init__(self, xml: bytes) -> None:
        self.xml = xml
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(self.xml)

    def close(self) -> None:
        self.listener.close()


_INFINITE_TIMES = b"""<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>
<GANGLIA_XML VERSION="3.7.2" SOURCE="gmetad">
<CLUSTER NAME="c" LOCALTIME="0" OWNER="" LATLONG="" URL="">
<HOST NAME="odd-1" IP="10.0.0.1" REPORTED="1e999" TN="inf" TMAX="20" DMAX="-inf" LOCATION=""
 GMOND_STARTED="0">
<METRIC NAME="load_one" VAL="2" TYPE="float" UNITS="" TN="inf" TMAX="70" DMAX="0" SLOPE="both"/>
</HOST>
</CLUSTER>
</GANGLIA_XML>
"""


def test_infinite_times_from_ganglia_do_not_kill_the_poller(tmp_path: Path) -> None:
    """A source reporting TN="inf". Before: int(inf) raised OverflowError in the poller thread, which died
    silently: polls stopped at 1, no error anywhere, the groups frozen for good."""
    hostile = _HostileGanglia(_INFINITE_TIMES)
    try:
        with monitor_server(tmp_path, hostile.address) as server:
            polls = server.wait_polls(3)
            assert polls >= 3
            status = server.get("/api/status")
            assert status["failures"] == 0 and status["last_error"] is None, status
            assert server.get("/api/hosts/odd-1")["metrics"]["load_one"]["value"] == 2.0
    finally:
        hostile.close()


def test_colliding_metric_names_keep_the_prometheus_exposition_valid(tmp_path: Path) -> None:
    """``load-one`` next to ``load_one``, and a number named ``role_info`` next to the string ``role``,
    clean to the same series name. Before: two HELP/TYPE lines for one family, which strict parsers (and
    the format) reject: one spoofed packet broke every scrape."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
        server.client(auth=False) as anon,
    ):
        spoof_hosts(gmond.udp_address, server)
        spoof = spoof_id("10.66.0.9", "web-9")
        with GmetricSender(gmond.udp_address) as sender:
            sender.send(MetricSpec("load-one", "float", tmax=20), 7.0, spoof=spoof)
            sender.send(MetricSpec("role_info", "float", tmax=20), 3.0, spoof=spoof)
        wait_until(
            lambda: any(
                h["name"] == "web-9" and "role_info" in h["metrics"] for h in server.get("/api/hosts")
            ),
            what="web-9 and its metrics in /api/hosts",
        )
        server.wait_polls()
        samples = parse_exposition(anon.get("/metrics").text)  # strict: one HELP and TYPE per family
        assert one(samples, "ganglia_load_one", host="web-1").value == 1.5
        assert one(samples, "ganglia_load_one", host="web-9", ganglia_name="load-one").value == 7.0
        assert one(samples, "ganglia_role_info", host="web-1", value="frontend").value == 1
        assert one(samples, "ganglia_role_info", host="web-9").value == 3.0


# ---- 5. fuzzing -------------------------------------------------------------------------------------

_REGEX_ATOMS = st.sampled_from(["a", "b", "!", ".", "[ab]", "[^b]", "\\d", "\\w", "a?", "(?:a|b)", "x"])
_QUANTIFIERS = st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?"])
# Constructs only a backtracking matcher has: they must be refused when parsed, never evaluated.
_BACKTRACKING = st.sampled_from(["\\1", "(?=a)", "(?!b)", "(?<=a)", "(?>a+)", "a*+", "(?P=g)", "a{,2}"])


def _group(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda parts, quantifier, capture: f"({'' if capture else '?:'}{'|'.join(parts)}){quantifier}",
        st.lists(inner, min_size=1, max_size=3),
        _QUANTIFIERS,
        st.booleans(),
    )


_REGEXES = st.recursive(
    st.builds(lambda atom, quantifier: atom + quantifier, _REGEX_ATOMS, _QUANTIFIERS),
    lambda inner: st.one_of(
        _group(inner),
        st.builds(lambda a, b: a + b, inner, inner),
        st.builds(lambda a, b: a + b, inner, _BACKTRACKING),
    ),
    max_leaves=8,
).map(lambda body: f"^{body}$")

# Long runs of one letter ending in a character that does not match: the classic way to make a
# backtracking matcher try every way to split the run.
_ADVERSARIAL = [letter * length + tail for letter in "ab" for length in (30, 200, 2000) for tail in ("!", "")]


class _TookTooLong(Exception):
    pass


@contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """Interrupt the test (pytest's main thread) after ``seconds``; Python's ``re`` checks for signals
    while it backtracks, so a catastrophic match fails the test instead of hanging it."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _TookTooLong(f"still evaluating after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_ADVERSARIAL_SNAPSHOT = Snapshot(
    "fuzz", 0.0, {name: Host(name=name, ip="10.0.0.1", tmax=20) for name in _ADVERSARIAL}
)


@settings(
    max_examples=150,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is already a minimal-ish regex
    suppress_health_check=[HealthCheck.too_slow],
)
@example("^(a+)+$")
@example("^(a|aa)+$")
@example("^(a|a?)+b$")
@example("^((a*)*|b)*$")
@example("^(\\w+\\d*)+$")
@given(_REGEXES)
def test_fuzz_random_regexes_are_refused_or_evaluated_within_the_poll_deadline(regex: str) -> None:
    """Before: the first nested quantifier on a run of 'a' backtracked until the watchdog fired."""
    text = f'name =~ "{regex}"'
    try:
        rule = parse_rule(text)
    except RuleSyntaxError as error:
        # Refused with a caret in the pattern: what needs backtracking, or what Python or RE2 reject.
        assert text.index('"') <= error.position < len(text) - 1, str(error)
        assert "regular expression" in error.reason and "^" in str(error), str(error)
        return
    engine = GroupEngine()
    with _watchdog(5.0):  # half the default poll deadline; RE2 needs milliseconds
        result = engine.update(_ADVERSARIAL_SNAPSHOT, [GroupDef("fuzz", text, ())])
    state = result.groups["fuzz"]
    assert state.error is None and not result.deadline_exceeded, state.error
    assert set(state.members) <= set(_ADVERSARIAL)
    assert set(state.members) == {
        name for name in _ADVERSARIAL if rule.matches(_ADVERSARIAL_SNAPSHOT.hosts[name])
    }


_RULE_SOUP = [
    "name", "load_one", "=~", "matches", "==", "in", "not", "and", "or", "(", ")", "[", "]", ",", '"', "'",
    "\\", '"^(a+)+$"', '"(?=x)"', '"a{,3}"', '"[[:alpha:]]"', '"\\\\1"', '"web-[!0-9]*"', '"[z-a]"', "\ud800",
    "has(", "metric(", "1e999", "-", "*", "/", " ",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(st.characters(codec=None, exclude_categories=()), max_size=80),
        st.lists(st.sampled_from(_RULE_SOUP), max_size=12).map("".join),
        st.text(st.sampled_from(list('ab()[]{}|*+?^$\\.,:=!<>-"P')), max_size=30).map(
            lambda body: f'name =~ "{body}" or name matches "{body}"'
        ),
    )
)
def test_fuzz_the_rule_parser_raises_only_its_own_error(text: str) -> None:
    """Any text, lone surrogates and regex debris included, parses or raises RuleSyntaxError with a caret;
    what parses evaluates to a three-valued answer on hostile names."""
    try:
        rule = parse_rule(text)
    except RuleSyntaxError as error:
        assert 0 <= error.position <= len(text) and error.reason and "^" in str(error)
        return
    for name in ("", EVIL_NAME, "web-1", "\ud800"):
        assert rule.evaluate(Host(name=name, ip="10.0.0.1")) in (True, False, None)
