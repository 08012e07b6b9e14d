"""Optuna search on its ask-and-tell API, tracked: Optuna chooses each job's values, Hydra's
launcher runs the jobs (in turn, or in parallel with hydra/launcher=joblib).

Each job reports the objective to its own trial at every validation (lstm_mnist/pruning.py), so
the study's pruner can stop it early. Hydra's own Optuna sweeper cannot: it has no channel for
intermediate values, and it pins Optuna < 3.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from sqlalchemy.engine import make_url

from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.record import digest, run_params
from lstm_mnist.tracking.store import Store
from lstm_mnist.tracking.sweep import SweepRun
from lstm_mnist.tracking.sweeper import Job, Plan, TrackedSweeper, parallel_jobs

log = logging.getLogger(__name__)


class OptunaSweep(TrackedSweeper):
    """Runs trials until the study has `n_trials` finished ones (complete, pruned or failed).

    The study is named after the sweep and keyed by its search space and fixed overrides, so
    running the same command again resumes it. A pruned trial's run is FINISHED and tagged
    `pruned`; a failed one is FAILED and the sweep goes on, then exits 1 naming it.
    """

    kind = "optuna"

    def __init__(
        self,
        params: dict[str, optuna.distributions.BaseDistribution],
        n_trials: int,
        storage: str | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        enqueue: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> None:
        self.space = dict(params)
        self.n_trials = n_trials
        self.storage = storage
        self.sampler = sampler
        self.pruner = pruner
        self.enqueue = [dict(e) for e in enqueue or []]
        self.name = name or "optuna"

    def plan(self, arguments: list[str]) -> Plan:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        swept = [o.input_line for o in parser.parse_overrides(arguments) if o.is_sweep_override()]
        if swept:
            raise ValueError(
                f"{' '.join(swept)}: the optuna sweeper takes its search space from"
                " hydra.sweeper.params, not from comma-separated values"
            )
        base = self.checked_config(arguments)
        if base.replicates > 1:
            raise ValueError(
                f"replicates={base.replicates}: seed replicates are for grid sweeps; the Optuna"
                " sweeper runs one seed per trial"
            )
        self.arguments = arguments
        self.objective = Objective.from_config(base)
        to_json = optuna.distributions.distribution_to_json
        space_text = {k: to_json(d) for k, d in self.space.items()}
        key = digest([run_params(base), space_text, self.objective.direction])
        self.study_name = f"{self.name}-{key}"
        store = Store(base.logger.tracking_uri, base.logger.experiment_name)
        self.storage = self.storage or store.optuna_storage()
        definition = {"sweeper": "optuna", "arguments": arguments, "study": self.study_name}
        definition.update(n_trials=self.n_trials, objective=self.objective.tag, params=space_text)
        space = {k: described(d) for k, d in self.space.items()}
        return Plan(config=base, name=self.name, key=key, definition=definition, space=space)

    def start(self, parent: SweepRun) -> int:
        client = parent.store.client
        client.set_tag(parent.run_id, names.OPTUNA_STUDY, self.study_name)
        shown = make_url(self.storage).render_as_string(hide_password=True)  # no secrets in tags
        client.set_tag(parent.run_id, names.OPTUNA_STORAGE, shown)
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.objective.direction,
            load_if_exists=True,
        )
        for params in self.enqueue:  # skipped if the study has that trial already
            self.study.enqueue_trial(params, skip_if_exists=True)
        self.finished = sum(t.state.is_finished() for t in self.study.trials)
        if self.finished:
            log.info(f"study {self.study_name}: {self.finished} trials already finished; resuming")
            self.sampler.reseed_rng()  # or a seeded sampler repeats the first run's random trials
        self.n_jobs = parallel_jobs(self.config.hydra.launcher)
        return 0  # a resumed study counts its finished trials towards n_trials instead

    def next_jobs(self) -> list[Job]:
        trials = [
            self.study.ask(self.space)
            for _ in range(min(self.n_trials - self.finished, self.n_jobs))
        ]
        return [
            Job(
                label=f"trial {t.number} " + " ".join(f"{k}={v}" for k, v in t.params.items()),
                overrides=self.arguments
                + [f"{k}={v}" for k, v in t.params.items()]
                # not the storage URL: it may hold a password; the job reads it from the sweeper
                + [f"sweep.study={self.study_name}", f"sweep.trial={t.number}"],
                key=t,
            )
            for t in trials
        ]

    def finish(self, job: Job, result: JobReturn) -> BaseException | None:
        self.finished += 1
        try:
            self.study.tell(job.key, result.return_value)
        except optuna.TrialPruned:
            self.study.tell(job.key, state=optuna.trial.TrialState.PRUNED)
        except Exception as err:
            self.study.tell(job.key, state=optuna.trial.TrialState.FAIL)
            return err
        return None

    def stopped(self, jobs: list[Job], started: int) -> list[str]:
        for job in jobs:  # the trials started stay unfinished otherwise
            self.study.tell(job.key, state=optuna.trial.TrialState.FAIL)
        return []


def described(distribution: optuna.distributions.BaseDistribution) -> str:
    """A search range as people write it: 1e-05..0.1 (log), 1..4, 64,128,256."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return ",".join(str(c) for c in distribution.choices)
    text = f"{distribution.low}..{distribution.high}"
    if distribution.log:
        return f"{text} (log)"
    step = distribution.step
    return text if step in (None, 1) else f"{text} step {step}"
