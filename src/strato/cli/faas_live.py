"""``strato faas serve|deploy|invoke|list|remove``: the live function platform and its API wrappers."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli.common import duration_option, friendly_errors, print_json
from strato.core.console import console, print_table
from strato.core.units import parse_duration, parse_size_mb
from strato.errors import ConfigError, StratoError

if TYPE_CHECKING:
    from strato.faas.live.storage_broker import StorageConfig

UrlOption = Annotated[str, typer.Option("--url", envvar="STRATO_FAAS_URL", help="Gateway URL")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Admin bearer token (default: $STRATO_FAAS_TOKEN or the local server's token file)"
    ),
]
StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="STRATO_FAAS_STATE",
        help="Server state directory: functions and token (default ~/.local/share/strato/faas)",
    ),
]


def _client(url: str, token: str | None, state_dir: Path | None = None):  # type: ignore[no-untyped-def]
    from strato.faas.live.client import FaasClient, resolve_token

    return FaasClient(url, resolve_token(token, state_dir))


def _parse_env(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env takes NAME=VALUE, not {pair!r}")
        env[key] = value
    return env


def _bytes(text: str, option: str) -> int:
    size = round(parse_size_mb(text, default_unit="mib") * 2**20)
    if size <= 0:
        raise ConfigError(f"{option} must be positive")
    return size


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (0 picks a free one and prints it)")] = 8080,
        backend: Annotated[
            str,
            typer.Option(
                help="lean (gateway -> instance socket) or faasd "
                "(gateway -> provider -> watchdog -> function)"
            ),
        ] = "lean",
        spawn: Annotated[str, typer.Option(help="fork (from a pre-initialised template) or fresh")] = "fork",
        policy: Annotated[
            str,
            typer.Option(
                help="Keep-alive policy, the same specs as the simulator: fixed:10m, hybrid, greedy-dual, ..."
            ),
        ] = "fixed:10m",
        time_scale: Annotated[
            float, typer.Option(help="Policy time runs this many times faster than real time (trace replays)")
        ] = 1.0,
        memory_budget: Annotated[
            str | None,
            typer.Option(
                help="Node memory budget, e.g. 4GiB; idle functions are evicted in the policy's order"
            ),
        ] = None,
        state_dir: StateOption = None,
        max_body: Annotated[str, typer.Option(help="Largest request body accepted (413 above)")] = "8MiB",
        protect_invoke: Annotated[
            bool, typer.Option(help="Require the bearer token on /function/* too")
        ] = False,
        sandbox: Annotated[
            bool, typer.Option(help="Isolate instances (namespaces, cgroups, own uid) where the host allows")
        ] = True,
        drain_timeout: Annotated[
            str, typer.Option(help="How long shutdown waits for in-flight requests")
        ] = "30s",
        max_response: Annotated[
            str, typer.Option(help="Largest response body a function may return (502 above)")
        ] = "64MiB",
        max_connections: Annotated[
            int, typer.Option(help="Open client connections; more are answered 503 and closed")
        ] = 4096,
        header_timeout: Annotated[
            str, typer.Option(help="Time a client has to send a request head (408 after)")
        ] = "10s",
        body_timeout: Annotated[
            str, typer.Option(help="Longest wait for more of a request body (408 after)")
        ] = "30s",
        idle_timeout: Annotated[
            str, typer.Option(help="Idle kept-alive connections close after this")
        ] = "30s",
        pids_limit: Annotated[
            int, typer.Option(help="Processes and threads an instance may start (cgroup pids.max)")
        ] = 64,
        log_limit: Annotated[
            str, typer.Option(help="Log kept per function (plus one rotated file)")
        ] = "1MiB",
        lane_poll: Annotated[
            str,
            typer.Option(
                help="How long the lean gateway polls an instance for its answer when nothing else is in "
                "flight (0 to sleep in epoll instead; at most 1ms)"
            ),
        ] = "50us",
        code_root: Annotated[
            Path | None,
            typer.Option(
                help='Directory deploys ({"directory": PATH}) may read only below this; without it they '
                "are refused"
            ),
        ] = None,
        storage: Annotated[
            str | None,
            typer.Option(
                help="Object store for context.storage: s3://HOST:PORT (e.g. `strato storage serve`'s "
                "shaped URL)"
            ),
        ] = None,
        cache: Annotated[
            str | None,
            typer.Option(help="Per-application cache: off, lru or faast (default faast with --storage)"),
        ] = None,
        cache_size: Annotated[
            str | None,
            typer.Option(help="Cache each live instance brings to its application (default 256MiB)"),
        ] = None,
        consistency: Annotated[
            str | None,
            typer.Option(help="strong (validate every cached read, default), relaxed or relaxed:TTL"),
        ] = None,
        max_object: Annotated[
            str | None, typer.Option(help="Largest object a function may read or write (default 512MiB)")
        ] = None,
    ) -> None:
        """Run the function platform (OpenFaaS-style API) until SIGTERM or Ctrl-C."""
        from strato.faas.live.gateway import GatewayConfig, default_state_dir, run
        from strato.faas.live.httpio import ServerLimits
        from strato.faas.live.isolation import probe_host
        from strato.faas.live.platform import NodeConfig, backend_name, spawn_mode

        state = (state_dir or default_state_dir()).resolve()
        budget = parse_size_mb(memory_budget, default_unit="mib") if memory_budget else math.inf
        storage_config = _storage_config(storage, cache, cache_size, consistency, max_object)
        node = NodeConfig(
            state_dir=state,
            backend=backend_name(backend),
            spawn=spawn_mode(spawn),
            policy=policy,
            time_scale=time_scale,
            memory_budget_mb=budget,
            sandbox=sandbox,
            max_response=_bytes(max_response, "--max-response"),
            pids_limit=pids_limit,
            log_limit=_bytes(log_limit, "--log-limit"),
            storage=storage_config,
        )
        if max_connections < 1:
            raise ConfigError("--max-connections must be at least 1")
        limits = ServerLimits(
            max_body=_bytes(max_body, "--max-body"),
            header_timeout_s=parse_duration(header_timeout),
            body_timeout_s=parse_duration(body_timeout),
            idle_timeout_s=parse_duration(idle_timeout),
            max_connections=max_connections,
        )
        lane_poll_s = parse_duration(lane_poll)
        if lane_poll_s > 1e-3:
            raise ConfigError(
                f"--lane-poll {lane_poll} is longer than 1ms: the gateway would stall other clients"
            )
        if code_root is not None and not code_root.is_dir():
            raise ConfigError(f"--code-root {code_root} is not a directory")
        config = GatewayConfig(
            node=node,
            host=host,
            port=port,
            limits=limits,
            protect_invoke=protect_invoke,
            lane_poll_s=lane_poll_s,
            drain_timeout_s=parse_duration(drain_timeout),
            code_root=code_root.resolve() if code_root else None,
        )
        warnings = list(probe_host().warnings) if sandbox else ["sandbox disabled (--no-sandbox)"]

        def ready(url: str, gateway: object) -> None:
            print(
                f"strato faas serving on {url} (backend {backend}, spawn {spawn}, policy {policy}, "
                f"time scale {time_scale:g})",
                flush=True,
            )
            print(f"admin token in {state / 'token'}", flush=True)
            if storage_config is not None:
                print(
                    f"storage {storage_config.url} (cache {storage_config.cache}, "
                    f"{consistency or 'strong'} consistency)",
                    flush=True,
                )
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr, flush=True)

        try:
            code = run(config, on_ready=ready)
        except OSError as error:
            raise StratoError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
        if code:
            print("shutdown: some requests were still running after the drain timeout", file=sys.stderr)
        raise typer.Exit(code)

    @app.command()
    @friendly_errors
    def deploy(
        name: Annotated[str, typer.Argument(help="Function name")],
        directory: Annotated[Path, typer.Option("--dir", help="Directory with the function's code")] = Path(
            "."
        ),
        handler: Annotated[str, typer.Option(help="module:function to call")] = "handler:handle",
        memory: Annotated[str, typer.Option(help="Memory limit, e.g. 128Mi")] = "128Mi",
        timeout: Annotated[str, typer.Option(help="Wall-clock and CPU-time limit per invocation")] = "30s",
        env: Annotated[list[str] | None, typer.Option("--env", help="NAME=VALUE, repeatable")] = None,
        concurrency: Annotated[int, typer.Option(help="Invocations one instance runs at once")] = 1,
        max_concurrency: Annotated[int, typer.Option(help="In-flight invocations before 429")] = 16,
        network: Annotated[bool, typer.Option(help="Give instances the host network")] = False,
        bucket: Annotated[
            list[str] | None,
            typer.Option(
                "--bucket", help="Bucket the function may use via context.storage ('*': all), repeatable"
            ),
        ] = None,
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    ) -> None:
        """Deploy (or update) a function from a local directory."""
        client = _client(url, token, state_dir)
        result = client.deploy(
            name,
            directory=directory,
            handler=handler,
            memory=memory,
            timeout=timeout,
            env=_parse_env(env),
            concurrency=concurrency,
            maxConcurrency=max_concurrency,
            network=network,
            buckets=list(bucket or []),
        )
        if json_output:
            print_json(result)
        else:
            console.print(f"deployed {result['name']} version {result['version']} ({result['handler']})")

    @app.command()
    @friendly_errors
    def invoke(
        name: Annotated[str, typer.Argument(help="Function name")],
        data: Annotated[
            str | None, typer.Option("--data", "-d", help="Request body ('-' reads stdin)")
        ] = None,
        method: Annotated[str, typer.Option(help="HTTP method")] = "POST",
        header: Annotated[
            list[str] | None, typer.Option("--header", "-H", help="'Name: value', repeatable")
        ] = None,
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
    ) -> None:
        """Invoke a function; prints the response body (status on stderr when it is not 2xx)."""
        body = sys.stdin.buffer.read() if data == "-" else (data or "").encode()
        headers = {}
        for line in header or []:
            key, sep, value = line.partition(":")
            if not sep:
                raise ConfigError(f"--header takes 'Name: value', not {line!r}")
            headers[key.strip()] = value.strip()
        result = _client(url, token, state_dir).invoke(name, body, method=method.upper(), headers=headers)
        sys.stdout.buffer.write(result.body)
        if result.body and not result.body.endswith(b"\n") and sys.stdout.isatty():
            sys.stdout.write("\n")
        sys.stdout.flush()
        if result.status >= 400:
            print(f"HTTP {result.status}", file=sys.stderr)
            raise typer.Exit(1)

    @app.command(name="list")
    @friendly_errors
    def list_functions(
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    ) -> None:
        """List deployed functions with their instances and counters."""
        functions = _client(url, token, state_dir).list()
        if json_output:
            print_json(functions)
            return
        rows = [
            {
                "name": f["name"],
                "version": f["version"],
                "handler": f["handler"],
                "memory": f["limits"]["memory"],
                "instances": f["stats"]["instances"],
                "invocations": f["stats"]["invocations"],
                "cold_starts": f["stats"]["cold_starts"],
            }
            for f in functions
        ]
        print_table(
            rows,
            [
                ("name", "name"),
                ("version", "version"),
                ("handler", "handler"),
                ("memory", "memory"),
                ("instances", "instances"),
                ("invocations", "invocations"),
                ("cold_starts", "cold starts"),
            ],
            title=f"functions at {url}",
        )

    @app.command()
    @friendly_errors
    def remove(
        name: Annotated[str, typer.Argument(help="Function name")],
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
    ) -> None:
        """Remove a function and stop its instances."""
        _client(url, token, state_dir).remove(name)
        console.print(f"removed {name}")

    @app.command()
    @friendly_errors
    def unload(
        name: Annotated[str, typer.Argument(help="Function name")],
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
    ) -> None:
        """Stop a function's idle instances now, as a keep-alive unload would (its cache goes with them)."""
        stopped = _client(url, token, state_dir).unload(name)
        console.print(f"unloaded {name}: {stopped} idle instance(s) stopped")

    @app.command()
    @friendly_errors
    def logs(
        name: Annotated[str, typer.Argument(help="Function name")],
        lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines")] = 100,
        url: UrlOption = "http://127.0.0.1:8080",
        token: TokenOption = None,
        state_dir: StateOption = None,
    ) -> None:
        """Print what a function's instances wrote to stdout and stderr (time, instance, line)."""
        sys.stdout.write(_client(url, token, state_dir).logs(name, lines))


def register_replay(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def replay(
        trace: Annotated[str, typer.Option(help="Trace directory/file (Azure 2019/2021) or synthetic[:k=v]")],
        policy: Annotated[str, typer.Option(help="Keep-alive policy spec")] = "fixed:10m",
        speedup: Annotated[float, typer.Option(help="How many times faster than the trace to replay")] = 60.0,
        hours: Annotated[float | None, typer.Option(help="Replay only the first H hours")] = None,
        apps: Annotated[int | None, typer.Option(help="Replay only the first N apps")] = None,
        backend: Annotated[str, typer.Option(help="lean or faasd")] = "lean",
        spawn: Annotated[str, typer.Option(help="fork or fresh")] = "fork",
        seed: Annotated[int, typer.Option(help="Seed expanding minute counts and durations")] = 0,
        footprint: Annotated[
            float, typer.Option(help="Share of each app's memory its synthetic handler really allocates")
        ] = 0.02,
        sandbox: Annotated[bool, typer.Option(help="Isolate instances")] = True,
        repeat: Annotated[
            int,
            typer.Option(
                min=1, help="Send the trace this many times back to back (history for the policies)"
            ),
        ] = 1,
        warmup: Annotated[
            str | None,
            typer.Option(
                help="Learn from but do not count this first stretch of the (repeated) trace, in trace time; "
                "with a unit: 30m"
            ),
        ] = None,
        max_uncertainty: Annotated[
            float,
            typer.Option(
                help="Refuse to compare when the host kept the replay so far behind its trace that the "
                "simulator's cold starts or wasted memory are uncertain by more than this share"
            ),
        ] = 0.05,
        json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    ) -> None:
        """Replay a trace live (time-compressed) and compare with the simulator's prediction."""
        from strato.faas.live.replay import ReplayOptions
        from strato.faas.live.replay import replay as run_replay
        from strato.traces.faas.loader import load_workload

        options = ReplayOptions(
            trace=trace,
            policy=policy,
            speedup=speedup,
            hours=hours,
            apps=apps,
            backend=backend,
            spawn=spawn,
            seed=seed,
            footprint_fraction=footprint,
            sandbox=sandbox,
            repeat=repeat,
            warmup_s=duration_option(warmup, "--warmup") if warmup is not None else 0.0,
            max_uncertainty=max_uncertainty,
        )
        workload = load_workload(trace)
        report = run_replay(
            workload, options, progress=None if json_output else lambda m: console.print(m, style="dim")
        )
        if json_output:
            print_json(report.to_json())
            return
        print_table(
            [row.to_json() for row in report.rows()],
            [
                ("metric", "metric"),
                ("planned", "simulator, as planned"),
                ("simulator", "simulator, as sent"),
                ("live", "live"),
                ("gap_pct", "gap %"),
            ],
            title=f"{policy} on {report.workload}: live replay at {speedup:g}x vs simulator",
            formats={"planned": ",.2f", "simulator": ",.2f", "live": ",.2f", "gap_pct": "+.2f"},
        )
        load, lag = report.load, report.realisation
        console.print(
            f"{report.invocations:,} invocations of {report.apps} apps over "
            f"{report.horizon_s / 3600:.2f} h ({report.measured_s / 3600:.2f} h counted) replayed in "
            f"{report.wall_s:.0f} s; errors: {report.live_errors or 'none'}; gateway latency p50 "
            f"{1e3 * (load['p50'] or 0):.1f} ms, p99 {1e3 * (load['p99'] or 0):.1f} ms (real time)"
        )
        console.print(
            f"behind the trace (policy time): sends p99 {lag.send_lag_p99_s:.2f} s, responses after the "
            f"planned end p50 {lag.end_lag_p50_s:.2f} s, p99 {lag.end_lag_p99_s:.2f} s; counters read "
            f"{lag.counters_late_s:.2f} s late; uncertainty {lag.uncertainty:.1%}; the gap is live vs the "
            "simulator on the requests as sent"
        )


def _storage_config(
    url: str | None,
    cache: str | None,
    cache_size: str | None,
    consistency: str | None,
    max_object: str | None,
) -> StorageConfig | None:
    from strato.faas.live.storage_broker import StorageConfig, parse_cache_mode, parse_consistency

    if url is None:
        given = [
            flag
            for flag, value in (
                ("--cache", cache),
                ("--cache-size", cache_size),
                ("--consistency", consistency),
                ("--max-object", max_object),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} need(s) an object store: add --storage s3://HOST:PORT")
        return None
    if not url.startswith("s3://"):
        raise ConfigError(f"--storage {url!r}: give the object store as s3://HOST:PORT")
    return StorageConfig(
        url=url,
        cache=parse_cache_mode(cache or "faast"),
        shard_bytes=_bytes(cache_size or "256MiB", "--cache-size"),
        validate_after_s=parse_consistency(consistency or "strong"),
        max_object=_bytes(max_object or "512MiB", "--max-object"),
    )
