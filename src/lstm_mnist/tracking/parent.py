"""A sweep's parent MLflow run: every job's run is nested under it (MLflow's parentRunId tag), so
`mlflow ui` shows the sweep as one expandable row, and it records how the jobs ended and which is
best. With seed replicates each configuration has a run of its own between the two, carrying the
mean, standard deviation and n of its seeds. Running the same sweep again reopens the same
parent: that is how a sweep resumes.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param, Run

from lstm_mnist.heartbeat import Heartbeat
from lstm_mnist.stats import estimate
from lstm_mnist.tracking import compute, names
from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.ranking import best_configuration
from lstm_mnist.tracking.status import end_run, reopen_run
from lstm_mnist.tracking.store import Store
from lstm_mnist.tracking.sweep_record import (
    JOB_STATES,
    SweepRecord,
    finished,
    job_state,
    never_started,
)

log = logging.getLogger(__name__)


@dataclass
class SweepRun(SweepRecord):
    """The sweep's parent run as its sweeper writes it: opened (or reopened) when the sweep
    starts, beating a heartbeat while it runs, closed with its jobs' counts, the best
    configuration and the Pareto set."""

    configuration_runs: dict[str, str] = field(default_factory=dict)  # config group -> run id
    _stop_heartbeat: Callable[[], None] | None = None

    @classmethod
    def open(
        cls,
        store: Store,
        objective: Objective,
        name: str,
        key: str,
        kind: str,
        definition: str,
        space: dict[str, str],
        trade_offs: tuple[Objective, ...] = (),
        facts: dict[str, str] | None = None,
    ) -> SweepRun:
        """The parent run of the sweep identified by `key`: the existing one, set RUNNING again,
        or a new one named `name` that stores `definition` as sweep.yaml and the swept `space`
        as params (`num_layers`: `1,2,3`). `facts` are tags of this start of it (how many jobs
        it plans, whether it is detached, who runs it), set either way."""
        experiment_id = store.prepare()
        client = store.client
        if (found := SweepRecord.by_key(store, key)) is not None:
            run_id = found.info.run_id
            reopen_run(client, run_id)
        else:
            tags = {
                names.SWEEP_KEY: key,
                names.SWEEP_KIND: kind,
                names.SWEEP_NAME: name,
                names.OBJECTIVE: objective.tag,
            }
            if trade_offs:
                tags[names.TRADE_OFFS] = names.trade_offs_tag(trade_offs)
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            client.log_text(run_id, definition, "sweep.yaml")
            params = [Param(k, v[: names.MAX_NAME]) for k, v in space.items()]
            client.log_batch(run_id, params=params)
        old = client.get_run(run_id).data.tags  # a start of it before: its ending is not this one's
        for tag in (names.STOPPED_BY, names.SLURM_JOBS):
            if tag in old:
                client.delete_tag(run_id, tag)
        for tag, value in (facts or {}).items():
            client.set_tag(run_id, tag, value)
        return cls(store, run_id, objective, trade_offs)

    def keep_alive(self, every_s: float) -> None:
        """Stamp the `heartbeat` tag of the parent and its configurations' runs every `every_s`
        from a background thread until `close`, so that a sweep whose sweeper died without a
        word (SIGKILL, a lost node) is found stale and marked KILLED like any run."""

        def beat() -> None:
            now = f"{time.time():.0f}"
            for run_id in [self.run_id, *self.configuration_runs.values()]:
                self.store.client.set_tag(run_id, names.HEARTBEAT, now)

        self._stop_heartbeat = Heartbeat(beat, every_s).in_background()

    def stopped_by(self, reason: str) -> None:
        """Record what ended the sweep early: a budget ("timeout_s", "max_compute_s") or
        "stop" (whoever closes it then closes it KILLED); with a budget, close() counts the jobs
        that never started as skipped."""
        self.store.client.set_tag(self.run_id, names.STOPPED_BY, reason)

    def end_running_jobs(self, grace_s: float) -> int:
        """Give the jobs' runs still RUNNING `grace_s` to end (a stopped job checkpoints first),
        then mark those left KILLED: their process is gone. Returns how many it marked."""
        deadline = time.monotonic() + grace_s
        while True:
            running = [r for r in self.children() if r.info.status == "RUNNING"]
            if not running or time.monotonic() >= deadline:
                break
            time.sleep(1)
        for run in running:
            end_run(self.store.client, run.info.run_id, "KILLED")
        return len(running)

    def configuration_run(self, group: str, label: str, params: dict[str, str]) -> str:
        """The run of the configuration whose config group is `group` (its seeds' runs are nested
        under it): this sweep's, set RUNNING again, or a new one named `label`."""
        if group in self.configuration_runs:
            return self.configuration_runs[group]
        client = self.store.client
        found = [
            r
            for r in self._runs()
            if names.CONFIGURATION in r.data.tags and r.data.tags.get(names.CONFIG_GROUP) == group
        ]
        if found:
            run_id = found[-1].info.run_id
            reopen_run(client, run_id)
        else:
            tags = {
                names.PARENT_RUN: self.run_id,
                names.SWEEP_RUN: self.run_id,
                names.DETACHED: client.get_run(self.run_id).data.tags.get(names.DETACHED, ""),
                names.CONFIG_GROUP: group,
                names.CONFIGURATION: label,
                names.OBJECTIVE: self.objective.tag,
            }
            experiment_id = client.get_run(self.run_id).info.experiment_id
            run_id = client.create_run(experiment_id, run_name=label, tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self.configuration_runs[group] = run_id
        return run_id

    def close(self, status: str | None = None) -> Outcome:
        """Record how many jobs finished, failed, were pruned or killed, and how many a budget
        left unstarted (tags `jobs_<state>`, `jobs_skipped`: bookkeeping, kept out of the
        metric charts), what they cost (metrics `compute_wall_s`, `compute_core_s`,
        `compute_gpu_s`) and the best finished child by the objective (metrics
        `best_<metric>`, `best_test_acc`), and end the run: KILLED if `sweeps stop` asked for
        it or planned jobs never started (`jobs_unstarted`), else FAILED if any job failed,
        unless `status` says otherwise."""
        if self._stop_heartbeat is not None:
            self._stop_heartbeat()
        client, children = self.store.client, self.children()
        tags = client.get_run(self.run_id).data.tags
        counts = Counter(job_state(r) for r in children)
        stopped_by = tags.get(names.STOPPED_BY)
        unstarted = never_started(tags, children)
        if stopped_by is not None and stopped_by != "stop":
            counts["skipped"] = unstarted  # as the budget asked
        elif unstarted:  # its command died, or was stopped, before they started
            counts["unstarted"] = unstarted
            status = status or "KILLED"
        for state in (*JOB_STATES, "skipped", "unstarted"):
            client.set_tag(self.run_id, names.jobs(state), str(counts[state]))
        used = compute.total(children)
        client.log_batch(self.run_id, metrics=metrics_now(used.as_metrics("compute_")))
        if stopped_by == "stop":
            status = "KILLED"
        group = best_configuration(self.objective, finished(children))
        best = self.objective.best(group)
        if best is not None:
            metric = self.objective.metric
            for key in (metric, "test_acc"):
                if all(key in r.data.metrics for r in group):
                    found = estimate([r.data.metrics[key] for r in group])
                    client.log_metric(self.run_id, f"best_{key}", found.mean)
                    if found.n > 1:
                        client.log_metric(self.run_id, f"best_{key}_std", found.std)
            client.log_metric(self.run_id, "best_n", len(group))
            client.set_tag(self.run_id, names.BEST_RUN_ID, best.info.run_id)
            client.set_tag(self.run_id, names.BEST_RUN_NAME, best.info.run_name)
        if self.trade_offs:
            self.record_pareto_set(children)
        self.close_configurations(children, status)
        end_run(client, self.run_id, status or ("FAILED" if counts["failed"] else "FINISHED"))
        return Outcome(counts, best, group, used)

    def close_configurations(self, children: list[Run], status: str | None) -> None:
        """End each configuration's run with the mean, std and n of its finished seeds' metrics
        (`val_acc_mean`, `val_acc_std`, `val_acc_n`, and the same of test_acc)."""
        client = self.store.client
        for run in self._runs():
            if names.CONFIGURATION not in run.data.tags or run.info.status != "RUNNING":
                continue
            seeds = [r for r in children if r.data.tags.get(names.PARENT_RUN) == run.info.run_id]
            done = finished(seeds)
            metrics = []
            for key in dict.fromkeys([self.objective.metric, "test_acc"]):
                if values := [r.data.metrics[key] for r in done if key in r.data.metrics]:
                    found = estimate(values)
                    metrics += metrics_now({f"{key}_mean": found.mean, f"{key}_n": found.n})
                    if found.n > 1:
                        metrics += metrics_now({f"{key}_std": found.std})
            client.log_batch(run.info.run_id, metrics=metrics)
            failed = any(job_state(r) == "failed" for r in seeds)
            end_run(client, run.info.run_id, status or ("FAILED" if failed else "FINISHED"))

    def record_pareto_set(self, children: list[Run]) -> None:
        """The Pareto set as the `pareto_set` tag (its runs' ids) and pareto_set.json (each
        configuration's runs, params and objective means)."""
        front = self.pareto_set(children)
        members = [
            {
                "runs": [r.info.run_id for r in group],
                "params": group[0].data.params,
                **{
                    o.metric: estimate([r.data.metrics[o.metric] for r in group]).mean
                    for o in self.objectives
                },
            }
            for group in front
        ]
        client = self.store.client
        ids = " ".join(r.info.run_id for group in front for r in group)
        client.set_tag(self.run_id, names.PARETO_SET, ids[: names.MAX_TAG])
        client.log_text(self.run_id, json.dumps(members, indent=1), "pareto_set.json")


def metrics_now(values: dict[str, float]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, v, now, 0) for k, v in values.items()]


@dataclass
class Outcome:
    counts: Counter[str]  # job state (and "skipped") -> number of jobs
    best: Run | None  # the best run of the best configuration
    group: list[Run]  # the best configuration's finished runs (its seeds)
    cost: compute.Compute  # what its jobs cost
