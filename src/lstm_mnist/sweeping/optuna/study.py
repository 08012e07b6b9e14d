"""An Optuna sweep's study: the one place its storage, trial heartbeat, retries, pruner and
sampler are resolved, for the sweeper and for its jobs alike, and the one way a trial is ended.

A trial whose job died without a word (SIGKILL, a lost node) stops beating its heartbeat; once
it is 2 x `heartbeat_s` old, the next one to look fails it and Optuna queues a retry with the
same values (RetryHeartbeatStaleTrialCallback, at most `retries` times)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist.tracking import Store, names

if TYPE_CHECKING:
    from mlflow.entities import Run

TrialState = optuna.trial.TrialState


@dataclass(frozen=True)
class StudySettings:
    """Where a study lives and how its trials are kept alive; the sweeper's config has them."""

    storage_url: str  # an SQLAlchemy URL; may hold a password: never an override or a tag
    heartbeat_s: int
    retries: int

    @classmethod
    def of(cls, sweeper: Any, store: Store) -> StudySettings:
        """From the Optuna sweeper's settings (its config, or the sweeper itself): the storage
        it names, else the default beside the MLflow store."""
        return cls(sweeper.storage or store.optuna_storage(), sweeper.heartbeat_s, sweeper.retries)

    def storage(self) -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8; stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.retries)
            return optuna.storages.RDBStorage(
                self.storage_url,
                heartbeat_interval=self.heartbeat_s,
                grace_period=2 * self.heartbeat_s,
                heartbeat_stale_trial_callback=retry,
            )


def create_study(
    name: str,
    settings: StudySettings,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
    directions: Sequence[str],
) -> optuna.Study:
    """The sweep's study, created or, when the sweep is run again, loaded."""
    return optuna.create_study(
        storage=settings.storage(),
        study_name=name,
        sampler=sampler,
        pruner=pruner,
        directions=list(directions),
        load_if_exists=True,
    )


def job_study(
    name: str,
    sweeper: DictConfig,
    storage: optuna.storages.RDBStorage,
    sampler_seed_offset: int | None = None,
) -> optuna.Study:
    """The study as a job sees it, in `storage` (StudySettings.of(sweeper, store).storage()),
    from the sweeper's config (`sweeper`): the storage keeps neither the sampler nor the pruner,
    so both are instantiated here again. With
    `sampler_seed_offset` (an asynchronous worker's number), a seeded sampler gets a seed of its
    own, so that the workers do not draw the same values."""
    seed = {}
    if sampler_seed_offset is not None and "seed" in (sweeper.sampler or {}):
        seed = {"seed": sweeper.sampler.seed + sampler_seed_offset}
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=instantiate(sweeper.sampler, **seed) if sweeper.sampler else None,
        pruner=instantiate(sweeper.pruner) if sweeper.pruner else None,
    )


def end_trial(
    study: optuna.Study, trial: optuna.trial.Trial | int, outcome: Sequence[float] | TrialState
) -> None:
    """Tell the study how `trial` ended: its objective values, or PRUNED or FAIL."""
    if isinstance(outcome, TrialState):
        study.tell(trial, state=outcome)
    else:
        study.tell(trial, list(outcome))


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose jobs died, and queue their retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry_of(study: optuna.Study, number: int) -> int | None:
    """The trial that trial `number` retries, if it is a retry."""
    (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return frozen.system_attrs.get("failed_trial")


def recorded_study(parent: Run, store: Store, storage: str | None = None) -> optuna.Study | None:
    """The study of the Optuna sweep whose parent run is `parent` (None for another sweep):
    in `storage`, else where the parent says (unless its URL hides a password), else beside
    the store."""
    name = parent.data.tags.get(names.OPTUNA_STUDY)
    if name is None:
        return None
    tagged = parent.data.tags.get(names.OPTUNA_STORAGE, "")
    storage = storage or (tagged if "***" not in tagged else None) or store.optuna_storage()
    return optuna.load_study(study_name=name, storage=storage)
