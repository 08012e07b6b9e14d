"""Every sweep in a store, from any terminal: list them, show one's progress, stop or finish one.

python src/sweeps.py list                  # every sweep, newest first
python src/sweeps.py show latest           # its runs, its study's trials, the time left
python src/sweeps.py stop <parent run id>  # cancel its jobs: each checkpoints and is KILLED
python src/sweeps.py finish <id>           # write the summary of a sweep nothing closed

Works for attached and detached (detach=true) sweeps, on one machine or SLURM; --json for
scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lstm_mnist.cli import add_store_options, fail, quiet

ACTIONS = {
    "list": "every sweep, newest first: state, jobs, best, compute, where it runs",
    "show": "one sweep's progress: its runs, its study's trials, the time left",
    "stop": "cancel its jobs (each checkpoints and is KILLED), the parent KILLED",
    "finish": "write the summary of a sweep whose jobs ended but whose parent is RUNNING",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in ACTIONS.items():
        sub = actions.add_parser(action, help=text, description=text)
        add_store_options(sub)
        sub.add_argument("--json", action="store_true", help="print JSON, for scripts")
        if action != "list":
            sub.add_argument("id", metavar="ID", help="the sweep's parent run id, or 'latest'")
        if action == "show":
            sub.add_argument("--storage", help="Optuna storage URL, if not beside a SQLite store")
    args = parser.parse_args(argv)
    quiet()

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:
        store.check(experiment=True)
        result = ACTION[args.action](store, args)
    except (ValueError, StoreError) as err:
        fail(err)
    if args.json:
        print(json.dumps(result["json"], indent=1))
    else:
        print(result["text"])
    sys.exit(0)


def list_sweeps(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lstm_mnist.sweeping.inventory import all_sweeps, list_table

    sweeps = all_sweeps(store)
    text = list_table(sweeps) if sweeps else f"no sweep in {store.experiment_name!r} of {store.uri}"
    return {"json": [s.as_json() for s in sweeps], "text": text}


def show(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lstm_mnist import comparison
    from lstm_mnist.sweeping.inventory import duration, list_table, status_of
    from lstm_mnist.sweeping.optuna.study import recorded_study
    from lstm_mnist.tracking import SweepRecord

    parent = SweepRecord.find(store, args.id, what="sweep")
    status = status_of(store, parent)
    lines = [list_table([status])]
    left = status.time_left_s
    if status.state == "RUNNING":
        lines.append(
            f"time left: {'about ' + duration(left) if left is not None else 'unknown'}"
            + ("" if left is not None else " (no job has ended yet)")
        )
    runs = comparison.ranked(SweepRecord.of(store, parent).objective, status.runs)
    if runs:
        lines += ["", comparison.table(runs, comparison.swept_params(runs))]
    trials = []
    if (study := recorded_study(parent, store, args.storage)) is not None:
        for t in study.trials:
            ended = t.datetime_complete or None
            trials.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "values": t.values,
                    "params": t.params,
                    "seconds": (ended - t.datetime_start).total_seconds()
                    if ended and t.datetime_start
                    else None,
                }
            )
        lines += ["", f"study {study.study_name}: {len(trials)} trials"]
        lines += [
            f"  {t['number']:>4}  {t['state']:<8}  "
            f"{' '.join(f'{v:.4f}' for v in t['values'] or []) or '-':<8}  "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in t["params"].items()
            )
            for t in trials
        ]
    found = status.as_json()
    found["runs"] = [
        {
            "run_id": r.info.run_id,
            "status": r.info.status,
            "params": r.data.params,
            "metrics": r.data.metrics,
        }
        for r in status.runs
    ]
    found["trials"] = trials
    return {"json": found, "text": "\n".join(lines)}


def stop(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lstm_mnist.sweeping import control

    lines = control.stop(store, args.id)
    return {"json": {"done": lines}, "text": "\n".join(lines)}


def finish(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from lstm_mnist.sweeping import control

    lines = control.finish(store, args.id)
    return {"json": {"summary": lines}, "text": "\n".join(lines)}


ACTION = {"list": list_sweeps, "show": show, "stop": stop, "finish": finish}
