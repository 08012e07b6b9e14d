"""A sweep's parent MLflow run: every job's run is nested under it (MLflow's parentRunId tag), so
`mlflow ui` shows the sweep as one expandable row, and it records how the jobs ended and which is
best. Running the same sweep again reopens the same parent: that is how a sweep resumes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException

from lstm_mnist.stats import estimate
from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective
from lstm_mnist.tracking.run import end_run
from lstm_mnist.tracking.store import Store


def job_state(run: Run) -> str:
    """finished, pruned, failed, killed or running."""
    return "pruned" if names.PRUNED in run.data.tags else run.info.status.lower()


@dataclass
class SweepRun:
    store: Store
    run_id: str
    objective: Objective

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
    ) -> SweepRun:
        """The parent run of the sweep identified by `key`: the existing one, set RUNNING again,
        or a new one named `name` that stores `definition` as sweep.yaml and the swept `space`
        as params (`num_layers`: `1,2,3`)."""
        experiment_id = store.prepare()
        client = store.client
        found = client.search_runs(
            [experiment_id], f"tags.{names.SWEEP_KEY} = '{key}'", order_by=["start_time DESC"]
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            tags = {
                names.SWEEP_KEY: key,
                names.SWEEP_KIND: kind,
                names.SWEEP_NAME: name,
                names.OBJECTIVE: objective.tag,
            }
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            client.log_text(run_id, definition, "sweep.yaml")
            params = [Param(k, v[: names.MAX_NAME]) for k, v in space.items()]
            client.log_batch(run_id, params=params)
        return cls(store, run_id, objective)

    @staticmethod
    def find(store: Store, which: str) -> Run:
        """The parent run `which` (a run id), or with "latest" the latest sweep's."""
        client = store.client
        if which != "latest":
            try:
                run = client.get_run(which)
            except MlflowException:
                raise ValueError(f"--sweep {which}: no such run in {store.uri}") from None
            if names.SWEEP_KEY not in run.data.tags:
                raise ValueError(f"--sweep {which}: that run is not a sweep's parent run")
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

    @classmethod
    def of(cls, store: Store, run: Run) -> SweepRun:
        """An existing parent run, with the objective its sweep was run with."""
        return cls(store, run.info.run_id, Objective.from_tag(run.data.tags[names.OBJECTIVE]))

    def children(self) -> list[Run]:
        """The jobs' runs, oldest first; only the latest run of each job (config hash or Optuna
        trial) when a job was run more than once."""
        client = self.store.client
        experiment_id = client.get_run(self.run_id).info.experiment_id
        runs = client.search_runs(
            [experiment_id],
            f"tags.`{names.PARENT_RUN}` = '{self.run_id}'",
            order_by=["start_time ASC"],
        )
        latest = {}
        for run in runs:
            tags = run.data.tags
            job = tags.get(names.OPTUNA_TRIAL) or tags.get(names.CONFIG_HASH) or run.info.run_id
            latest[job] = run
        return list(latest.values())

    def finished_hashes(self) -> set[str]:
        """Config hashes of the jobs that have FINISHED (and were not pruned)."""
        return {
            r.data.tags[names.CONFIG_HASH] for r in self.children() if job_state(r) == "finished"
        }

    def close(self, status: str | None = None) -> Outcome:
        """Record how many jobs finished, failed, were pruned or killed (tags `jobs_<state>`:
        bookkeeping, kept out of the metric charts) and the best finished child by the
        objective (metrics `best_<metric>`, `best_test_acc`), and end the run: FAILED if any job
        failed, unless `status` says otherwise."""
        client, children = self.store.client, self.children()
        counts = Counter(job_state(r) for r in children)
        for state in JOB_STATES:
            client.set_tag(self.run_id, names.jobs(state), str(counts[state]))
        group = best_configuration(
            self.objective, [r for r in children if job_state(r) == "finished"]
        )
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
        end_run(client, self.run_id, status or ("FAILED" if counts["failed"] else "FINISHED"))
        return Outcome(counts, best, group)

    def keep_best_models(self, keep: int) -> tuple[int, int]:
        """Delete the logged models of every job outside the `keep` configurations with the best
        mean objective, and purge their files with MLflow's own `mlflow gc`; return (models
        kept, models deleted). The parent records it in its `models_kept` tag."""
        client, children = self.store.client, self.children()
        finished = [r for r in children if job_state(r) == "finished"]
        groups = ranked_configurations(self.objective, finished)
        kept_runs = {r.info.run_id for group in groups[:keep] for r in group}
        experiment_id = client.get_run(self.run_id).info.experiment_id
        models = [
            model
            for run in children
            for model in client.search_logged_models(
                [experiment_id], f"source_run_id = '{run.info.run_id}'"
            )
        ]
        doomed = [m for m in models if m.source_run_id not in kept_runs]
        for model in doomed:
            client.delete_logged_model(model.model_id)
        if doomed:
            ids = ",".join(m.model_id for m in doomed)
            gc = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", self.store.uri]
            gc += ["--tracking-uri", self.store.uri, "--logged-model-ids", ids]
            subprocess.run(gc, check=True, capture_output=True)
        kept = sum(m.source_run_id in kept_runs for m in models)
        client.set_tag(self.run_id, names.MODELS_KEPT, f"{kept} of {kept + len(doomed)}")
        return kept, len(doomed)

    def url(self) -> str:
        """The experiment's runs table in the UI."""
        experiment_id = self.store.client.get_run(self.run_id).info.experiment_id
        return self.store.url(experiment_id)


JOB_STATES = ("finished", "failed", "pruned", "killed")


@dataclass
class Outcome:
    counts: Counter[str]  # job state -> number of jobs
    best: Run | None  # the best run of the best configuration
    group: list[Run]  # the best configuration's finished runs (its seeds)


def configuration(run: Run) -> tuple[tuple[str, str], ...]:
    """What a run trained, apart from its seed: equal for the replicates of a configuration."""
    return tuple(sorted((k, v) for k, v in run.data.params.items() if k != names.SEED))


def by_configuration(runs: list[Run]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(configuration(run), []).append(run)
    return groups


def ranked_configurations(objective: Objective, runs: list[Run]) -> list[list[Run]]:
    """The runs that have the objective, grouped by configuration, best mean first."""
    scored = [r for r in runs if objective.metric in r.data.metrics]
    sign = 1 if objective.maximize else -1
    return sorted(
        by_configuration(scored).values(),
        key=lambda g: -sign * statistics.fmean(r.data.metrics[objective.metric] for r in g),
    )


def best_configuration(objective: Objective, runs: list[Run]) -> list[Run]:
    """The runs of the configuration with the best mean objective (its seeds); [] if none."""
    ranked = ranked_configurations(objective, runs)
    return ranked[0] if ranked else []
