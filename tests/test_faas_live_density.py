"""``strato faas density``: idle warm instances of a real server measured from /proc, and its errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from strato.cli.faas_density import print_report, register
from strato.errors import ConfigError, UnavailableError
from strato.faas.live.density import (
    MAX_INSTANCES,
    DensityOptions,
    DensityReport,
    ProcessGone,
    descendants,
    parse_spawns,
    process_children,
    read_process_memory,
    run_density,
)
from strato.faas.live.isolation import probe_host

INSTANCES = 3


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Group, so that density is a subcommand as under `strato faas`."""

    register(app)
    return app


@pytest.fixture(scope="module")
def fork_report() -> DensityReport:
    lines: list[str] = []
    report = run_density(DensityOptions(instances=INSTANCES, spawns=("fork",)), progress=lines.append)
    # Start and deploy, bring up, measure.
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    return report


@pytest.mark.system
@pytest.mark.slow
def test_fork_mode_measures_every_idle_instance(fork_report: DensityReport) -> None:
    result = fork_report.result("fork")
    assert result is not None and fork_report.result("fresh") is None
    assert result.requested == len(result.instances) == INSTANCES
    assert len({instance.instance_id for instance in result.instances}) == INSTANCES
    every_pid = [pid for instance in result.instances for pid in instance.pids]
    assert len(set(every_pid)) == len(every_pid), "an instance's process was counted twice"
    support = probe_host()
    for instance in result.instances:
        memory = instance.memory
        assert 0 < memory.pss_mib < memory.rss_mib, instance
        assert 0 < memory.uss_mib <= memory.pss_mib, instance
        for part in instance.parts:
            assert 0 < part.uss_mib <= part.pss_mib < part.rss_mib, instance
        # With a pid namespace the platform's pid is the sandbox's waiter, the runtime its child.
        assert memory.processes == len(instance.pids) == (2 if "pid" in support.namespaces else 1)
        assert (instance.waiter is not None) == ("pid" in support.namespaces)
        assert (instance.cgroup_mib is not None) == (support.cgroup is not None), instance
        if instance.cgroup_mib is not None:
            assert instance.cgroup_mib > 0
    pss = [instance.memory.pss_mib for instance in result.instances]
    assert min(pss) <= result.median_pss_mib <= result.max_pss_mib == max(pss)
    assert result.instances_per_gib * result.median_pss_mib == pytest.approx(1024)
    assert result.marginal_pss_mib * INSTANCES == pytest.approx(sum(pss))
    overhead = result.overhead
    assert overhead.gateway.pss_mib > 0 and overhead.template is not None and overhead.template.pss_mib > 0
    # The template keeps zygotes only where instances get memory cgroups.
    assert (overhead.zygotes is not None) == (support.cgroup is not None)
    assert result.amortised_pss_mib == pytest.approx(result.marginal_pss_mib + overhead.pss_mib / INSTANCES)
    assert result.hold_rounds >= 1 and result.bring_up_s > 0


@pytest.mark.system
@pytest.mark.slow
def test_report_as_json_and_table(fork_report: DensityReport, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(json.dumps(fork_report.to_json()))
    assert data["format"] == "strato-faas-density/1"
    (entry,) = data["results"]
    assert entry["spawn"] == "fork" and entry["measured"] == INSTANCES
    assert len(entry["instances"]) == INSTANCES
    first = entry["instances"][0]
    assert first["pss_mib"] == pytest.approx(sum(part["pss_mib"] for part in first["per_process"]))
    assert entry["median_pss_mib"] == pytest.approx(
        statistics.median(instance["pss_mib"] for instance in entry["instances"])
    )
    print_report(fork_report)
    table = capsys.readouterr().out
    assert "instances per GiB" in table and f"{INSTANCES} / {INSTANCES}" in table


@pytest.mark.system
@pytest.mark.slow
def test_cli_fresh_without_sandbox_as_json() -> None:
    result = CliRunner().invoke(
        _app(), ["density", "--instances", "2", "--spawn", "fresh", "--no-sandbox", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (entry,) = data["results"]
    assert entry["spawn"] == "fresh" and entry["sandbox"] is False and entry["measured"] == 2
    # No sandbox: one process per instance, no cgroup of its own, no fork-server.
    assert entry["processes_per_instance"] == 1 and entry["median_waiter_pss_mib"] is None
    assert entry["median_cgroup_mib"] is None
    assert entry["overhead"]["template"] is None and entry["overhead"]["zygotes"] is None
    for instance in entry["instances"]:
        assert 0 < instance["uss_mib"] <= instance["pss_mib"] < instance["rss_mib"]


def test_bad_instance_counts_and_spawn_modes_are_refused_before_anything_starts() -> None:
    runner = CliRunner()
    for args, message in (
        (["--instances", "0"], f"--instances must be between 1 and {MAX_INSTANCES}, got 0"),
        (["--instances", str(MAX_INSTANCES + 1)], f"got {MAX_INSTANCES + 1}"),
        (["--spawn", "vfork"], "--spawn must be fork, fresh or both"),
    ):
        started = time.perf_counter()
        result = runner.invoke(_app(), ["density", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert time.perf_counter() - started < 5, "no server may start for a bad option"
    with pytest.raises(ConfigError, match="between 1 and 256"):
        DensityOptions(instances=-1)
    with pytest.raises(ConfigError, match="at most once"):
        DensityOptions(spawns=("fork", "fork"))
    assert parse_spawns("both") == ("fork", "fresh") and parse_spawns("fresh") == ("fresh",)


def test_unreadable_smaps_rollup_says_so(tmp_path: Path) -> None:
    # A directory where the file should be: unreadable for root too.
    (tmp_path / "41" / "smaps_rollup").mkdir(parents=True)
    with pytest.raises(UnavailableError, match=r"cannot read .*/41/smaps_rollup \(Is a directory\)"):
        read_process_memory(41, proc=tmp_path)
    # The process is there but the kernel has no rollup file.
    (tmp_path / "42").mkdir()
    with pytest.raises(UnavailableError, match=r"Linux 4\.14"):
        read_process_memory(42, proc=tmp_path)
    with pytest.raises(ProcessGone):
        read_process_memory(43, proc=tmp_path)


def test_pss_uss_and_rss_of_shared_and_private_pages_and_the_process_tree() -> None:
    # 64 MiB written before two forks: the first child leaves them shared (copy-on-write), the second
    # writes its own copy.
    script = (
        "import os, time\n"
        "data = bytearray(64 << 20)\n"
        "def touch(value):\n"
        "    for i in range(0, len(data), 4096): data[i] = value\n"
        "touch(1)\n"
        "children = []\n"
        "for writes in (False, True):\n"
        "    ready, done = os.pipe()\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        if writes: touch(2)\n"
        "        os.write(done, b'x'); time.sleep(60); os._exit(0)\n"
        "    os.read(ready, 1)\n"
        "    children.append(child)\n"
        "print(*children, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        children = [int(pid) for pid in line.split()]
        assert len(children) == 2, line
        sharer, writer = children
        parent = read_process_memory(process.pid)
        shared, private = read_process_memory(sharer), read_process_memory(writer)
        # Shared by the parent and the first child: in both RSS in full, half in each PSS, in no USS.
        for memory in (parent, shared):
            assert memory.rss_mib >= 64 and memory.pss_mib >= 32 and memory.uss_mib < 32
            assert memory.uss_mib <= memory.pss_mib < memory.rss_mib
        # The second child's copy is its own.
        assert private.uss_mib >= 64 and private.pss_mib >= 64
        assert descendants(process.pid, process_children()) == [process.pid, *sorted(children)]
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()
    with pytest.raises(ProcessGone):
        read_process_memory(process.pid)
