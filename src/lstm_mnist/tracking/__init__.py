"""Everything MLflow knows about a run and a sweep, written from here only.

- names.py: tag keys, the metrics a run logs and the objective, each named once;
- store.py: a tracking URI made into a client, an experiment, the study storage beside it, gc;
- identity.py: what identifies a run, without torch: params, config hashes, name, tags;
- artifacts.py: what a run uploads: config, the model, the test report;
- run.py: one training run's life, from its params to its one final status (the only writer of
  statuses);
- resume.py: where a run continues from (resume=<run id>, or a requeued SLURM job's own run);
- sweep_record.py: what the store knows of a sweep (SweepRecord), read only, without torch;
- parent.py: a sweep's parent run as its sweeper writes it (SweepRun), which the jobs' runs (or
  its configurations' runs) are nested under, with its best configuration and Pareto set;
- ranking.py: runs grouped by configuration and ranked (by mean, or Pareto dominance);
- registry.py: MLflow's model registry as predict.py uses it: alias rules, models:/ URIs checked
  before loading, registering;
- system.py: MLflow's system metrics, of the run's own GPU.

The names below are this package's door. They are imported when first used, so that importing
`lstm_mnist.tracking.names` (the commands' --help does) pays for no MLflow or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lstm_mnist.tracking.names import DEFAULT_URI, METRICS, Objective
    from lstm_mnist.tracking.parent import Outcome, SweepRun
    from lstm_mnist.tracking.run import TrackedRun, tracked_run
    from lstm_mnist.tracking.store import Store, StoreError
    from lstm_mnist.tracking.sweep_record import (
        JOB_STATES,
        SweepRecord,
        finished,
        is_finished,
        job_state,
    )

# name -> the module of this package that defines it
_DOOR = {
    "DEFAULT_URI": "names",
    "METRICS": "names",
    "Objective": "names",
    "Store": "store",
    "StoreError": "store",
    "TrackedRun": "run",
    "tracked_run": "run",
    "SweepRun": "parent",
    "SweepRecord": "sweep_record",
    "Outcome": "parent",
    "JOB_STATES": "sweep_record",
    "finished": "sweep_record",
    "is_finished": "sweep_record",
    "job_state": "sweep_record",
}

__all__ = [
    "DEFAULT_URI",
    "JOB_STATES",
    "METRICS",
    "Objective",
    "Outcome",
    "Store",
    "StoreError",
    "SweepRecord",
    "SweepRun",
    "TrackedRun",
    "finished",
    "is_finished",
    "job_state",
    "tracked_run",
]


def __getattr__(name: str) -> Any:
    if name not in _DOOR:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_DOOR[name]}"), name)
