"""The monitor's configuration: embedded defaults, optionally a TOML file, then command-line overrides.

```toml
[ganglia]
source = "127.0.0.1:8649"   # a gmond (8649) or gmetad (8651 XML, 8652 with `query`)
query = ""                  # gmetad query-port path, e.g. "/?filter=summary" (empty: whole dump)
interval_s = 15
stale_after_s = 0           # 0: Ganglia's rule, silent for 4 x the host's TMAX
poll_deadline_s = 10        # rules unevaluated this long after a poll began: that group shows an error
[store]
path = "~/.local/share/strato/monitor.db"
[server]
listen = "127.0.0.1:8700"
token_file = ""             # default: beside the database, created 0600 on first start
[actions]
executor = "local"          # local | netns | ssh
parallelism = 32
timeout_s = 30              # per host; default: each template's own
[actions.ssh]
known_hosts = "~/.ssh/known_hosts"
identity = ""
user = ""
port = 22
[templates.restart-nginx]   # added to the built-in templates
argv = ["systemctl", "restart", "{unit}"]
params.unit = { type = "choice", choices = ["nginx", "php-fpm"] }
[hosts.web-1]               # how to reach a Ganglia host when its IP is not enough
address = "10.0.0.5"
port = 2222
user = "ops"
netns = ""
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.core.specs import read_toml
from strato.errors import ConfigError
from strato.monitor.actions import (
    BUILTIN_TEMPLATES,
    Executor,
    HostTarget,
    Template,
    make_executor,
    templates_from_config,
)
from strato.monitor.gmetric import parse_address
from strato.monitor.groups import DEFAULT_DEADLINE_S
from strato.monitor.model import Host
from strato.monitor.store import default_db_path


@dataclass
class MonitorConfig:
    source: str = "127.0.0.1:8649"
    query: str | None = None
    interval_s: float = 15.0
    stale_after_s: float | None = None
    poll_deadline_s: float = DEFAULT_DEADLINE_S
    """How long after a poll begins its rules may still be evaluated (see :mod:`strato.monitor.groups`)."""
    db_path: Path = field(default_factory=default_db_path)
    listen: str = "127.0.0.1:8700"
    token_file: Path | None = None
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    parallelism: int = 32
    action_timeout_s: float | None = None
    """Per-host seconds for every action; None keeps each template's own timeout."""
    templates: dict[str, Template] = field(default_factory=lambda: dict(BUILTIN_TEMPLATES))
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_address(self.source)
        parse_address(self.listen)
        if self.interval_s <= 0:
            raise ConfigError(f"the poll interval must be positive, not {self.interval_s:g} s")
        if not self.poll_deadline_s > 0:
            raise ConfigError(f"the poll deadline must be positive, not {self.poll_deadline_s:g} s")
        if self.parallelism < 1:
            raise ConfigError("action parallelism must be at least 1")
        if self.action_timeout_s is not None and self.action_timeout_s <= 0:
            raise ConfigError("the action timeout must be positive")

    @property
    def token_path(self) -> Path:
        return self.token_file or self.db_path.with_name(self.db_path.name + ".token")

    def make_executor(self) -> Executor:
        return make_executor(self.executor, **self.executor_options)

    def target(self, host: str, ganglia_host: Host | None) -> HostTarget:
        """How to reach a host: its [hosts.NAME] entry, else the IP Ganglia reports, else its name."""
        entry = self.hosts.get(host, {})
        address = entry.get("address") or (ganglia_host.ip if ganglia_host and ganglia_host.ip else host)
        return HostTarget(
            name=host,
            address=str(address),
            port=entry.get("port"),
            user=entry.get("user") or None,
            netns=entry.get("netns") or None,
        )


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value


def load_config(path: Path | None = None, **overrides: Any) -> MonitorConfig:
    """Defaults, then the file (if any), then the non-None ``overrides`` (MonitorConfig field names)."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_toml(
            path,
            what="configuration",
            known=("ganglia", "store", "server", "actions", "templates", "hosts"),
            entries="section(s)",
        )
        ganglia = _section(data, "ganglia", path)
        store = _section(data, "store", path)
        server = _section(data, "server", path)
        actions = _section(data, "actions", path)
        try:
            if "source" in ganglia:
                values["source"] = str(ganglia["source"])
            if ganglia.get("query"):
                values["query"] = str(ganglia["query"])
            if "interval_s" in ganglia:
                values["interval_s"] = float(ganglia["interval_s"])
            if ganglia.get("stale_after_s"):
                values["stale_after_s"] = float(ganglia["stale_after_s"])
            if "poll_deadline_s" in ganglia:
                values["poll_deadline_s"] = float(ganglia["poll_deadline_s"])
            if "path" in store:
                values["db_path"] = Path(str(store["path"])).expanduser()
            if "listen" in server:
                values["listen"] = str(server["listen"])
            if server.get("token_file"):
                values["token_file"] = Path(str(server["token_file"])).expanduser()
            if "executor" in actions:
                values["executor"] = str(actions["executor"])
            if "parallelism" in actions:
                values["parallelism"] = int(actions["parallelism"])
            if "timeout_s" in actions:
                values["action_timeout_s"] = float(actions["timeout_s"])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{path}: {error}") from None
        ssh = _section(actions, "ssh", path)
        options = {key: value for key, value in ssh.items() if value not in ("", None)}
        for key in ("known_hosts", "identity"):
            if key in options:
                options[key] = Path(str(options[key])).expanduser()
        if values.get("executor", "local") == "ssh":
            values["executor_options"] = options
        values["templates"] = {
            **BUILTIN_TEMPLATES,
            **templates_from_config(_section(data, "templates", path)),
        }
        hosts = _section(data, "hosts", path)
        for name, entry in hosts.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: [hosts.{name}] must be a table")
        values["hosts"] = hosts
    values.update({key: value for key, value in overrides.items() if value is not None})
    return MonitorConfig(**values)
