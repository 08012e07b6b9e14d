"""An asynchronous Optuna worker: one job of an Optuna sweep that asks the shared study for a
trial, trains it, tells the study how it ended, and repeats until the study holds `n_trials`
trials. N workers run at once (hydra/launcher=joblib processes, or the tasks of a SLURM job
array), each starting its next trial as soon as its last one ends: a slot freed by a pruned or
failed trial is used again at once, with no barrier (hydra_plugins/.../_optuna.py starts them).
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.config import validate
from lstm_mnist.tracking.store import Store
from lstm_mnist.trial import fail_stale_trials, retry_of, study_storage

TrialState = optuna.trial.TrialState
# Trials that count towards n_trials: the finished ones, and those another worker is training.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def work(cfg: DictConfig) -> dict[str, Any]:
    """Ask, train, tell until the study is full; return how many trials this worker ran and a
    line for each that failed."""
    from lstm_mnist.train import train

    sweeper = HydraConfig.get().sweeper
    store = Store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    seed = {"seed": cfg.seed + cfg.sweep.worker} if "seed" in (sweeper.sampler or {}) else {}
    study = optuna.load_study(
        study_name=cfg.sweep.study,
        storage=study_storage(
            sweeper.storage or store.optuna_storage(), sweeper.heartbeat_s, sweeper.retries
        ),
        sampler=instantiate(sweeper.sampler, **seed),  # each worker its own random stream
    )
    space = {k: instantiate(d) for k, d in sweeper.params.items()}
    metrics = [cfg.objective.metric, *(sweeper.trade_offs or {})]
    ran, failures = 0, []
    while True:
        fail_stale_trials(study)  # a worker that died: its trial is failed and queued again
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= sweeper.n_trials:
            break
        trial = study.ask(space)
        values = [f"{k}={v}" for k, v in trial.params.items()]
        ran += 1
        try:
            trial_cfg = trial_config(cfg, trial.number, trial.params)
            trial_cfg.sweep.retry_of = retry_of(study, trial.number)
            result = train(trial_cfg)
            study.tell(trial, [result[m] for m in metrics])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as err:  # recorded in its run; the worker goes on with the next
            study.tell(trial, state=TrialState.FAIL)
            reason = " ".join(str(err).split())
            failures.append(
                f"trial {trial.number} {' '.join(values)}: {type(err).__name__}: {reason}"
            )
        except BaseException:  # interrupted: the trial is not left RUNNING in the study
            study.tell(trial, state=TrialState.FAIL)
            raise
    return {"trials": ran, "failures": failures}


def trial_config(cfg: DictConfig, number: int, params: dict[str, Any]) -> DictConfig:
    """The worker's config with trial `number`'s values set, checked."""
    trial_cfg = copy.deepcopy(cfg)
    for key, value in params.items():
        OmegaConf.update(trial_cfg, key, value)
    trial_cfg.sweep.trial = number
    trial_cfg.sweep.overrides = [f"{k}={v}" for k, v in params.items()]
    validate(trial_cfg)
    return trial_cfg
