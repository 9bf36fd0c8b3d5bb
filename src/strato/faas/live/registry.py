"""Deployed functions: their specs, their code on disk and the checks a deployment must pass.

Layout under the server's state directory::

    state/token                          the admin bearer token (0600)
    state/functions/NAME/spec.json       the active deployment
    state/functions/NAME/vN/code/        the code of version N, owned by the function's own uid (0500)

A deployment writes a new version directory, checks it (syntax here, import in a trial instance by the
gateway) and only then replaces ``spec.json`` atomically, so a failed deployment leaves the previous
version serving and no files behind.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from strato.core.units import parse_duration, parse_size_mb
from strato.errors import ConfigError, StratoError
from strato.faas.live.isolation import FUNCTION_UID_BASE, function_uid, prepare_code_dir

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HANDLER_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""An S3 bucket name (the common rules; the store may refuse more)."""


class DeployError(StratoError):
    """A deployment the gateway refuses (answered with 400)."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str = "handler:handle"
    memory_mb: float = 128.0
    timeout_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    """Invocations one instance runs at once (threads in the instance)."""
    max_concurrency: int = 16
    """Invocations of this function in flight at once; the next one gets 429."""
    network: bool = False
    buckets: tuple[str, ...] = ()
    """Buckets the function may use through ``context.storage`` (``*``: every bucket)."""
    version: int = 0
    uid_index: int = 0
    code_dir: str = ""

    @property
    def max_instances(self) -> int:
        return -(-self.max_concurrency // self.concurrency)

    def to_public(self) -> dict[str, Any]:
        """What ``GET /system/functions`` shows (OpenFaaS field names where they exist)."""
        return {
            "name": self.name,
            "handler": self.handler,
            "version": self.version,
            "limits": {"memory": f"{self.memory_mb:g}Mi"},
            "timeout": f"{self.timeout_s:g}s",
            "envVars": dict(self.env),
            "concurrency": self.concurrency,
            "maxConcurrency": self.max_concurrency,
            "network": self.network,
            "buckets": list(self.buckets),
        }


def _first(payload: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in payload and payload[name] is not None:
            return payload[name]
    return None


def parse_deploy_request(payload: Any) -> tuple[FunctionSpec, dict[str, bytes] | Path]:
    """Validate a deploy body; returns the spec (without version) and the code (files or a local dir)."""
    if not isinstance(payload, dict):
        raise DeployError("the deploy body must be a JSON object")
    name = _first(payload, "service", "name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DeployError(f"function name {name!r} must match {NAME_PATTERN.pattern}")
    handler = _first(payload, "handler") or "handler:handle"
    if not isinstance(handler, str) or not HANDLER_PATTERN.match(handler):
        raise DeployError(f"handler {handler!r} must look like module:function (e.g. handler:handle)")
    limits = payload.get("limits") or {}
    memory = _first(payload, "memory") or (limits.get("memory") if isinstance(limits, dict) else None) or 128
    timeout = _first(payload, "timeout") or 30
    try:
        memory_mb = parse_size_mb(str(memory), default_unit="mib")
        timeout_s = parse_duration(str(timeout))
    except ConfigError as error:
        raise DeployError(str(error)) from None
    if not 1 <= memory_mb <= 1 << 20:
        raise DeployError(f"memory limit {memory!r} must be between 1 MiB and 1 TiB")
    if not 0 < timeout_s <= 3600:
        raise DeployError(f"timeout {timeout!r} must be positive and at most 1 h")
    env = _first(payload, "envVars", "env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(key, str) and ENV_NAME_PATTERN.match(key) and isinstance(value, str)
        for key, value in env.items()
    ):
        raise DeployError("envVars must map variable names to string values")
    concurrency = _positive_int(payload, "concurrency", 1)
    max_concurrency = _positive_int(payload, "maxConcurrency", max(16, concurrency))
    network = payload.get("network", False)
    if not isinstance(network, bool):
        raise DeployError("network must be true or false")
    buckets = payload.get("buckets", [])
    if not isinstance(buckets, list) or not all(
        isinstance(bucket, str) and (bucket == "*" or BUCKET_PATTERN.fullmatch(bucket)) for bucket in buckets
    ):
        raise DeployError(
            "buckets must be a list of S3 bucket names (3-63 of a-z 0-9 . -, starting and ending with "
            "a letter or digit) or '*'"
        )
    spec = FunctionSpec(
        name=name,
        handler=handler,
        memory_mb=memory_mb,
        timeout_s=timeout_s,
        env=env,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        network=network,
        buckets=tuple(dict.fromkeys(buckets)),
    )
    return spec, _code_source(payload)


def _positive_int(payload: dict[str, Any], key: str, default: int) -> int:
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
        raise DeployError(f"{key} must be an integer between 1 and 10000")
    return value


def _code_source(payload: dict[str, Any]) -> dict[str, bytes] | Path:
    files, archive, directory = payload.get("files"), payload.get("archive"), payload.get("directory")
    if sum(source is not None for source in (files, archive, directory)) != 1:
        raise DeployError(
            "give the code as exactly one of: files {path: text}, archive (base64 tar.gz), "
            "directory (a path on the server)"
        )
    if directory is not None:
        path = Path(str(directory))
        if not path.is_absolute():
            raise DeployError(f"directory {directory!r} must be an absolute path on the server")
        return path
    if archive is not None:
        return _unpack_archive(archive)
    if not isinstance(files, dict) or not files:
        raise DeployError("files must be a non-empty object mapping relative paths to file contents")
    out: dict[str, bytes] = {}
    for name, content in files.items():
        if not isinstance(content, str):
            raise DeployError(f"file {name!r}: content must be a string")
        out[_safe_relative(name)] = content.encode()
    return out


def _unpack_archive(archive: Any) -> dict[str, bytes]:
    try:
        data = base64.b64decode(str(archive), validate=True)
        out: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isdir():
                    continue
                if not member.isfile():
                    raise DeployError(f"archive member {member.name!r} is not a regular file")
                extracted = tar.extractfile(member)
                assert extracted is not None
                out[_safe_relative(member.name)] = extracted.read()
    except (ValueError, tarfile.TarError) as error:
        raise DeployError(f"archive is not a base64 tar(.gz): {error}") from None
    if not out:
        raise DeployError("archive holds no files")
    return out


def _safe_relative(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name.startswith("~"):
        raise DeployError(f"file path {name!r} must be relative and stay inside the function directory")
    return str(path)


def check_syntax(files: dict[str, bytes]) -> None:
    """Compile every Python file, so a syntax error is reported before anything runs."""
    for name, content in sorted(files.items()):
        if not name.endswith(".py"):
            continue
        try:
            compile(content, name, "exec")
        except SyntaxError as error:
            raise DeployError(f"syntax error in {name}, line {error.lineno}: {error.msg}") from None
        except ValueError as error:  # e.g. null bytes
            raise DeployError(f"cannot compile {name}: {error}") from None


class StorageError(StratoError):
    """The server could not write a deployment (507 when the disk is full); nothing was left behind."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def from_os(cls, what: str, error: OSError) -> StorageError:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        return cls(f"cannot write {what}: {error.strerror or error}", 507 if full else 500)


def _write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write a file whole or not at all: a temporary beside it, flushed to disk, renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


class FunctionStore:
    """Function specs and code under the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "functions"
        self.root.mkdir(parents=True, exist_ok=True)
        # Functions may traverse to their own code but not list who else is deployed.
        os.chmod(self.root, 0o711)

    def load_all(self) -> tuple[list[FunctionSpec], list[str]]:
        """The deployed specs, and one line per spec.json that had to be skipped (truncated, edited by
        hand, from another version): one bad file must not keep every other function down."""
        specs: list[FunctionSpec] = []
        problems: list[str] = []
        for spec_file in sorted(self.root.glob("*/spec.json")):
            try:
                specs.append(self._read_spec(spec_file))
            except (ValueError, TypeError, OSError) as error:
                problems.append(f"{spec_file}: unreadable function spec, skipped ({error})")
        return specs, problems

    def _read_spec(self, spec_file: Path) -> FunctionSpec:
        data = json.loads(spec_file.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        data["buckets"] = tuple(data.get("buckets", ()))
        spec = FunctionSpec(**data)
        function_dir = spec_file.parent
        if spec.name != function_dir.name or not NAME_PATTERN.match(spec.name):
            raise ValueError(f"name {spec.name!r} does not match its directory")
        code = Path(spec.code_dir)
        if code.parent.parent != function_dir or not code.is_dir():
            raise ValueError(f"code directory {spec.code_dir!r} is not one of its versions")
        if not isinstance(spec.uid_index, int) or spec.uid_index < 0:
            raise ValueError(f"bad uid index {spec.uid_index!r}")
        return spec

    def next_uid_index(self) -> int:
        specs, _ = self.load_all()
        used = {spec.uid_index for spec in specs}
        # A function whose spec was skipped still owns its code directories: never hand its uid out.
        for code in self.root.glob("*/v*/code"):
            with contextlib.suppress(OSError):
                used.add(code.stat().st_uid - FUNCTION_UID_BASE)
        return next(index for index in range(1, len(used) + 2) if index not in used)

    def stage(
        self, spec: FunctionSpec, files: dict[str, bytes], previous: FunctionSpec | None
    ) -> FunctionSpec:
        """Write a new version's code; the spec returned points at it (not yet active). Raises StorageError
        and leaves nothing behind when the disk cannot take it."""
        function_dir = self.root / spec.name
        created = not function_dir.exists()
        version = (previous.version if previous else 0) + 1
        while (function_dir / f"v{version}").exists():
            version += 1
        code_dir = function_dir / f"v{version}" / "code"
        try:
            function_dir.mkdir(exist_ok=True)
            os.chmod(function_dir, 0o711)
            code_dir.mkdir(parents=True)
            os.chmod(code_dir.parent, 0o711)
            for name, content in files.items():
                target = code_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            uid_index = previous.uid_index if previous else self.next_uid_index()
            staged = replace(spec, version=version, uid_index=uid_index, code_dir=str(code_dir))
            prepare_code_dir(code_dir, function_uid(uid_index) if os.geteuid() == 0 else None)
        except OSError as error:
            shutil.rmtree(code_dir.parent, ignore_errors=True)
            if created:
                shutil.rmtree(function_dir, ignore_errors=True)
            raise StorageError.from_os(f"the code of {spec.name!r}", error) from None
        return staged

    def discard(self, staged: FunctionSpec) -> None:
        shutil.rmtree(Path(staged.code_dir).parent, ignore_errors=True)
        function_dir = self.root / staged.name
        if function_dir.exists() and not any(function_dir.iterdir()):
            function_dir.rmdir()

    def activate(self, staged: FunctionSpec) -> None:
        spec_file = self.root / staged.name / "spec.json"
        try:
            _write_atomically(spec_file, json.dumps(asdict(staged), indent=2).encode(), 0o600)
        except OSError as error:
            raise StorageError.from_os(f"the spec of {staged.name!r}", error) from None

    def remove_version(self, spec: FunctionSpec) -> None:
        shutil.rmtree(Path(spec.code_dir).parent, ignore_errors=True)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)
