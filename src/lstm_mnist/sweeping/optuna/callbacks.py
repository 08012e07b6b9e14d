"""What a trial's training reports to its study: a heartbeat, and the objective at every
validation, so that the study's pruner can stop it when it falls behind.

With seed replicates, the trial's replicates report one after another on its step axis: replicate
r at r * max_steps + step, so the pruner compares each with the same replicate of other trials,
and once one is pruned the trial's other replicates stop at their next validation."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytorch_lightning as pl
from omegaconf import DictConfig

from lstm_mnist.heartbeat import Heartbeat
from lstm_mnist.job import JobContext
from lstm_mnist.sweeping.optuna.study import StudySettings, job_study
from lstm_mnist.tracking import Objective
from lstm_mnist.tracking.run import HeartbeatCallback

PRUNED = "pruned"  # the trial's user attribute: why one of its replicates was pruned


def trial_callbacks(cfg: DictConfig, job: JobContext) -> list[pl.Callback]:
    """For a trial of an Optuna sweep, its heartbeat and the callback that reports to the pruner
    (none for a multi-objective study: Optuna cannot prune those); for any other run, none."""
    place = job.trial
    if place is None or place.number is None or not job.rank_0:
        return []
    storage = StudySettings.of(place.settings, job.store).storage()
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(place.study), place.number
    )
    beat = Heartbeat(lambda: storage.record_heartbeat(trial_id), place.settings.heartbeat_s)
    callbacks: list[pl.Callback] = [HeartbeatCallback(beat)]
    if place.settings.get("trade_offs"):
        return callbacks
    study = job_study(place.study, place.settings, storage)  # one storage, one connection pool
    pruning = OptunaPruning(
        optuna.trial.Trial(study, trial_id),  # the trial the sweeper asked, in this process
        monitor=Objective.from_config(cfg).metric,
        offset=place.replicate * cfg.max_steps,
        why_pruned=lambda: storage.get_trial_user_attrs(trial_id).get(PRUNED),
    )
    return [*callbacks, pruning]


class OptunaPruning(pl.Callback):
    """Reports `monitor` at each validation during fit, at the global step; raises
    optuna.TrialPruned when the pruner says so. Under DDP only rank 0 holds the trial (`trial`
    is None on the others): it reports and asks, and its answer is broadcast, so that every rank
    stops at the same validation.

    Optuna's own PyTorchLightningPruningCallback reports once per epoch, but runs here validate
    every val_every steps, often several times an epoch (it also needs the `lightning` package,
    where this project uses `pytorch_lightning`).
    """

    def __init__(
        self,
        trial: optuna.trial.Trial | None,
        monitor: str,
        offset: int = 0,
        why_pruned: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.offset = offset  # where this replicate's steps start on the trial's step axis
        self.why_pruned = why_pruned  # set once any replicate of the trial was pruned

    def for_other_ranks(self) -> OptunaPruning:
        """What the other ranks of a DDP training run in its place (ranks.RankSpec): no trial,
        rank 0's decisions."""
        return OptunaPruning(None, self.monitor, self.offset, why_pruned=no_reason)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        why = self.decide(trainer) if self.trial is not None else None
        if trainer.world_size > 1:
            why = trainer.strategy.broadcast(why, src=0)
        if why is not None:
            raise optuna.TrialPruned(why)

    def decide(self, trainer: pl.Trainer) -> str | None:
        """Report the objective; why the trial is to stop now, or None."""
        if (why := self.why_pruned()) is not None:  # another replicate of the trial was
            return f"at step {trainer.global_step}, as another seed was {why}"
        if self.monitor not in trainer.callback_metrics:  # an objective not known until testing
            return None
        value = float(trainer.callback_metrics[self.monitor])
        self.trial.report(value, step=self.offset + trainer.global_step)
        if self.trial.should_prune():
            why = f"pruned at step {trainer.global_step}: {self.monitor}={value:.4f}"
            self.trial.set_user_attr(PRUNED, why)
            return why
        return None


def no_reason() -> None:
    return None  # a module-level function, not a lambda: a follower is pickled to its rank
