"""Figures for the VM domain: risk/benefit frontiers and the prototype review report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from strato.core.report import Report, new_figure
from strato.vm.protohail import ProtoHAIL, encode, hourly_profile, nearest, subset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from strato.vm.evaluate import Experiment, Score


def frontier_figure(sweeps: dict[str, list[Score]], *, title: str) -> Figure:
    """Benefit against risk for every policy's sweep; risk on a log axis (zero risk drawn at the floor)."""
    figure = new_figure(7.5, 4.5)
    axes = figure.add_subplot()
    positive = [s.risk for points in sweeps.values() for s in points if s.risk > 0]
    floor = min(positive) / 3 if positive else 1e-6
    for name, points in sweeps.items():
        ordered = sorted(points, key=lambda s: s.risk)
        risks = [max(s.risk, floor) for s in ordered]
        benefits = [s.benefit_pct for s in ordered]
        family = name.split(":")[0]
        style = {"protohail": ("-o", 2.2), "oracle": ("*", 0.0)}.get(family, ("--.", 1.0))
        axes.plot(
            risks,
            benefits,
            style[0],
            linewidth=style[1],
            markersize=9 if family == "oracle" else 4,
            label=family if family in ("protohail", "oracle") else name.split(":")[0],
        )
    axes.set_xscale("log")
    axes.set_xlabel(f"risk: fraction of node-slots over capacity (log; 0 drawn at {floor:.0e})")
    axes.set_ylabel("benefit: vCPUs sold beyond cores, % of cores")
    axes.set_title(f"Oversubscription risk vs benefit on held-out days: {title}", fontsize=10)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def review_report(model: ProtoHAIL, experiment: Experiment, out: Path) -> Path:
    """One page per model: every prototype's members (last-day hourly peaks) and its proposed ratio."""
    assert model.centroids is not None
    rows = model.prototypes()
    inputs = experiment.inputs(experiment.train)
    usable = ~np.isnan(inputs.history_max[:, -inputs.slots_per_day :]).any(axis=1)
    chosen = subset(inputs, usable)
    labels, _ = nearest(encode(chosen, model.level_weight), model.centroids)
    profiles = hourly_profile(chosen)
    count = len(model.centroids)
    columns = 4
    figure = new_figure(11, 2.4 * ((count + columns - 1) // columns))
    grid = figure.subplots((count + columns - 1) // columns, columns, squeeze=False, sharey=True)
    hours = np.arange(24)
    for index in range(grid.size):
        axes = grid.flat[index]
        if index >= count:
            axes.set_visible(False)
            continue
        members = profiles[labels == index]
        for trace in members[:40]:
            axes.plot(hours, trace, color="0.7", linewidth=0.6)
        if len(members):
            axes.plot(hours, np.median(members, axis=0), color="C0", linewidth=2)
        row = rows[index]
        verdict = f", {row.feedback}" if row.feedback else ""
        axes.set_title(f"{row.prototype}: {len(members)} windows, ratio {row.ratio:.2f}{verdict}", fontsize=8)
        axes.set_ylim(0, 1)
        axes.tick_params(labelsize=7)
    figure.supxlabel("hour of the last day before the decision", fontsize=8)
    figure.supylabel("node utilisation (max readings)", fontsize=8)
    report = Report("ProtoHAIL prototype review")
    report.add_text(
        f"Model trained on {model.trained_on.get('data', '?')} "
        f"({model.trained_on.get('train_days', '?')} days); each panel is one prototype: grey lines are "
        "training windows it holds (their last day's hourly peaks), "
        "blue their median. Record verdicts with `strato vm review --model M --feedback F --accept P00 "
        "--lower P03=1.2 --forbid P05`, then retrain with `--feedback F`."
    )
    report.add_table(
        [row.to_row() for row in rows], caption="Prototypes", formats={"learned": ".2f", "ratio": ".2f"}
    )
    report.add_figure(figure, "prototypes", caption="Members' patterns per prototype")
    return report.write(out)
