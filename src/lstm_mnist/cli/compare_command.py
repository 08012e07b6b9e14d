"""Compare the runs of a sweep: a table sorted by the objective, and plots, from the MLflow store.

python src/compare.py                      # the latest sweep in ./mlflow.db
python src/compare.py --sweep <parent run id> --tracking-uri http://mlflow.example:5000

With seed replicates (-m ... replicates=3) it also ranks configurations by their mean, with a
95% interval and Welch's t-test against the best. Writes learning_curves.png (the objective of
every run, or each configuration's mean and band), params.png (its final value against each
swept knob), for an Optuna sweep param_importance.png (Optuna's PED-ANOVA, or fANOVA with
--importance fanova), and for a Pareto sweep (sweeps=pareto) its Pareto set and pareto_front.png
to --out, and logs them to the sweep's parent run under compare/.
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
    parser.add_argument(
        "--importance",
        choices=["ped-anova", "fanova"],
        default="ped-anova",
        help="Optuna's importance evaluator for an Optuna sweep (default: ped-anova, Optuna 5's)",
    )
    args = parser.parse_args(argv)
    quiet()

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:  # before matplotlib's import: a wrong store answers at once
        store.check(experiment=True)
    except StoreError as err:
        fail(err)

    import matplotlib.pyplot as plt

    from lstm_mnist import comparison, pareto
    from lstm_mnist.tracking import SweepRecord

    try:
        parent = SweepRecord.find(store, args.sweep)
    except ValueError as err:
        fail(err)
    sweep = SweepRecord.of(store, parent)
    runs = comparison.ranked(sweep.objective, sweep.children())
    if not runs:
        fail(f"sweep {parent.info.run_id} has no runs yet")
    swept = comparison.swept_params(runs)
    print(f"sweep {parent.info.run_name} ({parent.info.run_id}): {len(runs)} runs")
    print(comparison.table(runs, swept, tuple(t.metric for t in sweep.trade_offs)))
    if (configurations := comparison.configuration_table(sweep, runs, swept)) is not None:
        print(
            "\nconfigurations, best mean first (mean ± sample std over seeds; 95% CI of the mean,"
            " Student's t; vs best: Welch's t-test, ≈ best when p >= 0.05):"
        )
        print(configurations)

    knobs = [k for k in swept if k != "seed"]
    if sweep.trade_offs:
        objectives = ", ".join(f"{o.metric} ({o.direction})" for o in sweep.objectives)
        print(f"\nPareto set: the configurations no other beats on all of {objectives}:")
        print(pareto.table(sweep, runs, knobs))

    out = args.out or Path("compare") / parent.info.run_id
    out.mkdir(parents=True, exist_ok=True)
    figures = {"learning_curves.png": comparison.plot_curves(sweep, runs, swept)}
    if swept:
        figures["params.png"] = comparison.plot_params(sweep, runs, swept)
    if sweep.trade_offs:
        figures["pareto_front.png"] = pareto.plot(sweep, runs, knobs)
    try:
        importance = comparison.plot_importance(parent, store, args.storage, args.importance)
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
