"""A sweep's parent MLflow run: every job's run is nested under it (MLflow's parentRunId tag), so
`mlflow ui` shows the sweep as one expandable row, and it records how the jobs ended and which is
best. Running the same sweep again reopens the same parent: that is how a sweep resumes.

The helpers below it are shared by the two sweeper plugins in src/hydra_plugins/.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from lstm_mnist.config import validate
from lstm_mnist.store import prepare_store

PARENT = "mlflow.parentRunId"


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs the launcher runs at once: joblib's n_jobs (-1: one per core), else 1."""
    n_jobs = launcher.get("n_jobs", 1) or 1
    return n_jobs if n_jobs >= 1 else len(os.sched_getaffinity(0))


def checked_job_config(config_loader: Any, config: DictConfig, overrides: list[str]) -> DictConfig:
    """A job's config, composed and value-checked before any job runs: a bad value rejects the
    whole sweep, with nothing recorded."""
    cfg = config_loader.load_sweep_config(config, overrides)
    try:
        validate(cfg)
    except ValueError as err:
        raise SystemExit(f"error: sweep rejected before any job ran: {err}") from None
    return cfg


def save_sweep_config(config: DictConfig) -> Path:
    """Hydra's record of the sweep, multirun.yaml in the sweep folder; returns the folder."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return sweep_dir


def job_state(run: Run) -> str:
    """finished, pruned, failed, killed or running."""
    return "pruned" if "pruned" in run.data.tags else run.info.status.lower()


@dataclass
class SweepRun:
    client: mlflow.MlflowClient
    run_id: str

    @classmethod
    def open(
        cls, tracking_uri: str, experiment: str, name: str, key: str, kind: str, definition: str
    ) -> SweepRun:
        """The parent run of the sweep identified by `key`: the existing one, set RUNNING again,
        or a new one named `name` that stores `definition` as sweep.yaml."""
        experiment_id = prepare_store(tracking_uri, experiment)
        client = mlflow.MlflowClient(tracking_uri)
        found = client.search_runs(
            [experiment_id], f"tags.sweep_key = '{key}'", order_by=["start_time DESC"]
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            tags = {"sweep_key": key, "sweep_kind": kind, "sweep_name": name}
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            client.log_text(run_id, definition, "sweep.yaml")
        return cls(client, run_id)

    def children(self) -> list[Run]:
        """The jobs' runs, oldest first; only the latest run of each job (config hash or Optuna
        trial) when a job was run more than once."""
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        runs = self.client.search_runs(
            [experiment_id], f"tags.`{PARENT}` = '{self.run_id}'", order_by=["start_time ASC"]
        )
        latest = {}
        for run in runs:
            tags = run.data.tags
            latest[tags.get("optuna_trial") or tags.get("config_hash") or run.info.run_id] = run
        return list(latest.values())

    def finished_hashes(self) -> set[str]:
        """Config hashes of the jobs that have FINISHED (and were not pruned)."""
        return {r.data.tags["config_hash"] for r in self.children() if job_state(r) == "finished"}

    def close(self, status: str | None = None) -> dict[str, int]:
        """Record jobs_finished/failed/pruned/killed and the best finished child by val_acc, end
        the run (FAILED if any job failed, unless `status` says otherwise); return the counts."""
        children = self.children()
        counts = Counter(job_state(r) for r in children)
        metrics = {f"jobs_{state}": counts[state] for state in ("finished", "failed", "pruned")}
        metrics["jobs_killed"] = counts["killed"]
        scored = [r for r in children if job_state(r) == "finished" and "val_acc" in r.data.metrics]
        if scored:
            best = max(scored, key=lambda r: r.data.metrics["val_acc"])
            metrics["best_val_acc"] = best.data.metrics["val_acc"]
            if "test_acc" in best.data.metrics:
                metrics["best_test_acc"] = best.data.metrics["test_acc"]
            self.client.set_tag(self.run_id, "best_run_id", best.info.run_id)
            self.client.set_tag(self.run_id, "best_run_name", best.info.run_name)
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, value)
        status = status or ("FAILED" if counts["failed"] else "FINISHED")
        self.client.set_terminated(self.run_id, status)
        return dict(counts)


def exit_if_failed(failures: list[tuple[str, BaseException]], total: int) -> None:
    """After a sweep: name each failed job (its overrides and error) and exit 1, if any failed."""
    if not failures:
        return
    print(f"sweep done; {len(failures)} of {total} job(s) failed:", file=sys.stderr)
    for job, err in failures:
        print(f"  {job}: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
    sys.exit(1)


def default_storage(tracking_uri: str) -> str:
    """optuna.db beside a SQLite MLflow store; a PostgreSQL MLflow store's own database."""
    if tracking_uri.startswith("sqlite:///"):
        return "sqlite:///" + str(
            Path(tracking_uri.removeprefix("sqlite:///")).with_name("optuna.db")
        )
    if tracking_uri.startswith("postgresql"):
        return tracking_uri
    raise ValueError(
        f"logger.tracking_uri={tracking_uri}: set hydra.sweeper.storage to the study's database"
        " (an SQLAlchemy URL, e.g. postgresql+psycopg2://user@host/optuna)"
    )
