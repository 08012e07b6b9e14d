"""A sweep's runs as a table, best first by the objective, and as plots."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from lstm_mnist.tracking import names  # noqa: E402
from lstm_mnist.tracking.store import Store  # noqa: E402
from lstm_mnist.tracking.sweep import SweepRun, job_state  # noqa: E402


def ranked(sweep: SweepRun) -> list[Run]:
    """The sweep's runs: finished ones best first by the objective, then the pruned, failed or
    killed ones."""
    metric, sign = sweep.objective.metric, 1 if sweep.objective.direction == "maximize" else -1
    return sorted(
        sweep.children(),
        key=lambda r: (job_state(r) == "finished", sign * r.data.metrics.get(metric, -math.inf)),
        reverse=True,
    )


def short(value: str | None) -> str:
    """A param as people read it: 0.18727005942368125 -> 0.1873."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def swept_params(runs: list[Run]) -> list[str]:
    """The params whose values differ between the runs."""
    keys = sorted({k for r in runs for k in r.data.params})
    return [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]


def table(runs: list[Run], swept: list[str]) -> str:
    """One line per run, in the order given."""
    head = ["#", "run", "status", "val_acc", "test_acc", *swept, "duration"]
    rows = []
    for rank, run in enumerate(runs, start=1):
        m, info = run.data.metrics, run.info
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time else None
        rows.append(
            [str(rank), info.run_id, job_state(run)]
            + [f"{m[k]:.4f}" if k in m else "-" for k in ("val_acc", "test_acc")]
            + [short(run.data.params.get(k, "-")) for k in swept]
            + [f"{seconds:.0f} s" if seconds is not None else "-"]
        )
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
    )


def plot_curves(sweep: SweepRun, runs: list[Run], swept: list[str]) -> plt.Figure:
    metric = sweep.objective.metric
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        history = sweep.store.client.get_metric_history(run.info.run_id, metric)
        label = " ".join(f"{k}={short(run.data.params.get(k))}" for k in swept)
        label = label or run.info.run_name
        ax.plot([m.step for m in history], [m.value for m in history], marker=".", label=label)
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} of each run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_params(sweep: SweepRun, runs: list[Run], swept: list[str]) -> plt.Figure:
    metric = sweep.objective.metric
    scored = [r for r in runs if metric in r.data.metrics and job_state(r) == "finished"]
    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.5), squeeze=False)
    for ax, key in zip(axes[0], swept, strict=True):
        values = [r.data.params[key] for r in scored]
        try:
            x = [float(v) for v in values]
            if min(x) > 0 and max(x) / min(x) >= 100:
                ax.set_xscale("log")
        except ValueError:
            x = values  # categorical
        ax.scatter(x, [r.data.metrics[metric] for r in scored])
        ax.set(xlabel=key, ylabel=f"final {metric}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_importance(parent: Run, store: Store, storage: str | None) -> plt.Figure | None:
    """Optuna's fANOVA importance of each searched knob, for an Optuna sweep with two or more
    complete trials; None otherwise."""
    name = parent.data.tags.get(names.OPTUNA_STUDY)
    if name is None:
        return None
    tagged = parent.data.tags.get(names.OPTUNA_STORAGE, "")
    storage = storage or (tagged if "***" not in tagged else None) or store.optuna_storage()
    study = optuna.load_study(study_name=name, storage=storage)
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 2:
        return None
    with warnings.catch_warnings():  # "experimental" since Optuna 2.2; stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
    return ax.figure
