"""Instance isolation with real processes: a forked child enters the sandbox and reports facts as JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import select
import shutil
import signal
import socket
import stat
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import strato
from strato.faas.live.isolation import (
    CONTROLS,
    FUNCTION_UID_BASE,
    HostSupport,
    InstanceCgroup,
    SandboxError,
    SandboxSpec,
    cleanup_cgroup_base,
    enter_sandbox,
    function_uid,
    prepare_code_dir,
    probe_host,
    remove_private_tmp,
    runtime_dirs,
)

pytestmark = pytest.mark.system

SUPPORT = probe_host()
TIMEOUT_S = 10.0
NOTHING = HostSupport(root=False, namespaces=frozenset(), cgroup=None, cgroup_base=None, setuid=False)


def needs(*namespaces: str, root: bool = False, cgroup: bool = False) -> None:
    reasons = dict(SUPPORT.reasons)
    missing = [ns for ns in namespaces if ns not in SUPPORT.namespaces]
    if missing:
        why = "; ".join(reasons.get(label, ns) for ns, label in zip(missing, labels(missing), strict=True))
        pytest.skip(f"no {', '.join(missing)} namespace here: {why}")
    if root and not SUPPORT.setuid:
        pytest.skip(f"cannot switch to a function uid: {reasons.get('unprivileged user', 'not root')}")
    if cgroup and SUPPORT.cgroup is None:
        pytest.skip(f"no usable memory cgroup: {reasons.get('memory limit', 'unknown')}")


def labels(namespaces: list[str]) -> list[str]:
    controls = {"pid": CONTROLS[1], "mount": CONTROLS[2], "net": CONTROLS[3], "uts": CONTROLS[4]}
    return [controls.get(ns, ns) for ns in namespaces]


@dataclasses.dataclass
class Run:
    pid: int
    """The process that called enter_sandbox (the waiter when there is a pid namespace)."""
    facts: dict[str, Any]
    exit_code: int


class Sandboxes:
    """Forks sandboxed children and makes sure every one of them is reaped."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def start(
        self,
        spec: SandboxSpec,
        probe: Callable[[], dict[str, Any]],
        support: HostSupport = SUPPORT,
        *,
        before: Callable[[], None] | None = None,
        after: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        """Fork; the child enters the sandbox, writes probe() as JSON, runs ``after``, exits 0 (or
        facts["exit"]). Returns (pid, read end of the report pipe)."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                os.close(read_fd)
                try:
                    if before is not None:
                        before()
                    enter_sandbox(spec, support)
                    facts = probe()
                except BaseException:
                    facts = {"error": traceback.format_exc()}
                data = json.dumps(facts).encode() + b"\n"
                while data:
                    data = data[os.write(write_fd, data) :]
                if after is not None:
                    after()
                code = int(facts.get("exit", 0))
            finally:
                os._exit(code)
        os.close(write_fd)
        self.pids.append(pid)
        return pid, read_fd

    def read_report(self, pid: int, read_fd: int) -> dict[str, Any]:
        data = b""
        deadline = time.monotonic() + TIMEOUT_S
        with open(read_fd, "rb", buffering=0) as pipe:
            while not data.endswith(b"\n"):
                ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    self.kill(pid)
                    pytest.fail("the sandboxed child did not report in time")
                chunk = pipe.read(65536)
                if not chunk:
                    break
                data += chunk
        if not data:
            pytest.fail(f"the sandboxed child died without reporting (exit {self.wait(pid)})")
        facts: dict[str, Any] = json.loads(data)
        assert "error" not in facts, facts["error"]
        return facts

    def wait(self, pid: int) -> int:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                self.kill(pid)
                pytest.fail("the sandboxed child did not exit in time")
            time.sleep(0.005)

    def kill(self, pid: int) -> None:
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                target()

    def run(
        self,
        spec: SandboxSpec,
        probe: Callable[[], dict[str, Any]],
        support: HostSupport = SUPPORT,
        *,
        before: Callable[[], None] | None = None,
    ) -> Run:
        pid, read_fd = self.start(spec, probe, support, before=before)
        facts = self.read_report(pid, read_fd)
        return Run(pid, facts, self.wait(pid))

    def close(self) -> None:
        for pid in list(self.pids):
            self.kill(pid)
            os.waitpid(pid, 0)
        self.pids.clear()


@pytest.fixture
def sandboxes() -> Iterator[Sandboxes]:
    runner = Sandboxes()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="module")
def cgroups() -> Iterator[Callable[[str, float], InstanceCgroup]]:
    created: list[InstanceCgroup] = []

    def make(name: str, memory_mb: float) -> InstanceCgroup:
        cgroup = InstanceCgroup.create(SUPPORT, name, memory_mb)
        assert cgroup is not None
        created.append(cgroup)
        return cgroup

    try:
        yield make
    finally:
        for cgroup in created:
            cgroup.remove()
        cleanup_cgroup_base(SUPPORT)


@pytest.fixture(autouse=True)
def removable_tmp_path(tmp_path: Path) -> Iterator[None]:
    """prepare_code_dir leaves 0500 directories owned by a function uid; remove them while we can."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "handler.py").write_text("def handle(event):\n    return event\n")
    return code


def spec_for(code: Path, **changes: Any) -> SandboxSpec:
    return SandboxSpec(name=changes.pop("name", "inst-1"), code_dir=code, **changes)


def attempt(action: Callable[[], Any]) -> str:
    """'ok' or the name of the exception ``action`` raised."""
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


# ----------------------------------------------------------------------------------------------------------


def test_probe_reports_every_control_and_warns_for_each_missing_one() -> None:
    rows = SUPPORT.enforcement()
    assert [control for control, _ in rows] == list(CONTROLS)
    missing = [how for _, how in rows if how.startswith("not enforced")]
    assert len(SUPPORT.warnings) == len(missing)
    assert SUPPORT.namespaces <= {"pid", "mount", "net", "uts", "ipc"}
    if SUPPORT.cgroup is not None:
        assert SUPPORT.cgroup_base is not None
        assert SUPPORT.cgroup_base.name == f"strato-{os.getpid()}"
        assert SUPPORT.cgroup_base.parent.is_dir()
    assert probe_host() is SUPPORT


def test_nothing_supported_warns_for_every_control_except_the_process_group() -> None:
    rows = dict(NOTHING.enforcement())
    assert not rows["process group"].startswith("not enforced")
    assert len(NOTHING.warnings) == len(CONTROLS) - 1
    for control in CONTROLS[1:]:
        assert rows[control].startswith("not enforced: ")
        assert any(warning.startswith(control) for warning in NOTHING.warnings)
    assert InstanceCgroup.create(NOTHING, "x", 64) is None


def test_degraded_sandbox_still_isolates_tmp_and_limits_address_space(
    sandboxes: Sandboxes, code_dir: Path
) -> None:
    spec = spec_for(code_dir, name="degraded", uid=function_uid(3), memory_mb=128)

    def probe() -> dict[str, Any]:
        tmp = os.environ["TMPDIR"]
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        core = resource.getrlimit(resource.RLIMIT_CORE)
        return {
            "tmp": tmp,
            "mode": mode,
            "tempfile": tempfile.gettempdir(),
            "as": soft,
            "core": list(core),
            "uid": os.getuid(),
            "pid": os.getpid(),
            "pgrp": os.getpgrp(),
            "cwd": os.getcwd(),
        }

    try:
        run = sandboxes.run(spec, probe, NOTHING)
        facts = run.facts
        assert run.exit_code == 0
        assert facts["pid"] == run.pid  # no pid namespace, no waiter
        assert facts["pgrp"] == run.pid
        assert Path(facts["tmp"]).name.startswith("strato-degraded-")
        assert facts["tempfile"] == facts["tmp"]
        assert facts["mode"] == 0o700
        assert facts["uid"] == os.getuid()  # NOTHING says setuid does not work, so the uid is kept
        assert facts["core"] == [0, 0]
        assert 128 * 2**20 < facts["as"] < 64 * 2**30
        assert facts["cwd"] == str(code_dir)
        assert Path(facts["tmp"]).is_dir()
    finally:
        remove_private_tmp("degraded")
    assert not list(Path(tempfile.gettempdir()).glob("strato-degraded-*"))


@pytest.mark.parametrize("sigchld", ["default", "ignored"])
def test_pid_namespace_and_waiter_exit_code(sandboxes: Sandboxes, code_dir: Path, sigchld: str) -> None:
    needs("pid", "mount")

    def before() -> None:
        if sigchld == "ignored":  # the waiter must still see the instance's status
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def probe() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "procs": sorted(name for name in os.listdir("/proc") if name.isdigit()),
            "sigchld_ignored": signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN,
            "exit": 7,
        }

    test_pid = os.getpid()
    run = sandboxes.run(spec_for(code_dir), probe, before=before)
    assert run.facts["pid"] == 1
    assert run.facts["ppid"] == 0  # the waiter lives outside the namespace
    assert run.facts["procs"] == ["1"]
    assert str(test_pid) not in run.facts["procs"]
    assert run.exit_code == 7  # the waiter passes the instance's exit code on
    assert run.facts["sigchld_ignored"] == (sigchld == "ignored")  # the instance keeps its setting


def test_process_group_signal_forwarding_and_parent_death(sandboxes: Sandboxes, code_dir: Path) -> None:
    needs("pid", "mount")
    go_read, go_write = os.pipe()

    def wait_for_go() -> None:
        os.read(go_read, 1)

    def probe() -> dict[str, Any]:
        return {"pid": os.getpid()}

    # SIGTERM to the waiter reaches the instance (pid 1 ignores signals it has no handler for otherwise).
    waiter, report = sandboxes.start(spec_for(code_dir), probe, after=lambda: time.sleep(30))
    sandboxes.read_report(waiter, report)
    assert os.getpgid(waiter) == waiter
    assert os.getsid(waiter) == waiter
    instance = instance_of(waiter)
    assert os.getpgid(instance) == waiter
    os.kill(waiter, signal.SIGTERM)
    assert sandboxes.wait(waiter) == 128 + signal.SIGTERM

    # When the waiter dies the instance gets SIGKILL (parent-death signal).
    waiter, report = sandboxes.start(spec_for(code_dir), probe, after=wait_for_go)
    sandboxes.read_report(waiter, report)
    instance = instance_of(waiter)
    os.kill(waiter, signal.SIGKILL)
    assert sandboxes.wait(waiter) == -signal.SIGKILL
    assert gone(instance)
    os.close(go_read)
    os.close(go_write)


def instance_of(waiter: int) -> int:
    """The host pid of the waiter's only child, the instance."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == waiter:
                children.append(int(entry.name))
    assert len(children) == 1
    return children[0]


def gone(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def test_hostname_and_private_tmp(sandboxes: Sandboxes, code_dir: Path) -> None:
    needs("uts", "mount")
    marker = f"strato-test-{os.getpid()}-{time.monotonic_ns()}"

    def probe() -> dict[str, Any]:
        Path("/tmp", marker).write_text("private")
        fs = os.statvfs("/tmp")
        return {
            "hostname": socket.gethostname(),
            "tmpdir": os.environ["TMPDIR"],
            "tmp": sorted(os.listdir("/tmp")),
            "tmp_mb": fs.f_blocks * fs.f_frsize / 2**20,
            "tmp_mode": stat.S_IMODE(os.stat("/tmp").st_mode),
        }

    host_name = socket.gethostname()
    run = sandboxes.run(spec_for(code_dir, name="fn-7-abc", tmp_size_mb=16), probe)
    assert run.facts["hostname"] == "fn-7-abc"
    assert socket.gethostname() == host_name
    assert run.facts["tmpdir"] == "/tmp"
    assert marker in run.facts["tmp"]
    assert not Path("/tmp", marker).exists()
    assert run.facts["tmp_mb"] == pytest.approx(16, abs=1)
    assert run.facts["tmp_mode"] == 0o1777


def make_state(tmp_path: Path) -> tuple[Path, Path]:
    """A server state directory with two functions' code and a root-only token."""
    state = tmp_path / "state"
    for function in ("a", "b"):
        (state / "functions" / function).mkdir(parents=True)
        (state / "functions" / function / "handler.py").write_text(f"NAME = {function!r}\n")
    token = state / "token"
    token.write_text("secret")
    token.chmod(0o600)
    return state, state / "functions" / "a"


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory that the /tmp and /dev/shm overlays do not cover, so hiding is exercised on its own."""
    for candidate in ("/var/tmp", "/run"):
        if os.access(candidate, os.W_OK):
            path = Path(tempfile.mkdtemp(prefix="strato-isolation-test-", dir=candidate))
            break
    else:
        pytest.skip("no writable directory outside /tmp and /dev/shm")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("layout", ["under-tmp", "outside-tmp"])
def test_the_server_state_shows_only_the_own_code_read_only(
    sandboxes: Sandboxes, request: pytest.FixtureRequest, layout: str
) -> None:
    needs("mount")
    base = request.getfixturevalue("tmp_path" if layout == "under-tmp" else "outside_tmp")
    state, code = make_state(base)

    def probe() -> dict[str, Any]:
        return {
            "state": sorted(os.listdir(state)),
            "functions": sorted(os.listdir(state / "functions")),
            "other": os.path.exists(state / "functions" / "b"),
            "token": attempt(lambda: (state / "token").read_text()),
            "code": (code / "handler.py").read_text(),
            "write_code": attempt(lambda: (code / "new.py").write_text("x")),
            "cwd": os.getcwd(),
        }

    run = sandboxes.run(spec_for(code), probe)
    assert run.facts["state"] == ["functions"]
    assert run.facts["functions"] == ["a"]
    assert run.facts["other"] is False
    assert run.facts["token"] == "FileNotFoundError"
    assert run.facts["code"] == "NAME = 'a'\n"
    assert run.facts["write_code"] == "OSError"  # EROFS, even for root
    assert run.facts["cwd"] == str(code)
    assert (state / "functions" / "b" / "handler.py").exists()  # the host view is unchanged
    assert not (code / "new.py").exists()


def test_only_the_code_of_the_host_tree_is_in_the_root(sandboxes: Sandboxes, outside_tmp: Path) -> None:
    needs("mount")
    state, _ = make_state(outside_tmp)
    code = outside_tmp / "code"
    code.mkdir()
    (code / "handler.py").write_text("X = 1\n")

    def probe() -> dict[str, Any]:
        return {
            "code": (code / "handler.py").read_text(),
            "write_code": attempt(lambda: (code / "new.py").write_text("x")),
            "base": sorted(os.listdir(outside_tmp)),
            "state": attempt(lambda: os.listdir(state)),
            "root": sorted(os.listdir("/")),
            "checkout": sorted(os.listdir(Path(strato.__file__).resolve().parents[2])),
            "write_root": attempt(lambda: Path("/planted").write_text("x")),
            "var_tmp": attempt(lambda: Path("/var/tmp/mark").write_text("x")),
            "etc": sorted(os.listdir("/etc")),
            "dev_null": attempt(lambda: Path("/dev/null").write_text("x")),
            "urandom": len(Path("/dev/urandom").open("rb").read(8)),
        }

    run = sandboxes.run(spec_for(code), probe)
    assert run.facts["code"] == "X = 1\n"
    assert run.facts["write_code"] == "OSError"
    assert run.facts["base"] == ["code"]  # the server's state next to it does not exist in there
    assert run.facts["state"] == "FileNotFoundError"
    skeleton = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"} | {
        "etc",
        "dev",
        "proc",
        "tmp",
        "var",
        "run",
    }
    holders = {Path(path).parts[1] for path in (*runtime_dirs(), str(outside_tmp))}
    assert set(run.facts["root"]) <= skeleton | holders
    assert ".git" not in run.facts["checkout"]  # only strato's own source directory was bound
    assert run.facts["write_root"] == "OSError"  # the root itself is read-only
    assert run.facts["var_tmp"] == "ok" and not Path("/var/tmp/mark").exists()
    assert "shadow" not in run.facts["etc"] and "passwd" in run.facts["etc"]
    assert run.facts["dev_null"] == "ok" and run.facts["urandom"] == 8
    assert not (code / "new.py").exists()


def test_dropped_uid_cannot_read_root_files(sandboxes: Sandboxes, tmp_path: Path) -> None:
    needs("mount", root=True)
    _, code = make_state(tmp_path)
    uid = function_uid(5)
    prepare_code_dir(code, uid)
    assert code.stat().st_uid == uid
    assert stat.S_IMODE(code.stat().st_mode) == 0o500
    assert stat.S_IMODE((code / "handler.py").stat().st_mode) == 0o400
    # A root-only file that stays visible (the code directory is not hidden): permissions alone must stop it.
    root_only = code / "root-only.txt"
    root_only.write_text("root")
    root_only.chmod(0o600)

    def probe() -> dict[str, Any]:
        status = Path("/proc/self/status").read_text()
        return {
            "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
            "groups": os.getgroups(),
            "no_new_privs": "NoNewPrivs:\t1" in status,
            "root_only": attempt(root_only.read_text),
            "code": (code / "handler.py").read_text(),
            "tmp_write": attempt(lambda: Path("/tmp/mine").write_text("x")),
        }

    run = sandboxes.run(spec_for(code, uid=uid), probe)
    assert run.facts["ids"] == [uid, uid, uid, uid]
    assert run.facts["groups"] == []
    assert run.facts["no_new_privs"] is True
    assert run.facts["root_only"] == "PermissionError"
    assert run.facts["code"] == "NAME = 'a'\n"
    assert run.facts["tmp_write"] == "ok"


def test_permissions_hide_the_token_without_a_mount_namespace(sandboxes: Sandboxes, tmp_path: Path) -> None:
    needs(root=True)
    state, code = make_state(tmp_path)
    uid = function_uid(6)
    prepare_code_dir(code, uid)
    # Without a mount namespace the function reaches its code through the real path, so the directories
    # above it must be traversable (not listable); pytest's own 0700 directories get that temporarily.
    modes = {d: d.stat().st_mode for d in (tmp_path, state, state / "functions", *tmp_path.parents)}
    for directory, mode in modes.items():
        directory.chmod(mode | 0o111)
    support = dataclasses.replace(SUPPORT, namespaces=SUPPORT.namespaces - {"mount"}, warnings=())

    def probe() -> dict[str, Any]:
        return {
            "token": attempt((state / "token").read_text),
            "code": (code / "handler.py").read_text(),
            "tmpdir": os.environ["TMPDIR"],
            "tmp_owner": os.stat(os.environ["TMPDIR"]).st_uid,
        }

    try:
        run = sandboxes.run(spec_for(code, name="noms", uid=uid), probe, support)
        assert run.facts["token"] == "PermissionError"
        assert run.facts["code"] == "NAME = 'a'\n"
        assert run.facts["tmp_owner"] == uid
        assert any("mount namespace" in warning for warning in support.warnings)
    finally:
        remove_private_tmp("noms")
        for directory, mode in modes.items():
            directory.chmod(stat.S_IMODE(mode))


@pytest.mark.parametrize("network", [False, True])
def test_network_namespace(sandboxes: Sandboxes, code_dir: Path, network: bool) -> None:
    needs("net")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def probe() -> dict[str, Any]:
        def connect() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass

        return {"connect": attempt(connect)}

    try:
        run = sandboxes.run(spec_for(code_dir, network=network), probe)
    finally:
        listener.close()
    if network:
        assert run.facts["connect"] == "ok"
    else:
        # Its own loopback is up but nothing listens there; the host's 127.0.0.1 is out of reach.
        assert run.facts["connect"] == "ConnectionRefusedError"


def test_inherited_descriptors_keep_working(sandboxes: Sandboxes, code_dir: Path) -> None:
    ours, theirs = socket.socketpair()

    def probe() -> dict[str, Any]:
        theirs.sendall(b"hello from " + str(os.getpid()).encode())
        return {"reply": theirs.recv(100).decode()}

    try:
        pid, report = sandboxes.start(spec_for(code_dir), probe)
        assert ours.recv(100).startswith(b"hello from ")
        ours.sendall(b"pong")
        assert sandboxes.read_report(pid, report)["reply"] == "pong"
        assert sandboxes.wait(pid) == 0
    finally:
        ours.close()
        theirs.close()


def test_memory_cgroup_kills_an_instance_over_its_limit(
    sandboxes: Sandboxes, code_dir: Path, cgroups: Callable[[str, float], InstanceCgroup]
) -> None:
    needs(cgroup=True)
    small = cgroups("small-ok", 64)
    hog = cgroups("hog", 64)

    def use(mb: int) -> Callable[[], dict[str, Any]]:
        def probe() -> dict[str, Any]:
            block = b"\x01" * (mb * 2**20)  # written, so every page is really charged
            return {"kept": len(block), "cgroup": Path("/proc/self/cgroup").read_text()}

        return probe

    run = sandboxes.run(spec_for(code_dir, name="small-ok", cgroup_procs=small.procs_files), use(10))
    assert run.exit_code == 0
    assert run.facts["kept"] == 10 * 2**20
    assert small.path.name in run.facts["cgroup"]
    assert small.usage_bytes() >= 0
    assert not small.oom_killed()

    pid, report = sandboxes.start(spec_for(code_dir, name="hog", cgroup_procs=hog.procs_files), use(256))
    with open(report, "rb") as pipe:
        assert pipe.read() == b""  # killed before it could report
    code = sandboxes.wait(pid)
    assert code in (128 + signal.SIGKILL, -signal.SIGKILL)
    assert hog.oom_killed()


def test_memory_cgroup_remove_kills_leftovers_and_is_idempotent(
    sandboxes: Sandboxes, code_dir: Path, cgroups: Callable[[str, float], InstanceCgroup]
) -> None:
    needs(cgroup=True)
    cgroup = cgroups("leftover", 64)
    assert (cgroup.path / "memory.limit_in_bytes").exists() or (cgroup.path / "memory.max").exists()
    pid, report = sandboxes.start(
        spec_for(code_dir, name="leftover", cgroup_procs=cgroup.procs_files),
        lambda: {"ok": True},
        after=lambda: time.sleep(30),
    )
    sandboxes.read_report(pid, report)
    assert cgroup.pids()
    cgroup.remove()
    assert not cgroup.path.exists()
    assert sandboxes.wait(pid) in (-signal.SIGKILL, 128 + signal.SIGKILL)
    cgroup.remove()  # already gone: no error


def test_a_step_that_should_work_but_fails_raises_sandbox_error(tmp_path: Path) -> None:
    spec = SandboxSpec(name="bad", code_dir=tmp_path, cgroup_procs=(tmp_path / "no" / "cgroup.procs",))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        message = "returned"
        try:
            enter_sandbox(spec, NOTHING)
        except SandboxError as exc:
            message = str(exc)
        finally:
            os.write(write_fd, message.encode()[:1000])
            os._exit(0)
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "join cgroup" in message
    assert "No such file or directory" in message


def cgroup_dir(path: Path, controllers: str, subtree: str) -> Path:
    path.mkdir(parents=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text(subtree + "\n")
    return path


def test_cgroup_v2_base_goes_where_memory_can_be_enabled(tmp_path: Path) -> None:
    # No v2 memory controller may exist on the test host, so the decision is checked on plain files.
    from strato.faas.live.isolation import _v2_base_parent

    root = cgroup_dir(tmp_path / "root", "cpu memory pids", "")
    assert _v2_base_parent(root, root) == root  # the root cgroup may enable memory itself
    service = cgroup_dir(root / "service", "memory pids", "memory")
    assert _v2_base_parent(service, root) == service  # memory already enabled below us
    leaf = cgroup_dir(service / "server", "memory pids", "")
    assert _v2_base_parent(leaf, root) == service  # we hold processes: next to us, not below
    bare = cgroup_dir(root / "other", "pids", "")
    assert "not delegated" in str(_v2_base_parent(bare, root))


def test_spec_and_uid_validation() -> None:
    with pytest.raises(SandboxError):
        SandboxSpec(name="bad name", code_dir=Path("/"))
    with pytest.raises(SandboxError):
        SandboxSpec(name="x" * 64, code_dir=Path("/"))
    assert function_uid(0) == FUNCTION_UID_BASE
    assert function_uid(12) == FUNCTION_UID_BASE + 12
    with pytest.raises(SandboxError):
        function_uid(-1)


def test_prepare_code_dir_is_a_no_op_without_a_uid(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("")
    before = (tmp_path / "f.py").stat()
    prepare_code_dir(tmp_path, None)
    after = (tmp_path / "f.py").stat()
    assert (before.st_uid, before.st_mode) == (after.st_uid, after.st_mode)
