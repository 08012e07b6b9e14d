"""A sweep's results as data, for scripts and pandas (compare.py --csv / --json): one record per
run, the runs and order of compare's table, and with seed replicates one per configuration.

Values are MLflow's own, unrounded: metrics its floats, params its strings. What a run lacks (a
metric it never logged, the duration of a run still running, a std of one seed) and a NaN are
None: an empty CSV cell, JSON's null. Every record of a list has the same keys in the same order,
so that a CSV has one header row."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

from mlflow.entities import Run

from lstm_mnist.comparison import swept_params
from lstm_mnist.stats import estimate
from lstm_mnist.tracking import SweepRecord, finished, job_state, names
from lstm_mnist.tracking.ranking import ranked_configurations

Record = dict[str, Any]

FINAL_METRICS = ("val_acc", "test_acc")  # every run record's, after its objective

# The pruned tag holds why (sweeping/optuna/callbacks.py): "pruned at step 20: val_acc=0.1000",
# or on a trial's other seeds "at step 30, as another seed was pruned at step 20: ..."; the first
# step named is where this run stopped.
PRUNED_AT = re.compile(r"\bat step (\d+)")


def knobs(runs: list[Run]) -> list[str]:
    """The swept params apart from the seed, which every run record has anyway."""
    return [k for k in swept_params(runs) if k != names.SEED]


def number(value: float | None) -> float | None:
    """A float as it is; None for none, NaN (estimate's std of one seed) or an infinity, which
    JSON has no word for."""
    return None if value is None or not math.isfinite(value) else value


def pruned_step(run: Run) -> int | None:
    """The step a pruned run stopped at; None for a run that was not pruned."""
    found = PRUNED_AT.search(run.data.tags.get(names.PRUNED, ""))
    return int(found[1]) if found else None


def run_records(sweep: SweepRecord, runs: list[Run]) -> list[Record]:
    """One record per run, in the order given (compare's: comparison.ranked): its id, name and
    state, the swept knobs, seed, the objective, the final metrics (a Pareto sweep's trade-offs
    too), its duration, the compute it recorded and where it was pruned."""
    swept = knobs(runs)
    metric = sweep.objective.metric
    metrics = list(dict.fromkeys((*FINAL_METRICS, *(t.metric for t in sweep.trade_offs))))
    records = []
    for run in runs:
        info, params, values = run.info, run.data.params, run.data.metrics
        records.append(
            {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "status": job_state(run),
                **{k: params.get(k) for k in swept},
                names.SEED: params.get(names.SEED),
                "objective_metric": metric,
                "objective": number(values.get(metric)),
                **{m: number(values.get(m)) for m in metrics},
                "duration_s": (info.end_time - info.start_time) / 1000 if info.end_time else None,
                **{k: number(values.get(k)) for k in names.COMPUTE},
                "pruned_step": pruned_step(run),
            }
        )
    return records


def configuration_records(sweep: SweepRecord, runs: list[Run]) -> list[Record]:
    """One record per configuration, over its finished seeds, best mean first (the order of
    compare's configurations table): its knobs, n, the objective's mean, std and 95% interval of
    the mean, test_acc's mean and std. [] when no configuration has two seeds or more."""
    metric = sweep.objective.metric
    groups = ranked_configurations(sweep.objective, finished(runs))
    if not any(len(g) > 1 for g in groups):
        return []
    swept = knobs(runs)
    records = []
    for group in groups:
        found = estimate([r.data.metrics[metric] for r in group])
        tests = [r.data.metrics["test_acc"] for r in group if "test_acc" in r.data.metrics]
        test = estimate(tests) if tests else None
        records.append(
            {
                **{k: group[0].data.params.get(k) for k in swept},
                "n": found.n,
                "objective_metric": metric,
                "objective_mean": found.mean,
                "objective_std": number(found.std),
                "objective_ci_low": number(found.low),
                "objective_ci_high": number(found.high),
                "test_acc_mean": test.mean if test else None,
                "test_acc_std": number(test.std) if test else None,
            }
        )
    return records


def document(sweep: SweepRecord, parent: Run, runs: list[Run]) -> Record:
    """The sweep (its parent run and objectives), its run records and configuration records."""
    return {
        "sweep": {
            "run_id": parent.info.run_id,
            "run_name": parent.info.run_name,
            "status": parent.info.status,
            "objective": {"metric": sweep.objective.metric, "direction": sweep.objective.direction},
            "trade_offs": [
                {"metric": t.metric, "direction": t.direction} for t in sweep.trade_offs
            ],
        },
        "runs": run_records(sweep, runs),
        "configurations": configuration_records(sweep, runs),
    }


def to_csv(records: list[Record]) -> str:
    """One header row, the records' keys in order, and a row per record; None is an empty
    cell. Floats are written in full (Python's shortest repr reads back to the same float)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def to_json(found: Record) -> str:
    # allow_nan=False: a NaN left anywhere would make JSON that strict parsers refuse
    return json.dumps(found, indent=1, allow_nan=False) + "\n"
