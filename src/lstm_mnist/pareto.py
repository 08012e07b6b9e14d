"""A Pareto sweep's answer: the configurations no other beats on every objective, as a table and
as plots of the objective against each trade-off."""

from __future__ import annotations

import matplotlib.pyplot as plt
from mlflow.entities import Run

from lstm_mnist.comparison import Rows, short
from lstm_mnist.display import table as format_table
from lstm_mnist.stats import pareto_front
from lstm_mnist.tracking import SweepRecord, finished
from lstm_mnist.tracking.ranking import by_configuration, mean


def describe(value: float, metric: str) -> str:
    return f"{value:,.0f}" if metric == "num_params" else f"{value:.4g}"


def label(group: list[Run], knobs: list[str]) -> str:
    return " ".join(f"{k}={short(group[0].data.params.get(k))}" for k in knobs)


def rows(sweep: SweepRecord, runs: list[Run], knobs: list[str]) -> Rows:
    """One row per configuration of the Pareto set, best first by the objective: its knobs,
    seeds and each objective's mean."""
    front = sweep.pareto_set(runs)
    head = ["#", *knobs, "n", *(o.metric for o in sweep.objectives)]
    return head, [
        [str(rank), *(short(g[0].data.params.get(k, "-")) for k in knobs), str(len(g))]
        + [describe(o.sign * mean(o, g), o.metric) for o in sweep.objectives]
        for rank, g in enumerate(front, start=1)
    ]


def table(sweep: SweepRecord, runs: list[Run], knobs: list[str]) -> str:
    """rows as text."""
    return format_table(*rows(sweep, runs, knobs))


def plot(sweep: SweepRecord, runs: list[Run], knobs: list[str]) -> plt.Figure:
    """For each trade-off, the objective against it: every finished configuration (its mean over
    seeds) as a dot, the Pareto set's ringed and labelled, and the front of that pair of
    objectives as a dashed step line."""
    objective, trade_offs = sweep.objective, sweep.trade_offs
    done = finished(runs)
    groups = [
        g
        for g in by_configuration(done).values()
        if all(o.metric in g[0].data.metrics for o in sweep.objectives)
    ]
    members = {id(g[0]) for g in sweep.pareto_set(done)}
    fig, axes = plt.subplots(1, len(trade_offs), figsize=(6 * len(trade_offs), 4.5), squeeze=False)
    y = [mean(objective, g) * objective.sign for g in groups]
    for ax, trade_off in zip(axes[0], trade_offs, strict=True):
        x = [mean(trade_off, g) * trade_off.sign for g in groups]
        ax.scatter(x, y, color="grey", alpha=0.6, label="configuration (mean over its seeds)")
        for xi, yi, g in zip(x, y, groups, strict=True):
            if id(g[0]) in members:
                ax.scatter([xi], [yi], s=120, facecolors="none", edgecolors="red")
                ax.annotate(
                    label(g, knobs), (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points"
                )
        pair = pareto_front([[mean(objective, g), mean(trade_off, g)] for g in groups])
        line = sorted((x[i], y[i]) for i in pair)
        ax.step(
            [p[0] for p in line],
            [p[1] for p in line],
            "--",
            color="red",
            where="post",
            label=f"front of {objective.metric} and {trade_off.metric}",
        )
        ax.scatter(
            [], [], s=120, facecolors="none", edgecolors="red", label="Pareto set (all objectives)"
        )
        if trade_off.metric == "num_params":
            ax.set_xscale("log")
        ax.set(
            xlabel=f"{trade_off.metric} ({trade_off.direction})",
            ylabel=f"{objective.metric} ({objective.direction})",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Pareto sweep {sweep.run_id[:8]}: {len(members)} of {len(groups)} configurations")
    fig.tight_layout()
    return fig
