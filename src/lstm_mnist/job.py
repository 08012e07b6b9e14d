"""What a job is told about its place in the world, built once by the entry point and passed
down: the store it records into, the sweep and Optuna trial it belongs to, the launcher's and
the scheduler's facts. Nothing below the entry points and the sweepers reads Hydra's runtime
config or the SLURM variables; they read this."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.cluster import SlurmJob, parallel_jobs
from lstm_mnist.sweeping.budget import Budget
from lstm_mnist.tracking.store import Store

if TYPE_CHECKING:
    from lstm_mnist.tracking import SweepRun


@dataclass(frozen=True)
class SweepPlace:
    """Where a sweep's job records its run."""

    parent_run: str  # the sweep's parent MLflow run
    configuration_run: str | None  # with replicates: its configuration's run, in between
    dir: str | None  # the sweep's Hydra output folder
    job_num: int | None  # the job's number in the sweep, as Hydra counts
    budget: Budget | None = None  # no job or trial starts once it is spent
    submission: str | None = None  # a detached sweep's: which submission of it this job is of
    jobs: int | None = None  # a detached sweep's: how many jobs that submission has

    @property
    def detached(self) -> bool:
        return self.submission is not None


@dataclass(frozen=True)
class TrialPlace:
    """The Optuna trial a job trains, or the study an asynchronous worker asks trials of."""

    study: str  # the study's name
    settings: DictConfig  # the Optuna sweeper's config: storage, heartbeat, pruner, space, ...
    number: int | None = None  # None: a worker, which asks the study for its trials
    replicate: int = 0  # which of the trial's seeds (replicates=N)
    retry_of: int | None = None  # the trial this one tries again (its job died)
    worker: int | None = None  # an asynchronous worker's number


@dataclass(frozen=True)
class JobContext:
    store: Store
    overrides: tuple[str, ...] = ()  # the command line's (a sweep's job: its own)
    trial_overrides: tuple[str, ...] = ()  # what an asynchronous worker set for its trial
    hydra_dir: Path | None = None  # Hydra's record of the job (config, overrides)
    parallel_jobs: int = 1  # jobs the launcher runs at once on this machine
    slurm: SlurmJob | None = None
    sweep: SweepPlace | None = None
    trial: TrialPlace | None = None
    # When the job began (Unix time): its run's phases (phases.py) are timed from here. For a
    # command's first job, when the process started: the interpreter and imports are its start-up.
    started: float = field(default_factory=time.time)

    @classmethod
    def plain(cls, cfg: DictConfig) -> JobContext:
        """A run outside Hydra's runtime (compose API, tests, benchmarks): the config's store."""
        return cls(store=Store.of(cfg))

    @classmethod
    def of_hydra_job(
        cls, cfg: DictConfig, hydra: DictConfig, environ: Mapping[str, str], started: float
    ) -> JobContext:
        """The context of a job that Hydra runs: `hydra` is its runtime config (the `hydra`
        node), `environ` its environment, `started` when it began; `cfg.sweep` is what its
        sweeper set for it."""
        multirun = hydra.mode == RunMode.MULTIRUN
        given = cfg.sweep
        sweep = None
        if given.parent_run:
            budget = None
            if given.since is not None:
                budget = Budget(given.since, given.timeout_s, given.max_compute_s)
            sweep = SweepPlace(
                given.parent_run,
                given.configuration_run,
                hydra.sweep.dir if multirun else None,
                hydra.job.num if multirun else None,
                budget=budget,
                submission=given.submission,
                jobs=given.jobs,
            )
        trial = None
        if given.study:
            trial = TrialPlace(
                given.study,
                OmegaConf.create(OmegaConf.to_container(hydra.sweeper, resolve=True)),
                number=given.trial,
                replicate=given.replicate,
                retry_of=given.retry_of,
                worker=given.worker,
            )
        hydra_dir = None
        if hydra.output_subdir:
            hydra_dir = Path(hydra.runtime.output_dir) / hydra.output_subdir
        return cls(
            store=Store.of(cfg),
            overrides=tuple(hydra.overrides.task),
            hydra_dir=hydra_dir,
            parallel_jobs=parallel_jobs(hydra.launcher),
            slurm=SlurmJob.from_environment(environ),
            sweep=sweep,
            trial=trial,
            started=started,
        )

    def for_trial(self, number: int, overrides: list[str], retry_of: int | None) -> JobContext:
        """An asynchronous worker's context for one of its trials."""
        assert self.trial is not None
        trial = dataclasses.replace(self.trial, number=number, retry_of=retry_of)
        return dataclasses.replace(
            self, trial=trial, trial_overrides=tuple(overrides), started=time.time()
        )

    def sweep_run(self) -> SweepRun:
        """The parent run of the job's sweep."""
        from lstm_mnist.tracking import SweepRecord, SweepRun

        assert self.sweep is not None
        return SweepRun.of(self.store, SweepRecord.find(self.store, self.sweep.parent_run))

    @property
    def rank_0(self) -> bool:
        """Whether this process owns the job's run: not rank 1.. of a SLURM job of several
        tasks (ranks.py), which SLURM starts too."""
        return self.slurm is None or self.slurm.task == 0

    @property
    def worker(self) -> bool:
        """Whether the job is an asynchronous Optuna worker (many runs, one job)."""
        return (
            self.trial is not None and self.trial.worker is not None and self.trial.number is None
        )
