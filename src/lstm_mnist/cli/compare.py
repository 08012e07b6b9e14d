"""Compare the runs of a sweep: a table sorted by the objective, and plots, from the MLflow store.

python src/compare.py                      # the latest sweep in ./mlflow.db
python src/compare.py --sweep <parent run id> --tracking-uri http://mlflow.example:5000

Writes learning_curves.png (the objective of every run), params.png (its final value against
each swept knob) and, for an Optuna sweep, param_importance.png (Optuna's fANOVA) to --out, and
logs them to the sweep's parent run under compare/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lstm_mnist.cli import add_store_options, add_sweep_option, fail, quiet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_store_options(parser)
    add_sweep_option(parser, default="latest")
    parser.add_argument("--storage", help="Optuna storage URL, if not beside a SQLite store")
    parser.add_argument("--out", type=Path, help="where to write the PNGs (compare/<run id>)")
    args = parser.parse_args(argv)
    quiet()

    import matplotlib.pyplot as plt

    from lstm_mnist import compare
    from lstm_mnist.tracking.store import Store
    from lstm_mnist.tracking.sweep import SweepRun

    store = Store(args.tracking_uri, args.experiment)
    try:
        parent = SweepRun.find(store, args.sweep)
    except ValueError as err:
        fail(err)
    sweep = SweepRun.of(store, parent)
    runs = compare.ranked(sweep)
    if not runs:
        fail(f"sweep {parent.info.run_id} has no runs yet")
    swept = compare.swept_params(runs)
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}): {len(runs)} runs")
    print(compare.table(runs, swept))

    out = args.out or Path("compare") / parent.info.run_id
    out.mkdir(parents=True, exist_ok=True)
    figures = {"learning_curves.png": compare.plot_curves(sweep, runs, swept)}
    if swept:
        figures["params.png"] = compare.plot_params(sweep, runs, swept)
    try:
        importance = compare.plot_importance(parent, store, args.storage)
    except ValueError as err:  # the study's storage is not known
        print(f"no parameter importance plot: {err}", file=sys.stderr)
        importance = None
    if importance is not None:
        figures["param_importance.png"] = importance
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        store.client.log_artifact(parent.info.run_id, str(out / name), "compare")
        plt.close(fig)
    print(f"plots: {', '.join(str(out / n) for n in figures)} (also in the parent run)")
