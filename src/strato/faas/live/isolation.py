"""Isolation of one live function instance: namespaces, an own root, cgroups, private /tmp, a dropped uid.

:func:`enter_sandbox` runs inside the freshly forked instance process, before the handler is imported.
Every control is applied only where :func:`probe_host` found that it works; everything else is reported
as a warning (:attr:`HostSupport.warnings`) so the server can print it. What is enforced where:

========================  =========================================  ==================================
control                   root, namespaces and a cgroup available    degraded
========================  =========================================  ==================================
process group             own session and process group (setsid)     same: always enforced
pid namespace             instance is pid 1, sees no host process,   not enforced: host processes are
                          dies with its waiter                       visible
mount namespace + /tmp    private tmpfs /tmp and /dev/shm, own IPC   private 0700 TMPDIR only; /tmp and
                          namespace                                  /dev/shm are shared
network namespace         own namespace with only loopback (unless   not enforced: host network
                          the function asks for network)
uts namespace             hostname = instance id                     not enforced: host hostname
memory limit              per-instance cgroup: v1 limit + memsw, or  RLIMIT_AS = memory + headroom
                          v2 memory.max + swap.max 0; OOM detected   (address space, not memory)
process limit             per-instance pids cgroup (pids.max)        not enforced
unprivileged user         per-function uid/gid, no groups,           not enforced: server's user
                          no_new_privs                               (no_new_privs still set)
host files hidden         an own read-only root: the runtime, a few  file permissions only (root can
                          /etc files, safe devices, private /tmp,    drop uid), else not enforced
                          /var/tmp, /dev/shm, own code read-only
========================  =========================================  ==================================

Core dumps are always disabled (RLIMIT_CORE 0) and the instance gets SIGKILL when its parent dies
(PR_SET_PDEATHSIG; note the kernel fires it when the creating *thread* exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from strato.errors import StratoError


class SandboxError(StratoError):
    """An isolation step that the host claimed to support failed (the instance cannot start)."""


FUNCTION_UID_BASE = 200_000
"""Function uids start far above the ranges distributions hand out to people and services."""

NAMESPACES = ("pid", "mount", "net", "uts", "ipc")

CONTROLS = (
    "process group",
    "pid namespace",
    "mount namespace + private /tmp",
    "network namespace",
    "uts namespace",
    "memory limit",
    "unprivileged user",
    "process limit",
    "host files hidden",
)

THREAD_RESERVE_MB = 72
"""A thread's default stack (8 MiB) and a malloc arena (64 MiB) as the RLIMIT_AS fallback counts them."""
AS_HEADROOM_MB = 256
"""Extra address space allowed on top of the memory limit in the RLIMIT_AS fallback.

RLIMIT_AS caps *reserved* virtual memory, not used memory, and an interpreter reserves much more than it
touches: each thread stack reserves 8 MiB and each glibc malloc arena up to 64 MiB. The fallback therefore
allows the address space already mapped when the sandbox is entered (the interpreter and whatever the
template preloaded) + the function's memory + this headroom for a few threads and arenas. It is a coarse
guard against runaway allocation, not a memory limit; only a cgroup limits resident memory.
"""

_CLONE_FLAGS = {
    "mount": 0x00020000,  # CLONE_NEWNS
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "pid": 0x20000000,
    "net": 0x40000000,
}
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,63}")

# Looked up at import so that nothing has to be dlopen'ed in a freshly forked child. A libc without these
# calls (not Linux) leaves them None: every probe then fails and says why, and importing still works.
_libc = ctypes.CDLL(None, use_errno=True)


def _libc_function(name: str, argtypes: list[Any] | None) -> Any:
    function = getattr(_libc, name, None)
    if function is not None:
        function.argtypes = argtypes
    return function


_unshare_call = _libc_function("unshare", [ctypes.c_int])
_mount_call = _libc_function(
    "mount", [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
)
_prctl_call = _libc_function(
    "prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
)


def _call(function: Any, what: str, *args: Any) -> None:
    if function is None:
        raise OSError(errno.ENOSYS, f"{what}: not available on this system")
    if function(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    _call(_unshare_call, "unshare", flags)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _call(_mount_call, f"mount {target}", enc(source), enc(target), enc(fstype), flags, enc(data))


def _prctl(option: int, value: int) -> None:
    _call(_prctl_call, "prctl", option, value, 0, 0, 0)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn an OS failure into a SandboxError that names the step and the errno text."""
    try:
        yield
    except OSError as exc:
        raise SandboxError(f"sandbox step '{what}' failed: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------------------
# What the host supports
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSupport:
    root: bool
    namespaces: frozenset[str]
    """Which of ``pid``, ``mount``, ``net``, ``uts``, ``ipc`` actually work here."""
    cgroup: str | None
    """``"v1"``, ``"v2"`` or None (no usable memory controller)."""
    cgroup_base: Path | None
    """Directory under which per-instance memory cgroups are created (lazily, by InstanceCgroup.create)."""
    setuid: bool
    pids_base: Path | None = None
    """Directory for per-instance pids cgroups (on v2 the same as ``cgroup_base``); None: no task limit."""
    warnings: tuple[str, ...] = ()
    """One sentence per control that is not enforced. Left empty, it is filled from the other fields, so a
    HostSupport never hides a missing control."""
    reasons: tuple[tuple[str, str], ...] = ()
    """(control, why the probe found it unusable): details that make the warnings actionable."""

    def __post_init__(self) -> None:
        if not self.warnings:
            found = tuple(
                f"{control}: {how}." for control, how in self.enforcement() if how.startswith("not enforced")
            )
            object.__setattr__(self, "warnings", found)

    def to_json(self) -> dict[str, Any]:
        """A form that survives JSON, so a freshly spawned instance need not probe the host again."""
        return {
            "root": self.root,
            "namespaces": sorted(self.namespaces),
            "cgroup": self.cgroup,
            "cgroup_base": str(self.cgroup_base) if self.cgroup_base else None,
            "setuid": self.setuid,
            "pids_base": str(self.pids_base) if self.pids_base else None,
            "warnings": list(self.warnings),
            "reasons": [list(pair) for pair in self.reasons],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostSupport:
        return cls(
            root=bool(data["root"]),
            namespaces=frozenset(data["namespaces"]),
            cgroup=data["cgroup"],
            cgroup_base=Path(data["cgroup_base"]) if data["cgroup_base"] else None,
            setuid=bool(data["setuid"]),
            pids_base=Path(data["pids_base"]) if data.get("pids_base") else None,
            warnings=tuple(data["warnings"]),
            reasons=tuple((str(a), str(b)) for a, b in data["reasons"]),
        )

    def enforcement(self) -> list[tuple[str, str]]:
        """(control, how it is enforced here or 'not enforced: why') for every control in CONTROLS."""
        ns = self.namespaces
        reasons = dict(self.reasons)
        unknown = "it is not available here" if self.root else "the server does not run as root"

        def row(control: str, enforced: bool, how: str, consequence: str, why: str = "") -> tuple[str, str]:
            if enforced:
                return control, how
            return control, f"not enforced: {why or reasons.get(control, unknown)}; {consequence}"

        if "ipc" in ns:
            ipc = "and an own IPC namespace (System V IPC, POSIX message queues)"
        else:
            ipc = f"but System V IPC and POSIX message queues are shared ({reasons.get('ipc', unknown)})"
        if self.cgroup is not None:
            files = (
                "memory.limit_in_bytes and memory.memsw.limit_in_bytes (no swapping around the limit)"
                if self.cgroup == "v1"
                else "memory.max and memory.swap.max 0"
            )
            memory = f"cgroup {self.cgroup} memory controller under {self.cgroup_base}: {files}; OOM is seen"
        else:
            memory = ""
        if "mount" in ns:
            hidden = (
                "an own root: a read-only tmpfs holding only the runtime (the interpreter's and the system's "
                "directories, read-only), a few /etc files, the safe devices, private /tmp, /var/tmp and "
                "/dev/shm, and the function's own code, read-only"
            )
            if self.setuid:
                hidden += "; file permissions (per-function uid, root-only token) apply as well"
        else:
            hidden = (
                "by file permissions only: code directories belong to their function's uid (0500/0400) and "
                "the token is root-only 0600; no mount namespace hides the directories"
            )
        return [
            row("process group", True, "own session and process group (setsid): signalled as a whole", ""),
            row(
                "pid namespace",
                "pid" in ns,
                "own pid namespace: the instance is pid 1, sees no other process and dies with its waiter",
                "instances see the host's processes",
            ),
            row(
                "mount namespace + private /tmp",
                "mount" in ns,
                f"own mount namespace with private tmpfs /tmp and /dev/shm, {ipc}",
                "each instance gets a private 0700 TMPDIR, but /tmp and /dev/shm are shared",
            ),
            row(
                "network namespace",
                "net" in ns,
                "own network namespace with only a loopback device, unless the function asks for network",
                "instances share the host network, including the server's loopback ports",
            ),
            row(
                "uts namespace",
                "uts" in ns,
                "own uts namespace: the hostname is the instance id",
                "instances see the host name",
            ),
            row(
                "memory limit",
                self.cgroup is not None,
                memory,
                f"only an RLIMIT_AS cap (memory + {AS_HEADROOM_MB} MiB headroom) applies, which limits "
                "address space rather than memory and cannot tell an OOM kill from a crash",
            ),
            row(
                "unprivileged user",
                self.setuid,
                f"a per-function uid/gid ({FUNCTION_UID_BASE} + index) without supplementary groups, "
                "with no_new_privs",
                "instances run as the server's own user (no_new_privs is still set)",
            ),
            row(
                "process limit",
                self.cgroup is not None and self.pids_base is not None,
                "a per-instance pids cgroup (pids.max): processes and threads beyond the limit fail to "
                "start; orphans are reaped by the instance (pid 1) and the gateway kills processes that "
                "outlive their invocation",
                "a function can start processes until the host's limits",
                why=reasons.get("process limit", "no cgroup pids controller is usable here"),
            ),
            row(
                "host files hidden",
                "mount" in ns or self.setuid,
                hidden,
                "instances can read other functions' code and the server token",
                why="there is neither a mount namespace nor a per-function uid",
            ),
        ]


def _probe_in_child(action: Callable[[], None]) -> str | None:
    """Run ``action`` in a throw-away child; return None when it worked, else why it did not."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        message = b""
        try:
            os.close(read_fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the pid probe must be able to wait for its child
            action()
        except BaseException as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = (text or type(exc).__name__).encode()
        finally:
            try:
                os.write(write_fd, message[:4000])
            finally:
                os._exit(0 if not message else 1)
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        text = pipe.read().decode(errors="replace")
    try:
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:  # SIGCHLD ignored here: the kernel reaped it, and its report has to do
        code = 1 if text else 0
    if code == 0 and not text:
        return None
    return text or f"the probe process ended with status {code}"


def _probe_namespace(kind: str) -> None:
    _unshare(_CLONE_FLAGS[kind])
    if kind == "pid":
        # The new namespace only applies to children, so only a child can show that it works.
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the grandchild
            os._exit(0 if os.getpid() == 1 else 1)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(errno.EINVAL, "a child of unshare(CLONE_NEWPID) is not pid 1")
    elif kind == "mount":
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
        _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m")
    elif kind == "uts":
        socket.sethostname("strato-probe")


def _probe_setuid() -> None:
    os.setgroups([])
    os.setgid(FUNCTION_UID_BASE)
    os.setuid(FUNCTION_UID_BASE)
    if os.getuid() != FUNCTION_UID_BASE:
        raise OSError(errno.EPERM, "setuid did not change the uid")


def _unescape_mount_path(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root within the filesystem, mount point, fstype, super options) from /proc/self/mountinfo."""
    result = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) >= 5 and len(rest) >= 3:
                result.append(
                    (_unescape_mount_path(fields[3]), _unescape_mount_path(fields[4]), rest[0], rest[2])
                )
    return result


def _own_cgroups() -> tuple[dict[str, str], str | None]:
    """Our v1 cgroup path per controller, and our v2 path (the ``0::`` line)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    with open("/proc/self/cgroup") as lines:
        for line in lines:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            if parts[0] == "0" and parts[1] == "":
                v2 = parts[2]
            for controller in parts[1].split(","):
                if controller:
                    v1[controller] = parts[2]
    return v1, v2


def _inside_mount(mount_root: str, mount_point: str, cgroup_path: str) -> Path | None:
    """Where cgroup ``cgroup_path`` appears below a mount of that hierarchy rooted at ``mount_root``."""
    if mount_root == "/":
        relative = cgroup_path.lstrip("/")
    elif cgroup_path == mount_root or cgroup_path.startswith(mount_root.rstrip("/") + "/"):
        relative = cgroup_path[len(mount_root) :].lstrip("/")
    else:
        return None
    return Path(mount_point) / relative if relative else Path(mount_point)


def _probe_cgroup() -> tuple[str | None, Path | None, str]:
    """(version, base directory, why not) for the memory controller."""
    try:
        mounts = _mounts()
        v1_paths, v2_path = _own_cgroups()
    except OSError as exc:
        return None, None, f"cannot read the cgroup setup ({exc.strerror})"
    why = "no cgroup memory controller is mounted"
    memory_path = v1_paths.get("memory")
    for root, point, fstype, options in mounts:
        if fstype != "cgroup" or "memory" not in options.split(",") or memory_path is None:
            continue
        own = _inside_mount(root, point, memory_path)
        if own is None or not (own / "memory.limit_in_bytes").exists():
            why = f"our memory cgroup {memory_path} is not visible under {point}"
            continue
        if not os.access(own, os.W_OK):
            return None, None, f"no write access to our memory cgroup {own} (not root?)"
        return "v1", own / f"strato-{os.getpid()}", ""
    if v2_path is not None:
        for root, point, fstype, _ in mounts:
            own = _inside_mount(root, point, v2_path) if fstype == "cgroup2" else None
            if own is not None and own.is_dir():
                found = _v2_base_parent(own, Path(point))
                if isinstance(found, Path):
                    return "v2", found / f"strato-{os.getpid()}", ""
                why = found
    return None, None, why


def _probe_pids(version: str | None, memory_base: Path | None) -> tuple[Path | None, str]:
    """(base directory, why not) for per-instance pids cgroups, which go with the memory cgroups."""
    if version is None or memory_base is None:
        return None, "there is no memory cgroup, and the task limit goes with it"
    try:
        if version == "v2":
            available = (memory_base.parent / "cgroup.controllers").read_text().split()
            if "pids" in available:
                return memory_base, ""
            return None, f"the cgroup v2 pids controller is not available in {memory_base.parent}"
        mounts = _mounts()
        pids_path = _own_cgroups()[0].get("pids")
    except OSError as exc:
        return None, f"cannot read the cgroup setup ({exc.strerror})"
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and "pids" in options.split(",") and pids_path is not None:
            own = _inside_mount(root, point, pids_path)
            if own is not None and own.is_dir() and os.access(own, os.W_OK):
                return own / f"strato-{os.getpid()}", ""
    return None, "no writable cgroup v1 pids hierarchy is mounted"


def _v2_base_parent(own: Path, mount_point: Path) -> Path | str:
    """The cgroup v2 directory to create strato-<pid> in, or why there is none.

    v2 forbids enabling a controller for the children of a cgroup that holds processes (ours holds the
    server), except at the root. So the base goes below our own cgroup only when memory is already enabled
    there (or it is the root), else next to it when the parent delegates memory to us and lets us write.
    """
    try:
        own_subtree = (own / "cgroup.subtree_control").read_text().split()
        own_available = (own / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"cannot read cgroup v2 files in {own} ({exc.strerror})"
    candidates = []
    if "memory" in own_subtree or (own == mount_point and "memory" in own_available):
        candidates.append(own)
    if own != mount_point and "memory" in own_available:
        candidates.append(own.parent)  # memory in our controllers means the parent enables it below itself
    if not candidates:
        return f"cgroup v2 is mounted but the memory controller is not delegated to {own}"
    for candidate in candidates:
        if os.access(candidate, os.W_OK):
            return candidate
    return f"no write access to cgroup {candidates[0]} (not root, or not delegated to this user)"


@functools.cache
def probe_host() -> HostSupport:
    """Find out which isolation controls work on this machine (forks a few short-lived probe children)."""
    root = os.geteuid() == 0
    labels = {
        "pid": "pid namespace",
        "mount": "mount namespace + private /tmp",
        "net": "network namespace",
        "uts": "uts namespace",
    }
    reasons: list[tuple[str, str]] = []
    working: set[str] = set()
    for kind in NAMESPACES:
        failure = _probe_in_child(functools.partial(_probe_namespace, kind))
        if failure is None:
            working.add(kind)
        else:
            reasons.append((labels.get(kind, kind), f"{kind} namespaces do not work here ({failure})"))
    setuid_failure = _probe_setuid_if_root(root)
    if setuid_failure:
        reasons.append(("unprivileged user", setuid_failure))
    version, base, why = _probe_cgroup()
    if version is None:
        reasons.append(("memory limit", why))
    pids_base, why_not_pids = _probe_pids(version, base)
    if pids_base is None:
        reasons.append(("process limit", why_not_pids))
    return HostSupport(
        root=root,
        namespaces=frozenset(working),
        cgroup=version,
        cgroup_base=base,
        setuid=root and not setuid_failure,
        pids_base=pids_base,
        reasons=tuple(reasons),
    )


def _probe_setuid_if_root(root: bool) -> str:
    if not root:
        return "the server does not run as root, so it cannot switch to per-function uids"
    failure = _probe_in_child(_probe_setuid)
    return "" if failure is None else f"switching to another uid failed ({failure})"


# --------------------------------------------------------------------------------------------------------
# Memory cgroups (parent side)
# --------------------------------------------------------------------------------------------------------


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _read_keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


class InstanceCgroup:
    """Parent side: a per-instance cgroup for memory and, where the host has the controller, for the
    number of tasks (``pids.max``: a fork bomb stops at the limit instead of filling the host)."""

    def __init__(self, path: Path, version: str, pids_path: Path | None = None) -> None:
        self.path = path
        self.version = version
        self.pids_path = pids_path
        """The pids controller's directory: the same as ``path`` on v2, another hierarchy on v1."""

    def __repr__(self) -> str:
        return f"InstanceCgroup({str(self.path)!r}, {self.version!r}, {self.pids_path!r})"

    @classmethod
    def create(
        cls, support: HostSupport, name: str, memory_mb: float, *, pids_max: int | None = None
    ) -> InstanceCgroup | None:
        """Create the cgroup ``name`` limited to ``memory_mb`` (and ``pids_max`` tasks); None when the host
        has no memory cgroup."""
        if support.cgroup is None or support.cgroup_base is None:
            return None
        if not _NAME_RE.fullmatch(name):
            raise SandboxError(f"bad cgroup name {name!r}: use letters, digits and '-'")
        if memory_mb <= 0:
            raise SandboxError(f"memory limit must be positive, got {memory_mb} MB")
        base = support.cgroup_base
        with _step(f"create cgroup {base / name}"):
            base.mkdir(exist_ok=True)  # instances may be created concurrently
            if support.cgroup == "v2":
                _enable_v2(base, ["memory", "pids"] if support.pids_base else ["memory"])
            pids_path = None
            if support.pids_base is not None:
                pids_path = support.pids_base / name
                if support.pids_base != base:
                    support.pids_base.mkdir(exist_ok=True)
            cgroup = cls(base / name, support.cgroup, pids_path)
            cgroup.remove()  # left over by an instance of the same name
            cgroup.path.mkdir()
            if pids_path is not None and pids_path != cgroup.path:
                pids_path.mkdir()
        try:
            cgroup.set_limit(memory_mb)
            if pids_max is not None:
                cgroup.set_pids(pids_max)
        except BaseException:
            cgroup.remove()
            raise
        return cgroup

    def set_pids(self, tasks: int) -> None:
        """At most ``tasks`` processes and threads, the instance's own included."""
        if self.pids_path is not None:
            with _step(f"set the task limit of {self.pids_path}"):
                (self.pids_path / "pids.max").write_text(str(tasks))

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """Where a process writes its pid to join every hierarchy of this cgroup."""
        if self.pids_path is None or self.pids_path == self.path:
            return (self.procs_file,)
        return (self.procs_file, self.pids_path / "cgroup.procs")

    def set_limit(self, memory_mb: float) -> None:
        """(Re)set the limit; a pre-created cgroup (the fork-server's zygotes) gets its function's here."""
        limit = int(memory_mb * 1024 * 1024)
        with _step(f"set the memory limit of {self.path}"):
            if self.version == "v1":
                memory = self.path / "memory.limit_in_bytes"
                memsw = self.path / "memory.memsw.limit_in_bytes"
                # memsw must stay >= the memory limit: lower the memory limit first, raise memsw first.
                order = [memory, memsw]
                if memsw.exists() and int(memsw.read_text()) < limit:
                    order = [memsw, memory]
                for file in order:
                    if file.exists():
                        file.write_text(str(limit))
            else:
                (self.path / "memory.max").write_text(str(limit))
                swap = self.path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
                group = self.path / "memory.oom.group"
                if group.exists():  # the waiter and the instance go together
                    group.write_text("1")

    @property
    def procs_file(self) -> Path:
        """cgroup.procs: the instance writes its own pid there (SandboxSpec.cgroup_procs)."""
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def usage_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.version == "v1" else "memory.current"
        with _step(f"read {self.path / name}"):
            return _read_int(self.path / name)

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of this cgroup (its memory limit was exceeded)."""
        with _step(f"read the OOM state of {self.path}"):
            if self.version == "v2":
                return _read_keyed(self.path / "memory.events").get("oom_kill", 0) > 0
            control = _read_keyed(self.path / "memory.oom_control")
            if "oom_kill" in control:  # kernels >= 4.13 count kills exactly
                return control["oom_kill"] > 0
            # Older kernels: hitting the limit while the processes are gone is the best evidence there is.
            failures = _read_int(self.path / "memory.failcnt")
            return failures > 0 and not self.pids()

    def remove(self) -> None:
        """Kill whatever is left in the cgroup and delete it; does nothing when it is already gone."""
        for path in dict.fromkeys(p for p in (self.path, self.pids_path) if p is not None):
            _remove_cgroup_dir(path)


def _remove_cgroup_dir(path: Path) -> None:
    deadline = time.monotonic() + 5.0
    while True:
        with contextlib.suppress(FileNotFoundError):
            for line in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line), signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # Killed processes leave the cgroup asynchronously; rmdir says EBUSY until they have.
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise SandboxError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
            time.sleep(0.01)


def _enable_v2(base: Path, controllers: list[str]) -> None:
    for directory in (base.parent, base):
        subtree = directory / "cgroup.subtree_control"
        enabled = subtree.read_text().split()
        for controller in controllers:
            if controller not in enabled:
                # For the parent this only happens at the root cgroup (see _v2_base_parent).
                subtree.write_text(f"+{controller}")


def cleanup_cgroup_base(support: HostSupport) -> None:
    """Remove the server's strato-<pid> cgroup directories (and any instance cgroup still in them)."""
    if support.cgroup is None:
        return
    for base in dict.fromkeys(b for b in (support.cgroup_base, support.pids_base) if b is not None):
        if base.is_dir():
            for child in base.iterdir():
                if child.is_dir():
                    _remove_cgroup_dir(child)
            _remove_cgroup_dir(base)


def reap_stale_cgroup_bases(support: HostSupport) -> list[Path]:
    """Remove the strato-<pid> directories of servers that died without cleaning up (SIGKILL, power loss).

    Their instances died with them (parent-death signals), so the directories are empty shells or hold
    only leftovers; a directory whose server still runs is left alone.
    """
    removed = []
    for base in dict.fromkeys(b for b in (support.cgroup_base, support.pids_base) if b is not None):
        if support.cgroup is None or not base.parent.is_dir():
            continue
        for sibling in base.parent.glob("strato-*"):
            pid_text = sibling.name.removeprefix("strato-")
            if sibling == base or not pid_text.isdigit() or Path(f"/proc/{pid_text}").exists():
                continue
            with contextlib.suppress(SandboxError, OSError):
                cleanup_cgroup_base(replace(support, cgroup_base=sibling, pids_base=None))
                removed.append(sibling)
    return removed


# --------------------------------------------------------------------------------------------------------
# Function code and uids
# --------------------------------------------------------------------------------------------------------


def function_uid(index: int) -> int:
    """The uid (and gid) of the function with this index."""
    if index < 0:
        raise SandboxError(f"function index must be >= 0, got {index}")
    return FUNCTION_UID_BASE + index


def prepare_code_dir(path: Path, uid: int | None) -> None:
    """Give a function's code to its uid, read-only (dirs 0500, files 0400); a no-op unless root."""
    if uid is None or os.geteuid() != 0:
        return

    def own(target: str, mode: int) -> None:
        os.chown(target, uid, uid, follow_symlinks=False)
        if not os.path.islink(target):
            os.chmod(target, mode)

    with _step(f"prepare code directory {path}"):
        own(str(path), 0o500)
        for directory, subdirs, files in os.walk(path):
            for sub in subdirs:
                own(os.path.join(directory, sub), 0o500)
            for name in files:
                own(os.path.join(directory, name), 0o400)


def remove_private_tmp(name: str) -> None:
    """Delete the private TMPDIRs of instance ``name`` (only created when there is no mount namespace)."""
    for path in Path(tempfile.gettempdir()).glob(f"strato-{name}-*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------
# Entering the sandbox (instance side)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    """Instance id (letters, digits, '-'); the hostname inside the uts namespace."""
    code_dir: Path
    """The function's own code: stays readable (read-only bind when the mount namespace works)."""
    uid: int | None = None
    """Drop to this uid and gid (same number) when root; None keeps the current user."""
    network: bool = False
    """True keeps the host network namespace."""
    tmp_size_mb: int = 64
    memory_mb: float | None = None
    """Used only for the RLIMIT_AS fallback when the instance joins no cgroup."""
    cgroup_procs: tuple[Path, ...] = ()
    """Join these cgroups (memory, pids: write the own pid) before dropping privileges."""
    cgroup_joined: bool = False
    """The process already sits in its memory cgroup (a fork-server zygote joined it ahead of time)."""
    threads: int = 1
    """Threads the instance will run; each reserves address space, which the RLIMIT_AS fallback allows."""

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise SandboxError(f"bad instance name {self.name!r}: use 1-63 letters, digits and '-'")
        if self.tmp_size_mb <= 0:
            raise SandboxError(f"tmp_size_mb must be positive, got {self.tmp_size_mb}")
        if self.uid is not None and self.uid < 0:
            raise SandboxError(f"bad uid {self.uid}")


def enter_sandbox(spec: SandboxSpec, support: HostSupport) -> None:
    """Isolate the current (freshly forked, single-threaded) process as ``spec`` says.

    With a pid namespace this forks: the calling process becomes a small waiter that never returns (it
    forwards SIGTERM/SIGINT and exits with the instance's status, 128+signal when it was killed), and only
    the instance returns from here. Inherited file descriptors stay open in both. Raises SandboxError when
    a step that ``support`` claims to work fails.
    """
    parent = os.getppid()
    with contextlib.suppress(PermissionError):  # already a group leader: it has its own group anyway
        os.setsid()
    for procs in spec.cgroup_procs:
        with _step(f"join cgroup {procs.parent}"):
            procs.write_text(str(os.getpid()))
    kinds = [k for k in NAMESPACES if k in support.namespaces and not (k == "net" and spec.network)]
    if kinds:
        flags = 0
        for kind in kinds:
            flags |= _CLONE_FLAGS[kind]
        with _step(f"unshare {', '.join(kinds)} namespaces"):
            _unshare(flags)
    waiter_alive: int | None = None
    if "pid" in kinds:
        waiter_alive = _fork_behind_waiter()
    else:
        # Without a waiter the server (or template) is the parent the instance has to die with.
        with _step("set the parent-death signal"):
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if "mount" in kinds:
        dropping = _will_drop(spec, support)
        uid = spec.uid if dropping and spec.uid is not None else 0
        _isolate_files(spec, new_proc="pid" in kinds, network=spec.network, uid=uid)
    if "net" in kinds:
        with _step("bring up the loopback device"):
            _loopback_up()
    if "uts" in kinds:
        with _step(f"set hostname {spec.name}"):
            socket.sethostname(spec.name)
    _set_rlimits(spec)
    _set_tmpdir(spec, private_mounts="mount" in kinds, drop=_will_drop(spec, support))
    with _step(f"change directory to {spec.code_dir}"):
        os.chdir(spec.code_dir)
    if _will_drop(spec, support):
        assert spec.uid is not None
        with _step(f"drop privileges to uid {spec.uid}"):
            os.setgroups([])
            os.setgid(spec.uid)
            os.setuid(spec.uid)
    with _step("set no_new_privs and the parent-death signal"):
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        # The kernel clears the parent-death signal whenever credentials change, so it is set again last.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if waiter_alive is not None:
        # The waiter may have died before the signal was armed; its pipe end then reads as end of file.
        ready, _, _ = select.select([waiter_alive], [], [], 0)
        os.close(waiter_alive)
        if ready:
            os._exit(128 + signal.SIGKILL)
    elif os.getppid() != parent:
        os._exit(128 + signal.SIGKILL)


def _will_drop(spec: SandboxSpec, support: HostSupport) -> bool:
    return spec.uid is not None and support.setuid and os.geteuid() == 0


def _exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    os._exit(128 + signum)


def _fork_behind_waiter() -> int:
    """Fork into the new pid namespace. Returns (in the instance) a pipe end that reads EOF once the
    waiter is gone; the waiter itself never returns."""
    forwarded = {signal.SIGTERM, signal.SIGINT}
    # Blocked across the fork so that a signal arriving before the waiter's forwarders exist is not lost.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    grandparent = os.getppid()
    alive_read, alive_write = os.pipe()
    # With SIGCHLD ignored (a template may do that) the kernel reaps the child and its status is lost.
    old_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        child = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGCHLD, old_sigchld)
        raise SandboxError(f"sandbox step 'fork into the pid namespace' failed: {exc.strerror}") from exc
    if child != 0:
        os.close(alive_read)
        _run_waiter(child, grandparent, old_mask)
    os.close(alive_write)
    signal.signal(signal.SIGCHLD, old_sigchld)
    with _step("set the parent-death signal"):
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # As pid 1 the instance ignores every signal it has no handler for, even SIGTERM from the server.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return alive_read


def _run_waiter(child: int, grandparent: int, mask: set[int | signal.Signals]) -> NoReturn:
    code = 1
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != grandparent:  # the parent died before the signal was armed
            os.kill(child, signal.SIGKILL)

        def forward(signum: int, frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
    finally:
        os._exit(code)


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""The host's shared libraries and tools: part of every runtime (bound read-only, or symlinked as here)."""
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC_FILES = (
    "ld.so.cache",
    "localtime",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "mime.types",
)
"""Copied into a function's /etc; with network also resolv.conf and the TLS roots (/etc/ssl)."""
_MNT_DETACH = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_umount2_call = _libc_function("umount2", [ctypes.c_char_p, ctypes.c_int])
_syscall = _libc_function("syscall", None)


@functools.cache
def runtime_dirs() -> tuple[str, ...]:
    """Where the interpreter, the standard library and installed packages (strato among them) live; the
    working directory of the server is not one of them, even when it is on ``sys.path``."""
    import strato

    candidates = {sys.base_prefix, sys.prefix, str(Path(strato.__file__).resolve().parents[1])}
    candidates.update(
        path
        for path in sys.path
        if path
        and os.path.isabs(path)
        and os.path.isdir(path)
        and os.path.realpath(path) != os.path.realpath(os.getcwd())
    )
    real = sorted({os.path.realpath(path) for path in candidates})
    return tuple(path for path in real if not any(path != other and _within(path, other) for other in real))


@functools.cache
def etc_snapshot() -> dict[str, tuple[str, bytes]]:
    """The /etc files a function gets, read once (the fork-server reads them before forking):
    name -> ("file", content) or ("link", target)."""
    found: dict[str, tuple[str, bytes]] = {}
    for name in (*ETC_FILES, "resolv.conf"):
        path = os.path.join("/etc", name)
        with contextlib.suppress(OSError):
            if os.path.islink(path):
                found[name] = ("link", os.fsencode(os.readlink(path)))
            elif os.path.isfile(path):
                with open(path, "rb") as file:
                    found[name] = ("file", file.read(1 << 20))
    return found


def _isolate_files(spec: SandboxSpec, *, new_proc: bool, network: bool, uid: int) -> None:
    """Give the instance a root of its own: an empty read-only tmpfs holding only the runtime (read-only
    binds of the interpreter's and the system's directories), a few /etc files, the safe devices, private
    /tmp, /var/tmp and /dev/shm, and its own code, read-only, at its usual path. Nothing else of the host's
    tree (the server's state, other functions, the checkout, home directories) exists in it."""
    with _step("make all mounts private"):
        # Otherwise the mounts below would propagate back to the host.
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    code_dir = os.path.realpath(spec.code_dir)
    runtime = [d for d in runtime_dirs() if os.path.isdir(d)]
    links: dict[str, str] = {}
    binds: dict[str, int] = {}
    opened: list[int] = []

    def hold(path: str, flags: int = os.O_DIRECTORY) -> int:
        # Opened before anything is covered: the staging tmpfs below may hide the path itself.
        with _step(f"open {path}"):
            descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC | flags)
        opened.append(descriptor)
        return descriptor

    try:
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                links[path] = os.readlink(path)
            elif os.path.isdir(path):
                binds[path] = hold(path)
        for path in (*runtime, code_dir):
            if not any(_within(path, done) for done in binds if done in SYSTEM_DIRS):
                binds[path] = hold(path)
        if network and os.path.isdir("/etc/ssl"):
            binds["/etc/ssl"] = hold("/etc/ssl")
        devices = {name: hold(f"/dev/{name}", 0) for name in DEVICES if os.path.exists(f"/dev/{name}")}
        host_proc = None if new_proc else hold("/proc")
        root = "/tmp"  # any existing directory will do: the old root is detached below
        with _step("mount the instance's root tmpfs"):
            _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
        _make_skeleton(root, spec, links, network=network, uid=uid)
        for name, descriptor in devices.items():
            target = f"{root}/dev/{name}"
            with _step(f"bind /dev/{name}"):
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
                _mount(f"/proc/self/fd/{descriptor}", target, None, _MS_BIND)
        for path, descriptor in sorted(binds.items(), key=lambda item: item[0].count("/")):
            target = root + path
            with _step(f"bind {path} read-only"):
                _make_path(target)
                # Through the descriptor opened before hiding: the path itself may now lead into a tmpfs.
                _mount(f"/proc/self/fd/{descriptor}", target, None, _MS_BIND | _MS_REC)
                _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        if host_proc is not None:
            with _step("bind the host's /proc (no pid namespace)"):
                _mount(f"/proc/self/fd/{host_proc}", f"{root}/proc", None, _MS_BIND | _MS_REC)
    finally:
        for descriptor in opened:
            os.close(descriptor)
    _pivot_into(root)
    if new_proc:
        with _step("mount /proc for the new pid namespace"):
            _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    with _step("make the root read-only"):
        _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _make_skeleton(root: str, spec: SandboxSpec, links: dict[str, str], *, network: bool, uid: int) -> None:
    """The directories, links and small files of the new root; private /tmp, /var/tmp and /dev/shm."""
    with _step("build the instance's root"):
        for directory in ("etc", "dev", "proc", "tmp", "var", "run"):
            os.mkdir(f"{root}/{directory}", 0o755)
        for path, target in links.items():
            os.symlink(target, root + path)
        files = {name: content for name, (kind, content) in etc_snapshot().items() if kind == "file"}
        for name, (kind, content) in etc_snapshot().items():
            if kind == "link":
                os.symlink(os.fsdecode(content), f"{root}/etc/{name}")
        if not network:
            files.pop("resolv.conf", None)
        passwd, group = "root:x:0:0:root:/:/usr/sbin/nologin\n", "root:x:0:\n"
        if uid:
            passwd += f"function:x:{uid}:{uid}:function:/tmp:/usr/sbin/nologin\n"
            group += f"function:x:{uid}:\n"
        files["passwd"], files["group"] = passwd.encode(), group.encode()
        files["hosts"] = f"127.0.0.1 localhost {spec.name}\n::1 localhost ip6-localhost\n".encode()
        files["hostname"] = spec.name.encode() + b"\n"
        for name, content in files.items():
            # Plain descriptors: a cold start pays for every Python file object made here.
            descriptor = os.open(f"{root}/etc/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(descriptor, view) :]
            finally:
                os.close(descriptor)
        for index, name in enumerate(("stdin", "stdout", "stderr")):
            os.symlink(f"/proc/self/fd/{index}", f"{root}/dev/{name}")
        os.symlink("/proc/self/fd", f"{root}/dev/fd")
        os.mkdir(f"{root}/dev/shm")
        os.mkdir(f"{root}/var/tmp")
    private = f"size={spec.tmp_size_mb}m,mode=1777"
    for target in ("/tmp", "/dev/shm"):
        with _step(f"mount a private tmpfs on {target}"):
            _mount("tmpfs", root + target, "tmpfs", _MS_NOSUID | _MS_NODEV, private)
    with _step("make /var/tmp the private /tmp"):
        # One tmpfs for both: nothing written there outlives the instance or is seen by another one.
        _mount(f"{root}/tmp", f"{root}/var/tmp", None, _MS_BIND)


def _pivot_into(root: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    with _step(f"pivot into the instance's root {root}"):
        if number is None or _syscall is None or _umount2_call is None:
            raise OSError(errno.ENOSYS, f"pivot_root is not known on {platform.machine()}")
        os.chdir(root)
        # pivot_root(".", "."): the old root ends up stacked under the new one, and is detached at once.
        if _syscall(number, b".", b".") != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        if _umount2_call(b".", _MNT_DETACH) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        os.chdir("/")


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _make_path(path: str) -> None:
    """Create the missing directories of ``path`` as 0755 (traversable by the dropped uid, whatever umask)."""
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        os.mkdir(directory)
        os.chmod(directory, 0o755)


def _loopback_up() -> None:
    # A fresh network namespace has its loopback down; handlers may still talk to themselves over it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _set_rlimits(spec: SandboxSpec) -> None:
    with _step("disable core dumps"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if not spec.cgroup_procs and not spec.cgroup_joined and spec.memory_mb is not None:
        # Each thread reserves a stack and may get its own malloc arena: address space, not memory.
        headroom_mb = AS_HEADROOM_MB + max(spec.threads - 1, 0) * THREAD_RESERVE_MB
        limit = _mapped_bytes() + int((spec.memory_mb + headroom_mb) * 1024 * 1024)
        with _step(f"limit the address space to {limit // (1024 * 1024)} MiB"):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _mapped_bytes() -> int:
    """Address space mapped right now (VmSize), i.e. the interpreter and everything preloaded."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _set_tmpdir(spec: SandboxSpec, *, private_mounts: bool, drop: bool) -> None:
    if private_mounts:
        path = "/tmp"
    else:
        with _step("create a private temporary directory"):
            path = tempfile.mkdtemp(prefix=f"strato-{spec.name}-")  # mode 0700
            if drop:
                assert spec.uid is not None
                os.chown(path, spec.uid, spec.uid)
    os.environ["TMPDIR"] = path
    # tempfile caches its directory; the fork may have inherited the server's.
    tempfile.tempdir = path


__all__ = [
    "AS_HEADROOM_MB",
    "CONTROLS",
    "FUNCTION_UID_BASE",
    "HostSupport",
    "InstanceCgroup",
    "SandboxError",
    "SandboxSpec",
    "cleanup_cgroup_base",
    "enter_sandbox",
    "function_uid",
    "prepare_code_dir",
    "probe_host",
    "remove_private_tmp",
]
