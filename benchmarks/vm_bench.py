"""VM oversubscription: all static baselines plus ProtoHAIL over 100 VMs x 4 weeks, timed.

    .venv/bin/python benchmarks/vm_bench.py [--data PATH|synthetic]

Default data: the real Azure 2017 sample (the named set ``azure-vm-2017``) when found, else the
embedded synthetic generator at the same size. The whole job is timed: load, pack, train ProtoHAIL, and
score every policy's full frontier (each heuristic's parameter sweep, ProtoHAIL's safety sweep, each
ProtoHAIL point retrained). The baseline in the same run is a plain-Python reference evaluator (loops over
node-windows and slots) scoring the same decisions; both must agree exactly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from strato.core.console import print_table
from strato.errors import ConfigError
from strato.traces.datasets import DATA_SETS
from strato.traces.vm import load_vm_usage
from strato.vm.env import EnvConfig, window_series
from strato.vm.evaluate import Experiment, frontier
from strato.vm.policies import STATIC_BASELINES, parse_policy


def default_data() -> str:
    try:
        DATA_SETS.get("azure-vm-2017").locate(None)
    except ConfigError:
        return "synthetic:vms=100,days=28"
    return "azure-vm-2017"


def reference_risk(experiment: Experiment, ratios: np.ndarray) -> tuple[int, float]:
    """Overloaded slots and benefit, one node-window and one slot at a time."""
    future = window_series(experiment.nodes.util_max, experiment.test).tolist()
    overloaded, benefit = 0, 0.0
    for ratio, window in zip(ratios.tolist(), future, strict=True):
        for value in window:
            if ratio * value > 1.0:
                overloaded += 1
        benefit += (ratio - 1.0) * experiment.config.cores
    return overloaded, benefit / len(future)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=default_data())
    args = parser.parse_args()
    started = time.perf_counter()
    usage = load_vm_usage(args.data)
    experiment = Experiment.build(usage, EnvConfig(), train_days=21)
    points = 0
    for spec in [*STATIC_BASELINES, "oracle", "protohail"]:
        points += len(frontier(experiment, parse_policy(spec)))
    whole = time.perf_counter() - started

    inputs = experiment.inputs(experiment.test)
    policies = [parse_policy(spec) for spec in STATIC_BASELINES]
    decisions = [policy.decide(inputs) for policy in policies]
    began = time.perf_counter()
    from strato.vm.env import outcome

    future = window_series(experiment.nodes.util_max, experiment.test)
    fast = [outcome(r, future, experiment.config.cores, usage.slot_s) for r in decisions]
    fast_s = time.perf_counter() - began
    began = time.perf_counter()
    slow = [reference_risk(experiment, r) for r in decisions]
    slow_s = time.perf_counter() - began
    for quick, (overloaded, benefit) in zip(fast, slow, strict=True):
        assert int(quick.overloaded_slots.sum()) == overloaded
        assert abs(float(quick.benefit_vcpus.mean()) - benefit) < 1e-9
    rows = [
        {
            "job": f"every policy's frontier ({points} points) on {usage.name}: {usage.vms} VMs x "
            f"{usage.days:.1f} days, {experiment.nodes.count} nodes",
            "strato_s": whole,
            "baseline_s": None,
            "ratio": None,
            "note": f"target < 30 s: {'met' if whole < 30 else 'MISSED'}",
        },
        {
            "job": f"scoring {len(policies)} policies on {experiment.test.count} node-windows",
            "strato_s": fast_s,
            "baseline_s": slow_s,
            "ratio": slow_s / fast_s,
            "note": "same overloaded slots",
        },
    ]
    print_table(
        rows,
        [
            ("job", "job"),
            ("strato_s", "strato s"),
            ("baseline_s", "reference s"),
            ("ratio", "reference/strato"),
            ("note", "note"),
        ],
        formats={"strato_s": ".3f", "baseline_s": ".3f", "ratio": ".0f"},
    )


if __name__ == "__main__":
    main()
