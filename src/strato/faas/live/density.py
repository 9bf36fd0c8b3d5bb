"""Density: the memory an idle warm instance costs, fork-server against a fresh interpreter.

For each spawn mode, one run:

1. A real ``strato faas serve`` child (lean backend, policy ``never-unload`` so nothing is unloaded while
   it is measured, sandbox on unless asked otherwise) and an echo function with ``concurrency`` 1 whose
   handler also knows one more path: ``/hold`` sleeps for the seconds in the body, then echoes.
2. ``N`` warm instances: ``N`` concurrent ``/hold`` invocations. A held instance cannot take another
   request, so every one of them needs its own instance, and ``maxConcurrency`` ``N`` caps the function at
   ``N``. Should fewer come up (a slow machine let an early hold end before a late request arrived), the
   round is repeated with a hold twice as long; ``never-unload`` keeps what earlier rounds started.
3. Once the server lists ``N`` ready instances with nothing in flight, and a short settling pause, the
   memory of every process of each instance is read from ``/proc/PID/smaps_rollup``. The pid the platform
   knows (``/system/functions/NAME``) is the process it spawned; with the sandbox's pid namespace that
   process is a small waiter (pid 1's parent, a forked Python) and the runtime is its child, so an
   instance is that pid and all its descendants.

What is reported, per instance and summed over its processes:

* **PSS** (proportional set size): private pages plus each shared page divided by the number of processes
  mapping it. Summed over every process on the machine it is the memory in use, so it is the fair share
  of one instance; it depends on how many others share (the template, the zygotes, the other instances,
  and any process mapping the same interpreter and libraries).
* **USS** (``Private_Clean + Private_Dirty``): what only this instance maps, i.e. what stopping it frees.
* **RSS**: every page it maps, shared ones counted in full (what ``ps`` shows; overstates density).
* the instance's **memory cgroup** usage when it has one (charged to the cgroup that first touched each
  page: pages a fork-server instance inherited stay charged to the template).

Instances per GiB are ``1024 / median PSS``. The marginal view is the instances' total PSS over ``N``;
the amortised one adds the fixed overhead (gateway, fork-server template, its zygotes) before dividing.
Page tables and other kernel memory are in none of the /proc numbers.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from strato.errors import ConfigError, StratoError, UnavailableError
from strato.faas.live.bench import machine_info
from strato.faas.live.client import FaasClient
from strato.faas.live.isolation import InstanceCgroup, SandboxError
from strato.faas.live.serverproc import ServerProcess, running_server

SPAWN_MODES: Final = ("fork", "fresh")
MAX_INSTANCES: Final = 256
FUNCTION: Final = "echo"
HOLD_PATH: Final = "/hold"
HOLD_HANDLER: Final = (
    "import time\n"
    "def handle(event):\n"
    f"    if event.path == {HOLD_PATH!r}:\n"
    "        time.sleep(float(event.text))\n"
    "    return event.body\n"
)
"""The bench's echo handler (``bench.ECHO_HANDLER``) with a way to keep an instance busy: ``time`` is
imported by the runtime anyway, so the idle instance is the echo function's."""
MEMORY_LIMIT: Final = "128Mi"
HOLD_ROUNDS: Final = 4
MIB_PER_GIB: Final = 1024.0
PROC: Final = Path("/proc")

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class DensityOptions:
    instances: int = 20
    """Idle warm instances measured per spawn mode."""
    spawns: tuple[str, ...] = SPAWN_MODES
    sandbox: bool = True
    hold_s: float = 2.0
    """How long each invocation of the first bring-up round keeps its instance busy."""
    settle_s: float = 1.0
    """Pause between the last instance going idle and the measurement."""
    start_timeout_s: float = 60.0
    """How long the server may take to start, and its instances to come up and go idle."""

    def __post_init__(self) -> None:
        check_instances(self.instances)
        if not self.spawns or any(spawn not in SPAWN_MODES for spawn in self.spawns):
            raise ConfigError(f"spawn modes must be among {', '.join(SPAWN_MODES)}, got {self.spawns}")
        if len(set(self.spawns)) != len(self.spawns):
            raise ConfigError(f"each spawn mode at most once, got {', '.join(self.spawns)}")
        for what, value in (
            ("hold", self.hold_s),
            ("start timeout", self.start_timeout_s),
        ):
            if not 0 < value < float("inf"):
                raise ConfigError(f"{what} must be a positive number of seconds, got {value}")
        if not 0 <= self.settle_s < float("inf"):
            raise ConfigError(f"settling pause must be a finite number of seconds >= 0, got {self.settle_s}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "spawns": list(self.spawns)}


def check_instances(count: int) -> int:
    if not 1 <= count <= MAX_INSTANCES:
        raise ConfigError(f"--instances must be between 1 and {MAX_INSTANCES}, got {count}")
    return count


def parse_spawns(text: str) -> tuple[str, ...]:
    """``fork``, ``fresh`` or ``both`` (fork first: the platform's default)."""
    if text == "both":
        return SPAWN_MODES
    if text in SPAWN_MODES:
        return (text,)
    raise ConfigError(f"--spawn must be fork, fresh or both, got {text!r}")


# ------------------------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Memory:
    """Memory of one process, or summed over a group of processes, in MiB."""

    pss_mib: float
    uss_mib: float
    """Private_Clean + Private_Dirty: pages no other process maps."""
    rss_mib: float
    processes: int = 1

    @classmethod
    def total(cls, parts: Iterable[Memory]) -> Memory:
        parts = list(parts)
        return cls(
            pss_mib=sum(part.pss_mib for part in parts),
            uss_mib=sum(part.uss_mib for part in parts),
            rss_mib=sum(part.rss_mib for part in parts),
            processes=sum(part.processes for part in parts),
        )


class ProcessGone(StratoError):
    """A process exited between being found and being measured."""


def parse_smaps_rollup(text: str, source: str) -> Memory:
    """The totals of a ``smaps_rollup`` file (kB lines) as :class:`Memory`."""
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        value = rest.split()
        if len(value) == 2 and value[1] == "kB" and value[0].isdigit():
            kib[key] = int(value[0])
    missing = [key for key in ("Rss", "Pss", "Private_Clean", "Private_Dirty") if key not in kib]
    if missing:
        raise UnavailableError(f"{source} has no {', '.join(missing)} line: not a smaps_rollup file")
    return Memory(
        pss_mib=kib["Pss"] / 1024,
        uss_mib=(kib["Private_Clean"] + kib["Private_Dirty"]) / 1024,
        rss_mib=kib["Rss"] / 1024,
    )


def read_process_memory(pid: int, *, proc: Path = PROC) -> Memory:
    """PSS, USS and RSS of process ``pid``; :class:`ProcessGone` when it has exited, UnavailableError
    when its ``smaps_rollup`` cannot be read."""
    path = proc / str(pid) / "smaps_rollup"
    try:
        text = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        if (proc / str(pid)).exists():
            raise UnavailableError(
                f"{path} does not exist: PSS needs Linux 4.14 or later (smaps_rollup)"
            ) from None
        raise ProcessGone(f"process {pid} exited before its memory was read") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UnavailableError(
            f"cannot read {path} ({reason}): run as the user the server runs as, or as root"
        ) from None
    if not text:
        # A process that is exiting (a zombie) has no memory left to show.
        raise ProcessGone(f"process {pid} exited before its memory was read")
    return parse_smaps_rollup(text, str(path))


def process_children(*, proc: Path = PROC) -> dict[int, list[int]]:
    """Every process's children, from one pass over ``/proc/*/stat`` (works without CONFIG_PROC_CHILDREN)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """``pid`` and every process below it, parents first."""
    found = [pid]
    index = 0
    while index < len(found):
        found.extend(sorted(children.get(found[index], ())))
        index += 1
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _memory_cgroup(pid: int) -> tuple[str, str] | None:
    """(version, path) of the memory cgroup of ``pid`` as its ``/proc/PID/cgroup`` names it."""
    try:
        lines = (PROC / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            return "v1", path
        if number == "0" and controllers == "":
            unified = path
    return ("v2", unified) if unified is not None else None


def _cgroup_directory(version: str, path: str) -> Path | None:
    """Where cgroup ``path`` of the memory hierarchy appears in our mount namespace."""
    try:
        mounts = (PROC / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        root, point, fstype, options = fields[3], fields[4], rest[0], rest[2]
        if version == "v1" and not (fstype == "cgroup" and "memory" in options.split(",")):
            continue
        if version == "v2" and fstype != "cgroup2":
            continue
        if root != "/" and path != root and not path.startswith(root.rstrip("/") + "/"):
            continue
        relative = path[len(root) :].lstrip("/") if root != "/" else path.lstrip("/")
        directory = Path(point) / relative
        if directory.is_dir():
            return directory
    return None


def cgroup_usage_mib(pid: int, not_in: int) -> float | None:
    """Memory usage of the memory cgroup of ``pid``; None when it shares that of process ``not_in`` (the
    server: the instance has no cgroup of its own) or the cgroup cannot be read."""
    own, shared = _memory_cgroup(pid), _memory_cgroup(not_in)
    if own is None or own == shared:
        return None
    directory = _cgroup_directory(*own)
    if directory is None:
        return None
    try:
        return InstanceCgroup(directory, own[0]).usage_bytes() / (1024 * 1024)
    except SandboxError:
        return None


# ------------------------------------------------------------------------------------------- results


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class InstanceMemory:
    """One idle warm instance: every process of it (the waiter and the runtime with the sandbox)."""

    instance_id: str
    pids: tuple[int, ...]
    """The pid the platform knows (the process it spawned) first, then its descendants."""
    parts: tuple[Memory, ...]
    """The memory of each of ``pids``."""
    cgroup_mib: float | None
    """Usage of the instance's own memory cgroup; None without one."""

    @property
    def pid(self) -> int:
        return self.pids[0]

    @property
    def memory(self) -> Memory:
        return Memory.total(self.parts)

    @property
    def waiter(self) -> Memory | None:
        """The spawned process when the runtime runs below it: the sandbox's waiter in front of a pid
        namespace, which only waits for its child. A forked copy of the interpreter, so its PSS holds half
        of every page it still shares with the runtime."""
        return self.parts[0] if len(self.parts) > 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "pid": self.pid,
            **asdict(self.memory),
            "cgroup_mib": self.cgroup_mib,
            "per_process": [
                {"pid": pid, **asdict(part)} for pid, part in zip(self.pids, self.parts, strict=True)
            ],
        }


@dataclass(frozen=True)
class Overhead:
    """What a server costs however many instances it runs."""

    gateway: Memory
    template: Memory | None
    """The fork-server template (``spawn="fork"`` only)."""
    zygotes: Memory | None
    """The template's pre-forked children waiting to become instances (sandbox with cgroups only)."""

    @property
    def pss_mib(self) -> float:
        return sum(part.pss_mib for part in (self.gateway, self.template, self.zygotes) if part is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": asdict(self.gateway),
            "template": asdict(self.template) if self.template else None,
            "zygotes": asdict(self.zygotes) if self.zygotes else None,
            "pss_mib": self.pss_mib,
        }


@dataclass(frozen=True)
class DensityResult:
    """Idle warm instances of one spawn mode (memory in MiB)."""

    spawn: str
    sandbox: bool
    requested: int
    instances: tuple[InstanceMemory, ...]
    overhead: Overhead
    bring_up_s: float
    """From the first hold invocation to all instances idle."""
    hold_rounds: int
    server_warnings: tuple[str, ...] = field(default=())

    def _values(self, key: str) -> list[float]:
        return [getattr(instance.memory, key) for instance in self.instances]

    @property
    def median_pss_mib(self) -> float:
        return statistics.median(self._values("pss_mib"))

    @property
    def max_pss_mib(self) -> float:
        return max(self._values("pss_mib"))

    @property
    def median_uss_mib(self) -> float:
        return statistics.median(self._values("uss_mib"))

    @property
    def median_rss_mib(self) -> float:
        return statistics.median(self._values("rss_mib"))

    @property
    def median_cgroup_mib(self) -> float | None:
        return _median([i.cgroup_mib for i in self.instances if i.cgroup_mib is not None])

    @property
    def median_waiter_pss_mib(self) -> float | None:
        """PSS of the sandbox's waiter (included in the instance's), when instances have one."""
        return _median([i.waiter.pss_mib for i in self.instances if i.waiter is not None])

    @property
    def processes_per_instance(self) -> float:
        return statistics.median(instance.memory.processes for instance in self.instances)

    @property
    def instances_per_gib(self) -> float:
        """1 GiB / median PSS."""
        return MIB_PER_GIB / self.median_pss_mib

    @property
    def total_pss_mib(self) -> float:
        return sum(self._values("pss_mib"))

    @property
    def marginal_pss_mib(self) -> float:
        """Total PSS of the instances / their number."""
        return self.total_pss_mib / len(self.instances)

    @property
    def amortised_pss_mib(self) -> float:
        """(Fixed overhead + total PSS of the instances) / their number."""
        return (self.overhead.pss_mib + self.total_pss_mib) / len(self.instances)

    def to_json(self) -> dict[str, Any]:
        return {
            "spawn": self.spawn,
            "sandbox": self.sandbox,
            "requested": self.requested,
            "measured": len(self.instances),
            "median_pss_mib": self.median_pss_mib,
            "max_pss_mib": self.max_pss_mib,
            "median_uss_mib": self.median_uss_mib,
            "median_rss_mib": self.median_rss_mib,
            "median_cgroup_mib": self.median_cgroup_mib,
            "median_waiter_pss_mib": self.median_waiter_pss_mib,
            "processes_per_instance": self.processes_per_instance,
            "instances_per_gib": self.instances_per_gib,
            "total_pss_mib": self.total_pss_mib,
            "marginal_pss_mib": self.marginal_pss_mib,
            "amortised_pss_mib": self.amortised_pss_mib,
            "overhead": self.overhead.to_json(),
            "bring_up_s": self.bring_up_s,
            "hold_rounds": self.hold_rounds,
            "server_warnings": list(self.server_warnings),
            "instances": [instance.to_json() for instance in self.instances],
        }


@dataclass(frozen=True)
class DensityReport:
    options: DensityOptions
    results: tuple[DensityResult, ...]
    machine: dict[str, Any]
    warnings: tuple[str, ...]
    elapsed_s: float

    def result(self, spawn: str) -> DensityResult | None:
        return next((result for result in self.results if result.spawn == spawn), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "strato-faas-density/1",
            "options": self.options.to_json(),
            "machine": self.machine,
            "results": [result.to_json() for result in self.results],
            "warnings": list(self.warnings),
            "elapsed_s": self.elapsed_s,
        }


# ------------------------------------------------------------------------------------------- the run


def _described(client: FaasClient) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = client.describe(FUNCTION)["instances"]
    return [entry for entry in instances if entry["state"] != "stopping"]


def _hold_round(server: ServerProcess, count: int, hold_s: float, timeout_s: float) -> list[int]:
    """``count`` concurrent ``/hold`` invocations, each on its own connection; their statuses."""
    barrier = threading.Barrier(count, timeout=timeout_s)

    def hold() -> int:
        with contextlib.closing(server.client(timeout_s=hold_s + timeout_s)) as client:
            # Sent together, so that every request finds the instances before it busy or starting.
            barrier.wait()
            return client.invoke(FUNCTION, f"{hold_s:g}".encode(), path=HOLD_PATH).status

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: hold(), range(count)))


def bring_up(server: ServerProcess, count: int, options: DensityOptions) -> int:
    """Make ``count`` instances of the function run; the number of hold rounds it took."""
    with contextlib.closing(server.client(timeout_s=options.start_timeout_s)) as client:
        hold_s = options.hold_s
        running = 0
        for round_number in range(1, HOLD_ROUNDS + 1):
            statuses = _hold_round(server, count, hold_s, options.start_timeout_s)
            failed = [status for status in statuses if status != 200]
            if failed:
                raise StratoError(
                    f"the {server.describe} answered {len(failed)} of {count} hold invocations with "
                    f"{sorted(set(failed))}: see {server.log_path}"
                )
            running = len(_described(client))
            if running >= count:
                return round_number
            hold_s *= 2
    raise StratoError(
        f"the {server.describe} ran only {running} of {count} instances after {HOLD_ROUNDS} rounds of "
        f"{count} concurrent invocations (the last held {hold_s / 2:g} s)"
    )


def wait_until_idle(client: FaasClient, count: int, timeout_s: float) -> list[dict[str, Any]]:
    """The function's instances once ``count`` of them are ready with nothing in flight."""
    deadline = time.monotonic() + timeout_s
    while True:
        instances = _described(client)
        if len(instances) == count and all(
            entry["state"] == "ready" and entry["inflight"] == 0 for entry in instances
        ):
            return instances
        if time.monotonic() > deadline:
            states = ", ".join(f"{entry['id']} {entry['state']}/{entry['inflight']}" for entry in instances)
            raise StratoError(
                f"{FUNCTION} did not settle to {count} idle instances within {timeout_s:g} s ({states})"
            )
        time.sleep(0.05)


def measure(server: ServerProcess, instances: list[dict[str, Any]]) -> tuple[list[InstanceMemory], Overhead]:
    """The memory of each listed instance, and of the server's own processes."""
    assert server.process is not None
    gateway = server.process.pid
    children = process_children()
    measured: list[InstanceMemory] = []
    instance_pids: set[int] = set()
    for entry in instances:
        pid = int(entry["pid"])
        pids = descendants(pid, children)
        instance_pids.update(pids)
        try:
            parts = tuple(read_process_memory(p) for p in pids)
        except ProcessGone as gone:
            raise StratoError(
                f"instance {entry['id']} of {FUNCTION} lost a process while idle: {gone}"
            ) from None
        measured.append(InstanceMemory(str(entry["id"]), tuple(pids), parts, cgroup_usage_mib(pid, gateway)))
    template_pid = next(
        (
            child
            for child in children.get(gateway, ())
            if child not in instance_pids and "strato.faas.live.forkserver" in _cmdline(child)
        ),
        None,
    )
    template = zygotes = None
    if template_pid is not None:
        template = read_process_memory(template_pid)
        spare = [child for child in children.get(template_pid, ()) if child not in instance_pids]
        spares: list[Memory] = []
        for child in spare:
            with contextlib.suppress(ProcessGone):  # a zygote may just be turning into an instance
                spares.append(Memory.total(read_process_memory(p) for p in descendants(child, children)))
        zygotes = Memory.total(spares) if spares else None
    return measured, Overhead(read_process_memory(gateway), template, zygotes)


def check_readable() -> None:
    """Fail before any server starts when this kernel or /proc cannot tell PSS."""
    read_process_memory(os.getpid())


def run_mode(root: Path, spawn: str, options: DensityOptions, say: Progress) -> DensityResult:
    count = options.instances
    server = ServerProcess.for_backend(
        root, backend="lean", spawn=spawn, policy="never-unload", sandbox=options.sandbox
    )
    sandbox = "on" if options.sandbox else "off"
    say(f"{spawn}: start the server (sandbox {sandbox}), deploy {FUNCTION}")
    with running_server(server, timeout_s=options.start_timeout_s) as running:
        with contextlib.closing(running.client(timeout_s=options.start_timeout_s)) as client:
            client.deploy(
                FUNCTION,
                files={"handler.py": HOLD_HANDLER},
                memory=MEMORY_LIMIT,
                # Long enough for the longest hold of the last round, after a start on a starved machine.
                timeout=f"{options.start_timeout_s + 2 ** (HOLD_ROUNDS - 1) * options.hold_s:g}s",
                concurrency=1,
                maxConcurrency=count,
            )
            say(
                f"{spawn}: bring up {count} instances ({count} concurrent invocations, "
                f"held {options.hold_s:g} s)"
            )
            started = time.perf_counter()
            rounds = bring_up(running, count, options)
            listed = wait_until_idle(client, count, options.start_timeout_s)
            bring_up_s = time.perf_counter() - started
            say(
                f"{spawn}: {count} idle instances, settle {options.settle_s:g} s, read /proc/PID/smaps_rollup"
            )
            time.sleep(options.settle_s)
            # Listed again: the measurement is of the instances that are there now.
            listed = wait_until_idle(client, count, options.start_timeout_s)
            instances, overhead = measure(running, listed)
        warnings = tuple(running.warnings())
    return DensityResult(
        spawn=spawn,
        sandbox=options.sandbox,
        requested=count,
        instances=tuple(instances),
        overhead=overhead,
        bring_up_s=bring_up_s,
        hold_rounds=rounds,
        server_warnings=warnings,
    )


def run_density(options: DensityOptions | None = None, *, progress: Progress | None = None) -> DensityReport:
    """Measure idle warm instances per spawn mode (see the module docstring); ``progress`` gets one line
    per phase."""
    options = options or DensityOptions()
    check_readable()
    total = 3 * len(options.spawns)
    phase = 0

    def say(text: str) -> None:
        nonlocal phase
        phase += 1
        if progress is not None:
            progress(f"[{phase}/{total}] {text}")

    started = time.perf_counter()
    machine = machine_info()
    results: list[DensityResult] = []
    with tempfile.TemporaryDirectory(prefix="strato-density-", ignore_cleanup_errors=True) as tmp:
        for spawn in options.spawns:
            results.append(run_mode(Path(tmp) / spawn, spawn, options, say))
    warnings: list[str] = []
    for result in results:
        if options.sandbox and all(instance.cgroup_mib is None for instance in result.instances):
            warnings.append(
                f"{result.spawn}: the instances had no memory cgroup of their own (no cgroup usage)"
            )
    return DensityReport(
        options=options,
        results=tuple(results),
        machine=machine,
        warnings=tuple(warnings),
        elapsed_s=time.perf_counter() - started,
    )
