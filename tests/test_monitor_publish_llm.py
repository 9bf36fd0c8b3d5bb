"""``publish-llm``: the simulator stepped in time, machine samples, wall-clock pacing and a real gmond."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from monitor_helpers import require
from strato.cli import monitor_llm
from strato.errors import ConfigError
from strato.llm.catalog import get_model
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator
from strato.llm.perf import load_perf_model
from strato.monitor import publish_llm as pl
from strato.monitor.daemons import Daemon, GmondConfig, free_port, gmond
from strato.monitor.ganglia import fetch
from strato.monitor.gmetric import GmetricSender, MetricSpec
from strato.monitor.model import Snapshot
from strato.monitor.publish_llm import LlmClusterFeed, MachineSample, Tick, publish
from strato.traces.llm import LlmRequests, synthetic

pytestmark = pytest.mark.system

MODEL = get_model("llama2-70b")


# ---- the engine stepped -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("design", "prompt", "token", "machines", "rate"),
    [("splitwise-hh", 2, 2, None, 7.0), ("baseline-h100", None, None, 3, 8.0)],
)
def test_advancing_step_by_step_gives_exactly_the_times_of_one_run(
    design: str, prompt: int | None, token: int | None, machines: int | None, rate: float
) -> None:
    requests = synthetic("code", rate, 90.0, seed=3)
    made = make_design(design, prompt=prompt, token=token, machines=machines)
    perf = {pool.machine.name: load_perf_model(None, MODEL, pool.machine, 8) for pool in made.pools}
    whole = ClusterSimulator(made, MODEL, perf)
    expected = whole.run(requests)

    feed = LlmClusterFeed(design, prompt=prompt, token=token, machines=machines, requests=requests)
    steps = iter(np.random.default_rng(1).uniform(0.01, 2.5, size=10_000).tolist())
    until = 0.0
    borrowed = False
    while True:
        until += next(steps)
        if not feed.advance_to(until):
            break
        borrowed |= any(m.role != m.home_role for m in feed.simulator.snapshot().machines)
        # The clock stands at the stop and nothing later has happened.
        assert feed.now == until
        so_far = feed.simulator.result()
        assert not (so_far.first_token_s > until).any()
        assert not (so_far.completion_s > until).any()
    assert feed.done and feed.now <= until
    assert borrowed == made.name.startswith("splitwise")  # the mixed pool's moves were stepped through
    got = feed.simulator.result()
    assert got.first_token_s.tobytes() == expected.first_token_s.tobytes()
    assert got.completion_s.tobytes() == expected.completion_s.tobytes()
    assert feed.simulator.snapshot() == whole.snapshot()
    assert feed.now == whole.now


def test_an_event_exactly_at_the_stop_time_is_processed() -> None:
    one = LlmRequests("one", np.array([2.0]), np.array([1000]), np.array([20]))
    feed = LlmClusterFeed(requests=one)
    assert feed.advance_to(1.999) and feed.samples()[0].pending_prompt_tokens == 0
    assert feed.advance_to(2.0)
    assert sum(s.pending_prompt_tokens for s in feed.samples()) == 1000
    assert not feed.advance_to(1e9) and feed.done
    assert not feed.advance(10.0)  # a finished feed stays finished


# ---- samples ------------------------------------------------------------------------------------


def check_sane(samples: list[MachineSample]) -> None:
    for s in samples:
        assert s.role in pl.ROLES and s.home_role in pl.ROLES
        # Only the mixed pool borrows: a machine away from home serves there.
        assert s.role in (s.home_role, "mixed")
        assert 0.0 <= s.kv_util <= 1.0 and 0.0 <= s.busy_fraction <= 1.0
        assert s.busy in (0, 1)
        assert min(s.queued_prompts, s.pending_prompt_tokens, s.pending_decode_tokens, s.decoding) >= 0
        assert s.busy or s.decoding == 0


def test_the_default_feed_moves_machines_between_pools_within_a_minute() -> None:
    feed = LlmClusterFeed()
    first = feed.samples()
    names = [s.name for s in first]
    assert names == ["splitwise-hh-p00", "splitwise-hh-p01", "splitwise-hh-t00", "splitwise-hh-t01"]
    assert [s.ip for s in first] == ["10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"]
    changes = dict.fromkeys(names, 0)
    roles = {s.name: s.role for s in first}
    served = dict.fromkeys(names, 0)
    for second in range(1, 61):
        feed.advance_to(float(second))
        samples = feed.samples()
        assert [s.name for s in samples] == names
        check_sane(samples)
        for s in samples:
            assert {"p": "prompt", "t": "token"}[s.name[-3]] == s.home_role
            changes[s.name] += s.role != roles[s.name]
            roles[s.name] = s.role
            assert s.served_requests >= served[s.name]
            served[s.name] = s.served_requests
    assert max(changes.values()) >= 2, changes
    while feed.advance(30.0):
        check_sane(feed.samples())
    last = feed.samples()
    assert sum(s.served_requests for s in last) == len(feed.requests)
    assert all(s.busy == s.decoding == s.queued_prompts == s.pending_decode_tokens == 0 for s in last)
    assert all(s.role == s.home_role and s.kv_util == 0.0 for s in last)


def test_names_and_addresses_follow_the_design_and_the_chosen_prefixes() -> None:
    feed = LlmClusterFeed("baseline-a100", machines=3, duration_s=5.0, prefix="lab", ip_prefix="10.78")
    assert feed.names == ["lab-m00", "lab-m01", "lab-m02"]
    assert feed.ips == ["10.78.0.1", "10.78.0.2", "10.78.0.3"]
    assert pl.machine_ips(300)[253:255] == ["10.77.0.254", "10.77.1.1"]
    with pytest.raises(ConfigError):
        pl.machine_ips(1, "10.77.1")


# ---- pacing, against a fake clock ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Recorder(GmetricSender):
    """Keeps what would have been sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 9))
        self.sent: list[tuple[str, str, float | int | str]] = []

    def send(self, spec: MetricSpec, value: float | int | str, *, spoof: str | None = None) -> None:
        assert spoof is not None
        self.sent.append((spoof, spec.name, value))

    def __enter__(self) -> Recorder:
        return self


def test_ticks_follow_absolute_deadlines_and_send_every_machine_every_metric() -> None:
    feed, clock = LlmClusterFeed(), FakeClock()
    ticks: list[Tick] = []
    with Recorder() as sender:
        summary = publish(
            feed,
            sender,
            speed=10.0,
            interval_s=0.5,
            duration_s=3.0,
            on_tick=ticks.append,
            clock=clock,
            sleep=clock.sleep,
        )
    assert summary.ticks == 7 and summary.skipped_ticks == 0 and not summary.finished
    assert [t.sim_s for t in ticks] == [5.0 * k for k in range(7)]
    assert [t.wall_s for t in ticks] == [0.5 * k for k in range(7)]
    assert clock.slept == [0.5] * 6
    metrics = pl.metric_specs(0.5)
    assert summary.datagrams == len(sender.sent) == 7 * 4 * len(metrics)
    last = {(spoof, name): value for spoof, name, value in sender.sent[-4 * len(metrics) :]}
    for s in summary.last_samples:
        for name in metrics:
            assert last[(f"{s.ip}:{s.name}", name)] == getattr(s, name)
    assert all(spec.tmax == 1 and spec.dmax == 0 and spec.group == "llm" for spec in metrics.values())
    assert summary.role_changes == {
        name: sum(name in t.role_changes for t in ticks) for name in summary.role_changes
    }


def test_an_overrunning_tick_drops_the_missed_ones_and_keeps_simulated_time_on_the_wall_clock() -> None:
    feed, clock = LlmClusterFeed(), FakeClock()
    ticks: list[Tick] = []

    def slow(tick: Tick) -> None:
        ticks.append(tick)
        if tick.index == 1:
            clock.now += 1.3  # lands at wall 1.8 s: the tick due at 1.0 s is missed

    with Recorder() as sender:
        summary = publish(
            feed,
            sender,
            speed=2.0,
            interval_s=0.5,
            duration_s=2.5,
            on_tick=slow,
            clock=clock,
            sleep=clock.sleep,
        )
    assert [t.index for t in ticks] == [0, 1, 3, 4, 5]
    assert [t.sim_s for t in ticks] == [0.0, 1.0, 3.0, 4.0, 5.0]
    assert summary.skipped_ticks == 1 and summary.ticks == 5


def test_publishing_without_a_duration_runs_to_the_end_of_the_simulation() -> None:
    feed, clock = LlmClusterFeed(duration_s=20.0), FakeClock()
    with Recorder() as sender:
        summary = publish(feed, sender, speed=50.0, interval_s=1.0, clock=clock, sleep=clock.sleep)
    assert summary.finished and feed.done
    assert summary.sim_s == feed.now < summary.ticks * 50.0
    assert sum(s.served_requests for s in summary.last_samples) == len(feed.requests)
    with pytest.raises(ConfigError):
        publish(feed, sender, speed=0.0)


# ---- a real gmond -------------------------------------------------------------------------------


@dataclass
class Gmond:
    config: GmondConfig
    daemon: Daemon

    @property
    def udp(self) -> str:
        return f"127.0.0.1:{self.config.udp_port}"

    def wait_for(self, condition: Callable[[Snapshot], bool], timeout_s: float = 5.0) -> Snapshot:
        # gmond takes the datagrams in asynchronously: poll briefly until the last tick has landed.
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = fetch(f"127.0.0.1:{self.config.tcp_port}")
            if condition(snapshot) or time.monotonic() > deadline:
                return snapshot
            time.sleep(0.05)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Gmond]:
    require("gmond", "Debian package ganglia-monitor")
    config = GmondConfig(udp_port=free_port(), tcp_port=free_port(), metrics=())
    with gmond(config, tmp_path) as daemon:
        yield Gmond(config, daemon)


def published(snapshot: Snapshot, samples: list[MachineSample]) -> bool:
    try:
        check_in_ganglia(snapshot, samples)
    except (AssertionError, KeyError):
        return False
    return True


def check_in_ganglia(snapshot: Snapshot, samples: list[MachineSample]) -> None:
    specs = pl.metric_specs(0.5)
    assert len(samples) == 4
    for s in samples:
        host = snapshot.hosts[s.name]
        assert host.ip == s.ip
        assert set(specs) <= set(host.metrics)
        for name, spec in specs.items():
            metric = host.metrics[name]
            assert (metric.type, metric.group) == (spec.type, "llm"), name
            expected = getattr(s, name)
            if spec.type == "string":
                assert metric.value == expected, name
            else:
                assert metric.value == pytest.approx(expected, rel=1e-6, abs=1e-9), name
        assert host.value("role") == s.role and host.value("home_role") == s.home_role


def test_every_machine_appears_in_a_real_gmond_with_its_last_state(collector: Gmond) -> None:
    feed = LlmClusterFeed()
    started = time.monotonic()
    with GmetricSender(collector.udp) as sender:
        summary = publish(feed, sender, speed=20.0, interval_s=0.5, duration_s=3.0)
    assert 2.9 < time.monotonic() - started < 4.5
    assert summary.ticks == 7 and summary.sim_s == 60.0
    snapshot = collector.wait_for(lambda snap: published(snap, summary.last_samples))
    check_in_ganglia(snapshot, summary.last_samples)


def test_role_groups_follow_machines_as_the_mixed_pool_borrows_them(collector: Gmond, tmp_path: Path) -> None:
    """C2MS over strato's own system: groups defined by role rules track every role change, poll by poll."""
    from strato.monitor.config import load_config
    from strato.monitor.service import Monitor

    monitor = Monitor(
        load_config(None, source=f"127.0.0.1:{collector.config.tcp_port}", db_path=tmp_path / "m.db")
    )
    for role in ("prompt", "token", "mixed"):
        monitor.store.create(role, rule=f'role == "{role}"')
    seen_mixed: set[str] = set()
    changes = 0

    def check(tick: Tick) -> None:
        nonlocal changes
        roles = {sample.name: sample.role for sample in tick.samples}
        collector.wait_for(
            lambda snap: (
                all(snap.hosts[n].value("role") == r for n, r in roles.items() if n in snap.hosts)
                and set(roles) <= set(snap.hosts)
            )
        )
        result = monitor.poll()
        for role in ("prompt", "token", "mixed"):
            assert result.groups[role].members == sorted(n for n, r in roles.items() if r == role), tick
        seen_mixed.update(result.groups["mixed"].members)
        changes += len(tick.role_changes)

    feed = LlmClusterFeed()
    with GmetricSender(collector.udp) as sender:
        publish(feed, sender, speed=20.0, interval_s=0.25, duration_s=3.0, on_tick=check)
    assert changes >= 2 and seen_mixed, "the default feed borrows machines into the mixed pool within 60 s"


def command_app() -> typer.Typer:
    app = typer.Typer()
    monitor_llm.register(app)

    @app.callback()
    def monitor() -> None:
        """Stands in for ``strato monitor``."""

    return app


def test_the_registered_command_publishes_and_prints_a_json_summary(collector: Gmond) -> None:
    result = CliRunner().invoke(
        command_app(),
        [
            "publish-llm",
            "--gmond",
            collector.udp,
            "--duration",
            "2",
            "--json",
            "--speed",
            "30",
            "--interval",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ticks"] == 5 and summary["sim_s"] == 60.0 and not summary["finished"]
    assert summary["design"].startswith("splitwise-hh 2P") and len(summary["machines"]) == 4
    samples = [MachineSample(**s) for s in summary["last_samples"]]
    snapshot = collector.wait_for(lambda snap: published(snap, samples))
    check_in_ganglia(snapshot, samples)


def test_the_command_rejects_bad_options_in_one_line() -> None:
    app = command_app()
    for args, message in (
        (["--gmond", "127.0.0.1:x"], "not a number"),
        (["--interval", "0"], "must be positive"),
        (["--design", "nope"], "unknown design"),
    ):
        result = CliRunner().invoke(app, ["publish-llm", "--duration", "1", *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
