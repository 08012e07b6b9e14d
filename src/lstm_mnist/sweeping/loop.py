"""The sweep loop, written once for every sweeper, on Hydra's public Sweeper API: check the
jobs, open the sweep's parent run, launch jobs until the sweeper has none left, record how each
ended, close the parent. A sweeper (grid.py, optuna/sweeper.py) says which jobs to run (`plan`,
`next_jobs`) and takes note of results (`finish`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.cluster import cancel_slurm_jobs
from lstm_mnist.display import one_line
from lstm_mnist.interrupts import SWEEPER_PID, Interrupted, stop_workers
from lstm_mnist.schema import validate
from lstm_mnist.stats import estimate
from lstm_mnist.sweeping.model_policy import keep_best_models
from lstm_mnist.tracking import DEFAULT_URI, JOB_STATES, Objective, Outcome, Store, SweepRun, names

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
    trade_offs: tuple[Objective, ...] = ()  # a Pareto sweep's objectives after the first


class TrackedSweeper(Sweeper):
    kind: str  # "grid", "optuna": the parent run's sweep_kind tag

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
        parent = SweepRun.open(
            Store.of(plan.config),
            Objective.from_config(plan.config),
            name=plan.name,
            key=plan.key,
            kind=self.kind,
            definition=OmegaConf.to_yaml(plan.definition),
            space=plan.space,
            trade_offs=plan.trade_offs,
        )
        parent.keep_alive(every_s=plan.config.stale_after_s / 10)
        os.environ[SWEEPER_PID] = str(os.getpid())  # the workers it starts can tell they are
        skipped = self.start(parent)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # Hydra's record of the sweep

        failures: list[tuple[str, BaseException]] = []
        returns, num = [], 0
        while jobs := self.next_jobs():
            batch = [job.overrides + nesting(parent, job) for job in jobs]
            try:
                results = self.launcher.launch(batch, initial_job_idx=num)
            except (Interrupted, KeyboardInterrupt) as stop:
                stop_running_jobs(
                    getattr(stop, "signum", signal.SIGINT), sweep_dir, self.config.hydra.launcher
                )
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
        outcome = parent.close()
        if plan.config.artifacts.model == "best":
            kept, deleted = keep_best_models(parent, plan.config.artifacts.keep_models)
            log.info(f"artifacts.model=best: kept {kept} logged model(s), deleted {deleted}")
        print("\n".join(summary(plan, parent, outcome, skipped)))
        if failures:
            raise JobsFailed(failures, num)
        return returns


def stop_running_jobs(signum: int, sweep_dir: Path, launcher: DictConfig) -> None:
    """Stop whatever still runs the sweep's jobs, so that nothing trains on once the command has
    exited: a parallel launcher's worker processes get the signal; with hydra/launcher=slurm,
    the sweep's SLURM jobs are cancelled. Either way each job checkpoints and marks its run
    KILLED; this waits for them (a minute at most)."""
    if stop_workers(signum):
        log.info("the sweep's worker processes have stopped")
    cancel_slurm_jobs(launcher, sweep_dir)


def nesting(parent: SweepRun, job: Job) -> list[str]:
    """The overrides that nest a job's run under its parent, or under its configuration's run."""
    overrides = [f"sweep.parent_run={parent.run_id}"]
    if (c := job.configuration) is not None:
        run_id = parent.configuration_run(c.group, c.label, c.params)
        overrides.append(f"sweep.configuration_run={run_id}")
    return overrides


def summary(plan: Plan, parent: SweepRun, outcome: Outcome, skipped: int) -> list[str]:
    """The lines a sweep ends with: how its jobs ended, the best configuration, where to look,
    what to run next."""
    counts = outcome.counts
    states = "".join(f", {counts[s]} {s}" for s in JOB_STATES[1:] if counts[s])
    before = f" ({skipped} of them before: not run again)" if skipped else ""
    lines = [
        f"sweep {plan.name}: {counts['finished']} of {sum(counts.values())} jobs finished"
        f"{before}{states}"
    ]
    metric = parent.objective.metric
    if outcome.best is not None:
        given = outcome.best.data.tags.get(names.OVERRIDES, "").split()
        config = [o for o in given if o.split("=")[0].lstrip("+") in plan.space]
        found = estimate([r.data.metrics[metric] for r in outcome.group])
        run = f"run {outcome.best.info.run_id}"
        if found.n > 1:
            run = f"over {found.n} seeds, 95% CI {found.interval}; best seed: {run}"
        # with nothing swept but the seed, there is one configuration to speak of
        unnamed = "the configuration" if found.n > 1 else outcome.best.info.run_name
        shown = " ".join(config) or unnamed
        lines.append(f"best: {shown} {metric}={found} ({run})")
    lines.append(f"runs: {parent.store.where_to_look(parent.url())}")
    lines.append(f"next: {compare_command(parent.store)} --sweep {parent.run_id}")
    return lines


def compare_command(store: Store) -> str:
    """The compare command beside the train command that runs, for this store."""
    script = Path(sys.argv[0])
    command = (
        f"python {script.with_name('compare.py')}"
        if script.name == "train.py"
        else "lstm-mnist-compare"
    )
    if store.uri != DEFAULT_URI:  # MLflow sets MLFLOW_TRACKING_URI itself: say it
        secret = urlsplit(store.uri).password
        command += f" --tracking-uri {'$MLFLOW_TRACKING_URI' if secret else store.uri}"
    return command
