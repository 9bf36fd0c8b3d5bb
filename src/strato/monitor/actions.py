"""Group actions: run an administrator's command on every host of a server group, and audit it.

Security model
==============

*Templates, not commands.* Nobody -- least of all a web form -- submits a command line. An administrator
declares an allow-list of named :class:`Template` s (``templates_from_config`` reads them from TOML); a
request names a template and supplies values for its typed parameters (:class:`ParamSpec`). Each value is
checked against its type, range, choices or full-match pattern, and NUL, newlines and every other control
character are always refused, so what an audit log shows is what ran. Values of ``str`` parameters may not
start with ``-`` unless the template allows it, so a value cannot turn into an option of the program.
The program itself (``argv[0]``) is always literal.

*No shell, locally.* A template renders to an argv list: each ``{param}`` placeholder is replaced by the
validated value inside its argv element, in one pass (a value containing ``{other}`` stays literal), and
the result goes to :func:`asyncio.create_subprocess_exec` -- ``execve``, no shell, so ``;``, ``$(..)``,
backticks, ``&&`` or ``|`` in a value are just characters. ``{{`` and ``}}`` write literal braces.

*Quoted, remotely.* OpenSSH cannot pass an argv: the remote ``sshd`` joins the command into one string
and hands it to the user's login shell (``$SHELL -c``). :class:`SSHExecutor` therefore quotes every
argument with :func:`shlex.join`, so the remote shell undoes exactly that quoting and runs the same argv
-- no interpolation remotely either. This assumes a POSIX login shell (sh, bash, dash, zsh, ksh) on the
target; csh/fish quote differently and are not supported. ``ssh`` itself runs in batch mode (never
prompts), with strict host-key checking against a known-hosts file given explicitly (no global file, no
``~/.ssh/config``: ``-F /dev/null``), and the host address is validated and followed by ``--`` so it can
never be read as an ssh option.

*Audit first.* Refused requests are audited as ``rejected`` with the reason. An accepted action is
committed to the :class:`~strato.monitor.audit.AuditLog` (with the group's members at that moment)
before any host runs, and every host's result is committed as soon as it finishes (see
:mod:`strato.monitor.audit` for what a row left ``running`` means).

*Bounded.* Hosts run at most ``parallelism`` at a time; each runs in its own session/process group with
stdin closed, and a host that overruns its timeout has its whole process group SIGKILLed and reaped. A
cancelled run (Ctrl-C) kills its children and is marked ``interrupted``. Over SSH, the timeout kills the
local ``ssh`` client; a remote command that neither reads nor writes may outlive it (no tty, hence no
SIGHUP) -- keep remote templates short or give them their own ``timeout`` program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shlex
import signal
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from strato.errors import ConfigError
from strato.monitor.audit import ActionRecord, AuditLog, HostResult
from strato.monitor.model import Host

__all__ = [
    "BUILTIN_TEMPLATES",
    "ActionError",
    "ActionRecord",
    "ActionRunner",
    "AuditLog",
    "Executor",
    "HostResult",
    "HostTarget",
    "LocalExecutor",
    "NamespaceExecutor",
    "ParamSpec",
    "SSHExecutor",
    "Template",
    "make_executor",
    "templates_from_config",
]

log = logging.getLogger(__name__)

PARAM_TYPES = ("str", "int", "float", "choice", "bool")
DEFAULT_STR_PATTERN = r"[A-Za-z0-9._:/@+=,-]{1,256}"
MAX_OUTPUT_BYTES = 64 * 1024
# After a kill, how long to wait for the pipes to close: longer only if something escaped the process
# group while holding them, and then we stop listening rather than hang.
_DRAIN_AFTER_KILL_S = 1.0

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INT_RE = re.compile(r"[+-]?[0-9]{1,30}")
# No 'nan', 'inf', hex or underscores: only what an administrator would read as a plain decimal number.
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Host names, IPv4 and IPv6 literals (with an optional %zone); never starting with '-' (an ssh option).
_ADDRESS_RE = re.compile(r"[A-Za-z0-9_:.%][A-Za-z0-9_.:%-]{0,252}")
_USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}")
_NETNS_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}")
_SSH_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


class ActionError(ConfigError):
    """A request for an action that cannot run as asked: bad parameter value, unknown template parameter,
    unusable target. Nothing ran."""


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _forbidden_char(text: str) -> str | None:
    """Describe the first character never allowed in a value: controls (NUL, newline, ESC, ...), line and
    paragraph separators, and invisible format characters (e.g. bidi overrides that make an audit log
    display something other than what ran)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            name = unicodedata.name(char, "control character")
            return f"U+{ord(char):04X} {name.lower()}"
    return None


# -- parameters and templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One typed template parameter. ``default=None`` makes it required.

    ``str`` values must full-match ``pattern`` (default :data:`DEFAULT_STR_PATTERN`) and not start with
    ``-`` unless ``allow_leading_dash``; ``int``/``float`` values lie in ``[minimum, maximum]``;
    ``choice`` values are one of ``choices``; ``bool`` accepts true/false/yes/no/on/off/1/0 and renders as
    ``true``/``false``.
    """

    type: str
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    default: str | int | float | bool | None = None
    help: str = ""
    allow_leading_dash: bool = False

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ConfigError(f"parameter type must be one of {', '.join(PARAM_TYPES)}, not {self.type!r}")
        if self.pattern is not None:
            if self.type != "str":
                raise ConfigError(f"'pattern' applies to str parameters only, not {self.type}")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ConfigError(
                    f"pattern {self.pattern!r} is not a valid regular expression: {error}"
                ) from None
        if (self.minimum is not None or self.maximum is not None) and self.type not in ("int", "float"):
            raise ConfigError(f"'minimum'/'maximum' apply to int and float parameters only, not {self.type}")
        for bound in (self.minimum, self.maximum):
            if bound is not None and not math.isfinite(bound):
                raise ConfigError(f"bounds must be finite numbers, not {bound!r}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ConfigError(f"minimum {self.minimum} is above maximum {self.maximum}")
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.type == "choice":
            if not self.choices:
                raise ConfigError("a choice parameter needs a non-empty 'choices' list")
            for choice in self.choices:
                if not isinstance(choice, str) or not choice or _forbidden_char(choice):
                    raise ConfigError(f"choice {_show(choice)} must be a non-empty printable string")
        elif self.choices:
            raise ConfigError(f"'choices' applies to choice parameters only, not {self.type}")

    def convert(self, name: str, raw: str | int | float | bool) -> str:
        """The validated string form of ``raw``; ActionError names the parameter, the value and the rule."""

        def fail(rule: str) -> ActionError:
            return ActionError(f"parameter {name!r}: value {_show(raw)} {rule}")

        if isinstance(raw, str):
            bad = _forbidden_char(raw)
            if bad:
                raise fail(
                    f"contains a control character ({bad}); NUL, newlines and other control characters "
                    "are never allowed"
                )
        elif not isinstance(raw, bool | int | float):
            raise fail(f"has unsupported type {type(raw).__name__}")

        if self.type == "str":
            if isinstance(raw, bool):
                raise fail("must be a string")
            value = str(raw)
            pattern = self.pattern if self.pattern is not None else DEFAULT_STR_PATTERN
            if re.fullmatch(pattern, value) is None:
                raise fail(f"does not match the allowed pattern {pattern}")
            if value.startswith("-") and not self.allow_leading_dash:
                raise fail("starts with '-', which the command could read as an option")
            return value
        if self.type == "choice":
            value = str(raw)
            if isinstance(raw, bool) or value not in self.choices:
                raise fail(f"is not one of the allowed choices: {', '.join(self.choices)}")
            return value
        if self.type == "bool":
            if isinstance(raw, bool):
                return "true" if raw else "false"
            word = str(raw).lower()
            if word in _TRUE:
                return "true"
            if word in _FALSE:
                return "false"
            raise fail("is not a boolean (true/false, yes/no, on/off, 1/0)")
        if self.type == "int":
            if isinstance(raw, bool):
                raise fail("must be an integer")
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise fail("must be an integer")
                number: int | float = int(raw)
            elif isinstance(raw, int):
                number = raw
            elif _INT_RE.fullmatch(raw):
                number = int(raw)
            else:
                raise fail("is not an integer")
            self._check_range(number, fail)
            return str(number)
        # float
        if isinstance(raw, bool):
            raise fail("must be a number")
        if isinstance(raw, str):
            if not _FLOAT_RE.fullmatch(raw):
                raise fail("is not a decimal number")
            number = float(raw)
        else:
            number = float(raw)
        if not math.isfinite(number):
            raise fail("is not a finite number")
        self._check_range(number, fail)
        if number.is_integer():
            return str(int(number))
        # Plain positional notation: commands that take a number rarely accept '1e-07'.
        return format(Decimal(repr(number)), "f")

    def _check_range(self, number: float, fail: Callable[[str], ActionError]) -> None:
        if self.minimum is not None and number < self.minimum:
            raise fail(f"is below the minimum {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise fail(f"is above the maximum {self.maximum:g}")


def _placeholders(element: str) -> list[str]:
    """Names of the ``{param}`` placeholders in one argv element; lone braces are a ConfigError."""
    names = []
    for match in _TOKEN_RE.finditer(element):
        token = match.group(0)
        if match.group(1) is not None:
            names.append(match.group(1))
        elif token in ("{", "}"):
            raise ConfigError(
                f"argv element {element!r} has a lone {token!r}: placeholders are {{name}}, literal braces "
                "are written {{ and }}"
            )
    return names


def _substitute(element: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return values[match.group(1)]
        return match.group(0)[0]  # '{{' -> '{', '}}' -> '}'

    return _TOKEN_RE.sub(replace, element)


@dataclass(frozen=True)
class Template:
    """A named, allow-listed command: ``argv`` with ``{param}`` placeholders, each a declared parameter.

    ``argv[0]`` (the program) must be literal; every declared parameter must be used; defaults must pass
    their own validation. All checked at construction (ConfigError).
    """

    name: str
    argv: tuple[str, ...]
    params: dict[str, ParamSpec] = field(default_factory=dict)
    timeout_s: float = 30.0
    description: str = ""

    def __post_init__(self) -> None:
        where = f"action template {self.name!r}"
        if not isinstance(self.name, str) or not _TEMPLATE_NAME_RE.fullmatch(self.name):
            raise ConfigError(f"{where}: name must match {_TEMPLATE_NAME_RE.pattern}")
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "params", dict(self.params))
        if not self.argv or not all(isinstance(element, str) for element in self.argv):
            raise ConfigError(f"{where}: argv must be a non-empty list of strings")
        for element in self.argv:
            if "\x00" in element:
                raise ConfigError(f"{where}: argv element {element!r} contains NUL")
        if not self.argv[0] or _placeholders(self.argv[0]):
            raise ConfigError(f"{where}: argv[0], the program, must be a literal non-empty string")
        used: set[str] = set()
        for element in self.argv:
            try:
                used.update(_placeholders(element))
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
        for param_name, spec in self.params.items():
            if not _PARAM_NAME_RE.fullmatch(param_name):
                raise ConfigError(
                    f"{where}: parameter name {param_name!r} must match {_PARAM_NAME_RE.pattern}"
                )
            if not isinstance(spec, ParamSpec):
                raise ConfigError(f"{where}: parameter {param_name!r} must be a ParamSpec")
        undeclared = sorted(used - set(self.params))
        if undeclared:
            raise ConfigError(f"{where}: placeholder(s) {', '.join(undeclared)} are not declared parameters")
        unused = sorted(set(self.params) - used)
        if unused:
            raise ConfigError(
                f"{where}: parameter(s) {', '.join(unused)} are declared but never used in argv"
            )
        for param_name, spec in self.params.items():
            if spec.default is not None:
                try:
                    spec.convert(param_name, spec.default)
                except ActionError as error:
                    raise ConfigError(f"{where}: default of {error}") from None
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float):
            raise ConfigError(f"{where}: timeout_s must be a number")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(
                f"{where}: timeout_s must be a positive number of seconds, not {self.timeout_s}"
            )

    def resolve(self, values: Mapping[str, str | int | float | bool]) -> dict[str, str]:
        """Every parameter's validated string value (defaults filled in); ActionError on bad input."""
        unknown = sorted(str(key) for key in values if key not in self.params)
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ActionError(
                f"template {self.name!r}: unknown parameter(s) {', '.join(_show(k, 40) for k in unknown)}"
                f" (it takes: {known})"
            )
        resolved: dict[str, str] = {}
        missing = []
        for param_name, spec in self.params.items():
            if param_name in values:
                resolved[param_name] = spec.convert(param_name, values[param_name])
            elif spec.default is not None:
                resolved[param_name] = spec.convert(param_name, spec.default)
            else:
                missing.append(param_name)
        if missing:
            raise ActionError(f"template {self.name!r}: missing required parameter(s) {', '.join(missing)}")
        return resolved

    def render(self, values: Mapping[str, str | int | float | bool]) -> list[str]:
        """The argv to run: placeholders replaced by validated values, one argv element each, no shell."""
        resolved = self.resolve(values)
        return [_substitute(element, resolved) for element in self.argv]


_TEMPLATE_FIELDS = {"argv", "params", "timeout_s", "description"}
_PARAM_FIELDS = {"type", "pattern", "minimum", "maximum", "choices", "default", "help", "allow_leading_dash"}


def _param_from_config(where: str, raw: Any) -> ParamSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{where}: must be a table like {{type = "str"}}')
    extra = sorted(set(raw) - _PARAM_FIELDS)
    if extra:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(extra)} (known: {', '.join(sorted(_PARAM_FIELDS))})"
        )
    if "type" not in raw:
        raise ConfigError(f"{where}: field 'type' is required ({', '.join(PARAM_TYPES)})")
    kind = raw["type"]
    pattern = raw.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise ConfigError(f"{where}: field 'pattern' must be a string")
    bounds: dict[str, float | None] = {}
    for key in ("minimum", "maximum"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{where}: field {key!r} must be a number")
        bounds[key] = None if value is None else float(value)
    choices = raw.get("choices", ())
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise ConfigError(f"{where}: field 'choices' must be a list of strings")
    default = raw.get("default")
    if default is not None and not isinstance(default, str | int | float | bool):
        raise ConfigError(f"{where}: field 'default' must be a string, number or boolean")
    help_text = raw.get("help", "")
    if not isinstance(help_text, str):
        raise ConfigError(f"{where}: field 'help' must be a string")
    dash = raw.get("allow_leading_dash", False)
    if not isinstance(dash, bool):
        raise ConfigError(f"{where}: field 'allow_leading_dash' must be true or false")
    try:
        return ParamSpec(
            type=kind,
            pattern=pattern,
            minimum=bounds["minimum"],
            maximum=bounds["maximum"],
            choices=tuple(choices),
            default=default,
            help=help_text,
            allow_leading_dash=dash,
        )
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def templates_from_config(table: Mapping[str, Any]) -> dict[str, Template]:
    """Templates from a parsed TOML table: ``{name: {argv = [...], params = {p = {type = ...}}, timeout_s,
    description}}``. Any bad entry is a ConfigError naming the template and the field."""
    if not isinstance(table, Mapping):
        raise ConfigError("action templates: expected a table of templates")
    templates: dict[str, Template] = {}
    for name, entry in table.items():
        where = f"action template {name!r}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table with at least 'argv'")
        extra = sorted(set(entry) - _TEMPLATE_FIELDS)
        if extra:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(extra)} (known: {', '.join(sorted(_TEMPLATE_FIELDS))})"
            )
        argv = entry.get("argv")
        if (
            isinstance(argv, str)
            or not isinstance(argv, Sequence)
            or not argv
            or not all(isinstance(element, str) for element in argv)
        ):
            raise ConfigError(f"{where}: field 'argv' must be a non-empty list of strings")
        raw_params = entry.get("params", {})
        if not isinstance(raw_params, Mapping):
            raise ConfigError(f"{where}: field 'params' must be a table of parameters")
        params = {
            str(key): _param_from_config(f"{where}: field 'params.{key}'", value)
            for key, value in raw_params.items()
        }
        timeout = entry.get("timeout_s", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError(f"{where}: field 'timeout_s' must be a number of seconds")
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where}: field 'description' must be a string")
        templates[str(name)] = Template(
            name=str(name),
            argv=tuple(argv),
            params=params,
            timeout_s=float(timeout),
            description=description,
        )
    return templates


BUILTIN_TEMPLATES: dict[str, Template] = {
    template.name: template
    for template in (
        Template(
            "uptime", ("uptime",), timeout_s=10.0, description="How long each host has been up, and load."
        ),
        Template(
            "echo",
            ("echo", "{message}"),
            {
                "message": ParamSpec(
                    "str",
                    pattern=r"[^\x00-\x1f\x7f]{0,512}",
                    help="Any printable text; printed literally, never interpreted by a shell.",
                )
            },
            timeout_s=10.0,
            description="Print a message on each host (shows that parameters are never shell-interpreted).",
        ),
        Template(
            "sleep",
            ("sleep", "{seconds}"),
            {"seconds": ParamSpec("float", minimum=0, maximum=3600, help="Seconds to sleep.")},
            timeout_s=3700.0,
            description="Sleep on each host (to try out timeouts and parallelism).",
        ),
        Template(
            "df",
            ("df", "-h", "{path}"),
            {
                "path": ParamSpec(
                    "str", pattern=r"/[A-Za-z0-9._/-]{0,255}", default="/", help="Absolute path of a mount."
                )
            },
            timeout_s=20.0,
            description="Disk usage of a file system on each host.",
        ),
    )
}


# -- targets and executors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostTarget:
    """Where to run: ``name`` (the group member, audited), ``address`` (IP or DNS name, used by ssh),
    optional per-host ``port``/``user`` overriding the executor's, and ``netns`` for namespace hosts."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    netns: str | None = None

    @classmethod
    def from_host(cls, host: Host, **overrides: Any) -> HostTarget:
        """The target for a monitored host: its Ganglia name and IP."""
        return cls(name=host.name, address=host.ip, **overrides)


class Executor(Protocol):
    """Builds the local argv that runs ``argv`` on ``host``; the runner spawns it (no shell)."""

    name: str

    def command(self, host: HostTarget, argv: Sequence[str]) -> list[str]: ...


class LocalExecutor:
    """Runs the command directly on this machine (``STRATO_HOST`` tells it which host it stands for)."""

    name: str = "local"

    def command(self, host: HostTarget, argv: Sequence[str]) -> list[str]:
        return list(argv)


class NamespaceExecutor:
    """Runs the command inside the host's network namespace: ``ip netns exec <netns> argv...``."""

    name: str = "netns"

    def command(self, host: HostTarget, argv: Sequence[str]) -> list[str]:
        if not host.netns:
            raise ActionError(f"host {host.name!r}: the netns executor needs a network namespace (netns)")
        if not _NETNS_RE.fullmatch(host.netns):
            raise ActionError(f"host {host.name!r}: netns {_show(host.netns)} is not a valid namespace name")
        return ["ip", "netns", "exec", host.netns, *argv]


class SSHExecutor:
    """Runs the command over OpenSSH: batch mode, strict host-key checking against ``known_hosts`` only,
    no user ssh config. The remote sshd passes the command to a shell, so the argv is sent as
    ``shlex.join(argv)``: each argument quoted, nothing interpolated (module docstring).
    ``STRATO_HOST`` is set for the local ssh client only; it is not sent to the remote side.

    ``extra_options`` become ``-o Key=Value`` after the fixed ones; they may not name an option this class
    sets (ssh keeps the first value it sees, so an override would be silently ignored).
    """

    name: str = "ssh"

    _FIXED_OPTIONS = frozenset(
        {
            "batchmode",
            "stricthostkeychecking",
            "userknownhostsfile",
            "globalknownhostsfile",
            "connecttimeout",
            "identitiesonly",
            "identityfile",
            "port",
            "user",
        }
    )

    def __init__(
        self,
        known_hosts: Path | str,
        identity: Path | str | None = None,
        user: str | None = None,
        port: int = 22,
        connect_timeout_s: float = 5,
        extra_options: Mapping[str, str] | None = None,
    ) -> None:
        self.known_hosts = Path(known_hosts)
        if not self.known_hosts.is_file():
            raise ConfigError(f"ssh executor: known_hosts file {self.known_hosts} does not exist")
        self.identity = None if identity is None else Path(identity)
        if self.identity is not None and not self.identity.is_file():
            raise ConfigError(f"ssh executor: identity file {self.identity} does not exist")
        if user is not None and not _USER_RE.fullmatch(user):
            raise ConfigError(f"ssh executor: user {_show(user)} is not a valid user name")
        self.user = user
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"ssh executor: port must be 1..65535, not {port!r}")
        self.port = port
        if not (math.isfinite(connect_timeout_s) and connect_timeout_s > 0):
            raise ConfigError(f"ssh executor: connect_timeout_s must be positive, not {connect_timeout_s}")
        self.connect_timeout_s = connect_timeout_s
        self.extra_options = dict(extra_options or {})
        for key, value in self.extra_options.items():
            if not _SSH_OPTION_RE.fullmatch(key):
                raise ConfigError(f"ssh executor: option name {_show(key)} is not an ssh option name")
            if key.lower() in self._FIXED_OPTIONS:
                raise ConfigError(f"ssh executor: option {key} is fixed by strato and cannot be overridden")
            if not isinstance(value, str) or _forbidden_char(value) or value != value.strip() or not value:
                raise ConfigError(f"ssh executor: option {key} has an unusable value {_show(value)}")

    def command(self, host: HostTarget, argv: Sequence[str]) -> list[str]:
        address = host.address
        if not address or not _ADDRESS_RE.fullmatch(address):
            raise ActionError(
                f"host {host.name!r}: address {_show(address)} is not a host name or IP address"
            )
        user = host.user if host.user is not None else self.user
        if user is not None and not _USER_RE.fullmatch(user):
            raise ActionError(f"host {host.name!r}: user {_show(user)} is not a valid user name")
        port = host.port if host.port is not None else self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ActionError(f"host {host.name!r}: port must be 1..65535, not {port!r}")
        command = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout_s))}",
            "-F", "/dev/null",
            "-p", str(port),
        ]  # fmt: skip
        if self.identity is not None:
            command += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        for key, value in self.extra_options.items():
            command += ["-o", f"{key}={value}"]
        if user is not None:
            command += ["-l", user]
        return [*command, address, "--", shlex.join(argv)]


def make_executor(kind: str, **options: Any) -> Executor:
    """``local``, ``netns`` (no options) or ``ssh`` (options of :class:`SSHExecutor`)."""
    if kind in ("local", "netns"):
        if options:
            raise ConfigError(f"executor {kind!r} takes no options (got {', '.join(sorted(options))})")
        return LocalExecutor() if kind == "local" else NamespaceExecutor()
    if kind == "ssh":
        if "known_hosts" not in options:
            raise ConfigError("executor 'ssh' needs a known_hosts file (host keys are always checked)")
        try:
            return SSHExecutor(**options)
        except TypeError as error:
            raise ConfigError(f"executor 'ssh': {error}") from None
    raise ConfigError(f"unknown executor {kind!r}: expected local, netns or ssh")


# -- running --------------------------------------------------------------------------------------------


class _Capture:
    """Keeps the first MAX_OUTPUT_BYTES of a stream and counts the rest, draining it so the child never
    blocks on a full pipe."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            room = MAX_OUTPUT_BYTES - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            text += f"\n[strato: output truncated at {MAX_OUTPUT_BYTES} bytes, {self.dropped} more dropped]"
        return text


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The child leads its own session (start_new_session), so its pid is the process group id; the kernel
    # does not reuse a pid while a group of that id has members, so this cannot hit a stranger.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class ActionRunner:
    """Renders, audits and fans an action out over a group's hosts.

    ``parallelism`` bounds how many hosts run at once; ``timeout_s`` overrides every template's per-host
    timeout when given.
    """

    def __init__(self, audit: AuditLog, parallelism: int = 32, timeout_s: float | None = None) -> None:
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ConfigError(f"parallelism must be a positive integer, not {parallelism!r}")
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        self.audit = audit
        self.parallelism = parallelism
        self.timeout_s = timeout_s

    async def run(
        self,
        *,
        who: str,
        group: str,
        template: Template,
        values: Mapping[str, str | int | float | bool],
        targets: Sequence[HostTarget],
        executor: Executor,
        on_result: Callable[[HostResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ActionRecord:
        """Run ``template`` with ``values`` on every target; return the audited record.

        Invalid input raises ActionError after auditing the attempt as ``rejected``; nothing runs then.
        ``on_start`` gets the audit id once the action row is committed, before any host runs (a web
        server can answer with it at once); ``on_result`` sees each result after it is committed. Errors
        raised by either callback are logged and do not stop the action. Status ``ok`` means every host
        exited 0 in time, else ``failed``.
        """
        if not isinstance(who, str) or not who.strip() or _forbidden_char(who):
            raise ActionError(f"'who' must name who asked for the action, not {_show(who)}")
        members = [target.name for target in targets]
        try:
            resolved = template.resolve(values)
            argv = [_substitute(element, resolved) for element in template.argv]
            commands = self._commands(targets, argv, executor)
        except ActionError as error:
            # Audit writes run in a thread: one waiting for a lock held by another process must not stop
            # the event loop (and with it every other request) for the busy timeout.
            await asyncio.to_thread(
                self.audit.reject, who=who, group=group, template=template.name, params=dict(values),
                members=members, error=str(error),
            )  # fmt: skip
            raise
        timeout = self.timeout_s if self.timeout_s is not None else template.timeout_s
        action_id = await asyncio.to_thread(
            self.audit.start,
            who=who, group=group, template=template.name, params=resolved, argv=argv, members=members,
        )  # fmt: skip
        if on_start is not None:
            try:
                on_start(action_id)
            except Exception:
                log.exception("on_start callback failed for action %s", action_id)
        semaphore = asyncio.Semaphore(self.parallelism)
        is_ssh = isinstance(executor, SSHExecutor)

        async def one(target: HostTarget, command: list[str]) -> HostResult:
            async with semaphore:
                result = await _run_host(target, command, timeout, is_ssh)
            await asyncio.to_thread(self.audit.record, action_id, result)
            if on_result is not None:
                try:
                    on_result(result)
                except Exception:
                    # The result is already audited; an observer's bug must not abort the other hosts.
                    log.exception("on_result callback failed for host %s", result.host)
            return result

        tasks = [
            asyncio.create_task(one(target, command))
            for target, command in zip(targets, commands, strict=True)
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                self.audit.finish(action_id, "interrupted")
            raise
        self.audit.finish(action_id, "ok" if all(result.ok for result in results) else "failed")
        return self.audit.get(action_id)

    def run_sync(
        self,
        *,
        who: str,
        group: str,
        template: Template,
        values: Mapping[str, str | int | float | bool],
        targets: Sequence[HostTarget],
        executor: Executor,
        on_result: Callable[[HostResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ActionRecord:
        """:meth:`run` in a fresh event loop (for the CLI and threads without a loop)."""
        return asyncio.run(
            self.run(
                who=who, group=group, template=template, values=values, targets=targets, executor=executor,
                on_result=on_result, on_start=on_start,
            )
        )  # fmt: skip

    @staticmethod
    def _commands(targets: Sequence[HostTarget], argv: list[str], executor: Executor) -> list[list[str]]:
        # Every target's command is built before anything runs, so one bad target refuses the whole action
        # instead of leaving it half done.
        seen: set[str] = set()
        commands = []
        for target in targets:
            if not isinstance(target.name, str) or not target.name or _forbidden_char(target.name):
                raise ActionError(f"target name {_show(target.name)} must be a non-empty printable string")
            if target.name in seen:
                raise ActionError(f"host {target.name!r} is listed twice in the targets")
            seen.add(target.name)
            commands.append(executor.command(target, argv))
        return commands


async def _run_host(target: HostTarget, command: list[str], timeout: float, is_ssh: bool) -> HostResult:
    env = dict(os.environ)
    env["STRATO_HOST"] = target.name
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as spawn_error:
        return HostResult(
            host=target.name,
            exit_code=None,
            duration_s=time.monotonic() - started,
            error=f"could not start {command[0]!r}: {spawn_error.strerror or spawn_error}",
        )
    out, err = _Capture(), _Capture()
    waiter = asyncio.create_task(process.wait())
    readers = [asyncio.create_task(out.drain(process.stdout)), asyncio.create_task(err.drain(process.stderr))]
    timed_out = output_held = False
    try:
        _, pending = await asyncio.wait([waiter, *readers], timeout=timeout)
        if pending:
            # Overran: the command itself, or something it left in the background holding its output open.
            timed_out = not waiter.done()
            output_held = not timed_out
            _kill_group(process)
            await waiter
            await asyncio.wait(readers, timeout=_DRAIN_AFTER_KILL_S)
    finally:
        if process.returncode is None:
            # Cancelled (Ctrl-C, shutdown): never leave the host's command running behind us.
            _kill_group(process)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(waiter), _DRAIN_AFTER_KILL_S)
        for task in (waiter, *readers):
            task.cancel()
    duration = time.monotonic() - started
    code = process.returncode
    error: str | None = None
    exit_code: int | None = code
    if timed_out:
        exit_code = None
        error = f"timed out after {float(timeout)} s"
    elif code is not None and code < 0:
        exit_code = None
        try:
            error = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            error = f"killed by signal {-code}"
    elif output_held:
        error = (
            f"exited, but a background process kept its output open past the {float(timeout)} s timeout;"
            " killed its process group"
        )
    elif is_ssh and code == 255:
        # 255 is ssh's own failure (connection, authentication, host key); its last word says which.
        line = _last_line(err.text())
        error = line if line.startswith("ssh: ") else f"ssh: {line}"
    return HostResult(
        host=target.name,
        exit_code=exit_code,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=duration,
        timed_out=timed_out,
        error=error,
    )
