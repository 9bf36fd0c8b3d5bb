"""Splitwise simulator speed: strato against the public simulator on the same point, in one run.

    .venv/bin/python benchmarks/llm_bench.py                     # strato, and the public simulator if found
    SPLITWISE_SIM_HOME=/work/ext .venv/bin/python benchmarks/llm_bench.py

The point: Llama2-70B, Splitwise-HH with 23 prompt + 10 token DGX-H100, 10 minutes of coding traffic at
130 req/s (78,242 requests; the public simulator's seeded trace recipe), with the public simulator's
modelling choices so both compute the same thing. The public simulator is never part of this repository:
``SPLITWISE_SIM_HOME`` names a folder holding its checkout (``splitwise-sim``), a virtualenv with its
dependencies (``splitwise-venv``) and the Hydra config stub (``splitwise-conf``) described in
docs/splitwise-sim.md section 1; without it only strato runs and the table says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from strato.core.console import print_table
from strato.llm.simulate import SimulationSpec, simulate
from strato.traces.llm import load_requests, splitwise_sim_requests

RATE = 130
DURATION_S = 600.0
PROMPT, TOKEN = 23, 10


def write_public_trace(path: Path, requests: object) -> None:
    from strato.traces.llm import LlmRequests

    assert isinstance(requests, LlmRequests)
    lines = ["request_id,request_type,application_id,arrival_timestamp,batch_size,prompt_size,token_size"]
    lines += [
        f"{i},2,0,{a!r},1,{p},{o}"
        for i, (a, p, o) in enumerate(
            zip(
                requests.arrival_s.tolist(),
                requests.prompt_tokens.tolist(),
                requests.output_tokens.tolist(),
                strict=True,
            )
        )
    ]
    path.write_text("\n".join(lines) + "\n")


def run_public(home: Path, requests: object) -> float | None:
    checkout, python = home / "splitwise-sim", home / "splitwise-venv" / "bin" / "python"
    if not checkout.is_dir() or not python.exists():
        return None
    (checkout / "traces").mkdir(exist_ok=True)
    write_public_trace(checkout / "traces" / "strato_bench_code130.csv", requests)
    command = [
        str(python),
        "run.py",
        "--config-dir",
        str(home / "splitwise-conf"),
        "applications.0.model_architecture=llama2-70b",
        "applications.0.model_size=llama2-70b-fp16",
        "cluster=half_half",
        "performance_model=db",
        "seed=0",
        "trace.filename=strato_bench_code130",
        "applications.0.scheduler=mixed_pool",
        "cluster.servers.0.count=0",
        f"cluster.servers.1.count={PROMPT + TOKEN}",
        "start_state=splitwise",
        f"start_state.prompt.num_instances={PROMPT}",
        f"start_state.token.num_instances={TOKEN}",
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=checkout, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    base = load_requests("azure-llm-2023:code")
    requests = splitwise_sim_requests(base, RATE, DURATION_S, seed=0)
    spec = SimulationSpec(design="splitwise-hh", prompt=PROMPT, token=TOKEN, public_simulator=True)
    started = time.perf_counter()
    result = simulate(spec, requests)
    strato_s = time.perf_counter() - started
    home = Path(os.environ.get("SPLITWISE_SIM_HOME", "/work/ext"))
    public_s = run_public(home, requests)
    rows = [
        {
            "simulator": "strato (whole job)",
            "wall_s": strato_s,
            "requests_per_s": len(requests) / strato_s,
            "ttft_p50": result.ttft_s.p50,
            "e2e_p99": result.e2e_s.p99,
        }
    ]
    if public_s is not None:
        rows.append(
            {
                "simulator": "public Splitwise simulator",
                "wall_s": public_s,
                "requests_per_s": len(requests) / public_s,
                "ttft_p50": None,
                "e2e_p99": None,
            }
        )
    print_table(
        rows,
        [
            ("simulator", "simulator"),
            ("wall_s", "wall s"),
            ("requests_per_s", "simulated req/s"),
            ("ttft_p50", "TTFT p50 s"),
            ("e2e_p99", "E2E p99 s"),
        ],
        title=f"Splitwise-HH {PROMPT}P+{TOKEN}T, code {RATE} req/s x {DURATION_S:g} s "
        f"({len(requests):,} requests)",
        formats={"wall_s": ".2f", "requests_per_s": ",.0f", "ttft_p50": ".4f", "e2e_p99": ".4f"},
    )
    if public_s is None:
        print(
            f"public simulator not found under {home} (set SPLITWISE_SIM_HOME); docs/splitwise-sim.md "
            "measured 70-76 s for this point here",
            file=sys.stderr,
        )
    else:
        print(f"strato is {public_s / strato_s:.1f}x faster on this point (target >= 10x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
