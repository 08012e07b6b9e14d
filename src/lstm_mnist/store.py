"""The MLflow store's life cycle: created safely once, checked before use, runs that died
without a word found and closed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
import requests
from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def prepare_store(tracking_uri: str, experiment_name: str) -> str:
    """Create the store's schema and the experiment if needed; return the experiment id.

    A fresh SQLite store is created under a file lock: several processes creating it at once
    (two sweeps started together) corrupt it. Its artifacts go to `mlruns/` beside the database
    file, wherever the command runs from. A tracking server that does not answer is reported
    at once, not after minutes of MLflow's retries.
    """
    if tracking_uri.startswith(("http://", "https://")):
        check_server(tracking_uri)
        return _get_or_create_experiment(tracking_uri, experiment_name, None)
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{db}.lock"):
            return _get_or_create_experiment(
                tracking_uri, experiment_name, (db.parent / "mlruns").as_uri()
            )
    return _get_or_create_experiment(tracking_uri, experiment_name, None)


def _get_or_create_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError, in one line, unless the tracking server answers its health check."""
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as err:
        raise ConnectionError(
            f"MLflow tracking server {tracking_uri} does not answer ({type(err).__name__}); "
            "start it, or point MLFLOW_TRACKING_URI / logger.tracking_uri at a store that works"
        ) from err


class PrepareTrackingStore(Callback):
    """Hydra callback: prepare the MLflow store before the first job of a sweep starts (a single
    run prepares it in train(), after its config passed validation)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        prepare_store(config.logger.tracking_uri, config.logger.experiment_name)


class Heartbeat(pl.Callback):
    """Stamps the run's `heartbeat` tag (Unix time) while it trains, so that a run left RUNNING
    by a SIGKILL or a power loss can be told from one that is still going."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last = 0.0

    def beat(self, trainer: pl.Trainer) -> None:
        now = time.time()
        if now - self.last >= self.every_s:
            self.last = now
            logger = trainer.logger
            logger.experiment.set_tag(logger.run_id, "heartbeat", f"{now:.0f}")

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.beat(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.beat(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.beat(trainer)


def mark_stale_runs(tracking_uri: str, experiment_id: str, stale_after_s: float) -> list[str]:
    """Mark KILLED the runs still RUNNING whose heartbeat (or start) is older than
    `stale_after_s`: their process died without a word. Returns their ids."""
    client = mlflow.MlflowClient(tracking_uri)
    now = time.time()
    stale = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        if "sweep_key" in run.data.tags:  # a sweep's parent run: its sweeper closes it
            continue
        last = float(run.data.tags.get("heartbeat", run.info.start_time / 1000))
        if now - last > stale_after_s:
            client.set_terminated(run.info.run_id, "KILLED")
            log.warning(
                f"run {run.info.run_id} was left RUNNING with no heartbeat for "
                f"{now - last:.0f} s (its process died): marked KILLED"
            )
            stale.append(run.info.run_id)
    return stale
