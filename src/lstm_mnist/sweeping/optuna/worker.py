"""An asynchronous Optuna worker: one job of an Optuna sweep that asks the shared study for a
trial, trains it, tells the study how it ended, and repeats until the study holds `n_trials`
trials. N workers run at once (hydra/launcher=joblib processes, or the tasks of a SLURM job
array), each starting its next trial as soon as its last one ends: a slot freed by a pruned or
failed trial is used again at once, with no barrier (sweeper.py starts them).
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.display import one_line
from lstm_mnist.job import JobContext
from lstm_mnist.schema import validate
from lstm_mnist.sweeping.optuna.study import (
    StudySettings,
    TrialState,
    end_trial,
    fail_stale_trials,
    job_study,
    retry_of,
)

# Trials that count towards n_trials: the finished ones, and those another worker is training.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def work(cfg: DictConfig, job: JobContext) -> dict[str, Any]:
    """Ask, train, tell until the study is full; return how many trials this worker ran and a
    line for each that failed."""
    from lstm_mnist.sweeping.optuna.callbacks import trial_callbacks
    from lstm_mnist.training import train

    place = job.trial
    assert place is not None and place.worker is not None
    settings = place.settings
    storage = StudySettings.of(settings, job.store).storage()
    study = job_study(place.study, settings, storage, sampler_seed_offset=place.worker)
    space = {k: instantiate(d) for k, d in settings.params.items()}
    metrics = [cfg.objective.metric, *(settings.trade_offs or {})]
    ran, failures = 0, []
    budget = job.sweep.budget if job.sweep is not None else None
    parent = job.sweep_run() if budget else None
    while True:
        fail_stale_trials(study)  # a worker that died: its trial is failed and queued again
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= settings.n_trials:
            break
        if budget and budget.spent(parent):
            break
        trial = study.ask(space)
        values = [f"{k}={v}" for k, v in trial.params.items()]
        ran += 1
        try:
            trial_cfg = trial_config(cfg, trial.params)
            trial_job = job.for_trial(trial.number, values, retry_of(study, trial.number))
            result = train(trial_cfg, trial_job, trial_callbacks(trial_cfg, trial_job))
            end_trial(study, trial, [result[m] for m in metrics])
        except optuna.TrialPruned:
            end_trial(study, trial, TrialState.PRUNED)
        except Exception as err:  # recorded in its run; the worker goes on with the next
            end_trial(study, trial, TrialState.FAIL)
            failures.append(
                f"trial {trial.number} {' '.join(values)}: {type(err).__name__}: {one_line(err)}"
            )
        except BaseException:  # interrupted: the trial is not left RUNNING in the study
            end_trial(study, trial, TrialState.FAIL)
            raise
    return {"trials": ran, "failures": failures}


def trial_config(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    """The worker's config with a trial's values set, checked."""
    trial_cfg = copy.deepcopy(cfg)
    for key, value in params.items():
        OmegaConf.update(trial_cfg, key, value)
    validate(trial_cfg)
    return trial_cfg
