"""Group actions: templates and validation, real local/netns/ssh fan-out, timeouts, and the audit log.

Everything runs real processes (sh, sleep, ip netns, a throw-away sshd); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshd_helpers import SSHServer, free_port, keygen, skip_reason, sshd_server
from strato.errors import ConfigError, ConflictError, NotFoundError
from strato.monitor.actions import (
    BUILTIN_TEMPLATES,
    MAX_OUTPUT_BYTES,
    ActionError,
    ActionRunner,
    AuditLog,
    HostResult,
    HostTarget,
    LocalExecutor,
    NamespaceExecutor,
    ParamSpec,
    SSHExecutor,
    Template,
    make_executor,
    templates_from_config,
)

pytestmark = pytest.mark.system

INJECTIONS = ["; rm -rf /", "$(id)", "`id`", "a && id", "a | id", "a\nid", "a\x00id", "a || id", "a > /etc/x"]


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.db")
    yield log
    log.close()


def targets(count: int, prefix: str = "host") -> list[HostTarget]:
    return [HostTarget(f"{prefix}-{i:03d}", "127.0.0.1") for i in range(count)]


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (a container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pids: list[int], timeout_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


# -- parameters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "raw", "expected"),
    [
        (ParamSpec("str"), "nginx.service", "nginx.service"),
        (ParamSpec("str", pattern=r"[a-z]+"), "abc", "abc"),
        (ParamSpec("int", minimum=1, maximum=10), "7", "7"),
        (ParamSpec("int"), 12, "12"),
        (ParamSpec("int"), 3.0, "3"),
        (ParamSpec("int", minimum=-5), "-5", "-5"),
        (ParamSpec("float", minimum=0, maximum=3600), "2.5", "2.5"),
        (ParamSpec("float"), "2", "2"),
        (ParamSpec("float"), 1e-7, "0.0000001"),
        (ParamSpec("float"), "1e3", "1000"),
        (ParamSpec("choice", choices=("start", "stop")), "stop", "stop"),
        (ParamSpec("bool"), True, "true"),
        (ParamSpec("bool"), "No", "false"),
        (ParamSpec("bool"), "1", "true"),
        (ParamSpec("str", allow_leading_dash=True), "-v", "-v"),
    ],
)
def test_param_accepts_and_normalises(spec: ParamSpec, raw: str | int | float | bool, expected: str) -> None:
    assert spec.convert("p", raw) == expected


@pytest.mark.parametrize(
    ("spec", "raw", "rule"),
    [
        (ParamSpec("int"), "7.5", "is not an integer"),
        (ParamSpec("int"), 7.5, "must be an integer"),
        (ParamSpec("int"), True, "must be an integer"),
        (ParamSpec("int"), " 7", "is not an integer"),
        (ParamSpec("int", maximum=10), "11", "above the maximum 10"),
        (ParamSpec("int", minimum=1), 0, "below the minimum 1"),
        (ParamSpec("float"), "nan", "not a decimal number"),
        (ParamSpec("float"), "inf", "not a decimal number"),
        (ParamSpec("float"), "0x10", "not a decimal number"),
        (ParamSpec("float"), float("inf"), "not a finite number"),
        (ParamSpec("float", maximum=3600), "3600.5", "above the maximum 3600"),
        (ParamSpec("choice", choices=("start", "stop")), "restart", "allowed choices: start, stop"),
        (ParamSpec("bool"), "maybe", "not a boolean"),
        (ParamSpec("str"), "", "does not match the allowed pattern"),
        (ParamSpec("str"), "x" * 257, "does not match the allowed pattern"),
        (ParamSpec("str"), "-rf", "starts with '-'"),
        (ParamSpec("str"), ["a"], "unsupported type list"),
        (ParamSpec("str", pattern=r".*"), "a\u202eb", "control character (U+202E"),
    ],
)
def test_param_rejects_with_the_rule(spec: ParamSpec, raw: object, rule: str) -> None:
    with pytest.raises(ActionError) as caught:
        spec.convert("count", raw)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("parameter 'count': value ")
    assert rule in message


def test_long_values_are_truncated_in_errors() -> None:
    with pytest.raises(ActionError) as caught:
        ParamSpec("str").convert("p", "x" * 5000 + ";")
    assert len(str(caught.value)) < 200
    assert "..." in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "list"}, "parameter type must be one of"),
        ({"type": "int", "pattern": "x"}, "'pattern' applies to str"),
        ({"type": "str", "pattern": "("}, "not a valid regular expression"),
        ({"type": "str", "minimum": 1}, "'minimum'/'maximum' apply to int and float"),
        ({"type": "int", "minimum": 5, "maximum": 1}, "minimum 5 is above maximum 1"),
        ({"type": "choice"}, "non-empty 'choices'"),
        ({"type": "str", "choices": ("a",)}, "'choices' applies to choice"),
    ],
)
def test_bad_param_specs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ParamSpec(**kwargs)  # type: ignore[arg-type]


# -- templates ----------------------------------------------------------------------------------------


def test_render_substitutes_inside_elements_without_a_shell() -> None:
    template = Template(
        "probe",
        ("echo", "load={threshold}", "{name}", "{{literal}}"),
        {"threshold": ParamSpec("float", maximum=100), "name": ParamSpec("str", pattern=r".*", default="x")},
    )
    assert template.render({"threshold": "2.5"}) == ["echo", "load=2.5", "x", "{literal}"]
    # One pass: a value that looks like a placeholder stays literal.
    assert template.render({"threshold": 1, "name": "{threshold}"}) == [
        "echo",
        "load=1",
        "{threshold}",
        "{literal}",
    ]


def test_render_unknown_and_missing_parameters() -> None:
    template = BUILTIN_TEMPLATES["sleep"]
    with pytest.raises(ActionError, match=r"missing required parameter\(s\) seconds"):
        template.render({})
    with pytest.raises(ActionError, match=r"unknown parameter\(s\) 'cmd' \(it takes: seconds\)"):
        template.render({"seconds": 1, "cmd": "id"})
    assert BUILTIN_TEMPLATES["df"].render({}) == ["df", "-h", "/"]
    assert BUILTIN_TEMPLATES["uptime"].render({}) == ["uptime"]


@pytest.mark.parametrize(
    ("argv", "params", "message"),
    [
        (("echo", "{who}"), {}, r"placeholder\(s\) who are not declared"),
        (("echo",), {"x": ParamSpec("str")}, r"parameter\(s\) x are declared but never used"),
        (("{prog}",), {"prog": ParamSpec("str")}, "argv\\[0\\], the program, must be a literal"),
        (("awk", "{print $1}"), {}, "lone '{'"),
        (("echo", "a}"), {}, "lone '}'"),
        ((), {}, "non-empty list of strings"),
        (("echo", "{n}"), {"n": ParamSpec("int", maximum=3, default=9)}, "default of parameter 'n'"),
    ],
)
def test_bad_templates_fail_at_construction(
    argv: tuple[str, ...], params: dict[str, ParamSpec], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Template("bad", argv, params)


def test_templates_from_config() -> None:
    templates = templates_from_config(
        {
            "restart": {
                "argv": ["systemctl", "restart", "{unit}"],
                "params": {"unit": {"type": "choice", "choices": ["nginx", "php-fpm"]}},
                "timeout_s": 10,
                "description": "Restart a web unit.",
            },
            "load": {
                "argv": ["echo", "load={threshold}"],
                "params": {"threshold": {"type": "float", "minimum": 0, "maximum": 64, "default": 4}},
            },
        }
    )
    assert templates["restart"].render({"unit": "nginx"}) == ["systemctl", "restart", "nginx"]
    assert templates["restart"].timeout_s == 10.0
    assert templates["load"].render({}) == ["echo", "load=4"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "field 'argv' must be a non-empty list"),
        ({"argv": "reboot now"}, "field 'argv' must be a non-empty list"),
        ({"argv": ["x"], "shell": True}, r"unknown field\(s\) shell"),
        ({"argv": ["x", "{a}"], "params": {"a": {"type": "text"}}}, "field 'params.a': parameter type"),
        ({"argv": ["x", "{a}"], "params": {"a": {}}}, "field 'params.a': field 'type' is required"),
        (
            {"argv": ["x", "{a}"], "params": {"a": {"type": "int", "minimum": "1"}}},
            "'minimum' must be a number",
        ),
        ({"argv": ["x", "{a}"], "params": {"a": {"type": "str", "regex": "."}}}, r"unknown field\(s\) regex"),
        ({"argv": ["x"], "timeout_s": "10"}, "field 'timeout_s' must be a number"),
        ({"argv": ["x"], "timeout_s": -1}, "timeout_s must be a positive number"),
        ({"argv": ["x", "{b}"]}, r"placeholder\(s\) b are not declared"),
    ],
)
def test_templates_from_config_names_template_and_field(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        templates_from_config({"oops": entry})
    assert "action template 'oops'" in str(caught.value)


# -- rejected requests are refused clearly and audited --------------------------------------------------

RESTART = Template(
    "restart",
    ("systemctl", "restart", "{service}"),
    {"service": ParamSpec("str", pattern=r"[A-Za-z0-9@._-]{1,64}")},
)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_shell_injection_is_refused_and_audited(audit: AuditLog, payload: str) -> None:
    runner = ActionRunner(audit)
    with pytest.raises(ActionError) as caught:
        runner.run_sync(
            who="mallory", group="web", template=RESTART, values={"service": payload},
            targets=targets(3), executor=LocalExecutor(),
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith("parameter 'service': value ")
    assert "allowed pattern" in message or "control character" in message
    (record,) = audit.list()
    assert record.status == "rejected"
    assert record.who == "mallory" and record.group == "web" and record.template == "restart"
    assert record.params == {"service": payload}
    assert record.members == ["host-000", "host-001", "host-002"]
    assert record.error == message
    assert record.results == [] and record.argv == []


def test_bad_targets_reject_the_whole_action(audit: AuditLog, tmp_path: Path) -> None:
    runner = ActionRunner(audit)
    touch = Template("touch", ("touch", "{path}"), {"path": ParamSpec("str")})
    marker = tmp_path / "ran"
    with pytest.raises(ActionError, match="listed twice"):
        runner.run_sync(
            who="ops", group="g", template=touch, values={"path": str(marker)},
            targets=[HostTarget("a", "x"), HostTarget("a", "y")], executor=LocalExecutor(),
        )  # fmt: skip
    with pytest.raises(ActionError, match="netns executor needs a network namespace"):
        runner.run_sync(
            who="ops", group="g", template=touch, values={"path": str(marker)},
            targets=[HostTarget("a", "x", netns="somewhere"), HostTarget("b", "y")],
            executor=NamespaceExecutor(),
        )  # fmt: skip
    assert not marker.exists()
    assert [record.status for record in audit.list()] == ["rejected", "rejected"]


def test_echo_prints_injection_payload_literally(audit: AuditLog, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"$(touch {marker}); echo pwned `touch {marker}` && touch {marker} | cat > {marker} 'q' \"d\""
    record = ActionRunner(audit).run_sync(
        who="ops", group="g", template=BUILTIN_TEMPLATES["echo"], values={"message": payload},
        targets=targets(2), executor=LocalExecutor(),
    )  # fmt: skip
    assert record.status == "ok"
    assert [result.stdout for result in record.results] == [payload + "\n"] * 2
    assert record.argv == ["echo", payload]
    assert not marker.exists()


# -- local fan-out ----------------------------------------------------------------------------------------


def test_hundred_hosts_parallelism_32_fully_audited(tmp_path: Path) -> None:
    work = tmp_path / "marks"
    work.mkdir()
    db = tmp_path / "audit.db"
    # Each host stamps when it starts and ends, so the real overlap can be measured afterwards.
    script = (
        'date +%s.%N > "$1/$STRATO_HOST.start"; sleep 0.2; '
        'date +%s.%N > "$1/$STRATO_HOST.end"; echo "$STRATO_HOST"'
    )
    template = Template("stamp", ("sh", "-c", script, "sh", "{dir}"), {"dir": ParamSpec("str")}, timeout_s=20)
    hosts = targets(100)
    seen: list[HostResult] = []
    started: list[int] = []
    with AuditLog(db) as log:
        record = ActionRunner(log, parallelism=32).run_sync(
            who="ops", group="fleet", template=template, values={"dir": str(work)}, targets=hosts,
            executor=LocalExecutor(), on_result=seen.append, on_start=started.append,
        )  # fmt: skip
    assert record.status == "ok", [r for r in record.results if not r.ok][:3]
    assert started == [record.id] and len(seen) == 100
    with AuditLog(db) as reopened:  # what a later reader of the file sees
        stored = reopened.get(record.id)
    assert stored.members == [host.name for host in hosts]
    assert stored.ok_count == 100 and stored.failed_count == 0 and stored.pending == []
    assert stored.finished_at is not None and stored.finished_at >= stored.started_at
    for host, result in zip(hosts, stored.results, strict=True):
        assert result.host == host.name
        assert result.exit_code == 0 and result.stdout == host.name + "\n" and result.error is None
    events = []
    for host in hosts:
        events.append((float((work / f"{host.name}.start").read_text()), 1))
        events.append((float((work / f"{host.name}.end").read_text()), -1))
    running = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        running += step
        peak = max(peak, running)
    assert 1 < peak <= 32


def test_output_is_truncated_with_a_marker(audit: AuditLog) -> None:
    template = Template(
        "flood",
        ("sh", "-c", 'head -c "$1" /dev/zero | tr "\\0" x', "sh", "{bytes}"),
        {"bytes": ParamSpec("int")},
    )
    record = ActionRunner(audit).run_sync(
        who="ops", group="g", template=template, values={"bytes": 200_000}, targets=targets(1),
        executor=LocalExecutor(),
    )  # fmt: skip
    (result,) = record.results
    assert result.exit_code == 0
    assert result.stdout.startswith("x" * MAX_OUTPUT_BYTES)
    assert result.stdout.endswith(f"{200_000 - MAX_OUTPUT_BYTES} more dropped]")


def test_missing_program_and_nonzero_exit(audit: AuditLog) -> None:
    missing = Template("missing", ("/nonexistent/strato-tool",))
    record = ActionRunner(audit).run_sync(
        who="ops", group="g", template=missing, values={}, targets=targets(1), executor=LocalExecutor()
    )
    (result,) = record.results
    assert result.exit_code is None and "could not start '/nonexistent/strato-tool'" in (result.error or "")
    assert record.status == "failed"
    fails = Template("fails", ("sh", "-c", "echo oops >&2; exit 3"))
    record = ActionRunner(audit).run_sync(
        who="ops", group="g", template=fails, values={}, targets=targets(2), executor=LocalExecutor()
    )
    assert [(r.exit_code, r.stderr) for r in record.results] == [(3, "oops\n")] * 2
    assert record.status == "failed" and record.failed_count == 2


# -- timeouts and interruption ---------------------------------------------------------------------------

SLOW_ONE = Template(
    "slow-one",
    (
        "sh",
        "-c",
        'if [ "$STRATO_HOST" = slow ]; then echo $$ > "$1/sh.pid"; '
        'sleep 30 & echo $! > "$1/sleep.pid"; wait; else echo "$STRATO_HOST"; fi',
        "sh",
        "{dir}",
    ),
    {"dir": ParamSpec("str")},
)


def test_timeout_kills_the_host_process_group(audit: AuditLog, tmp_path: Path) -> None:
    hosts = [
        HostTarget("fast-1", "127.0.0.1"),
        HostTarget("slow", "127.0.0.1"),
        HostTarget("fast-2", "127.0.0.1"),
    ]
    began = time.monotonic()
    record = ActionRunner(audit, timeout_s=0.5).run_sync(
        who="ops", group="g", template=SLOW_ONE, values={"dir": str(tmp_path)}, targets=hosts,
        executor=LocalExecutor(),
    )  # fmt: skip
    assert time.monotonic() - began < 5
    by_host = {result.host: result for result in record.results}
    slow = by_host["slow"]
    assert slow.timed_out and slow.exit_code is None
    assert slow.error == "timed out after 0.5 s"
    assert 0.5 <= slow.duration_s < 3
    assert by_host["fast-1"].ok and by_host["fast-2"].stdout == "fast-2\n"
    assert record.status == "failed"
    stored = audit.get(record.id)
    assert stored.members == ["fast-1", "slow", "fast-2"]
    assert sorted(result.host for result in stored.results) == ["fast-1", "fast-2", "slow"]
    pids = [int((tmp_path / name).read_text()) for name in ("sh.pid", "sleep.pid")]
    assert wait_dead(pids) == [], "the timed-out host's shell or its background sleep survived"


def test_cancelled_run_kills_children_and_is_marked_interrupted(audit: AuditLog, tmp_path: Path) -> None:
    hosts = [HostTarget("slow", "127.0.0.1"), HostTarget("fast", "127.0.0.1")]

    async def scenario() -> None:
        task = asyncio.create_task(
            ActionRunner(audit).run(
                who="ops", group="g", template=SLOW_ONE, values={"dir": str(tmp_path)}, targets=hosts,
                executor=LocalExecutor(),
            )
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while not (tmp_path / "sleep.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    (record,) = audit.list()
    assert record.status == "interrupted" and record.finished_at is not None
    assert [result.host for result in record.results] == ["fast"]
    assert record.pending == ["slow"]
    pids = [int((tmp_path / name).read_text()) for name in ("sh.pid", "sleep.pid")]
    assert wait_dead(pids) == []


# -- audit durability ---------------------------------------------------------------------------------------

DYING_RUNNER = textwrap.dedent(
    """
    import sys
    from strato.monitor.actions import ActionRunner, AuditLog, HostTarget, LocalExecutor, ParamSpec, Template

    db, work = sys.argv[1], sys.argv[2]
    script = ('echo $$ > "$1/$STRATO_HOST.pid"; '
              'case "$STRATO_HOST" in fast*) echo done ;; *) exec sleep 30 ;; esac')
    template = Template("mixed", ("sh", "-c", script, "sh", "{dir}"), {"dir": ParamSpec("str")}, timeout_s=60)
    names = ["fast-1", "slow-1", "fast-2", "slow-2", "slow-3"]
    ActionRunner(AuditLog(db), parallelism=8).run_sync(
        who="ops", group="g", template=template, values={"dir": work},
        targets=[HostTarget(name, "127.0.0.1") for name in names], executor=LocalExecutor(),
    )
    """
)


def test_runner_killed_mid_action_leaves_a_complete_running_row(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    work = tmp_path / "work"
    work.mkdir()
    child = subprocess.Popen([sys.executable, "-c", DYING_RUNNER, str(db), str(work)])
    try:
        deadline = time.monotonic() + 15
        while True:
            assert child.poll() is None, "the runner exited on its own"
            assert time.monotonic() < deadline, "the fast hosts never reached the audit log"
            if db.exists():
                with AuditLog(db) as peek:
                    found = peek.list()
                if found and len(found[0].results) == 2 and len(list(work.glob("slow-*.pid"))) == 3:
                    break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        with AuditLog(db) as log:
            (record,) = log.list()
        assert record.status == "running" and record.finished_at is None
        assert record.members == ["fast-1", "slow-1", "fast-2", "slow-2", "slow-3"]
        assert [(r.host, r.exit_code, r.stdout) for r in record.results] == [
            ("fast-1", 0, "done\n"),
            ("fast-2", 0, "done\n"),
        ]
        assert record.pending == ["slow-1", "slow-2", "slow-3"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        # The slow hosts lead their own sessions, so the killed runner could not take them along.
        for pid_file in work.glob("slow-*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_audit_log_rules(audit: AuditLog) -> None:
    action = audit.start(who="ops", group="g", template="t", params={}, argv=["true"], members=["a", "b"])
    audit.record(action, HostResult("a", 0))
    with pytest.raises(ConflictError, match="already has a result for host 'a'"):
        audit.record(action, HostResult("a", 0))
    with pytest.raises(ConfigError, match="not a member"):
        audit.record(action, HostResult("z", 0))
    with pytest.raises(ConfigError, match="final status must be one of"):
        audit.finish(action, "done")
    audit.finish(action, "failed")
    with pytest.raises(ConflictError, match="takes no more results"):
        audit.record(action, HostResult("b", 0))
    with pytest.raises(NotFoundError, match="no action with id 999"):
        audit.get(999)
    other = audit.start(who="ops", group="h", template="t", params={}, argv=["true"], members=[])
    assert [record.id for record in audit.list()] == [other, action]
    assert [record.id for record in audit.list(group="g")] == [action]
    assert [record.id for record in audit.list(limit=1)] == [other]


# -- network namespaces -----------------------------------------------------------------------------------


def test_netns_executor_runs_inside_the_namespace(audit: AuditLog) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"strato-test-{uuid.uuid4().hex[:8]}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` failed here: {added.stderr.strip()}")
    try:
        links = Template("links", ("ip", "-o", "link"))
        record = ActionRunner(audit).run_sync(
            who="ops", group="g", template=links, values={},
            targets=[HostTarget("ns-host", "127.0.0.1", netns=name)], executor=NamespaceExecutor(),
        )  # fmt: skip
        (result,) = record.results
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and ": lo:" in lines[0]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


# -- executors ---------------------------------------------------------------------------------------------


def test_ssh_command_line(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_text("")
    executor = SSHExecutor(
        known, identity=key, user="ops", connect_timeout_s=2.5, extra_options={"LogLevel": "ERROR"}
    )
    command = executor.command(HostTarget("web-1", "10.0.0.5", port=2222), ["echo", "a b", "$(id)"])
    assert command == [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=3",
        "-F", "/dev/null",
        "-p", "2222",
        "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", "LogLevel=ERROR",
        "-l", "ops",
        "10.0.0.5", "--", "echo 'a b' '$(id)'",
    ]  # fmt: skip
    with pytest.raises(ActionError, match="is not a host name or IP address"):
        executor.command(HostTarget("evil", "-oProxyCommand=touch /tmp/x"), ["true"])
    with pytest.raises(ConfigError, match="cannot be overridden"):
        SSHExecutor(known, extra_options={"StrictHostKeyChecking": "no"})
    with pytest.raises(ConfigError, match=r"known_hosts file .* does not exist"):
        SSHExecutor(tmp_path / "absent")
    assert isinstance(make_executor("ssh", known_hosts=known), SSHExecutor)
    assert isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ConfigError, match="unknown executor 'telnet'"):
        make_executor("telnet")
    with pytest.raises(ConfigError, match="needs a known_hosts"):
        make_executor("ssh")
    with pytest.raises(ConfigError, match="takes no options"):
        make_executor("local", user="x")


# -- ssh, against a real sshd ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with sshd_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def ssh_targets(port: int, count: int = 3) -> list[HostTarget]:
    return [HostTarget(f"ssh-{i}", "127.0.0.1", port=port) for i in range(count)]


def test_ssh_runs_on_every_target_without_interpolation(
    sshd: SSHServer, audit: AuditLog, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = (
        f"$(touch {marker}); echo pwned `touch {marker}` && touch {marker} | cat; 'it''s' \"q\"  two  spaces"
    )
    executor = SSHExecutor(sshd.known_hosts, identity=sshd.client_key, user="root", connect_timeout_s=5)
    record = ActionRunner(audit).run_sync(
        who="ops", group="remote", template=BUILTIN_TEMPLATES["echo"], values={"message": payload},
        targets=ssh_targets(sshd.port), executor=executor,
    )  # fmt: skip
    assert record.status == "ok", [(r.exit_code, r.error, r.stderr) for r in record.results]
    assert [(r.host, r.stdout) for r in record.results] == [(f"ssh-{i}", payload + "\n") for i in range(3)]
    assert not marker.exists()
    assert len(audit.get(record.id).results) == 3


def test_ssh_wrong_host_key_runs_nothing(sshd: SSHServer, audit: AuditLog, tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "other_host", "not-the-server")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    marker = tmp_path / "ran"
    touch = Template("touch", ("touch", "{path}"), {"path": ParamSpec("str")})
    executor = SSHExecutor(known, identity=sshd.client_key, user="root", connect_timeout_s=5)
    record = ActionRunner(audit).run_sync(
        who="ops", group="remote", template=touch, values={"path": str(marker)},
        targets=ssh_targets(sshd.port), executor=executor,
    )  # fmt: skip
    assert record.status == "failed" and len(record.results) == 3
    for result in record.results:
        assert result.exit_code == 255
        assert result.error == "ssh: Host key verification failed.", result.stderr
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert not marker.exists()


def test_ssh_closed_port_is_a_clean_error(sshd: SSHServer, audit: AuditLog) -> None:
    executor = SSHExecutor(sshd.known_hosts, identity=sshd.client_key, user="root", connect_timeout_s=2)
    closed = free_port()
    record = ActionRunner(audit, timeout_s=10).run_sync(
        who="ops", group="remote", template=BUILTIN_TEMPLATES["uptime"], values={},
        targets=ssh_targets(closed, 1), executor=executor,
    )  # fmt: skip
    (result,) = record.results
    assert result.exit_code == 255 and not result.timed_out
    assert result.error == f"ssh: connect to host 127.0.0.1 port {closed}: Connection refused"
    assert record.status == "failed"
