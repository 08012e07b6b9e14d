"""Every sweep in a store and where each stands now, read from what is recorded (and, for a
detached sweep, from SLURM's queue): what `sweeps list` and `sweeps show` print."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from mlflow.entities import Run

from lstm_mnist.cluster import array_ids, in_queue
from lstm_mnist.tracking import JOB_STATES, Store, SweepRecord, finished, job_state, names
from lstm_mnist.tracking.compute import Compute, total
from lstm_mnist.tracking.ranking import best_configuration
from lstm_mnist.tracking.sweep_record import never_started

COUNTED = ("finished", "running", "queued", *JOB_STATES[1:], "skipped", "unstarted")


@dataclass
class SweepStatus:
    name: str
    run_id: str
    kind: str  # grid, optuna
    state: str  # the parent's status; "RUNNING (left over)": nothing runs it any more
    jobs: dict[str, int]  # COUNTED -> how many
    objective: str  # "val_acc maximize"
    best: float | None  # the best configuration's mean objective so far
    best_run: str | None
    compute: Compute
    started: str  # ISO 8601, UTC
    where: str  # "local (host pid)", "SLURM 123 124"
    detached: bool
    stopped_by: str | None
    time_left_s: float | None = None  # an estimate, while it runs: from finished jobs' times
    runs: list[Run] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        del found["runs"]
        found["compute"] = self.compute.as_metrics()
        return found


def all_sweeps(store: Store) -> list[SweepStatus]:
    """Every sweep in the store's experiment, newest first."""
    experiment = store.client.get_experiment_by_name(store.experiment_name)
    if experiment is None:
        return []
    parents = store.all_runs(experiment.experiment_id, f"tags.{names.SWEEP_KEY} != ''")
    parents.sort(key=lambda r: r.info.start_time, reverse=True)
    return [status_of(store, run) for run in parents]


def status_of(store: Store, run: Run, now: float | None = None) -> SweepStatus:
    """Where the sweep whose parent run is `run` stands."""
    now = now or time.time()
    tags = run.data.tags
    record = SweepRecord.of(store, run)
    children = record.children()
    counts = {state: 0 for state in COUNTED}
    for child in children:
        counts[job_state(child)] += 1
    running = run.info.status == "RUNNING"
    if running:
        counts["queued"] = never_started(tags, children)
    else:
        for state in ("skipped", "unstarted"):
            counts[state] = int(tags.get(names.jobs(state), 0))
    state = run.info.status
    arrays = run.data.tags.get(names.SLURM_JOBS, "").split()
    if running and arrays and counts["running"] == 0 and not in_queue(arrays):
        state = "RUNNING (left over)"  # its jobs are gone and none closed it: `sweeps finish`
    group = best_configuration(record.objective, finished(children))
    best = (
        statistics.fmean(r.data.metrics[record.objective.metric] for r in group) if group else None
    )
    best_run = record.objective.best(group).info.run_id if group else None
    ran_as = slurm_arrays(run, children)
    where = f"SLURM {' '.join(ran_as)}" if ran_as else ""
    if driver := tags.get(names.DRIVER):
        host, _, pid = driver.partition(" ")
        where = f"{where or 'local'} ({host} pid {pid})"
    where = where or "local"
    status = SweepStatus(
        name=tags.get(names.SWEEP_NAME, run.info.run_name),
        run_id=run.info.run_id,
        kind=tags.get(names.SWEEP_KIND, ""),
        state=state,
        jobs=counts,
        objective=record.objective.tag,
        best=best,
        best_run=best_run,
        compute=total(children, now),
        started=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).isoformat(
            timespec="seconds"
        ),
        where=where,
        detached=tags.get(names.DETACHED) == "true",
        stopped_by=tags.get(names.STOPPED_BY),
        runs=children,
    )
    if running:
        status.time_left_s = time_left(children, counts["queued"], now)
    return status


def slurm_arrays(parent: Run, children: list[Run]) -> list[str]:
    """The SLURM job arrays a sweep runs as: a detached one's, as submitted, and those its runs
    were trained by (an attached SLURM sweep's are known from those only)."""
    trained_by = [r.data.tags[names.SLURM_JOB] for r in children if names.SLURM_JOB in r.data.tags]
    submitted = parent.data.tags.get(names.SLURM_JOBS, "").split()
    return array_ids([*submitted, *trained_by])


def time_left(children: list[Run], queued: int, now: float) -> float | None:
    """About how long until the sweep ends: the running jobs' median duration left, then the
    queued ones in waves as wide as the jobs running now. None before any job has ended."""
    ended = [
        (r.info.end_time - r.info.start_time) / 1000
        for r in children
        if r.info.end_time and r.info.status != "RUNNING"
    ]
    if not ended:
        return None
    typical = statistics.median(ended)
    running = [now - r.info.start_time / 1000 for r in children if r.info.status == "RUNNING"]
    current = max((max(0.0, typical - age) for age in running), default=0.0)
    waves = math.ceil(queued / max(1, len(running))) if queued else 0
    return current + waves * typical


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def list_table(sweeps: list[SweepStatus]) -> str:
    from lstm_mnist.display import table

    head = ["name", "parent run", "state", "fin/run/queue/fail/prune", "best", "compute"]
    head += ["started", "where"]
    rows = []
    for s in sweeps:
        j = s.jobs
        jobs = f"{j['finished']}/{j['running']}/{j['queued']}/{j['failed']}/{j['pruned']}"
        if j["killed"] or j["skipped"] or j["unstarted"]:
            jobs += f" (+{j['killed']} killed, {j['skipped']} skipped"
            jobs += f", {j['unstarted']} never started)" if j["unstarted"] else ")"
        best = f"{s.objective.split()[0]}={s.best:.4f}" if s.best is not None else "-"
        rows.append([s.name, s.run_id, s.state, jobs, best, str(s.compute), s.started, s.where])
    return table(head, rows)
