"""A trial of an Optuna sweep reports the objective to its study as it trains, and stops when
the study's pruner says it is falling behind."""

from __future__ import annotations

import optuna
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.store import Store


def trial_pruning(cfg: DictConfig) -> list[pl.Callback]:
    """For a trial of an Optuna sweep (hydra_plugins/lstm_mnist_sweepers/_optuna.py), the
    callback that reports to it; for any other run, none. The storage URL and the pruner come
    from the sweep's Hydra config: the URL may hold a password, so it is not an override."""
    if cfg.sweep.trial is None:
        return []
    sweeper = HydraConfig.get().sweeper
    store = Store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    storage = sweeper.storage or store.optuna_storage()
    trial = optuna_trial(storage, cfg.sweep.study, cfg.sweep.trial, instantiate(sweeper.pruner))
    return [OptunaPruning(trial, monitor=Objective.from_config(cfg).metric)]


def optuna_trial(
    storage: str, study_name: str, number: int, pruner: optuna.pruners.BasePruner
) -> optuna.trial.Trial:
    """Trial `number` of the study, as the sweeper asked it (possibly in another process). The
    storage does not keep the pruner, so the sweep's is passed in again."""
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    store = optuna.storages.get_storage(storage)
    trial_id = store.get_trial_id_from_study_id_trial_number(
        store.get_study_id_from_name(study_name), number
    )
    return optuna.trial.Trial(study, trial_id)


class OptunaPruning(pl.Callback):
    """Reports `monitor` at each validation during fit, at the global step; raises
    optuna.TrialPruned when the pruner says so.

    Optuna's own PyTorchLightningPruningCallback reports once per epoch, but runs here validate
    every val_every steps, often several times an epoch (it also needs the `lightning` package,
    where this project uses `pytorch_lightning`).
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at step {trainer.global_step}: {self.monitor}={value:.4f}"
            )
