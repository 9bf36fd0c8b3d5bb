"""``strato vm``: VM oversubscription policies (ProtoHAIL) against static heuristics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, error_console, print_table
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.vm.evaluate import Experiment, Score
    from strato.vm.policies import Policy
    from strato.vm.protohail import PrototypeRow

PolicyT = TypeVar("PolicyT", bound="Policy")

app = typer.Typer(
    help="VM oversubscription: learned, human-guided ProtoHAIL vs static heuristics.", no_args_is_help=True
)

DataOption = Annotated[
    str,
    typer.Option(
        "--data", help="synthetic[:vms=N,days=D,seed=S], an azure-vm-2017 folder, or a public trace"
    ),
]
TrainDays = Annotated[int | None, typer.Option(help="Days used for training; later days are evaluated")]
Cores = Annotated[int, typer.Option(help="Physical cores per node")]
Packings = Annotated[int, typer.Option(help="Random first-fit packings of the VMs (node samples)")]
Seed = Annotated[int, typer.Option(help="Seed of synthetic data, vCPU sizes and packings")]
UntilDay = Annotated[
    int | None,
    typer.Option(
        help="Use only days before this one (tune on a validation split, keep the test days unseen)"
    ),
]
RulesOption = Annotated[Path | None, typer.Option(help="Human rules (TOML) ProtoHAIL always enforces")]
FeedbackOption = Annotated[
    Path | None, typer.Option(help="Feedback on prototypes (JSON, from strato vm review)")
]

SCORE_COLUMNS = [
    ("policy", "policy"),
    ("risk", "risk (overloaded slots)"),
    ("risk_ci", "risk 95% CI"),
    ("severity_core_min_per_node_day", "excess core-min/node-day"),
    ("benefit_vcpus_per_node", "benefit vCPU/node"),
    ("benefit_ci", "benefit 95% CI"),
    ("benefit_pct_of_cores", "% of cores"),
    ("mean_ratio", "mean ratio"),
]
SCORE_FORMATS = {
    "risk": ".2e",
    "severity_core_min_per_node_day": ".2f",
    "benefit_vcpus_per_node": ".2f",
    "benefit_pct_of_cores": ".1f",
    "mean_ratio": ".2f",
}


def _experiment(
    data: str, train_days: int | None, cores: int, packings: int, seed: int, until_day: int | None = None
) -> Experiment:
    from strato.traces.vm import load_vm_usage
    from strato.vm.env import EnvConfig
    from strato.vm.evaluate import Experiment

    usage = load_vm_usage(data, seed=seed)
    if until_day is not None:
        usage = usage.first_days(until_day)
    return Experiment.build(
        usage, EnvConfig(cores=cores, packings=packings, seed=seed), train_days=train_days
    )


def _with_knowledge(policy: PolicyT, rules: Path | None, feedback: Path | None) -> PolicyT:
    from strato.vm.protohail import Feedback, HumanRules, ProtoHAIL

    if isinstance(policy, ProtoHAIL) and not policy.fitted:
        if rules is not None:
            policy.rules = HumanRules.load(rules)
        if feedback is not None:
            policy.feedback = Feedback.load(feedback)
    return policy


def _rows(scores: list[Score]) -> list[dict[str, str | int | float]]:
    return [
        {
            **item.to_row(),
            "risk_ci": f"{item.risk_ci[0]:.1e}..{item.risk_ci[1]:.1e}",
            "benefit_ci": f"{item.benefit_ci[0]:.2f}..{item.benefit_ci[1]:.2f}",
        }
        for item in scores
    ]


@app.command()
@friendly_errors
def evaluate(
    data: DataOption = "synthetic",
    policy: Annotated[
        list[str] | None,
        typer.Option(
            help="fixed:R, nsigma:n=N, percentile:p=P, borg:f=F, max:n=N,p=P, oracle, protohail[...] "
            "(repeatable; default: the static baselines, the oracle and ProtoHAIL)"
        ),
    ] = None,
    train_days: TrainDays = None,
    cores: Cores = 16,
    packings: Packings = 5,
    seed: Seed = 0,
    until_day: UntilDay = None,
    rules: RulesOption = None,
    feedback: FeedbackOption = None,
    frontier: Annotated[
        bool, typer.Option(help="Sweep each policy's knob: the risk/benefit frontier")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the risk/benefit frontier plot (PNG) here")] = None,
) -> None:
    """Risk and benefit of oversubscription policies on held-out days, with ProtoHAIL vs the best static."""
    from strato.core.progress import progress
    from strato.vm import evaluate as ev
    from strato.vm.policies import STATIC_BASELINES, parse_policy

    experiment = _experiment(data, train_days, cores, packings, seed, until_day)
    specs = policy or [*STATIC_BASELINES, "oracle", "protohail"]
    policies = [_with_knowledge(parse_policy(spec), rules, feedback) for spec in specs]
    headline = [ev.run_policy(experiment, item) for item in progress(policies, description="policies")]
    sweeps: dict[str, list[Score]] = {}
    if frontier:
        for item in progress(policies, description="frontiers"):
            sweeps[item.name] = ev.frontier(experiment, item)
    static = [
        p for name, points in sweeps.items() if not name.startswith(("protohail", "oracle")) for p in points
    ]
    learned = [p for name, points in sweeps.items() if name.startswith("protohail") for p in points]
    comparison = ev.compare(learned, static) if learned and static else []
    describe = {
        "data": experiment.usage.name,
        "vms": experiment.usage.vms,
        "days": round(experiment.usage.days, 2),
        "train_days": experiment.train_days,
        "evaluated_days": int(experiment.test.window.max() - experiment.test.window.min() + 1)
        if experiment.test.count
        else 0,
        "nodes": experiment.nodes.count,
        "cores": cores,
        "vcpus": experiment.usage.vcpus_source,
    }
    if json_output:
        print_json(
            {
                "experiment": describe,
                "policies": [s.to_json() for s in headline],
                "frontiers": {name: [s.to_json() for s in points] for name, points in sweeps.items()},
                "comparison": [c.to_json() for c in comparison],
            }
        )
    else:
        console.print(
            f"{describe['data']}: {describe['vms']} VMs, {describe['days']} days; trained on "
            f"{describe['train_days']} days, evaluated on the rest; "
            f"{describe['nodes']} nodes of {cores} cores "
            f"({packings} packings); vCPUs: {describe['vcpus']}",
            highlight=False,
        )
        print_table(_rows(headline), SCORE_COLUMNS, formats=SCORE_FORMATS)
        if comparison:
            print_table(
                [c.to_row() for c in comparison],
                [
                    ("policy", "ProtoHAIL"),
                    ("risk", "risk"),
                    ("benefit", "benefit"),
                    ("static_benefit_at_equal_risk", "best static benefit at equal risk"),
                    ("benefit_gain", "benefit x"),
                    ("static_risk_at_equal_benefit", "best static risk at equal benefit"),
                    ("risk_reduction", "risk /"),
                ],
                title="ProtoHAIL against the static heuristics' frontier",
                formats={
                    "risk": ".2e",
                    "benefit": ".2f",
                    "static_benefit_at_equal_risk": ".2f",
                    "benefit_gain": ".2f",
                    "static_risk_at_equal_benefit": ".2e",
                    "risk_reduction": ".1f",
                },
            )
    if plot is not None:
        from strato.vm.plots import frontier_figure

        figure = frontier_figure(sweeps or {s.policy: [s] for s in headline}, title=experiment.usage.name)
        figure.savefig(plot)
        error_console.print(f"frontier plot written to {plot}", highlight=False)


@app.command()
@friendly_errors
def train(
    out: Annotated[Path, typer.Option(help="Where to write the model (JSON)")],
    data: DataOption = "synthetic",
    train_days: TrainDays = None,
    cores: Cores = 16,
    packings: Packings = 5,
    seed: Seed = 0,
    k: Annotated[int, typer.Option(help="Prototypes")] = 12,
    safety: Annotated[float, typer.Option(help="Quantile of the oracle's ratios a prototype imitates")] = 0.1,
    rules: RulesOption = None,
    feedback: FeedbackOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the prototypes as JSON")] = False,
) -> None:
    """Train ProtoHAIL on the first days of the data and save it (respecting rules and feedback)."""
    from strato.vm.protohail import ProtoHAIL

    experiment = _experiment(data, train_days, cores, packings, seed)
    model = _with_knowledge(ProtoHAIL(k=k, safety=safety, seed=seed), rules, feedback)
    model.fit_experiment(experiment)
    model.save(out)
    rows = model.prototypes()
    if json_output:
        print_json({"model": str(out), "prototypes": [row.to_json() for row in rows]})
        return
    _print_prototypes(rows, title=f"ProtoHAIL model written to {out}")


def _print_prototypes(rows: list[PrototypeRow], *, title: str | None = None) -> None:
    columns = [
        ("prototype", "prototype"),
        ("members", "training windows"),
        ("learned", "imitated ratio"),
        ("ratio", "ratio used"),
        ("feedback", "feedback"),
    ]
    print_table(
        [row.to_row() for row in rows], columns, title=title, formats={"learned": ".2f", "ratio": ".2f"}
    )


@app.command()
@friendly_errors
def review(
    model_path: Annotated[Path, typer.Option("--model", help="A model from strato vm train")],
    data: DataOption = "synthetic",
    out: Annotated[
        Path | None, typer.Option(help="Write the review report (HTML + pattern plots) here")
    ] = None,
    feedback: Annotated[Path | None, typer.Option(help="Feedback file to create or update")] = None,
    accept: Annotated[list[str] | None, typer.Option(help="Accept a prototype's ratio (repeatable)")] = None,
    lower: Annotated[list[str] | None, typer.Option(help="PROTOTYPE=RATIO: lower it (repeatable)")] = None,
    forbid: Annotated[
        list[str] | None, typer.Option(help="Forbid oversubscribing a prototype (repeatable)")
    ] = None,
    note: Annotated[str, typer.Option(help="A note stored with these verdicts")] = "",
    seed: Seed = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the prototypes as JSON")] = False,
) -> None:
    """Show each prototype (members' patterns, proposed ratio) and record accept/lower/forbid verdicts."""
    from strato.vm.protohail import Feedback, FeedbackEntry, ProtoHAIL, prototype_id

    model = ProtoHAIL.load(model_path)
    assert model.centroids is not None
    known = {prototype_id(index) for index in range(len(model.centroids))}
    verdicts: dict[str, FeedbackEntry] = {}

    def centroid(name: str) -> list[float]:
        if name not in known:
            raise ConfigError(f"unknown prototype {name!r}; this model has {', '.join(sorted(known))}")
        assert model.centroids is not None
        return [float(x) for x in model.centroids[int(name[1:])]]

    for name in accept or []:
        verdicts[name] = FeedbackEntry("accept", None, centroid(name), note)
    for name in forbid or []:
        verdicts[name] = FeedbackEntry("forbid", None, centroid(name), note)
    for item in lower or []:
        name, sep, value = item.partition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = math.nan
        if not sep or not ratio >= 1.0:
            raise ConfigError(f"--lower {item!r}: expected PROTOTYPE=RATIO with a ratio >= 1.0, e.g. P03=1.2")
        verdicts[name] = FeedbackEntry("lower", ratio, centroid(name), note)
    if verdicts:
        if feedback is None:
            raise ConfigError("verdicts need --feedback FILE to be stored in")
        stored = Feedback.load(feedback) if feedback.exists() else Feedback()
        stored.entries.update(verdicts)
        stored.model = model.fingerprint_of_centroids()
        stored.save(feedback)
        model.apply_feedback(stored)
        error_console.print(
            f"{len(verdicts)} verdict(s) stored in {feedback}; retrain with --feedback {feedback}",
            highlight=False,
        )
    rows = model.prototypes()
    if out is not None:
        from strato.vm.plots import review_report

        experiment = _experiment(
            data,
            model.trained_on.get("train_days"),
            int(model.trained_on.get("cores", 16)),
            int(model.trained_on.get("packings", 5)),
            int(model.trained_on.get("seed", seed)),
        )
        index = review_report(model, experiment, out)
        error_console.print(f"review written to {index}", highlight=False)
    if json_output:
        print_json([row.to_json() for row in rows])
    else:
        _print_prototypes(rows)
