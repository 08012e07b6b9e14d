"""Compare the runs of a sweep: a table sorted by the objective, and plots, from the MLflow store.

python src/compare.py                      # the latest sweep in ./mlflow.db
python src/compare.py --sweep <parent run id> --tracking-uri http://mlflow.example:5000

With seed replicates (-m ... replicates=3) it also ranks configurations by their mean, with a
95% interval and Welch's t-test against the best. Writes learning_curves.png (the objective of
every run, or each configuration's mean and band), params.png (its final value against each
swept knob), for an Optuna sweep param_importance.png (Optuna's PED-ANOVA, or fANOVA with
--importance fanova), and for a Pareto sweep (sweeps=pareto) its Pareto set and pareto_front.png
to --out, and logs them to the sweep's parent run under compare/.

python src/compare.py --sweep <id> --report  # and report.html, one file to send a colleague
python src/compare.py --csv > runs.csv      # the results as data instead: no tables, no plots
python src/compare.py --json -o sweep.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lstm_mnist.cli import add_store_options, add_sweep_option, fail, quiet

if TYPE_CHECKING:
    from mlflow.entities import Run

    from lstm_mnist.tracking import SweepRecord

# What --csv and --json write, for the --help page (export.py builds it; kept here as text so
# that --help imports nothing heavy).
COLUMNS = """\
--csv / --json: the sweep's results as data instead of tables and plots (nothing else on stdout;
-o FILE to write a file). Metrics unrounded as MLflow holds them, params as its strings; what a
run lacks (or a NaN) is an empty cell / null. Columns, in this order:
  runs, best first as the table: run_id, run_name, status (finished, pruned, failed, killed,
    running), each swept knob (by its param key, sorted), seed, objective_metric (its name),
    objective (its value), val_acc, test_acc, a Pareto sweep's trade-off metrics, duration_s
    (end - start; empty while running), wall_s, core_s, gpu_s (the compute the run recorded),
    pruned_step (the step a pruned run stopped at)
  configurations, with replicates, best mean first (--csv --configurations): each swept knob but
    seed, n (finished seeds), objective_metric, objective_mean, objective_std, objective_ci_low,
    objective_ci_high (95% CI of the mean, Student's t), test_acc_mean, test_acc_std
  --json: {"sweep": {run_id, run_name, status, objective, trade_offs}, "runs": [...],
    "configurations": [...]} (configurations is [] without replicates)
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=COLUMNS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    parser.add_argument("--csv", action="store_true", help="print one row per run as CSV")
    parser.add_argument(
        "--json", action="store_true", help="print the sweep, its runs and configurations as JSON"
    )
    parser.add_argument(
        "--configurations",
        action="store_true",
        help="with --csv: one row per configuration of a sweep with replicates, not per run",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write the sweep's report (report.html: one file with the command, tables,"
        " plots, compute, versions) to --out, the sweep's folder and the parent run",
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="with --csv or --json: write to this file, not stdout"
    )
    args = parser.parse_args(argv)
    if args.csv and args.json:
        fail("--csv or --json, not both")
    if args.configurations and not args.csv:
        fail("--configurations goes with --csv (--json holds both the runs and configurations)")
    if args.output and not (args.csv or args.json):
        fail("-o/--output goes with --csv or --json")
    if args.report and (args.csv or args.json):
        fail("--report goes with the tables and plots, not with --csv or --json")
    quiet()

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:  # before matplotlib's import: a wrong store answers at once
        store.check(experiment=True)
    except StoreError as err:
        fail(err)

    import matplotlib.pyplot as plt

    from lstm_mnist import comparison, pareto, sweep_report
    from lstm_mnist.tracking import SweepRecord

    try:
        parent = SweepRecord.find(store, args.sweep)
    except ValueError as err:
        fail(err)
    sweep = SweepRecord.of(store, parent)
    runs = comparison.ranked(sweep.objective, sweep.children())
    if not runs:
        fail(f"sweep {parent.info.run_id} has no runs yet")
    if args.csv or args.json:
        export_results(args, sweep, parent, runs)
        return
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
    plots, missing = sweep_report.figures(sweep, parent, runs, args.storage, args.importance)
    if missing:
        print(f"no parameter importance plot: {missing}", file=sys.stderr)
    for name, fig in plots.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        store.client.log_artifact(parent.info.run_id, str(out / name), "compare")
    print(f"plots: {', '.join(str(out / n) for n in plots)} (also in the parent run)")
    if args.report:
        summary = sweep_report.recorded_summary(sweep)
        written = sweep_report.write(sweep, parent, runs, plots, summary, out)
        print(f"report: {', '.join(map(str, written))} (and report.html in the parent run)")
    for fig in plots.values():
        plt.close(fig)


def export_results(
    args: argparse.Namespace, sweep: SweepRecord, parent: Run, runs: list[Run]
) -> None:
    """--csv or --json: the records only, to stdout or -o FILE; no tables, no plots."""
    from lstm_mnist import export

    if args.json:
        text = export.to_json(export.document(sweep, parent, runs))
    else:
        records = (
            export.configuration_records(sweep, runs)
            if args.configurations
            else export.run_records(sweep, runs)
        )
        if not records:
            fail(
                f"sweep {parent.info.run_id} has no configuration with two finished seeds or"
                " more; --configurations needs a sweep with replicates=N"
            )
        text = export.to_csv(records)
    if args.output is None:
        sys.stdout.write(text)
        return
    try:
        args.output.write_text(text)
    except OSError as err:
        fail(f"-o {args.output}: {err.strerror or err}")
