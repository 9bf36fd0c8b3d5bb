"""ProtoHAIL end to end: a workload with a known best policy, the real Azure 2017 sample, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.traces.vm import load_vm_usage
from strato.vm.env import EnvConfig
from strato.vm.evaluate import Experiment, compare, frontier
from strato.vm.policies import STATIC_BASELINES, parse_policy
from strato.vm.protohail import HumanRules, ProtoHAIL, encode, nearest, subset
from strato.vm.synth import known_best_workload

pytestmark = pytest.mark.slow

AZ2017 = shared_data() / "azure-vm-2017"


def test_recovers_the_known_best_policy_and_the_pattern_classes() -> None:
    """Tolerance: every decision within one ratio step (0.1) of the class's known best ratio; prototypes
    at least 90 % pure in the generator's classes."""
    usage, best = known_best_workload(vms=96, days=21, seed=3)
    experiment = Experiment.build(usage, EnvConfig(cores=16, packings=3, packing="by-class"), train_days=14)
    model = ProtoHAIL(k=8, safety=0.1).fit_experiment(experiment)
    node_class = np.array([classes[0] for classes in experiment.nodes.vm_class])
    assert all(len(set(classes)) == 1 for classes in experiment.nodes.vm_class)
    ratios = model.predict(experiment.inputs(experiment.test))
    test_class = node_class[experiment.test.node]
    for name, ratio in best.items():
        chosen = ratios[test_class == name]
        assert len(chosen) and np.all(np.abs(chosen - ratio) <= 0.1 + 1e-9), (name, np.unique(chosen))
    training = experiment.inputs(experiment.train)
    usable = ~np.isnan(training.history_max[:, -training.slots_per_day :]).any(axis=1)
    assert model.centroids is not None
    labels, _ = nearest(encode(subset(training, usable), model.level_weight), model.centroids)
    train_class = node_class[experiment.train.node][usable]
    majority = sum(
        np.unique(train_class[labels == k], return_counts=True)[1].max() for k in np.unique(labels)
    )
    assert majority / len(train_class) >= 0.9


@pytest.mark.shared_data
def test_beats_the_static_frontier_on_real_held_out_days() -> None:
    """The issue's bar: the best static heuristic's benefit at 10x lower risk, or 1.2x its benefit at
    equal risk, on the last week after training on the first three."""
    if not AZ2017.is_dir():
        pytest.skip(f"real trace {AZ2017} not present (the data folder: strato data list)")
    experiment = Experiment.build(load_vm_usage(str(AZ2017)), EnvConfig(), train_days=21)
    static = [point for spec in STATIC_BASELINES for point in frontier(experiment, parse_policy(spec))]
    rows = compare(frontier(experiment, ProtoHAIL()), static)
    assert any(row.benefit_gain >= 1.2 or row.risk_reduction >= 10 for row in rows), [
        (row.policy, row.benefit_gain, row.risk_reduction) for row in rows
    ]
    # At the default safety it is at least as good as the static frontier on both axes.
    default = next(row for row in rows if row.policy == ProtoHAIL().name)
    assert default.benefit_gain >= 1.0 and default.risk_reduction >= 1.0
    # Human rules hold on real data too.
    rules = HumanRules(max_p99=0.7, max_ratio=1.5)
    inputs = experiment.inputs(experiment.test)
    ratios = ProtoHAIL(rules=rules).fit_experiment(experiment).predict(inputs)
    p99 = np.percentile(inputs.history_max[:, -inputs.slots_per_day :], 99, axis=1)
    assert ratios.max() <= 1.5 and (ratios[p99 > 0.7] == 1.0).all()


def strato(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "strato", "vm", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_train_review_feedback_and_evaluate(tmp_path: Path) -> None:
    data = "synthetic:vms=60,days=12,seed=2"
    model = tmp_path / "model.json"
    trained = strato("train", "--data", data, "--train-days", "8", "--k", "5", "--out", str(model), "--json")
    assert trained.returncode == 0, trained.stderr
    prototypes = json.loads(trained.stdout)["prototypes"]
    assert [p["prototype"] for p in prototypes] == [f"P0{i}" for i in range(5)]
    boldest = max(prototypes, key=lambda p: p["ratio"])["prototype"]
    other = next(p["prototype"] for p in prototypes if p["prototype"] != boldest)

    feedback = tmp_path / "feedback.json"
    reviewed = strato(
        "review",
        "--model",
        str(model),
        "--data",
        data,
        "--out",
        str(tmp_path / "review"),
        "--feedback",
        str(feedback),
        "--forbid",
        boldest,
        "--lower",
        f"{other}=1.1",
        "--json",
    )
    assert reviewed.returncode == 0, reviewed.stderr
    assert (tmp_path / "review" / "index.html").exists() and (tmp_path / "review" / "prototypes.png").exists()
    stored = json.loads(feedback.read_text())["prototypes"]
    assert stored[boldest]["action"] == "forbid"
    assert (stored[other]["action"], stored[other]["ratio"]) == ("lower", 1.1)

    retrained = strato(
        "train",
        "--data",
        data,
        "--train-days",
        "8",
        "--k",
        "5",
        "--seed",
        "4",
        "--feedback",
        str(feedback),
        "--out",
        str(tmp_path / "m2.json"),
        "--json",
    )
    assert retrained.returncode == 0, retrained.stderr
    verdicts = {p["feedback"]: p for p in json.loads(retrained.stdout)["prototypes"] if p["feedback"]}
    assert verdicts["forbid"]["ratio"] == 1.0 and verdicts["lower"]["ratio"] <= 1.1

    evaluated = strato(
        "evaluate",
        "--data",
        data,
        "--train-days",
        "8",
        "--policy",
        "nsigma:n=3",
        "--policy",
        f"protohail:model={model}",
        "--policy",
        "oracle",
        "--json",
        "--plot",
        str(tmp_path / "frontier.png"),
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    names = [row["policy"] for row in result["policies"]]
    assert names[0] == "nsigma:n=3" and names[2] == "oracle" and names[1].startswith("protohail")
    oracle = result["policies"][2]
    assert (
        oracle["risk"] == 0
        and oracle["benefit_vcpus_per_node"] >= result["policies"][0]["benefit_vcpus_per_node"] - 16
    )
    assert result["experiment"]["train_days"] == 8 and result["comparison"]
    assert (tmp_path / "frontier.png").stat().st_size > 5000


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    data = "synthetic:vms=40,days=6,seed=1"
    model = tmp_path / "model.json"
    assert strato("train", "--data", data, "--k", "3", "--out", str(model)).returncode == 0
    unknown = strato(
        "review", "--model", str(model), "--feedback", str(tmp_path / "f.json"), "--forbid", "P09"
    )
    assert unknown.returncode == 2 and "unknown prototype 'P09'" in unknown.stderr
    bad_feedback = tmp_path / "bad.json"
    bad_feedback.write_text(json.dumps({"prototypes": {"P77": {"action": "forbid"}}}))
    named = strato(
        "train", "--data", data, "--k", "3", "--feedback", str(bad_feedback), "--out", str(tmp_path / "x")
    )
    assert named.returncode == 2 and "P77" in named.stderr
    model.write_text(model.read_text()[:100])
    corrupt = strato("evaluate", "--data", data, "--policy", f"protohail:model={model}", "--no-frontier")
    assert corrupt.returncode == 2 and "corrupt model file" in corrupt.stderr
    tiny = strato("evaluate", "--data", "synthetic:vms=2,days=3", "--cores", "64", "--no-frontier")
    assert tiny.returncode == 2 and "cannot fill one node" in tiny.stderr
    for result in (unknown, named, corrupt, tiny):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
