"""A sweep's runs as a table, best first by the objective, and as plots."""

from __future__ import annotations

import math
import statistics
import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from lstm_mnist.display import table as format_table  # noqa: E402
from lstm_mnist.stats import ALPHA, estimate, welch_p  # noqa: E402
from lstm_mnist.tracking import (  # noqa: E402
    Objective,
    Store,
    SweepRecord,
    finished,
    is_finished,
    job_state,
    names,
)
from lstm_mnist.tracking.ranking import by_configuration  # noqa: E402


def ranked(objective: Objective, runs: list[Run]) -> list[Run]:
    """The runs, finished ones best first by the objective, then the pruned, failed or killed
    ones."""
    return sorted(
        runs,
        key=lambda r: (
            is_finished(r),
            objective.sign * r.data.metrics.get(objective.metric, -math.inf),
        ),
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


Rows = tuple[list[str], list[list[str]]]  # a table's head and rows, for text or HTML


def run_rows(runs: list[Run], swept: list[str], metrics: tuple[str, ...] = ()) -> Rows:
    """One row per run, in the order given: val_acc, test_acc, `metrics`, the swept knobs."""
    shown = ("val_acc", "test_acc", *metrics)
    head = ["#", "run", "status", *shown, *swept, "duration"]
    rows = []
    for rank, run in enumerate(runs, start=1):
        m, info = run.data.metrics, run.info
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time else None
        rows.append(
            [str(rank), info.run_id, job_state(run)]
            + [
                (f"{m[k]:.4f}" if k.endswith("_acc") else f"{m[k]:.4g}") if k in m else "-"
                for k in shown
            ]
            + [short(run.data.params.get(k, "-")) for k in swept]
            + [f"{seconds:.0f} s" if seconds is not None else "-"]
        )
    return head, rows


def table(runs: list[Run], swept: list[str], metrics: tuple[str, ...] = ()) -> str:
    """run_rows as text."""
    return format_table(*run_rows(runs, swept, metrics))


def configuration_rows(sweep: SweepRecord, runs: list[Run], swept: list[str]) -> Rows | None:
    """One row per configuration (its finished seeds), best mean first: n, mean ± std and the
    95% interval of the objective, test_acc, and Welch's t-test against the best configuration.
    None when no configuration has two seeds or more."""
    metric, sign = sweep.objective.metric, sweep.objective.sign
    done = [r for r in finished(runs) if metric in r.data.metrics]
    groups = list(by_configuration(done).values())
    if not any(len(g) > 1 for g in groups):
        return None
    values = [[r.data.metrics[metric] for r in g] for g in groups]
    order = sorted(range(len(groups)), key=lambda i: -sign * estimate(values[i]).mean)
    knobs = [k for k in swept if k != names.SEED]
    head = ["#", *knobs, "n", f"{metric} mean ± std", "95% CI", "test_acc mean ± std", "vs best"]
    rows = []
    for rank, i in enumerate(order, start=1):
        found, group = estimate(values[i]), groups[i]
        tests = [r.data.metrics["test_acc"] for r in group if "test_acc" in r.data.metrics]
        p = welch_p(values[order[0]], values[i])
        verdict = (
            "best"
            if rank == 1
            else "n < 2"
            if math.isnan(p)
            else f"{'≈ best' if p >= ALPHA else 'worse'} (p={p:.3f})"
        )
        rows.append(
            [str(rank), *(short(group[0].data.params.get(k, "-")) for k in knobs)]
            + [str(found.n), str(found), found.interval, str(estimate(tests)) if tests else "-"]
            + [verdict]
        )
    return head, rows


def configuration_table(sweep: SweepRecord, runs: list[Run], swept: list[str]) -> str | None:
    """configuration_rows as text; None when no configuration has two seeds or more."""
    found = configuration_rows(sweep, runs, swept)
    return None if found is None else format_table(*found)


def plot_curves(sweep: SweepRecord, runs: list[Run], swept: list[str]) -> plt.Figure:
    """The objective against the step: a line per run, or per configuration with seeds its mean
    with a band of one standard deviation."""
    metric = sweep.objective.metric
    knobs = [k for k in swept if k != names.SEED]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group in by_configuration(runs).values():
        histories = [
            {m.step: m.value for m in sweep.store.client.get_metric_history(r.info.run_id, metric)}
            for r in group
        ]
        label = " ".join(f"{k}={short(group[0].data.params.get(k))}" for k in knobs)
        label = label or group[0].info.run_name
        steps = sorted(set.intersection(*(set(h) for h in histories)))
        if len(group) == 1:
            ax.plot(steps, [histories[0][s] for s in steps], marker=".", label=label)
            continue
        at = [[h[s] for h in histories] for s in steps]
        mean = [statistics.fmean(v) for v in at]
        std = [statistics.stdev(v) for v in at]
        (line,) = ax.plot(steps, mean, marker=".", label=f"{label} (mean of {len(group)} seeds)")
        low = [m - d for m, d in zip(mean, std, strict=True)]
        high = [m + d for m, d in zip(mean, std, strict=True)]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} of each configuration (band: ±1 std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_params(sweep: SweepRecord, runs: list[Run], swept: list[str]) -> plt.Figure:
    metric = sweep.objective.metric
    scored = [r for r in finished(runs) if metric in r.data.metrics]
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


# Optuna's evaluators by the name --importance takes; the first is Optuna 5's default.
IMPORTANCE = {
    "ped-anova": optuna.importance.PedAnovaImportanceEvaluator,
    "fanova": optuna.importance.FanovaImportanceEvaluator,
}


def plot_importance(
    parent: Run, store: Store, storage: str | None, evaluator: str = "ped-anova"
) -> plt.Figure | None:
    """Each searched knob's importance by Optuna's `evaluator` (PED-ANOVA or fANOVA), for an
    Optuna sweep with two or more complete trials; None otherwise."""
    from lstm_mnist.sweeping.optuna.study import recorded_study

    study = recorded_study(parent, store, storage)
    if study is None:
        return None
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 2:
        return None
    with warnings.catch_warnings():  # "experimental" since Optuna 2.2; stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # PED-ANOVA's note that a given target is minimised: it reads the study's direction
        # for the first objective only when no target is given; the importances do not depend
        # on the sign (which values are in the top quantile is what it compares)
        warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study,
            evaluator=IMPORTANCE[evaluator](),
            # a Pareto sweep's study has several values: the importance for the first
            target=(lambda t: t.values[0]) if len(study.directions) > 1 else None,
            target_name=parent.data.tags[names.OBJECTIVE].split()[0],
        )
    ax.set_title(f"Hyperparameter importance ({evaluator}, Optuna)")
    return ax.figure
