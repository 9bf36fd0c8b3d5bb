"""Dynamic server groups over a real multi-host Ganglia: three hosts in network namespaces, one collector.

Every host is its own network namespace running its own gmond, sending to a collector gmond in another
namespace (see :mod:`netns_lab`). Groups are created and changed in SQLite while the daemons run; no
daemon is restarted or reconfigured for that. One host leaves (its gmond is stopped by PID) and returns.
gmetad, which binds every interface, runs only inside the collector's namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor_helpers import require, require_root_netns
from netns_lab import (
    GMETAD_QUERY_PORT,
    GMETAD_XML_PORT,
    Lab,
    NamespacedMonitor,
    describe,
    lab,
    leftover_namespaces,
)
from strato.monitor.config import load_config
from strato.monitor.groups import PollResult
from strato.monitor.model import Snapshot

pytestmark = pytest.mark.system

HOSTS = ("web-1", "web-2", "db-1")
STALE_AFTER_S = 3.0
"""Short stale limit: with 1 s heartbeats a stopped host is down about 4 s later."""


@pytest.fixture
def needs_lab() -> None:
    require_root_netns()
    require("gmond", "Debian package ganglia-monitor")
    require("gmetric", "Debian package ganglia-monitor")


def root_links() -> set[str]:
    """Interface names in the root namespace, to prove the lab adds nothing there."""
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()}


@pytest.fixture
def cluster(tmp_path: Path, needs_lab: None) -> Iterator[Lab]:
    links_before = root_links()
    with lab(tmp_path, HOSTS) as made:
        made.wait_for(all_three_report, "the collector reports all three hosts with their built-in metrics")
        yield made
    assert leftover_namespaces(made.prefix) == [], "the lab left network namespaces behind"
    # Compared by our own link names only: other tests may add or remove root links concurrently.
    ours = {"br0", *(f"vh{index}" for index in range(1, len(HOSTS) + 1))}
    assert not (root_links() - links_before) & ours, "the lab added links to the root network namespace"


def all_three_report(snapshot: Snapshot) -> bool:
    return sorted(snapshot.hosts) == sorted(HOSTS) and all(
        {"load_one", "cpu_user", "mem_free"} <= set(host.metrics) for host in snapshot.hosts.values()
    )


def fingerprint(made: Lab) -> dict[str, tuple[int, int, bytes]]:
    """PID plus configuration file (mtime and bytes) of every gmond: equal means nothing was restarted."""
    daemons = {"collector": made.collector, **{name: host.daemon for name, host in made.hosts.items()}}
    prints = {}
    for name, daemon in daemons.items():
        assert daemon is not None
        conf = daemon.workdir / f"{daemon.name}.conf"
        prints[name] = (daemon.pid, conf.stat().st_mtime_ns, conf.read_bytes())
    return prints


def poll_until(
    monitor: NamespacedMonitor, condition: Callable[[PollResult], bool], what: str, timeout_s: float = 10.0
) -> tuple[PollResult, int]:
    """Poll until ``condition`` holds; returns the result and how many polls it took."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        result = monitor.poll()
        polls += 1
        if condition(result):
            return result, polls
        if time.monotonic() > deadline:
            states = {name: (state.members, state.down) for name, state in result.groups.items()}
            snapshot = describe(monitor.snapshot) if monitor.snapshot else "no snapshot"
            raise AssertionError(
                f"{what}: not after {polls} polls in {timeout_s:g} s; groups {states}; {snapshot}"
            )
        time.sleep(0.2)


def members(result: PollResult) -> dict[str, list[str]]:
    return {name: state.members for name, state in result.groups.items()}


def cli_in_collector(made: Lab, *args: str) -> object:
    """``strato monitor ...`` run inside the collector namespace (where Ganglia is reachable), as JSON."""
    code = "from strato.cli.monitor import app; app(prog_name='strato monitor')"
    done = made.python_in(made.collector_ns, code, *args, "--source", made.gmond_address, "--json")
    assert done.returncode == 0, f"strato monitor {' '.join(args)} failed: {done.stdout} {done.stderr}"
    return json.loads(done.stdout)


def test_groups_form_change_and_follow_hosts_leaving_and_returning(cluster: Lab, tmp_path: Path) -> None:
    made = cluster
    started = time.monotonic()
    db = tmp_path / "monitor.db"

    # 1. Every host's own gmond reports real measurements under its own name and address.
    snapshot = made.fetch()
    for name, host in made.hosts.items():
        reported = snapshot.hosts[name]
        assert reported.ip == host.ip, describe(snapshot)
        assert reported.cluster == "lab"
        assert all(reported.metrics[key].numeric for key in ("load_one", "cpu_user", "mem_free"))
        assert float(reported.value("mem_free") or 0) > 0, describe(snapshot)
    for name, role in (("web-1", "web"), ("web-2", "web"), ("db-1", "db")):
        made.gmetric(name, "role", role)
    made.wait_for(
        lambda s: all("role" in host.metrics for host in s.hosts.values()),
        "every host reports its gmetric role",
    )
    before = fingerprint(made)

    # 2. Groups formed while the hosts run: by name, by a custom metric, by a built-in metric, listed.
    config = load_config(None, source=made.gmond_address, db_path=db, stale_after_s=STALE_AFTER_S)
    monitor = made.monitor(config)
    store = monitor.store
    store.create("web", rule='name matches "web-*"')
    store.create("tier-db", rule='role == "db"')
    store.create("all-up", rule="has(load_one)")
    # One group through the real CLI, in the collector namespace, on the same database file.
    cli_in_collector(
        made, "group", "create", "pinned", "--rule", 'name == "db-1"', "--member", "web-2", "--db", str(db)
    )
    result = monitor.poll()
    assert members(result) == {
        "web": ["web-1", "web-2"],
        "tier-db": ["db-1"],
        "all-up": ["db-1", "web-1", "web-2"],
        "pinned": ["db-1", "web-2"],
    }, describe(made.fetch())
    assert monitor.snapshot is not None
    loads = [float(monitor.snapshot.hosts[name].value("load_one") or 0) for name in HOSTS]
    everyone = result.groups["all-up"].aggregates
    assert everyone["load_one"]["count"] == 3 and everyone["load_one"]["sum"] == pytest.approx(sum(loads))
    assert everyone["mem_free"]["count"] == 3 and everyone["cpu_user"]["count"] == 3
    assert result.groups["web"].aggregates["load_one"]["count"] == 2
    assert "role" not in everyone  # a string metric is grouped on, never aggregated
    shown = cli_in_collector(made, "group", "show", "web", "--db", str(db))
    assert isinstance(shown, dict) and shown["members"] == ["web-1", "web-2"], shown

    # 3. Changed while they run. A custom metric published from web-2's own namespace moves it.
    made.gmetric("web-2", "role", "db")
    result, polls = poll_until(
        monitor, lambda r: "web-2" in r.groups["tier-db"].members, "web-2 joins tier-db"
    )
    assert polls <= 2, f"web-2 joined tier-db only after {polls} polls"
    assert result.groups["tier-db"].members == ["db-1", "web-2"] and result.groups["tier-db"].entered == [
        "web-2"
    ]
    # A rule edited in the store applies at the very next poll (no Ganglia round trip needed).
    store.set_rule("web", f'ip in "{made.network}" and name != "web-2"')
    web = monitor.poll().groups["web"]
    assert (web.members, web.entered, web.left) == (["db-1", "web-1"], ["db-1"], ["web-2"])
    store.set_rule("web", 'name matches "web-*"')
    assert monitor.poll().groups["web"].members == ["web-1", "web-2"]
    assert fingerprint(made) == before, "a group change restarted or reconfigured a gmond"

    # 4. web-2 leaves: its gmond stops (by PID); once silent past the stale limit it is down.
    made.stop_host("web-2")
    left_at = time.monotonic()
    result, _ = poll_until(
        monitor,
        lambda r: r.groups["pinned"].down == ["web-2"],
        "web-2 goes down",
        timeout_s=STALE_AFTER_S + 8,
    )
    down_s = time.monotonic() - left_at
    assert members(result) == {
        "web": ["web-1"],
        "tier-db": ["db-1"],
        "all-up": ["db-1", "web-1"],
        "pinned": ["db-1", "web-2"],  # listed hosts stay members, reported as down
    }
    assert result.groups["pinned"].up == ["db-1"]
    assert result.groups["pinned"].aggregates["load_one"]["count"] == 1  # only members that are up count
    assert result.groups["all-up"].aggregates["load_one"]["count"] == 2
    assert result.hosts == 3 and result.hosts_up == 2  # still in the dump, silent
    # ... and returns: the same configuration file, a new process.
    made.start_host("web-2")
    result, _ = poll_until(monitor, lambda r: "web-2" in r.groups["all-up"].members, "web-2 returns")
    assert members(result) == {
        "web": ["web-1", "web-2"],
        "tier-db": ["db-1", "web-2"],  # its role (db) was kept by the collector while it was away
        "all-up": ["db-1", "web-1", "web-2"],
        "pinned": ["db-1", "web-2"],
    }
    assert result.groups["pinned"].down == []
    assert fingerprint(made)["web-2"][1:] == before["web-2"][1:]
    assert {name: value for name, value in fingerprint(made).items() if name != "web-2"} == {
        name: value for name, value in before.items() if name != "web-2"
    }
    assert down_s < STALE_AFTER_S + 6, f"web-2 took {down_s:.1f} s to be seen down"
    assert time.monotonic() - started < 60


@pytest.fixture
def needs_gmetad() -> None:
    require("gmetad", "Debian package gmetad")


def test_gmetad_in_the_collector_namespace_agrees_with_gmond(
    needs_gmetad: None, cluster: Lab, tmp_path: Path
) -> None:
    made = cluster
    made.gmetric("db-1", "role", "db")
    made.wait_for(lambda s: s.hosts["db-1"].value("role") == "db", "db-1 reports its role")
    gmetad = made.start_gmetad(poll_s=1)
    xml_address = f"{made.collector_ip}:{GMETAD_XML_PORT}"
    query_address = f"{made.collector_ip}:{GMETAD_QUERY_PORT}"
    made.wait_for(
        lambda s: all_three_report(s) and s.hosts["db-1"].value("role") == "db",
        f"gmetad reports the three hosts (gmetad log: {gmetad.tail()})",
        address=xml_address,
    )

    # The XML port nests GRID > CLUSTER > HOST; the query port answers for one cluster and for summaries.
    root = ET.fromstring(made.fetch_raw(xml_address))
    grid = root.find("GRID")
    assert grid is not None and grid.get("NAME") == "strato-lab"
    assert [cluster.get("NAME") for cluster in grid.findall("CLUSTER")] == ["lab"]
    assert sorted(host.get("NAME", "") for host in grid.findall("CLUSTER/HOST")) == sorted(HOSTS)
    by_query = made.fetch(query_address, "/lab")
    assert sorted(by_query.hosts) == sorted(HOSTS) and by_query.clusters == ["lab"], describe(by_query)
    summary = made.fetch(query_address, "/?filter=summary")
    assert summary.hosts == {} and "lab" in summary.clusters  # a summary lists no hosts, only counts
    summary_xml = ET.fromstring(made.fetch_raw(query_address, "/?filter=summary"))
    counts = summary_xml.find(".//CLUSTER[@NAME='lab']/HOSTS")
    assert counts is not None and counts.get("UP") == "3", ET.tostring(summary_xml)[:500]

    # The same groups evaluated over gmond, gmetad's XML port and gmetad's query port agree.
    db = tmp_path / "monitor.db"
    over_gmond = made.monitor(load_config(None, source=made.gmond_address, db_path=db))
    over_gmond.store.create("web", rule='name matches "web-*"')
    over_gmond.store.create("tier-db", rule='role == "db"', members=["web-1"])
    over_gmond.store.create("all-up", rule="has(load_one) and mem_free > 0")
    expected = {"web": ["web-1", "web-2"], "tier-db": ["db-1", "web-1"], "all-up": ["db-1", "web-1", "web-2"]}
    assert members(over_gmond.poll()) == expected
    for source, query in ((xml_address, None), (query_address, "/lab")):
        other = made.monitor(load_config(None, source=source, query=query, db_path=db))
        result = other.poll()
        assert members(result) == expected, (source, query, describe(made.fetch(source, query)))
        assert result.groups["all-up"].aggregates["load_one"]["count"] == 3
    assert gmetad.running(), gmetad.tail()
