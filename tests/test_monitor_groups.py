"""Groups: SQLite definitions, membership and aggregates, and rules followed live on a real gmond."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from monitor_helpers import collector
from strato.errors import ConfigError, ConflictError, NotFoundError
from strato.monitor.config import load_config
from strato.monitor.ganglia import GangliaError
from strato.monitor.gmetric import GmetricSender, MetricSpec, spoof_id
from strato.monitor.groups import GroupEngine
from strato.monitor.model import Host, Metric, Snapshot
from strato.monitor.service import Monitor
from strato.monitor.store import GroupDef, GroupStore

pytestmark = pytest.mark.system


def host(name: str, ip: str, tn: int = 0, **metrics: float | str) -> Host:
    made = Host(name=name, ip=ip, tn=tn, tmax=20)
    for key, value in metrics.items():
        kind = "string" if isinstance(value, str) else "float"
        made.metrics[key] = Metric(key, value, kind)
    return made


def snapshot(*hosts: Host) -> Snapshot:
    return Snapshot("test", time.time(), {h.name: h for h in hosts}, ["c"])


def test_store_crud_and_errors(tmp_path: Path) -> None:
    store = GroupStore(tmp_path / "m.db")
    store.create("web", rule='name matches "web-*"', members=["db-1"], description="front")
    assert store.get("web") == GroupDef(
        "web",
        'name matches "web-*"',
        ("db-1",),
        "front",
        store.get("web").created_at,
        store.get("web").updated_at,
    )
    store.add_members("web", ["db-2", "db-1"])
    assert store.get("web").members == ("db-1", "db-2")
    store.remove_members("web", ["db-1"])
    assert store.get("web").members == ("db-2",)
    store.set_rule("web", "load_one > 1")
    assert store.get("web").rule == "load_one > 1"
    with pytest.raises(ConflictError, match="already exists"):
        store.create("web")
    with pytest.raises(ConfigError, match="group name"):
        store.create("bad name!")
    with pytest.raises(NotFoundError, match="no group named 'nope' \\(groups: web\\)"):
        store.get("nope")
    with pytest.raises(ConfigError, match="not listed in group 'web'"):
        store.remove_members("web", ["db-9"])
    with pytest.raises(ConfigError, match="host name"):
        store.add_members("web", ["has space"])
    with pytest.raises(ConfigError, match="column"):
        store.create("broken", rule="load_one >")
    assert [g.name for g in store.list()] == ["web"]  # a refused create leaves nothing behind
    # A second connection (another process, the CLI) sees every change at once.
    assert GroupStore(tmp_path / "m.db").get("web").members == ("db-2",)
    store.delete("web")
    assert store.list() == []
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable strato monitor database"):
        GroupStore(tmp_path / "junk.db")


def test_membership_aggregates_and_changes() -> None:
    engine = GroupEngine()
    groups = [
        GroupDef("web", 'name matches "web-*"', ()),
        GroupDef("busy", "load_one > 2", ("db-1",)),
        GroupDef("prompt", 'role == "prompt"', ()),
    ]
    first = engine.update(
        snapshot(
            host("web-1", "10.0.0.1", load_one=1.0, cpu=10.0, role="prompt"),
            host("web-2", "10.0.0.2", load_one=3.0, cpu=30.0, role="token"),
            host("web-3", "10.0.0.3", tn=500, load_one=9.0, role="prompt"),  # silent: down
            host("db-1", "10.0.1.1", load_one=0.5),
        ),
        groups,
    )
    web, busy, prompt = (first.groups[name] for name in ("web", "busy", "prompt"))
    # A host that is down leaves rule-based groups; listed hosts stay, and are reported.
    assert web.members == ["web-1", "web-2"] and web.entered == ["web-1", "web-2"]
    assert busy.members == ["db-1", "web-2"] and busy.down == []
    assert prompt.members == ["web-1"]
    loads = np.array([1.0, 3.0])
    stats = web.aggregates["load_one"]
    assert stats["count"] == 2 and stats["sum"] == 4.0 and stats["mean"] == 2.0
    assert (stats["min"], stats["max"]) == (1.0, 3.0)
    assert stats["p90"] == pytest.approx(float(np.percentile(loads, 90)))
    assert "role" not in web.aggregates  # strings are not aggregated
    assert busy.aggregates["cpu"]["count"] == 1  # db-1 has no cpu metric
    assert first.hosts == 4 and first.hosts_up == 3

    second = engine.update(
        snapshot(
            host("web-1", "10.0.0.1", load_one=2.5, role="token"),
            host("web-2", "10.0.0.2", load_one=1.0, role="prompt"),
        ),
        groups,
    )
    busy, prompt = second.groups["busy"], second.groups["prompt"]
    assert busy.members == ["db-1", "web-1"] and busy.entered == ["web-1"] and busy.left == ["web-2"]
    assert busy.down == ["db-1"] and busy.up == ["web-1"]  # listed but gone from Ganglia
    assert prompt.members == ["web-2"] and prompt.entered == ["web-2"] and prompt.left == ["web-1"]
    assert [count for _, count, _ in engine.history["busy"]] == [2, 1]


def test_rule_on_missing_metric_warns_and_bad_stored_rule_is_reported(tmp_path: Path) -> None:
    engine = GroupEngine()
    result = engine.update(
        snapshot(host("a", "1.1.1.1", load_one=1.0)),
        [
            GroupDef("gpu", "gpu_temp > 80", ("a",)),
            GroupDef("broken", "load_one >>> 1", ("a",)),
        ],
    )
    assert "no host reports gpu_temp" in result.groups["gpu"].warnings[0]
    assert result.groups["gpu"].members == ["a"]
    assert result.groups["broken"].error and "column" in result.groups["broken"].error
    assert result.groups["broken"].members == ["a"]  # listed hosts survive a broken rule


def test_config_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[ganglia]\nsource = '127.0.0.1:9'\ninterval_s = 2\n[bogus]\n")
    with pytest.raises(ConfigError, match="unknown section\\(s\\) bogus"):
        load_config(path)
    path.write_text("[ganglia\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_text("[ganglia]\ninterval_s = -1\n")
    with pytest.raises(ConfigError, match="poll interval must be positive"):
        load_config(path)
    path.write_text(
        "[ganglia]\nsource = '127.0.0.1:8651'\n[hosts.web-1]\naddress = '10.0.0.5'\nport = 2222\n"
    )
    config = load_config(path, db_path=tmp_path / "x.db")
    assert config.source == "127.0.0.1:8651"
    target = config.target("web-1", None)
    assert (target.address, target.port) == ("10.0.0.5", 2222)
    assert config.target("web-2", host("web-2", "10.0.0.9")).address == "10.0.0.9"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_rule_followed_within_one_poll_on_real_gmond(tmp_path: Path) -> None:
    """A host whose metric crosses the rule enters and leaves within one poll; gmond is never touched."""
    load = MetricSpec("load_one", "float", tmax=5)
    with collector(tmp_path, metrics=()) as gmond, GmetricSender(gmond.udp_address) as sender:

        def publish(values: dict[int, float]) -> None:
            for index, value in values.items():
                sender.send(load, value, spoof=spoof_id(f"10.5.0.{index + 1}", f"node-{index}"))

        publish({index: 0.5 for index in range(5)})
        gmond.wait_for(lambda s: len(s.hosts) == 5)
        conf = gmond.daemon.workdir / "gmond.conf"
        before = (gmond.daemon.pid, conf.stat().st_mtime_ns, conf.read_bytes())

        config = load_config(None, source=gmond.xml_address, db_path=tmp_path / "m.db", interval_s=0.3)
        monitor = Monitor(config)
        monitor.store.create("hot", rule="load_one > 2")
        monitor.start()
        try:

            def membership_after_next_poll() -> list[str]:
                target = monitor.status.polls + 2  # the poll after the one in flight started after our send
                deadline = time.monotonic() + 5
                while monitor.status.polls < target:
                    assert time.monotonic() < deadline, monitor.status
                    time.sleep(0.01)
                assert monitor.result is not None
                return monitor.result.groups["hot"].members

            assert membership_after_next_poll() == []
            for round_ in range(3):
                sent = time.monotonic()
                publish({1: 5.0})
                assert membership_after_next_poll() == ["node-1"], round_
                entered_s = time.monotonic() - sent
                publish({1: 0.1})
                assert membership_after_next_poll() == [], round_
                assert entered_s < 3 * config.interval_s
        finally:
            monitor.stop()
        assert (gmond.daemon.pid, conf.stat().st_mtime_ns, conf.read_bytes()) == before
        assert gmond.daemon.running()


def test_failed_poll_keeps_previous_snapshot(tmp_path: Path) -> None:
    with collector(tmp_path, metrics=()) as gmond, GmetricSender(gmond.udp_address) as sender:
        sender.send(MetricSpec("load_one"), 3.0, spoof="10.5.0.1:node-0")
        gmond.wait_for(lambda s: "node-0" in s.hosts)
        config = load_config(None, source=gmond.xml_address, db_path=tmp_path / "m.db")
        monitor = Monitor(config)
        monitor.store.create("hot", rule="load_one > 2")
        assert monitor.poll().groups["hot"].members == ["node-0"]
        gmond.daemon.stop()
        monitor.store.add_members("hot", ["node-9"])
        with pytest.raises(GangliaError, match="refused"):
            monitor.poll()
        assert monitor.status.failures == 1 and "refused" in (monitor.status.last_error or "")
        assert monitor.result is not None
        # The last snapshot is kept and the edited definition still applies.
        assert monitor.result.groups["hot"].members == ["node-0", "node-9"]


def test_database_is_shared_not_locked(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = GroupStore(db)
    store.create("a")
    other = sqlite3.connect(db)
    assert other.execute("SELECT name FROM group_defs").fetchall() == [("a",)]
    other.close()
    assert os.path.exists(db)
