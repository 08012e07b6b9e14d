"""Optuna search on its ask-and-tell API, tracked: Optuna chooses each job's values, Hydra's
launcher runs the jobs (in turn, or in parallel with hydra/launcher=joblib).

Each job reports the objective to its own trial at every validation (callbacks.py), so
the study's pruner can stop it early. Hydra's own Optuna sweeper cannot: it has no channel for
intermediate values, and it pins Optuna < 3.

With `replicates=N` a trial is a configuration: N jobs with seeds seed..seed+N-1, and the trial's
value is their mean. With `trade_offs` the study is multi-objective (a Pareto sweep): the
objective first, then each trade-off metric, and no pruning (Optuna prunes single objectives only).
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from sqlalchemy.engine import make_url

from lstm_mnist.cluster import parallel_slots
from lstm_mnist.sweeping.loop import Configuration, Job, Plan, TrackedSweeper
from lstm_mnist.sweeping.optuna.study import (
    StudySettings,
    TrialState,
    create_study,
    end_trial,
    fail_stale_trials,
    retry_of,
)
from lstm_mnist.tracking import Objective, SweepRun, names
from lstm_mnist.tracking.identity import digest, group_hash, run_params

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
        trade_offs: dict[str, str] | None = None,
        asynchronous: bool = True,
        heartbeat_s: int = 60,
        retries: int = 1,
        timeout_s: float | None = None,
        max_compute_s: float | None = None,
    ) -> None:
        self.space = dict(params)
        self.n_trials = n_trials
        self.storage = storage
        self.sampler = sampler
        self.pruner = pruner
        self.enqueue = [dict(e) for e in enqueue or []]
        self.name = name or "optuna"
        self.asynchronous = asynchronous
        self.heartbeat_s, self.retries = heartbeat_s, retries
        self.timeout_s, self.max_compute_s = timeout_s, max_compute_s
        self.trade_offs = tuple(Objective.checked(m, d) for m, d in (trade_offs or {}).items())

    def plan(self, arguments: list[str]) -> Plan:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        swept = [o.input_line for o in parser.parse_overrides(arguments) if o.is_sweep_override()]
        if swept:
            raise ValueError(
                f"{' '.join(swept)}: the optuna sweeper takes its search space from"
                " hydra.sweeper.params, not from comma-separated values"
            )
        base = self.checked_config(arguments)
        if "seed" in self.space and base.replicates > 1:
            raise ValueError(
                f"replicates={base.replicates} and a searched seed: give one or the other"
            )
        self.arguments = arguments
        self.base = base
        self.objective = Objective.from_config(base)
        if any(t.metric == self.objective.metric for t in self.trade_offs):
            raise ValueError(
                f"hydra.sweeper.trade_offs: {self.objective.metric} is the objective already"
            )
        to_json = optuna.distributions.distribution_to_json
        space_text = {k: to_json(d) for k, d in self.space.items()}
        key = digest([run_params(base), space_text, self.objective.direction])
        extra = [t.tag for t in self.trade_offs]
        if base.replicates > 1:
            extra.append(f"replicates={base.replicates}")
        if extra:  # so that the key of a plain study is the same as before these settings
            key = digest([key, extra])
        self.study_name = f"{self.name}-{key}"
        definition = {"sweeper": "optuna", "arguments": arguments, "study": self.study_name}
        definition.update(n_trials=self.n_trials, objective=self.objective.tag, params=space_text)
        if self.trade_offs:
            definition["trade_offs"] = [t.tag for t in self.trade_offs]
        space = {k: described(d) for k, d in self.space.items()}
        return Plan(
            config=base,
            name=self.name,
            key=key,
            definition=definition,
            space=space,
            trade_offs=self.trade_offs,
            jobs=self.n_trials * base.replicates,
            trials=self.n_trials,
        )

    def needs_driver(self) -> str | None:
        if not self.asynchronous:
            return "hydra.sweeper.asynchronous=false asks the study for trials in batches"
        if self.base.replicates > 1:
            return (
                f"replicates={self.base.replicates}: a trial's seeds are told to the study together"
            )
        if parallel_slots(self.config.hydra.launcher) < 2:
            return "one job at a time (hydra.launcher.array_parallelism=1) runs no workers"
        return None

    def start(self, parent: SweepRun) -> int:
        self.parent = parent
        settings = StudySettings.of(self, parent.store)
        client = parent.store.client
        client.set_tag(parent.run_id, names.OPTUNA_STUDY, self.study_name)
        shown = make_url(settings.storage_url).render_as_string(hide_password=True)  # no secrets
        client.set_tag(parent.run_id, names.OPTUNA_STORAGE, shown)
        self.study = create_study(
            self.study_name,
            settings,
            self.sampler,
            self.pruner,
            [o.direction for o in (self.objective, *self.trade_offs)],
        )
        fail_stale_trials(self.study)  # trials whose jobs died last time: failed, and retried
        for params in self.enqueue:  # skipped if the study has that trial already
            self.study.enqueue_trial(params, skip_if_exists=True)
        self.finished = sum(t.state.is_finished() for t in self.study.trials)
        if self.finished:
            log.info(f"study {self.study_name}: {self.finished} trials already finished; resuming")
            self.sampler.reseed_rng()  # or a seeded sampler repeats the first run's random trials
        self.n_jobs = parallel_slots(self.config.hydra.launcher)
        self.results: dict[int, list[JobReturn]] = {}  # trial number -> its replicates' results
        self.workers = 0  # asynchronous workers, when the launcher runs jobs in parallel
        if self.asynchronous and self.n_jobs > 1 and self.base.replicates == 1:
            self.workers = min(self.n_jobs, max(0, self.n_trials - self.finished))
        return 0  # a resumed study counts its finished trials towards n_trials instead

    def next_jobs(self) -> list[Job]:
        if self.workers:  # all at once; each asks, trains and tells until the study is full
            if self.finished >= self.n_trials:
                return []
            self.finished = self.n_trials  # when they return, the study is
            return [
                Job(
                    label=f"worker {k}",
                    overrides=self.arguments
                    + [f"sweep.study={self.study_name}", f"sweep.worker={k}"],
                )
                for k in range(self.workers)
            ]
        replicates = self.base.replicates
        at_once = max(1, self.n_jobs // replicates)  # trials whose replicates fill the slots
        if self.n_trials > self.finished and self.budget.spent(self.parent):
            return []
        fail_stale_trials(self.study)
        trials = [
            self.study.ask(self.space) for _ in range(min(self.n_trials - self.finished, at_once))
        ]
        return [job for t in trials for job in self.replicate_jobs(t, replicates)]

    def replicate_jobs(self, trial: optuna.trial.Trial, replicates: int) -> list[Job]:
        """The trial's jobs: one, or one per seed with its own replicate number."""
        values = [f"{k}={v}" for k, v in trial.params.items()]
        label = f"trial {trial.number} {' '.join(values)}"
        # not the storage URL: it may hold a password; the job reads it from the sweeper
        overrides = self.arguments + values + [f"sweep.study={self.study_name}"]
        overrides.append(f"sweep.trial={trial.number}")
        if (first := retry_of(self.study, trial.number)) is not None:
            overrides.append(f"sweep.retry_of={first}")
        if replicates == 1:
            return [Job(label=label, overrides=overrides, key=trial)]
        cfg = self.checked_config(overrides)
        configuration = Configuration(group_hash(run_params(cfg)), label, dict(trial.params))
        return [
            Job(
                label=f"{label} seed={cfg.seed + r}",
                overrides=overrides + [f"seed={cfg.seed + r}", f"sweep.replicate={r}"],
                key=trial,
                configuration=configuration,
            )
            for r in range(replicates)
        ]

    def finish(self, job: Job, result: JobReturn) -> BaseException | None:
        """Tell the study how the trial ended once all its replicates have: the mean of their
        objectives; pruned if one was pruned; failed if one failed. An asynchronous worker has
        told the study itself: pass on the trials that failed."""
        error = super().finish(job, result)
        if job.key is None:
            if error is None and (failed := result.return_value["failures"]):
                return TrialsFailed(f"{len(failed)} trial(s) failed: {'; '.join(failed)}")
            return error
        if isinstance(error, optuna.TrialPruned):  # its run is FINISHED: not a failure
            error = None
        trial = job.key
        results = self.results.setdefault(trial.number, [])
        results.append(result)
        if len(results) < self.base.replicates:
            return error
        self.finished += 1
        outcomes = [outcome(r) for r in results]
        if any(
            isinstance(o, Exception) and not isinstance(o, optuna.TrialPruned) for o in outcomes
        ):
            end_trial(self.study, trial, TrialState.FAIL)
        elif any(isinstance(o, optuna.TrialPruned) for o in outcomes):
            end_trial(self.study, trial, TrialState.PRUNED)
        else:
            objectives = (self.objective, *self.trade_offs)
            missing = [m.metric for m in objectives if any(m.metric not in o for o in outcomes)]
            if missing:  # e.g. callbacks.model_cost=null in a Pareto sweep
                end_trial(self.study, trial, TrialState.FAIL)
                return ValueError(f"{', '.join(missing)}: not recorded by the run; it must be")
            values = [statistics.fmean(o[m.metric] for o in outcomes) for m in objectives]
            if len(outcomes) > 1:
                spread = [o[self.objective.metric] for o in outcomes]
                trial.set_user_attr(f"{self.objective.metric}_std", statistics.stdev(spread))
                trial.set_user_attr("replicates", len(outcomes))
            end_trial(self.study, trial, values)
        return error

    def stopped(self, jobs: list[Job], started: int) -> list[str]:
        # (asynchronous workers tell the study themselves that their trials failed)
        for trial in {job.key.number: job.key for job in jobs if job.key is not None}.values():
            # the trials started stay unfinished otherwise
            end_trial(self.study, trial, TrialState.FAIL)
        return []


class TrialsFailed(RuntimeError):
    """Trials an asynchronous worker ran failed; their runs say why."""


def outcome(result: JobReturn) -> dict[str, float] | BaseException:
    """A job's final metrics, or the exception it raised."""
    try:
        return result.return_value
    except Exception as err:
        return err


def described(distribution: optuna.distributions.BaseDistribution) -> str:
    """A search range as people write it: 1e-05..0.1 (log), 1..4, 64,128,256."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return ",".join(str(c) for c in distribution.choices)
    text = f"{distribution.low}..{distribution.high}"
    if distribution.log:
        return f"{text} (log)"
    step = distribution.step
    return text if step in (None, 1) else f"{text} step {step}"
