"""An MLflow store: the one place a tracking URI becomes a client, an experiment, the Optuna
storage beside it and the command that opens its UI."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities import LoggedModel, Run
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from lstm_mnist.display import masked, one_line
from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective

UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
SERVERS = ("http://", "https://")
DATABASES = ("postgresql", "mysql", "mssql")  # the other SQLAlchemy stores MLflow knows


class StoreError(RuntimeError):
    """The store cannot be used: a server that does not answer, a file that is no MLflow store."""


class Store:
    """The MLflow store at `uri` and the experiment `experiment_name` in it."""

    def __init__(self, uri: str, experiment_name: str, option: str = "logger.tracking_uri") -> None:
        self.uri = uri
        self.experiment_name = experiment_name
        self.option = option  # what gave the URI, as a message names it: --tracking-uri

    @classmethod
    def of(cls, cfg: Any) -> Store:
        """The store and experiment a composed config's logger names."""
        return cls(cfg.logger.tracking_uri, cfg.logger.experiment_name)

    @cached_property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.uri)

    @property
    def sqlite_file(self) -> Path | None:
        prefix = "sqlite:///"
        return Path(self.uri.removeprefix(prefix)) if self.uri.startswith(prefix) else None

    def prepare(self) -> str:
        """Create the store's schema and the experiment if needed; return the experiment id.

        A fresh SQLite store is created under a file lock: several processes creating it at once
        (two sweeps started together) corrupt it. Its artifacts go to `mlruns/` beside the
        database file, wherever the command runs from. A tracking server or database server that
        does not answer (check()), or a file that is not an MLflow database, is reported at once
        in one line.
        """
        if self.uri.startswith(SERVERS) or self.database is not None:
            self.check()
            return self._experiment_id(None)
        db = self.sqlite_file
        if db is None:
            return self._experiment_id(None)
        db = db.resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{db}.lock"):
            return self._experiment_id((db.parent / "mlruns").as_uri())

    def _experiment_id(self, artifact_location: str | None) -> str:
        try:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment:
                return experiment.experiment_id
            return self.client.create_experiment(self.experiment_name, artifact_location)
        except (MlflowException, SQLAlchemyError) as err:
            if self.sqlite_file is None:
                raise
            reason = one_line(err)[:200]
            raise StoreError(
                f"{self.option}={self.uri}: {self.sqlite_file} is not a usable MLflow store"
                f" ({reason}); point {self.option} at another file, or move this one away"
            ) from None

    @property
    def database(self) -> str | None:
        """The database server's kind (postgresql, mysql, mssql) of a database store, else None."""
        kind = self.uri.split("://", 1)[0].split("+", 1)[0]
        return kind if "://" in self.uri and kind in DATABASES else None

    @property
    def shown_uri(self) -> str:
        """The URI with its password, if any, masked: for messages."""
        return masked(self.uri)

    def check(self, experiment: bool = False, reading: bool = False) -> None:
        """Raise StoreError, in one line and within seconds, unless the store can be used (see
        store_check.check): every command makes it before its work, prepare() for the others."""
        from lstm_mnist.tracking.store_check import check

        check(self, experiment, reading)

    def optuna_storage(self) -> str:
        """The default study storage: optuna.db beside a SQLite store; a PostgreSQL store's own
        database."""
        if self.sqlite_file is not None:
            return f"sqlite:///{self.sqlite_file.with_name('optuna.db')}"
        if self.uri.startswith("postgresql"):
            return self.uri
        raise ValueError(
            f"logger.tracking_uri={self.uri}: set hydra.sweeper.storage to the study's database"
            " (an SQLAlchemy URL, e.g. postgresql+psycopg2://user@host/optuna)"
        )

    def ui_command(self) -> str | None:
        """The command that serves this store's UI; None for a tracking server (it is one)."""
        if self.uri.startswith(("http://", "https://")):
            return None
        if self.uri == names.DEFAULT_URI:
            return "mlflow ui"
        return f"mlflow ui --backend-store-uri {self.uri}"

    def url(self, experiment_id: str, run_id: str | None = None) -> str:
        """The UI page of a run, or the experiment's runs table (not MLflow 3's GenAI overview,
        where the experiment's plain address lands)."""
        base = self.uri.rstrip("/") if self.ui_command() is None else UI_ADDRESS
        if run_id:
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
        return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"

    def where_to_look(self, url: str) -> str:
        """`url`, and the command that starts the UI first when there is no tracking server."""
        command = self.ui_command()
        return url + (f"  (start the UI first: {command})" if command else "")

    def all_runs(self, experiment_id: str, query: str) -> list[Run]:
        """Every run of the experiment that matches `query`, page after page (MLflow returns
        at most 1,000 at a time)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], query, page_token=token)
            runs += page
            if not (token := page.token):
                return runs

    def best_model(self, objective: Objective, parent_run_id: str | None = None) -> LoggedModel:
        """The logged model of the FINISHED run with the best objective that has one, among all
        runs of the experiment or the jobs of the sweep whose parent run is `parent_run_id`."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            raise ValueError(f"no experiment {self.experiment_name!r} in {self.uri}")
        query = "attributes.status = 'FINISHED'"
        if parent_run_id:
            query += f" and tags.`{names.SWEEP_RUN}` = '{parent_run_id}'"
        ids = [experiment.experiment_id]
        for run in self.client.search_runs(ids, query, order_by=[objective.order_by]):
            if models := self.client.search_logged_models(ids, self._made_by(run.info.run_id)):
                return models[0]
        where = (
            f"sweep {parent_run_id}" if parent_run_id else f"experiment {self.experiment_name!r}"
        )
        raise ValueError(f"no finished run with a logged model in {where}")

    def model_of(self, run_id: str) -> LoggedModel:
        """The model that run `run_id` logged (MLflow 3 keeps it as a LoggedModel, addressed as
        models:/<model id>, not under the run's artifacts)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ValueError(f"--run {run_id}: no such run in {self.uri}") from None
        found = self.client.search_logged_models([run.info.experiment_id], self._made_by(run_id))
        if not found:
            raise ValueError(f"--run {run_id}: that run logged no model (artifacts.model=false?)")
        return found[0]

    def gc(self, logged_model_ids: list[str] | None = None) -> None:
        """Purge for good, with MLflow's own `mlflow gc`, what was deleted: the given logged
        models' files, or else every run deleted in the UI. Raises StoreError if it fails."""
        command = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", self.uri]
        command += ["--tracking-uri", self.uri]
        if logged_model_ids:
            command += ["--logged-model-ids", ",".join(logged_model_ids)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = one_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
            raise StoreError(f"mlflow gc --backend-store-uri {self.uri} failed: {reason}")

    @staticmethod
    def _made_by(run_id: str) -> str:
        return f"source_run_id = '{run_id}'"

    def stale_runs(self, experiment_id: str, stale_after_s: float) -> dict[str, float]:
        """The runs still RUNNING whose heartbeat (or start) is older than `stale_after_s`
        (their process, or their sweep's, died without a word): run id -> seconds silent. A
        detached sweep's parent (and configurations' runs) have no process to beat for them
        while their jobs wait in the queue: `sweeps list` tells when those are left over."""
        now = time.time()
        stale = {}
        for run in self.client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
            if run.data.tags.get(names.DETACHED) == "true":
                continue
            if (silent := silent_s(run, now)) > stale_after_s:
                stale[run.info.run_id] = silent
        return stale


def silent_s(run: Run, now: float) -> float:
    """How long the run has not beaten its heartbeat (or, before its first beat, since it
    started)."""
    return now - float(run.data.tags.get(names.HEARTBEAT, run.info.start_time / 1000))
