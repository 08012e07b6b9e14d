"""Where a run continues from: the run and checkpoint that `resume=<run id>` names (its config
checked against the run's), or, in a SLURM job started again, the run its earlier start left."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from omegaconf import DictConfig

from lstm_mnist.checkpoints import latest_checkpoint
from lstm_mnist.tracking import names
from lstm_mnist.tracking.store import Store

if TYPE_CHECKING:
    from lstm_mnist.job import JobContext


def requeued_run(store: Store, experiment_id: str, cfg: DictConfig, job: JobContext) -> str | None:
    """In a SLURM job started again after a preemption, a time limit or `scontrol requeue`,
    the run its earlier start left unfinished with a checkpoint; None otherwise (an
    asynchronous Optuna worker's trials are retried instead)."""
    if job.slurm is None or job.slurm.restarts < 1:
        return None
    if job.trial is not None and job.trial.worker is not None:
        return None
    for run in store.client.search_runs(
        [experiment_id], f"tags.{names.SLURM_JOB} = '{job.slurm.id}'", order_by=["start_time DESC"]
    ):
        if run.info.status == "FINISHED":
            return None
        if latest_checkpoint(Path(cfg.ckpt_dir) / run.info.run_id) is not None:
            return run.info.run_id
    return None


def resume_point(store: Store, cfg: DictConfig, params: dict[str, Any]) -> Path:
    """The checkpoint to resume run `cfg.resume` from; the config must be the run's own."""
    try:
        run = store.client.get_run(cfg.resume)
    except mlflow.MlflowException as err:
        raise ValueError(f"resume={cfg.resume}: no such run in the store") from err
    if run.info.status == "FINISHED":
        raise ValueError(f"resume={cfg.resume}: that run has FINISHED; nothing to resume")
    for key, value in params.items():
        if run.data.params.get(key, str(value)) != str(value)[: names.MAX_NAME]:
            raise ValueError(
                f"resume={cfg.resume}: {key}={value} here but {run.data.params[key]} in that run;"
                f" repeat its overrides: {run.data.tags.get(names.OVERRIDES, '')}"
            )
    path = latest_checkpoint(Path(cfg.ckpt_dir) / cfg.resume)
    if path is None:
        raise ValueError(
            f"resume={cfg.resume}: no usable checkpoint in {cfg.ckpt_dir}/{cfg.resume}"
        )
    return path
