"""``strato monitor``: C2MS dynamic server groups, group metrics and group actions over Ganglia."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, error_console, print_table
from strato.errors import ConfigError, UnavailableError

if TYPE_CHECKING:
    from strato.monitor.config import MonitorConfig
    from strato.monitor.groups import PollResult
    from strato.monitor.service import Monitor

app = typer.Typer(
    help="Dynamic server groups over a real Ganglia: groups, aggregates, actions, dashboard (C2MS).",
    no_args_is_help=True,
)
group_app = typer.Typer(
    help="Define and inspect server groups (stored in SQLite, never in gmond).", no_args_is_help=True
)
action_app = typer.Typer(
    help="Run allow-listed command templates on every host of a group.", no_args_is_help=True
)
app.add_typer(group_app, name="group")
app.add_typer(action_app, name="action")

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML configuration (docs/monitor.md)")]
SourceOption = Annotated[
    str | None, typer.Option("--source", help="gmond or gmetad HOST:PORT to read (default 127.0.0.1:8649)")
]
DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite file of groups and the audit log")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")]


def _config(config: Path | None, source: str | None, db: Path | None, **more: Any) -> MonitorConfig:
    from strato.monitor.config import load_config

    return load_config(config, source=source, db_path=db, **more)


def _monitor(config: MonitorConfig) -> Monitor:
    from strato.monitor.service import Monitor

    return Monitor(config)


def _default_operator() -> str:
    """Who runs an action when --operator is not given: the login name, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _poll(monitor: Monitor, *, required: bool) -> PollResult | None:
    from strato.monitor.ganglia import GangliaError

    try:
        return monitor.poll()
    except GangliaError as error:
        if required:
            raise
        error_console.print(f"[yellow]warning:[/] {error}; membership by rule is unknown", highlight=False)
        return None


# ---- groups -------------------------------------------------------------------------------------------


@group_app.command("create")
@friendly_errors
def group_create(
    name: Annotated[str, typer.Argument(help="Group name")],
    rule: Annotated[
        str | None, typer.Option(help="Membership rule, e.g. 'name matches \"web-*\" and load_one > 2'")
    ] = None,
    member: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="A host listed explicitly (repeatable)")
    ] = None,
    description: Annotated[str, typer.Option(help="Free text shown on the dashboard")] = "",
    check: Annotated[
        bool, typer.Option(help="Check the rule's metrics against what Ganglia reports now")
    ] = True,
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a group from a rule and/or listed hosts."""
    from strato.monitor.rules import parse_rule

    settings = _config(config, source, db)
    monitor = _monitor(settings)
    if rule is not None:
        parsed = parse_rule(rule)
        if check and parsed.metrics:
            result = _poll(monitor, required=False)
            if result is not None and monitor.snapshot is not None and monitor.snapshot.hosts:
                parsed.check_metrics(monitor.snapshot.metric_names())
    monitor.store.create(name, rule=rule, members=member or (), description=description)
    _show(monitor, name, json_output, poll=check)


@group_app.command("add")
@friendly_errors
def group_add(
    name: Annotated[str, typer.Argument(help="Group name")],
    hosts: Annotated[list[str], typer.Argument(help="Hosts to list in the group")],
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """List hosts in a group explicitly (members whatever the rule says)."""
    monitor = _monitor(_config(config, source, db))
    monitor.store.add_members(name, hosts)
    _show(monitor, name, json_output, poll=False)


@group_app.command("remove")
@friendly_errors
def group_remove(
    name: Annotated[str, typer.Argument(help="Group name")],
    hosts: Annotated[list[str], typer.Argument(help="Listed hosts to unlist")],
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Unlist hosts from a group."""
    monitor = _monitor(_config(config, source, db))
    monitor.store.remove_members(name, hosts)
    _show(monitor, name, json_output, poll=False)


@group_app.command("set-rule")
@friendly_errors
def group_set_rule(
    name: Annotated[str, typer.Argument(help="Group name")],
    rule: Annotated[str, typer.Argument(help="New rule; '' removes it")],
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace a group's rule (membership follows at the next poll; nothing is reconfigured)."""
    monitor = _monitor(_config(config, source, db))
    monitor.store.set_rule(name, rule or None)
    _show(monitor, name, json_output, poll=False)


@group_app.command("delete")
@friendly_errors
def group_delete(
    name: Annotated[str, typer.Argument(help="Group name")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Delete a group (its audit history stays)."""
    monitor = _monitor(_config(config, None, db))
    monitor.store.delete(name)
    console.print(f"deleted group {name}")


@group_app.command("list")
@friendly_errors
def group_list(
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every group with its current members (one poll of Ganglia)."""
    from strato.monitor.views import group_view, to_json

    monitor = _monitor(_config(config, source, db))
    groups = monitor.store.list()
    result = _poll(monitor, required=False) if groups else None
    states = result.groups if result else {}
    if json_output:
        print_json([to_json(group_view(group, states.get(group.name))) for group in groups])
        return
    rows = []
    for group in groups:
        state = states.get(group.name)
        rows.append(
            {
                "name": group.name,
                "rule": group.rule or "",
                "listed": len(group.members),
                "members": len(state.members) if state else None,
                "up": len(state.up) if state else None,
                "down": len(state.down) if state else None,
            }
        )
    print_table(
        rows,
        [
            ("name", "group"),
            ("rule", "rule"),
            ("listed", "listed"),
            ("members", "members"),
            ("up", "up"),
            ("down", "down"),
        ],
    )


@group_app.command("show")
@friendly_errors
def group_show(
    name: Annotated[str, typer.Argument(help="Group name")],
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """A group's members and aggregates now (one poll of Ganglia)."""
    monitor = _monitor(_config(config, source, db))
    _show(monitor, name, json_output, poll=True)


def _show(monitor: Monitor, name: str, json_output: bool, *, poll: bool) -> None:
    from strato.monitor.views import group_view, to_json

    group = monitor.store.get(name)
    if monitor.snapshot is not None:
        monitor.refresh_groups()  # Ganglia was just read (the rule check): recompute, do not read again
    elif poll:
        _poll(monitor, required=False)
    state = monitor.result.groups.get(name) if monitor.result else None
    if json_output:
        print_json(to_json(group_view(group, state)))
        return
    console.print(
        f"[bold]{group.name}[/]  rule: {group.rule or '(none)'}  listed: {', '.join(group.members) or '-'}",
        highlight=False,
    )
    if state is None:
        return
    for warning in state.warnings:
        error_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if state.error:
        error_console.print(f"[red]rule error:[/] {state.error}", highlight=False)
    console.print(f"members ({len(state.members)}): {', '.join(state.members) or '-'}", highlight=False)
    if state.down:
        console.print(f"[red]down or absent:[/] {', '.join(state.down)}", highlight=False)
    rows = [{"metric": metric, **stats} for metric, stats in sorted(state.aggregates.items())]
    if rows:
        print_table(
            rows,
            [
                ("metric", "metric"),
                ("count", "n"),
                ("mean", "mean"),
                ("min", "min"),
                ("max", "max"),
                ("p50", "p50"),
                ("p90", "p90"),
                ("p99", "p99"),
                ("sum", "sum"),
            ],
            formats={key: ".4g" for key in ("count", "mean", "min", "max", "p50", "p90", "p99", "sum")},
        )


# ---- hosts, sending metrics ------------------------------------------------------------------------


@app.command()
@friendly_errors
def hosts(
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every host Ganglia reports now, up or down, with its groups."""
    from strato.monitor.views import groups_by_host, host_view, to_json

    settings = _config(config, source, db)
    monitor = _monitor(settings)
    result = _poll(monitor, required=True)
    assert result is not None and monitor.snapshot is not None
    groups = groups_by_host(result)
    listing = [
        host_view(host, groups.get(name, ()), settings.stale_after_s)
        for name, host in sorted(monitor.snapshot.hosts.items())
    ]
    if json_output:
        print_json([to_json(view) for view in listing])
        return
    rows = [
        {
            "host": view.name,
            "ip": view.ip,
            "cluster": view.cluster,
            "state": "up" if view.up else "down",
            "tn": view.tn,
            "metrics": len(view.metrics),
            "groups": ", ".join(view.groups),
        }
        for view in listing
    ]
    print_table(
        rows,
        [
            ("host", "host"),
            ("ip", "ip"),
            ("cluster", "cluster"),
            ("state", "state"),
            ("tn", "last heard (s)"),
            ("metrics", "metrics"),
            ("groups", "groups"),
        ],
    )


@app.command()
@friendly_errors
def send(
    name: Annotated[str, typer.Argument(help="Metric name")],
    value: Annotated[str, typer.Argument(help="Value")],
    type_: Annotated[str, typer.Option("--type", help="string, int8..uint32, float, double")] = "double",
    units: Annotated[str, typer.Option(help="Units shown by Ganglia")] = "",
    spoof: Annotated[str | None, typer.Option(help="Publish as another host: IP:NAME (gmetric -S)")] = None,
    group: Annotated[str, typer.Option(help="Ganglia metric group")] = "",
    tmax: Annotated[int, typer.Option(help="Seconds between expected updates")] = 60,
    dmax: Annotated[int, typer.Option(help="Seconds before Ganglia forgets it (0: never)")] = 0,
    gmond: Annotated[str, typer.Option(help="gmond UDP receive channel HOST:PORT")] = "127.0.0.1:8649",
) -> None:
    """Send a custom metric to gmond (Ganglia's gmetric wire format)."""
    from strato.monitor.gmetric import GmetricSender, MetricSpec

    spec = MetricSpec(name, type_, units=units, group=group, tmax=tmax, dmax=dmax)
    with GmetricSender(gmond) as sender:
        sender.send(spec, value, spoof=spoof)


@app.command()
@friendly_errors
def gmond(
    port: Annotated[
        int, typer.Option(help="UDP receive and TCP XML port (Ganglia's default is 8649 for both)")
    ] = 8649,
    cluster: Annotated[str, typer.Option(help="Cluster name in the XML")] = "strato",
    workdir: Annotated[
        Path | None, typer.Option(help="Where its config and log go (default: a temp dir)")
    ] = None,
) -> None:
    """Run a real gmond in the foreground, unicast on 127.0.0.1 only, measuring this machine."""
    import contextlib
    import signal
    import tempfile
    import time

    from strato.monitor.daemons import GmondConfig
    from strato.monitor.daemons import gmond as make_gmond

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # leave through the context manager, which stops gmond by PID

    signal.signal(signal.SIGTERM, stop)
    folder = workdir or Path(tempfile.mkdtemp(prefix="strato-gmond-"))
    daemon = make_gmond(GmondConfig(udp_port=port, tcp_port=port, cluster=cluster), folder)
    with daemon:
        error_console.print(
            f"gmond (pid {daemon.pid}) on 127.0.0.1:{port} (udp + tcp), config {folder / 'gmond.conf'}; "
            "Ctrl-C stops it",
            highlight=False,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while daemon.running():
                time.sleep(0.5)
        if not daemon.running() and daemon.process is not None and daemon.process.returncode:
            raise UnavailableError(f"gmond exited with {daemon.process.returncode}: {daemon.tail()}")


# ---- actions --------------------------------------------------------------------------------------


@action_app.command("run")
@friendly_errors
def action_run(
    group: Annotated[str, typer.Argument(help="Group whose members run the command")],
    template: Annotated[str, typer.Argument(help="Template name (strato monitor action templates)")],
    params: Annotated[list[str] | None, typer.Argument(help="Parameters as name=value")] = None,
    operator: Annotated[
        str | None, typer.Option(help="Who runs it, for the audit log (default: your user)")
    ] = None,
    parallelism: Annotated[int | None, typer.Option(help="Hosts at a time")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per host (default: the template's)")] = None,
    executor: Annotated[
        str | None, typer.Option(help="local, netns or ssh (default from the config)")
    ] = None,
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a template on every member of a group now; exit status 1 if any host failed."""
    from strato.monitor.actions import ActionRunner
    from strato.monitor.audit import AuditLog
    from strato.monitor.views import to_json

    values: dict[str, str] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"parameter {item!r} must be name=value")
        values[key] = value
    settings = _config(config, source, db, executor=executor, parallelism=parallelism)
    chosen = settings.templates.get(template)
    if chosen is None:
        raise ConfigError(
            f"no template named {template!r} (templates: {', '.join(sorted(settings.templates))})"
        )
    monitor = _monitor(settings)
    definition = monitor.store.get(group)
    result = _poll(monitor, required=definition.rule is not None)
    members = result.groups[group].members if result else list(definition.members)
    snapshot = monitor.snapshot
    targets = [settings.target(host, snapshot.hosts.get(host) if snapshot else None) for host in members]
    runner = ActionRunner(AuditLog(settings.db_path), parallelism=settings.parallelism, timeout_s=timeout)
    who = f"{operator or _default_operator()} (cli)"
    if not json_output:
        error_console.print(f"running {template} on {len(targets)} hosts of {group}", highlight=False)
    record = runner.run_sync(
        who=who,
        group=group,
        template=chosen,
        values=values,
        targets=targets,
        executor=settings.make_executor(),
    )
    if json_output:
        print_json(to_json(record))
    else:
        rows = [
            {
                "host": r.host,
                "exit": r.exit_code,
                "seconds": r.duration_s,
                "output": (r.error or r.stdout.strip() or r.stderr.strip())[:80],
            }
            for r in sorted(record.results, key=lambda item: item.host)
        ]
        print_table(
            rows,
            [("host", "host"), ("exit", "exit"), ("seconds", "seconds"), ("output", "output")],
            title=f"action {record.id}: {record.status}",
            formats={"seconds": ".2f"},
        )
    if record.status != "ok":
        raise typer.Exit(code=1)


@action_app.command("list")
@friendly_errors
def action_list(
    group: Annotated[str | None, typer.Option(help="Only this group's actions")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    config: ConfigOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """The audit log: who ran what on which members, and how it went."""
    from strato.monitor.audit import AuditLog
    from strato.monitor.views import to_json

    records = AuditLog(_config(config, None, db).db_path).list(limit=limit, group=group)
    if json_output:
        print_json([to_json(record) for record in records])
        return
    rows = [
        {
            "id": r.id,
            "who": r.who,
            "group": r.group,
            "template": r.template,
            "hosts": len(r.members),
            "ok": r.ok_count,
            "failed": r.failed_count,
            "status": r.status,
        }
        for r in records
    ]
    print_table(
        rows,
        [
            ("id", "id"),
            ("who", "who"),
            ("group", "group"),
            ("template", "template"),
            ("hosts", "hosts"),
            ("ok", "ok"),
            ("failed", "failed"),
            ("status", "status"),
        ],
    )


@action_app.command("templates")
@friendly_errors
def action_templates(config: ConfigOption = None, json_output: JsonOption = False) -> None:
    """The allow-listed templates and their typed parameters."""
    from strato.monitor.views import to_json

    settings = _config(config, None, None)
    listing = sorted(settings.templates.values(), key=lambda item: item.name)
    if json_output:
        print_json([to_json(template) for template in listing])
        return
    rows = [
        {
            "name": template.name,
            "argv": " ".join(template.argv),
            "params": ", ".join(f"{name}:{spec.type}" for name, spec in template.params.items()),
        }
        for template in listing
    ]
    print_table(rows, [("name", "template"), ("argv", "command"), ("params", "parameters")])


# ---- serve ----------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def serve(
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to serve on (default 127.0.0.1:8700)")] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between Ganglia polls (default 15)")] = None,
    query: Annotated[str | None, typer.Option(help="gmetad query-port path, e.g. '/?filter=summary'")] = None,
    stale_after: Annotated[
        float | None, typer.Option(help="Seconds of silence before a host is down")
    ] = None,
    poll_deadline: Annotated[
        float | None,
        typer.Option(help="Seconds after a poll begins before unevaluated rules are errors (default 10)"),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Admin token file (created 0600 if missing)")
    ] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the URL here once listening (scripts)")
    ] = None,
    config: ConfigOption = None,
    source: SourceOption = None,
    db: DbOption = None,
) -> None:
    """Poll Ganglia and serve the dashboard, the JSON API (/docs) and Prometheus /metrics."""
    from strato.core.tokens import ensure_token_file
    from strato.monitor.server import serve as run_server

    settings = _config(
        config,
        source,
        db,
        listen=listen,
        interval_s=interval,
        query=query,
        stale_after_s=stale_after,
        poll_deadline_s=poll_deadline,
        token_file=token_file,
    )
    token = ensure_token_file(settings.token_path)
    monitor = _monitor(settings)
    error_console.print(
        f"strato monitor: http://{settings.listen} polling {settings.source} "
        f"every {settings.interval_s:g} s; "
        f"groups in {settings.db_path}; admin token in {settings.token_path}",
        highlight=False,
    )
    sys.stderr.flush()
    run_server(monitor, token, ready_file=ready_file)


def _register_extras() -> None:
    from strato.cli import monitor_llm

    monitor_llm.register(app)


_register_extras()
