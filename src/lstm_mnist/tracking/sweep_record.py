"""What the store knows of a sweep, read only: its parent run, its jobs' runs (the latest of each)
and how they ended, its best and its Pareto set. compare.py, predict.py and the sweepers read it;
parent.py writes it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.ranking import pareto_configurations
from lstm_mnist.tracking.store import Store, silent_s

JOB_STATES = ("finished", "failed", "pruned", "killed")


def never_started(tags: dict[str, str], children: list[Run]) -> int:
    """How many of the jobs the sweep planned (its parent's tags) have no run: a grid's
    configurations without one; an Optuna sweep's trials without one, each of its replicates
    (a pruned trial may not have run all its seeds, and a trial tried again has runs of two)."""
    planned = int(tags.get(names.JOBS_PLANNED, 0))
    if trials := int(tags.get(names.TRIALS_PLANNED, 0)):
        asked = {r.data.tags.get(names.OPTUNA_TRIAL) for r in children}
        return max(0, trials - len(asked - {None})) * (planned // trials)
    return max(0, planned - len({r.data.tags.get(names.CONFIG_HASH) for r in children}))


def job_state(run: Run) -> str:
    """finished, pruned, failed, killed or running."""
    return "pruned" if names.PRUNED in run.data.tags else run.info.status.lower()


def is_finished(run: Run) -> bool:
    """Whether the run trained to its end: FINISHED and not pruned."""
    return job_state(run) == "finished"


def finished(runs: list[Run]) -> list[Run]:
    """The runs that trained to their end: FINISHED and not pruned."""
    return [r for r in runs if is_finished(r)]


@dataclass
class SweepRecord:
    """What the store knows of a sweep: its parent run, its jobs' runs and how they ended. The
    read side, for compare.py and predict.py; SweepRun writes."""

    store: Store
    run_id: str
    objective: Objective
    trade_offs: tuple[Objective, ...] = ()  # further objectives of a Pareto sweep

    @staticmethod
    def find(store: Store, which: str, what: str = "--sweep") -> Run:
        """The parent run `which` (a run id), or with "latest" the latest sweep's; `what` is how
        an error names the id (the option or argument that gave it)."""
        client = store.client
        if which != "latest":
            try:
                run = client.get_run(which)
            except MlflowException:
                raise ValueError(f"{what} {which}: no such run in {store.uri}") from None
            if names.SWEEP_KEY not in run.data.tags:
                raise ValueError(f"{what} {which}: that run is not a sweep's parent run")
            return run
        experiment = client.get_experiment_by_name(store.experiment_name)
        found = experiment and client.search_runs(
            [experiment.experiment_id],
            f"tags.{names.SWEEP_KEY} != ''",
            order_by=["start_time DESC"],
            max_results=1,
        )
        if not found:
            raise ValueError(
                f"no sweep in experiment {store.experiment_name!r} of {store.uri}; run one with -m"
            )
        return found[0]

    @staticmethod
    def by_key(store: Store, key: str) -> Run | None:
        """The latest parent run of the sweep identified by `key` (its sweep_key tag)."""
        experiment = store.client.get_experiment_by_name(store.experiment_name)
        found = experiment and store.client.search_runs(
            [experiment.experiment_id],
            f"tags.{names.SWEEP_KEY} = '{key}'",
            order_by=["start_time DESC"],
            max_results=1,
        )
        return found[0] if found else None

    @classmethod
    def of(cls, store: Store, run: Run) -> SweepRecord:
        """An existing parent run, with the objective its sweep was run with."""
        tags = run.data.tags
        objective = Objective.from_tag(tags[names.OBJECTIVE])
        trade_offs = names.trade_offs_from_tag(tags.get(names.TRADE_OFFS, ""))
        return cls(store, run.info.run_id, objective, trade_offs)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return (self.objective, *self.trade_offs)

    def _runs(self) -> list[Run]:
        """Every run of the sweep: the jobs' and the configurations', oldest first."""
        client = self.store.client
        experiment_id = client.get_run(self.run_id).info.experiment_id
        found = {}
        # PARENT_RUN too: the jobs of sweeps recorded before the sweep_run tag existed
        for tag in (names.SWEEP_RUN, names.PARENT_RUN):
            for run in self.store.all_runs(experiment_id, f"tags.`{tag}` = '{self.run_id}'"):
                found[run.info.run_id] = run
        return sorted(found.values(), key=lambda r: r.info.start_time)

    def children(self) -> list[Run]:
        """The jobs' runs, oldest first; only the latest run of each job (config hash or Optuna
        trial and seed) when a job was run more than once."""
        latest = {}
        for run in self._runs():
            tags = run.data.tags
            if names.CONFIGURATION in tags:
                continue
            trial = tags.get(names.OPTUNA_TRIAL)
            job = f"{trial} {tags[names.CONFIG_HASH]}" if trial else tags.get(names.CONFIG_HASH)
            latest[job or run.info.run_id] = run
        return list(latest.values())

    def running_jobs(self, stale_after_s: float) -> list[str]:
        """The ids of the jobs' runs still RUNNING whose heartbeat is fresher than
        `stale_after_s` (a process still trains them)."""
        now = time.time()
        return [
            r.info.run_id
            for r in self.children()
            if r.info.status == "RUNNING" and silent_s(r, now) < stale_after_s
        ]

    def finished_hashes(self) -> set[str]:
        """Config hashes of the jobs that have FINISHED (and were not pruned)."""
        return {r.data.tags[names.CONFIG_HASH] for r in self.finished()}

    def finished(self) -> list[Run]:
        """The jobs' runs that trained to their end (FINISHED, not pruned), oldest first."""
        return finished(self.children())

    def pareto_set(self, runs: list[Run]) -> list[list[Run]]:
        """The finished configurations no other beats on every objective (means over seeds)."""
        return pareto_configurations(self.objectives, finished(runs))

    def url(self) -> str:
        """The experiment's runs table in the UI."""
        experiment_id = self.store.client.get_run(self.run_id).info.experiment_id
        return self.store.url(experiment_id)
