"""One training run's life in MLflow: started or resumed, watched by a heartbeat, ended with
exactly one final status once everything it records is uploaded.

Run statuses are written here and in status.py only: `tracked_run` for training runs (the active
run); status.py's `reopen_run` and `end_run` for a sweep's parent and configuration runs and for
runs found dead (no torch there, so `sweeps stop` starts at once).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import optuna
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import MLFlowLogger

from lstm_mnist.checkpoints import checkpoint_callbacks
from lstm_mnist.heartbeat import Heartbeat
from lstm_mnist.interrupts import Interrupted
from lstm_mnist.phases import PhaseClock
from lstm_mnist.tracking import artifacts, compute, identity, names, resume
from lstm_mnist.tracking.status import end_run
from lstm_mnist.tracking.store import Store
from lstm_mnist.tracking.system import system_monitor
from lstm_mnist.world import World

if TYPE_CHECKING:
    from lstm_mnist.job import JobContext

log = logging.getLogger(__name__)


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger for metrics only. Lightning ends the run through it when fit or
    test ends ("failed" when a pruned trial stops, "success" before the model is uploaded);
    `tracked_run` writes the one final status instead.

    A resumed run retrains the steps between its last checkpoint and where it stopped (after a
    SIGKILL, up to val_every of them); `logged_until` (metric -> last step the run has) keeps
    those steps from being logged twice: each step of a metric has one value."""

    def __init__(self, *args: Any, logged_until: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logged_until = logged_until or {}

    def finalize(self, status: str = "success") -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        fresh = {
            k: as_logged(v)
            for k, v in metrics.items()
            if step is None or step > self.logged_until.get(k, -1)
        }
        if fresh:
            super().log_metrics(fresh, step)


def as_logged(value: Any) -> float:
    """A float32 metric as the number it is (0.9412, not 0.9412000179290771): the shortest
    decimal that reads back as the same float32."""
    return float(str(np.float32(float(value))))


class HeartbeatCallback(pl.Callback):
    """Beats `heartbeat` at the start of training and from then on at its pace, while it trains:
    the run's in MLflow, a trial's in the Optuna study."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat

    def beat(self, *args: Any) -> None:
        self.heartbeat()

    on_train_start = on_train_batch_end = on_validation_batch_end = beat


def run_heartbeat(client: mlflow.MlflowClient, run_id: str, every_s: float) -> Heartbeat:
    """The `heartbeat` tag of run `run_id`: Unix time, stamped at most every `every_s`."""
    return Heartbeat(lambda: client.set_tag(run_id, names.HEARTBEAT, f"{time.time():.0f}"), every_s)


@dataclass
class TrackedRun:
    """What training needs from its MLflow run, handed out by `tracked_run`."""

    cfg: DictConfig
    store: Store
    experiment_id: str
    run_id: str
    resume_from: Path | None  # the checkpoint to continue from, with resume=<run id>

    @property
    def url(self) -> str:
        """Where to see the run in the MLflow UI."""
        return self.store.url(self.experiment_id, self.run_id)

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.cfg.ckpt_dir) / self.run_id

    def logger(self) -> RunLogger:
        logged_until = {}
        if self.resume_from is not None:  # the steps this run has already logged
            client = self.store.client
            for metric in client.get_run(self.run_id).data.metrics:
                history = client.get_metric_history(self.run_id, metric)
                logged_until[metric] = max(m.step for m in history)
        return instantiate(self.cfg.logger, run_id=self.run_id, logged_until=logged_until)

    def callbacks(self) -> list[pl.Callback]:
        """The run's own: its checkpoints (checkpoints.checkpoint_callbacks) and heartbeat."""
        return [
            *checkpoint_callbacks(self.ckpt_dir, self.cfg.val_every),
            HeartbeatCallback(
                run_heartbeat(self.store.client, self.run_id, self.cfg.stale_after_s / 10)
            ),
        ]


@contextmanager
def tracked_run(
    cfg: DictConfig,
    job: JobContext,
    threads: int,
    world: World | None = None,
    clock: PhaseClock | None = None,
) -> Iterator[TrackedRun]:
    """Start the run (or, with resume=<run id>, reopen that one), record its params, tags and
    config and, every `system_metrics_s`, MLflow's system metrics (of this node and of the
    world's GPUs only), and end
    it with one status once the block is done: FINISHED (its checkpoints removed unless
    keep_checkpoints); FINISHED and tagged `pruned` when Optuna pruned it; KILLED on Ctrl-C or
    SIGTERM; FAILED and tagged `error` on any other exception, including one while uploading
    the model or the report. `threads` is torch's thread count, recorded as a tag; `world` the
    processes and devices it trains on (world.py), recorded as params (a resumed run must keep
    them); `clock` the run's phases so far (phases.py), to which it adds its own and which it
    records as metrics with the run's cost."""
    clock = clock or PhaseClock(time.time())
    store = job.store
    experiment_id = store.prepare()
    for run_id, silent_s in store.stale_runs(experiment_id, cfg.stale_after_s).items():
        log.warning(
            f"run {run_id} was left RUNNING with no heartbeat for {silent_s:.0f} s"
            " (its process died): marked KILLED"
        )
        end_run(store.client, run_id, "KILLED")
    started = time.monotonic()
    world = world or World("cpu", 1)
    config = identity.run_params(cfg)  # the configuration, as sweeps plan it (its hashes)
    params = {**config, **world.params(cfg.batch_size)}
    if (
        not cfg.resume
        and (requeued := resume.requeued_run(store, experiment_id, cfg, job)) is not None
    ):
        log.info(f"SLURM requeued job {job.slurm.id}: continuing its run {requeued}")
        cfg.resume = requeued
    resume_from = resume.resume_point(store, cfg, params) if cfg.resume else None
    clock.done("store")
    mlflow.set_tracking_uri(store.uri)
    tags = identity.run_tags(cfg, job, config, threads)
    if world.gpus:
        tags[names.GPU] = ",".join(map(str, world.gpus))
    run = mlflow.start_run(
        run_id=cfg.resume,
        experiment_id=experiment_id,
        run_name=None if cfg.resume else identity.run_name(job),
        tags=tags,
    )
    monitor = (
        system_monitor(
            run.info.run_id, store.uri, cfg.system_metrics_s, bool(cfg.resume), world.gpus
        )
        if cfg.system_metrics_s
        else None
    )
    status = "FAILED"
    recorded = mlflow.get_run(run.info.run_id).data.metrics if cfg.resume else {}
    ran_before = compute.Compute(*(recorded.get(k, 0.0) for k in names.COMPUTE))
    try:
        mlflow.log_params(params)
        artifacts.log_config(cfg, job.hydra_dir)
        clock.done("run_start")
        yield TrackedRun(cfg, store, experiment_id, run.info.run_id, resume_from)
        status = "FINISHED"
    except optuna.TrialPruned as pruned:  # the study's pruner stopped it: not a failure
        mlflow.set_tag(names.PRUNED, str(pruned))
        status = "FINISHED"
        raise
    except (Interrupted, KeyboardInterrupt):  # stopped by the user or the scheduler
        status = "KILLED"
        raise
    except Exception as err:  # FAILED, and why, where people look
        mlflow.set_tag(names.ERROR, f"{type(err).__name__}: {err}"[: names.MAX_TAG])
        raise
    finally:
        if monitor is not None:
            monitor.finish()  # its last samples, before the status
        gpus = world.size if world.accelerator == "gpu" else 0
        # a resumed run adds its earlier sessions'
        cost = ran_before + compute.segment(time.monotonic() - started, threads * world.size, gpus)
        clock.done("end")
        mlflow.log_metrics({**cost.as_metrics(), **clock.as_metrics()})
        mlflow.end_run(status)
        if status == "FINISHED" and not cfg.keep_checkpoints:  # nothing left to resume
            shutil.rmtree(Path(cfg.ckpt_dir) / run.info.run_id, ignore_errors=True)
