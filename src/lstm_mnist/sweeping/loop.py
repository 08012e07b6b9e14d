"""The sweep loop, written once for every sweeper, on Hydra's public Sweeper API: check the
jobs, open the sweep's parent run, launch jobs until the sweeper has none left, record how each
ended, close the parent. A sweeper (grid.py, optuna/sweeper.py) says which jobs to run (`plan`,
`next_jobs`) and takes note of results (`finish`)."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.cluster import array_ids, cancel_slurm_jobs, in_queue, is_slurm_launcher
from lstm_mnist.display import masked, one_line
from lstm_mnist.interrupts import SWEEPER_PID, Interrupted, stop_workers
from lstm_mnist.schema import validate
from lstm_mnist.sweeping.budget import Budget
from lstm_mnist.sweeping.closing import command, finish_sweep
from lstm_mnist.sweeping.detached import submit
from lstm_mnist.tracking import Objective, Store, SweepRecord, SweepRun, names

log = logging.getLogger(__name__)


class SweepRejected(ValueError):
    """A job's config is invalid: the sweep is refused before any job runs."""


class JobsFailed(RuntimeError):
    """Some jobs of a finished sweep failed; the message names each, one per line."""

    def __init__(self, failures: list[tuple[str, BaseException]], total: int) -> None:
        lines = [f"sweep done; {len(failures)} of {total} job(s) failed:"]
        lines += [f"  {job}: {type(e).__name__}: {one_line(e)}" for job, e in failures]
        super().__init__("\n".join(lines))


@dataclass
class Configuration:
    """What the seed replicates of one configuration share: their runs are nested under its run."""

    group: str  # the config hash without the seed (the `config_group` tag)
    label: str  # its run's name: "num_layers=2", "trial 3 lr=0.001 num_units=64"
    params: dict[str, Any]  # its knobs, its run's params


@dataclass
class Job:
    label: str  # how messages name it: "#1 num_units=64", "trial 3 lr=0.001"
    overrides: list[str]
    key: Any = None  # the subclass's own handle: a config hash, an Optuna trial
    configuration: Configuration | None = None  # with replicates=N


@dataclass
class Plan:
    config: DictConfig  # a job's config: where to track, what the objective is
    name: str  # the parent run's name
    key: str  # identifies the sweep, so that running it again reopens its parent
    definition: dict[str, Any]  # stored with the parent as sweep.yaml
    space: dict[str, str]  # each swept knob and its values, the parent's params
    jobs: int  # how many jobs the sweep should run (an Optuna sweep: trials x replicates)
    trials: int | None = None  # an Optuna sweep's n_trials
    trade_offs: tuple[Objective, ...] = ()  # a Pareto sweep's objectives after the first


class TrackedSweeper(Sweeper):
    kind: str  # "grid", "optuna": the parent run's sweep_kind tag
    timeout_s: float | None = None  # the budgets (budget.py); set by the sweeper's settings
    max_compute_s: float | None = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def plan(self, arguments: list[str]) -> Plan:
        raise NotImplementedError

    def start(self, parent: SweepRun) -> int:
        """Called once the parent run is open, before the first job; returns how many jobs it
        skips because they FINISHED in this sweep before."""
        return 0

    def next_jobs(self) -> list[Job]:
        """The jobs to launch together next; none when the sweep is done."""
        raise NotImplementedError

    def needs_driver(self) -> str | None:
        """Why this sweep needs its command running between batches of jobs (so it cannot be
        detached), or None when its first batch is all of it."""
        return None

    def finish(self, job: Job, result: JobReturn) -> BaseException | None:
        """Take note of how a job ended; return its error if it failed."""
        try:
            result.return_value  # noqa: B018  (raises the job's exception)
        except Exception as err:
            return err
        return None

    def stopped(self, jobs: list[Job], started: int) -> list[str]:
        """Interrupted while `jobs` ran (`started` jobs have started in all); return the jobs
        that will not run, to be listed."""
        return []

    def checked_config(self, overrides: list[str]) -> DictConfig:
        """A job's config, composed and value-checked before any job runs: a bad value rejects
        the whole sweep, with nothing recorded."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        try:
            validate(cfg)
        except ValueError as err:
            raise SweepRejected(f"sweep rejected before any job ran: {err}") from None
        return cfg

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        plan = self.plan(arguments)
        store = Store.of(plan.config)
        launcher = self.config.hydra.launcher
        detach = bool(plan.config.detach)
        self.budget = Budget(time.time(), self.timeout_s, self.max_compute_s)
        if detach:
            refuse_to_detach(self, store, plan, launcher)
        artifacts = plan.config.artifacts
        facts = {
            names.JOBS_PLANNED: str(plan.jobs),
            names.MODEL_POLICY: f"{str(artifacts.model).lower()} {artifacts.keep_models}",
            names.DETACHED: str(detach).lower(),
            names.SWEEP_COMMAND: sweep_command(self.config),
            names.SWEEP_DIR: str(Path(self.config.hydra.sweep.dir).resolve()),  # its report's
        }
        if plan.trials:
            facts[names.TRIALS_PLANNED] = str(plan.trials)
        if not detach:
            facts[names.DRIVER] = f"{socket.gethostname()} {os.getpid()}"
        parent = SweepRun.open(
            store,
            Objective.from_config(plan.config),
            name=plan.name,
            key=plan.key,
            kind=self.kind,
            definition=OmegaConf.to_yaml(plan.definition),
            space=plan.space,
            trade_offs=plan.trade_offs,
            facts=facts,
        )
        if not detach:  # a detached sweep has no process to beat for it
            parent.keep_alive(every_s=plan.config.stale_after_s / 10)
        os.environ[SWEEPER_PID] = str(os.getpid())  # the workers it starts can tell they are
        done_before = self.start(parent)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # Hydra's record of the sweep
        if detach:
            return self.submit_detached(parent, done_before)

        failures: list[tuple[str, BaseException]] = []
        returns, num = [], 0
        while jobs := self.next_jobs():
            batch = [job.overrides + self.job_facts(parent, job) for job in jobs]
            try:
                results = self.launcher.launch(batch, initial_job_idx=num)
            except (Interrupted, KeyboardInterrupt) as stop:
                stop_running_jobs(getattr(stop, "signum", signal.SIGINT), sweep_dir, launcher)
                parent.close("KILLED")
                started = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
                unrun = self.stopped(jobs, started)
                if unrun:
                    print(f"sweep interrupted; {len(unrun)} job(s) not run:", file=sys.stderr)
                    for line in unrun:
                        print(f"  {line}", file=sys.stderr)
                raise
            for job, result in zip(jobs, results, strict=True):
                if (err := self.finish(job, result)) is not None:
                    failures.append((job.label, err))
            returns.append(results)
            num += len(jobs)
        print("\n".join(finish_sweep(parent, done_before=done_before)))
        if failures:
            raise JobsFailed(failures, num)
        return returns

    def job_facts(self, parent: SweepRun, job: Job) -> list[str]:
        """What a job is told of its sweep: the runs it nests under, the budget."""
        return nesting(parent, job) + self.budget.overrides()

    def submit_detached(self, parent: SweepRun, done_before: int) -> list:
        """Submit every job as one SLURM job array and return, saying how to follow the sweep."""
        jobs = self.next_jobs()
        if not jobs:  # nothing left to run: it ends now
            print("\n".join(finish_sweep(parent, done_before=done_before)))
            return []
        submission = f"{time.time():.0f}-{os.getpid()}"
        detached = [f"sweep.submission={submission}", f"sweep.jobs={len(jobs)}"]
        batch = [job.overrides + self.job_facts(parent, job) + detached for job in jobs]
        job_ids = submit(self.launcher, batch)
        arrays = array_ids(job_ids)
        parent.store.client.set_tag(parent.run_id, names.SLURM_JOBS, " ".join(arrays))
        sweeps = functools.partial(command, "sweeps", parent.store)
        before = f" ({done_before} finished before)" if done_before else ""
        print(
            f"sweep {parent.store.client.get_run(parent.run_id).data.tags[names.SWEEP_NAME]}:"
            f" detached; {len(jobs)} job(s){before} submitted as SLURM job array"
            f" {', '.join(arrays)}; parent run {parent.run_id}\n"
            f"watch:  {sweeps('show', parent.run_id)}\n"
            f"list:   {sweeps('list')}\n"
            f"stop:   {sweeps('stop', parent.run_id)}\n"
            f"finish: {sweeps('finish', parent.run_id)}   (if its jobs end and it does not close)"
        )
        return []


def refuse_to_detach(
    sweeper: TrackedSweeper, store: Store, plan: Plan, launcher: DictConfig
) -> None:
    """Raise, in one line, if this sweep cannot be detached: no SLURM launcher, a sweeper that
    needs its driver between batches, or a detached start of it still in the queue."""
    if not is_slurm_launcher(launcher):
        raise ValueError(
            "detach=true needs hydra/launcher=slurm: on one machine nothing runs the jobs once"
            " the command exits; keep the sweep running with"
            " `nohup python src/train.py -m ... > sweep.log 2>&1 &` or in tmux (a sweep run"
            " again resumes; `python src/sweeps.py stop ID` stops it)"
        )
    if reason := sweeper.needs_driver():
        raise ValueError(f"detach=true: {reason}; run it attached (under nohup or tmux)")
    found = SweepRecord.by_key(store, plan.key)
    if found is not None and found.info.status == "RUNNING":
        arrays = found.data.tags.get(names.SLURM_JOBS, "").split()
        if queued := in_queue(arrays):
            raise ValueError(
                f"sweep {found.info.run_id} still runs as SLURM job(s) {', '.join(arrays)}"
                f" ({len(queued)} in the queue): follow it with `sweeps show {found.info.run_id}`"
                " or stop it first"
            )


def stop_running_jobs(signum: int, sweep_dir: Path, launcher: DictConfig) -> None:
    """Stop whatever still runs the sweep's jobs, so that nothing trains on once the command has
    exited: a parallel launcher's worker processes get the signal; with hydra/launcher=slurm,
    the sweep's SLURM jobs are cancelled. Either way each job checkpoints and marks its run
    KILLED; this waits for them (a minute at most)."""
    if stop_workers(signum):
        log.info("the sweep's worker processes have stopped")
    cancel_slurm_jobs(launcher, sweep_dir)


def sweep_command(config: DictConfig) -> str:
    """The command that runs this sweep, as it was given (run again, it resumes the sweep), with
    any password in it masked: it is recorded on the parent run, which whoever reads the store
    sees (`${oc.env:...}`, as the README writes a storage URL, keeps the command runnable)."""
    given = [o for o in config.hydra.overrides.hydra if o != "hydra.mode=MULTIRUN"]
    given += list(config.hydra.overrides.task)
    return shlex.join(["python", sys.argv[0], "-m", *map(masked, given)])


def nesting(parent: SweepRun, job: Job) -> list[str]:
    """The overrides that nest a job's run under its parent, or under its configuration's run."""
    overrides = [f"sweep.parent_run={parent.run_id}"]
    if (c := job.configuration) is not None:
        run_id = parent.configuration_run(c.group, c.label, c.params)
        overrides.append(f"sweep.configuration_run={run_id}")
    return overrides
