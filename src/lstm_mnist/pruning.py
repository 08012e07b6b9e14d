"""A trial of an Optuna sweep reports the objective to its study as it trains, and stops when
the study's pruner says it is falling behind.

With seed replicates, the trial's replicates report one after another on its step axis: replicate
r at r * max_steps + step, so the pruner compares each with the same replicate of other trials,
and once one is pruned the trial's other replicates stop at their next validation."""

from __future__ import annotations

from collections.abc import Callable

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
    if sweeper.get("trade_offs"):  # a multi-objective study: Optuna cannot prune it
        return []
    store = Store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    url = sweeper.storage or store.optuna_storage()
    # The storage does not keep the pruner, so the sweep's is passed in again.
    study = optuna.load_study(
        study_name=cfg.sweep.study, storage=url, pruner=instantiate(sweeper.pruner)
    )
    storage = optuna.storages.get_storage(url)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(cfg.sweep.study), cfg.sweep.trial
    )
    return [
        OptunaPruning(
            optuna.trial.Trial(study, trial_id),  # the trial the sweeper asked, in this process
            monitor=Objective.from_config(cfg).metric,
            offset=cfg.sweep.replicate * cfg.max_steps,
            why_pruned=lambda: storage.get_trial_user_attrs(trial_id).get(PRUNED),
        )
    ]


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
