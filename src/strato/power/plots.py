"""``strato power`` figures: row power against the budget over time; the sweep's impact vs servers added.

A day at 10 Hz is 864,000 points per controller, more than a figure can show: the power figure draws each
controller's per-bin mean as a line and the band up to the per-bin maximum (one-minute bins on runs of two
hours or more, finer on shorter runs), so short spikes above a threshold stay visible.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MultipleLocator
from numpy.typing import NDArray

from strato.core.report import new_figure
from strato.core.units import format_duration
from strato.power.experiment import (
    HIGH_P50_TARGET_PCT,
    LOW_P50_TARGET_PCT,
    THRESHOLDS,
    Experiment,
    ImpactRow,
)
from strato.power.sweep import Sweep

_THRESHOLD_STYLE = {0.80: ("tab:olive", "80 %"), 0.89: ("tab:orange", "89 %"), 1.00: ("tab:red", "100 %")}


def _bin_seconds(duration_s: float, sample_s: float) -> float:
    """One minute for runs of two hours or more; else the coarsest of 1, 5, 10, 30 s giving 120+ bins."""
    if duration_s >= 7200:
        return 60.0
    for width in (30.0, 10.0, 5.0, 1.0):
        if duration_s / width >= 120:
            return max(width, sample_s)
    return sample_s


def binned(
    power: NDArray[np.float64], sample_s: float, width_s: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Bin starts (s), per-bin mean and max of ``power`` (a last partial bin is kept)."""
    per = max(round(width_s / sample_s), 1)
    count = -(-power.size // per)
    padded = np.full(count * per, np.nan)
    padded[: power.size] = power
    blocks = padded.reshape(count, per)
    starts = np.arange(count) * per * sample_s
    mean = np.asarray(np.nanmean(blocks, axis=1), dtype=np.float64)
    return starts.astype(np.float64), mean, np.asarray(np.nanmax(blocks, axis=1), dtype=np.float64)


def power_figure(experiment: Experiment) -> Figure:
    """Row power as a share of the budget over the simulated window, one line (mean) and band (up to the
    max) per controller, POLCA's thresholds as lines, brake events as markers."""
    figure = new_figure(10.0, 4.4)
    axis = figure.add_subplot()
    workload = experiment.workload
    start_h = workload.start_s / 3600.0
    reference = experiment.runs[0]
    width = _bin_seconds(workload.duration_s, reference.sample_s)
    colors = iter(["tab:gray", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"])
    for row, run in zip(experiment.rows, experiment.runs, strict=True):
        color = next(colors, None)
        starts, mean, peak = binned(run.power_w / run.budget_w * 100.0, run.sample_s, width)
        hours = start_h + starts / 3600.0
        label = row.controller + (" (no control, reference)" if row.reference else "")
        # The reference is drawn last and dashed: a controller that never acts lies exactly on it.
        axis.plot(
            hours,
            mean,
            color=color,
            linewidth=1.0,
            linestyle="--" if row.reference else "-",
            zorder=3 if row.reference else 2,
            label=f"{label}: mean per {format_duration(width)}",
        )
        axis.fill_between(hours, mean, peak, color=color, alpha=0.15, linewidth=0)
        brakes, braking = [], False
        for landed in run.actions:  # the moments the brake went on, from the settings after each action
            if landed.brake and not braking:
                brakes.append(landed.time_s)
            braking = bool(landed.brake)
        if brakes:
            at = np.asarray(brakes)
            index = np.minimum((at / width).astype(np.int64), peak.size - 1)
            axis.scatter(
                start_h + at / 3600.0,
                peak[index],
                marker="v",
                color=color,
                edgecolor="black",
                s=40,
                zorder=5,
                label=f"{row.controller}: power brake ({len(brakes)})",
            )
    for share in THRESHOLDS:
        color, text = _THRESHOLD_STYLE[share]
        axis.axhline(share * 100.0, color=color, linestyle="--", linewidth=0.9)
        axis.annotate(
            f"{text} of budget",
            (1.0, share * 100.0),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 2),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=color,
        )
    axis.xaxis.set_major_formatter(FuncFormatter(_clock))
    if workload.duration_s >= 6 * 3600:
        axis.xaxis.set_major_locator(MultipleLocator(3.0))  # every 3 hours, on the clock's hours
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    axis.set_xlabel(f"time of day (from {days[workload.start_day]})")
    axis.set_ylabel("row power, % of budget (band: up to the max)")
    axis.set_title(
        f"{reference.servers} servers under a budget of {reference.budget_w / 1e3:,.0f} kW "
        f"({reference.budget_servers} servers' rated power)"
        if reference.budget_w == reference.provisioned_w
        else f"{reference.servers} servers under a budget of {reference.budget_w / 1e3:,.0f} kW"
    )
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    return figure


def sweep_figure(result: Sweep) -> Figure:
    """Impact (P50 E2E, high and low priority) vs servers added per controller with the targets and each
    controller's last point meeting them; brake events and time over the budget beside it."""
    figure = new_figure(12.0, 4.2)
    impact_axis, brake_axis, over_axis = figure.subplots(1, 3, gridspec_kw={"width_ratios": [2, 1, 1]})
    colors = ["tab:blue", "tab:green", "tab:gray", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"]
    for index, name in enumerate(result.controllers):
        color = colors[index % len(colors)]
        rows = result.of(name)
        added = [row.added for row in rows]
        for klass, style in (("high", "-"), ("low", "--")):
            values = [_p50(row, klass) for row in rows]
            impact_axis.plot(
                added, values, style, color=color, marker="o", markersize=3, label=f"{name} {klass}"
            )
        limit = result.limit(name)
        if limit is not None:
            at = next(row for row in rows if row.added == limit)
            impact_axis.scatter(
                [limit] * 2,
                [_p50(at, "high"), _p50(at, "low")],
                marker="*",
                s=140,
                color=color,
                edgecolor="black",
                zorder=5,
            )
            impact_axis.annotate(
                f"+{limit}", (limit, _p50(at, "low")), xytext=(4, 6), textcoords="offset points", fontsize=8
            )
        brake_axis.plot(added, [row.brake_events for row in rows], marker="o", color=color, label=name)
        over_axis.plot(added, [row.above_100_s / 60.0 for row in rows], marker="o", color=color, label=name)
    impact_axis.axhline(HIGH_P50_TARGET_PCT, color="black", linewidth=0.9, label="high target (1 %)")
    impact_axis.axhline(
        LOW_P50_TARGET_PCT, color="black", linestyle="--", linewidth=0.9, label="low target (2 %)"
    )
    impact_axis.set_xlabel(f"servers added to the {result.budget_servers}-server budget")
    # Past the targets impacts grow by orders of magnitude; linear up to 5 % keeps the targets readable.
    impact_axis.set_yscale("symlog", linthresh=5.0, linscale=2.0)
    impact_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    values = [_p50(row, klass) for row in result.rows for klass in ("high", "low")]
    lowest = min((v for v in values if np.isfinite(v)), default=0.0)
    impact_axis.set_ylim(bottom=min(-1.0, 1.2 * lowest))
    impact_axis.set_ylabel("P50 E2E latency impact vs none (%, log above 5)")
    impact_axis.set_title("impact per priority class (★ last point meeting the targets)", fontsize=9)
    impact_axis.legend(fontsize=7, ncol=2)
    brake_axis.set_ylabel("power-brake events")
    brake_axis.set_title("brake events", fontsize=9)
    over_axis.set_ylabel("minutes above 100 % of budget")
    over_axis.set_title("time over the budget (10 Hz)", fontsize=9)
    for axis in (impact_axis, brake_axis, over_axis):
        axis.grid(True, alpha=0.3)
        axis.set_xticks(list(result.added))
    brake_axis.set_xlabel("servers added")
    over_axis.set_xlabel("servers added")
    brake_axis.legend(fontsize=7)
    figure.suptitle(f"servers added under {result.budget_kw:,.0f} kW")
    return figure


def _clock(hours: float, _position: object = None) -> str:
    minutes = round(hours * 60.0)
    day, minute_of_day = divmod(minutes, 24 * 60)
    text = f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"
    return f"+{day}d {text}" if day else text


def _p50(row: ImpactRow, klass: str) -> float:
    impact = row.impact(klass)
    if impact is None or impact.e2e_p50_pct is None:
        return float("nan")
    return impact.e2e_p50_pct
