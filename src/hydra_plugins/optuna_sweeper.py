"""A Hydra sweeper on Optuna's ask-and-tell API: Optuna chooses each job's values, Hydra's
launcher runs the jobs (in turn, or in parallel with hydra/launcher=joblib).

Each job reports val_acc to its own trial at every validation (lstm_mnist/pruning.py), so the
study's pruner can stop it early. Hydra's own Optuna sweeper cannot: it has no channel for
intermediate values, and it pins Optuna < 3.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from sqlalchemy.engine import make_url

from lstm_mnist.sweep import (
    SweepRun,
    checked_job_config,
    default_storage,
    exit_if_failed,
    parallel_jobs,
    save_sweep_config,
)
from lstm_mnist.tracking import digest, run_params

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Runs trials until the study has `n_trials` finished ones (complete, pruned or failed).

    The study is named after the sweep and keyed by its search space and fixed overrides, so
    running the same command again resumes it. The trials' runs are nested under one parent
    MLflow run; a pruned trial's run is FINISHED and tagged `pruned`; a failed one is FAILED
    and the sweep goes on, then exits 1 naming it.
    """

    def __init__(
        self,
        params: dict[str, optuna.distributions.BaseDistribution],
        n_trials: int,
        direction: str = "maximize",
        storage: str | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        enqueue: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> None:
        self.space = dict(params)
        self.n_trials = n_trials
        self.direction = direction
        self.storage = storage
        self.sampler = sampler
        self.pruner = pruner
        self.enqueue = [dict(e) for e in enqueue or []]
        self.name = name or "optuna"

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        swept = [o.input_line for o in parser.parse_overrides(arguments) if o.is_sweep_override()]
        if swept:
            raise SystemExit(
                f"error: {' '.join(swept)}: the optuna sweeper takes its search space from"
                " hydra.sweeper.params, not from comma-separated values"
            )
        base = checked_job_config(self.hydra_context.config_loader, self.config, arguments)
        to_json = optuna.distributions.distribution_to_json
        space_text = {k: to_json(d) for k, d in self.space.items()}
        key = digest([run_params(base), space_text, self.direction])
        study_name = f"{self.name}-{key}"
        storage = self.storage or default_storage(base.logger.tracking_uri)
        definition = {"sweeper": "optuna", "arguments": arguments, "study": study_name}
        definition.update(n_trials=self.n_trials, direction=self.direction, params=space_text)
        parent = SweepRun.open(
            base.logger.tracking_uri,
            base.logger.experiment_name,
            name=self.name,
            key=key,
            kind="optuna",
            definition=OmegaConf.to_yaml(definition),
        )
        client = parent.client
        client.set_tag(parent.run_id, "optuna_study", study_name)
        shown = make_url(storage).render_as_string(hide_password=True)  # no secrets in tags
        client.set_tag(parent.run_id, "optuna_storage", shown)
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        for params in self.enqueue:  # skipped if the study has that trial already
            study.enqueue_trial(params, skip_if_exists=True)
        finished = [t for t in study.trials if t.state.is_finished()]
        if finished:
            log.info(f"study {study_name}: {len(finished)} trials already finished; resuming")
            self.sampler.reseed_rng()  # or a seeded sampler repeats the first run's random trials
        save_sweep_config(self.config)

        n_jobs = parallel_jobs(self.config.hydra.launcher)
        failures, returns, num = [], [], 0
        while (todo := self.n_trials - len(finished)) > 0:
            trials = [study.ask(self.space) for _ in range(min(todo, n_jobs))]
            batch = [
                arguments
                + [f"{k}={v}" for k, v in trial.params.items()]
                + [f"sweep.parent_run={parent.run_id}", f"sweep.study={study_name}"]
                + [f"sweep.trial={trial.number}"]  # the storage URL may hold a password
                for trial in trials
            ]
            try:
                results = self.launcher.launch(batch, initial_job_idx=num)
            except SystemExit as stop:  # Ctrl-C / SIGTERM: the trials started stay unfinished
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                parent.close("KILLED")
                raise stop
            for trial, result in zip(trials, results, strict=True):
                try:
                    study.tell(trial, result.return_value)
                except optuna.TrialPruned:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                except Exception as err:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    values = " ".join(f"{k}={v}" for k, v in trial.params.items())
                    failures.append((f"trial {trial.number} {values}", err))
                finished.append(trial)
            returns.append(results)
            num += len(batch)
        parent.close()
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            log.info(f"study {study_name}: best val_acc {study.best_value:.4f} {study.best_params}")
        exit_if_failed(failures, num)
        return returns
