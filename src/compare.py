"""Compare the runs of a sweep: a table sorted by val_acc, and plots, from the MLflow store.

python src/compare.py                      # the latest sweep in ./mlflow.db
python src/compare.py --sweep <parent run id> --tracking-uri http://mlflow.example:5000

Writes learning_curves.png (val_acc of every run), params.png (final val_acc against each swept
knob) and, for an Optuna sweep, param_importance.png (Optuna's fANOVA) to --out, and logs them
to the sweep's parent run under compare/.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import Run  # noqa: E402

from lstm_mnist.sweep import SweepRun, default_storage, job_state  # noqa: E402


def find_sweep(client: mlflow.MlflowClient, experiment: str, sweep: str) -> Run:
    """The parent run `sweep` (a run id), or the latest sweep's with "latest"."""
    if sweep != "latest":
        try:
            run = client.get_run(sweep)
        except mlflow.MlflowException:
            sys.exit(f"error: --sweep {sweep}: no such run in the store")
        if "sweep_key" not in run.data.tags:
            sys.exit(f"error: --sweep {sweep}: that run is not a sweep's parent run")
        return run
    exp = client.get_experiment_by_name(experiment)
    found = exp and client.search_runs(
        [exp.experiment_id], "tags.sweep_key != ''", order_by=["start_time DESC"], max_results=1
    )
    if not found:
        sys.exit(f"error: no sweep in experiment {experiment!r} of this store; run one with -m")
    return found[0]


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


def plot_curves(client: mlflow.MlflowClient, runs: list[Run], swept: list[str]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_acc")
        label = " ".join(f"{k}={short(run.data.params.get(k))}" for k in swept)
        label = label or run.info.run_name
        ax.plot([m.step for m in history], [m.value for m in history], marker=".", label=label)
    ax.set(xlabel="step", ylabel="val_acc", title="val_acc of each run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_params(runs: list[Run], swept: list[str]) -> plt.Figure:
    scored = [r for r in runs if "val_acc" in r.data.metrics and job_state(r) == "finished"]
    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.5), squeeze=False)
    for ax, key in zip(axes[0], swept, strict=True):
        values = [r.data.params[key] for r in scored]
        try:
            x = [float(v) for v in values]
            if min(x) > 0 and max(x) / min(x) >= 100:
                ax.set_xscale("log")
        except ValueError:
            x = values  # categorical
        ax.scatter(x, [r.data.metrics["val_acc"] for r in scored])
        ax.set(xlabel=key, ylabel="final val_acc")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_importance(parent: Run, tracking_uri: str, storage: str | None) -> plt.Figure | None:
    name = parent.data.tags.get("optuna_study")
    if name is None:
        return None
    tagged = parent.data.tags.get("optuna_storage", "")
    storage = storage or (tagged if "***" not in tagged else None) or default_storage(tracking_uri)
    study = optuna.load_study(study_name=name, storage=storage)
    if sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) < 2:
        return None  # importance needs at least two finished trials
    with warnings.catch_warnings():  # "experimental" since Optuna 2.2; stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
    return ax.figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="latest", help="parent run id, or latest")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    )
    parser.add_argument("--experiment", default="lstm-mnist")
    parser.add_argument("--storage", help="Optuna storage URL, if not beside a SQLite store")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (compare/<run id>)")
    args = parser.parse_args(argv)

    client = mlflow.MlflowClient(args.tracking_uri)
    parent = find_sweep(client, args.experiment, args.sweep)
    runs = SweepRun(client, parent.info.run_id).children()
    if not runs:
        sys.exit(f"error: sweep {parent.info.run_id} has no runs yet")
    # Finished runs by val_acc, then the pruned, failed or killed ones.
    runs.sort(
        key=lambda r: (job_state(r) == "finished", r.data.metrics.get("val_acc", -math.inf)),
        reverse=True,
    )
    swept = swept_params(runs)
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}): {len(runs)} runs")
    print(table(runs, swept))

    out = args.out or Path("compare") / parent.info.run_id
    out.mkdir(parents=True, exist_ok=True)
    figures = {"learning_curves.png": plot_curves(client, runs, swept)}
    if swept:
        figures["params.png"] = plot_params(runs, swept)
    try:
        importance = plot_importance(parent, args.tracking_uri, args.storage)
    except ValueError as err:  # the study's storage is not known
        print(f"no parameter importance plot: {err}", file=sys.stderr)
        importance = None
    if importance is not None:
        figures["param_importance.png"] = importance
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        client.log_artifact(parent.info.run_id, str(out / name), "compare")
        plt.close(fig)
    print(f"plots: {', '.join(str(out / n) for n in figures)} (also in the parent run)")


if __name__ == "__main__":
    main()
