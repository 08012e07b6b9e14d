"""A trial of an Optuna sweep: it reports the objective to its study as it trains, stops when
the study's pruner says it is falling behind, and beats Optuna's trial heartbeat, so that a
trial whose job died without a word (SIGKILL, a lost node) is failed and retried.

With seed replicates, the trial's replicates report one after another on its step axis: replicate
r at r * max_steps + step, so the pruner compares each with the same replicate of other trials,
and once one is pruned the trial's other replicates stop at their next validation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.store import Store


def study_storage(url: str, heartbeat_s: int, retries: int) -> optuna.storages.RDBStorage:
    """The study's storage (an SQLAlchemy URL) with Optuna's trial heartbeat: a RUNNING trial
    whose heartbeat is older than 2 x `heartbeat_s` is failed by `optuna.storages.
    fail_stale_trials` and tried again as a new trial with the same values, at most `retries`
    times (Optuna's RetryHeartbeatStaleTrialCallback: the new trial's `failed_trial` system
    attribute names the first)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8; stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=retry,
        )


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose jobs died, and queue their retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry_of(study: optuna.Study, number: int) -> int | None:
    """The trial that trial `number` retries, if it is a retry."""
    (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return frozen.system_attrs.get("failed_trial")


def trial_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """For a trial of an Optuna sweep (hydra_plugins/lstm_mnist_sweepers/_optuna.py), its
    heartbeat and the callback that reports to it (none for a multi-objective study: Optuna
    cannot prune those); for any other run, none. The storage URL and the pruner come from the
    sweep's Hydra config: the URL may hold a password, so it is not an override."""
    if cfg.sweep.trial is None:
        return []
    sweeper = HydraConfig.get().sweeper
    store = Store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    url = sweeper.storage or store.optuna_storage()
    storage = study_storage(url, sweeper.heartbeat_s, sweeper.retries)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(cfg.sweep.study), cfg.sweep.trial
    )
    callbacks: list[pl.Callback] = [TrialHeartbeat(storage, trial_id, sweeper.heartbeat_s)]
    if sweeper.get("trade_offs"):
        return callbacks
    # The storage does not keep the pruner, so the sweep's is passed in again.
    study = optuna.load_study(
        study_name=cfg.sweep.study, storage=storage, pruner=instantiate(sweeper.pruner)
    )
    pruning = OptunaPruning(
        optuna.trial.Trial(study, trial_id),  # the trial the sweeper asked, in this process
        monitor=Objective.from_config(cfg).metric,
        offset=cfg.sweep.replicate * cfg.max_steps,
        why_pruned=lambda: storage.get_trial_user_attrs(trial_id).get(PRUNED),
    )
    return [*callbacks, pruning]


class TrialHeartbeat(pl.Callback):
    """Records the trial's heartbeat in the study's storage at the start of training and then
    every `every_s` seconds, while it trains."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, every_s: float):
        self.storage, self.trial_id, self.every_s = storage, trial_id, every_s
        self.last = 0.0

    def beat(self, *args: Any) -> None:
        if (now := time.monotonic()) - self.last >= self.every_s:
            self.last = now
            self.storage.record_heartbeat(self.trial_id)

    on_train_start = on_train_batch_end = on_validation_batch_end = beat


class OptunaPruning(pl.Callback):
    """Reports `monitor` at each validation during fit, at the global step; raises
    optuna.TrialPruned when the pruner says so.

    Optuna's own PyTorchLightningPruningCallback reports once per epoch, but runs here validate
    every val_every steps, often several times an epoch (it also needs the `lightning` package,
    where this project uses `pytorch_lightning`).
    """

    def __init__(
        self,
        trial: optuna.trial.Trial,
        monitor: str,
        offset: int = 0,
        why_pruned: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.offset = offset  # where this replicate's steps start on the trial's step axis
        self.why_pruned = why_pruned  # set once any replicate of the trial was pruned

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if (why := self.why_pruned()) is not None:  # another replicate of the trial was
            raise optuna.TrialPruned(f"at step {trainer.global_step}, as another seed was {why}")
        value = float(trainer.callback_metrics[self.monitor])
        self.trial.report(value, step=self.offset + trainer.global_step)
        if self.trial.should_prune():
            why = f"pruned at step {trainer.global_step}: {self.monitor}={value:.4f}"
            self.trial.set_user_attr(PRUNED, why)
            raise optuna.TrialPruned(why)


PRUNED = "pruned"  # the trial's user attribute: why one of its replicates was pruned
