"""Whether an MLflow store can be used, answered in one line within seconds: a tracking server
that answers and is MLflow's, a database server that answers with its driver installed, the
experiment a reading command needs. MLflow's own client retries for minutes; this is the check
before the work, which then runs with MLflow's settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import requests
from mlflow.entities import Experiment
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from lstm_mnist.display import one_line
from lstm_mnist.tracking.store import SERVERS, StoreError

if TYPE_CHECKING:
    from lstm_mnist.tracking.store import Store

# What the check waits for (MLflow's own defaults, for the work after it: 7 retries over about
# 4 minutes, 120 s a request): seconds for /health, for its MLflow API call (no retry), for a
# database server's connection.
HEALTH_TIMEOUT_S = 3
API_TIMEOUT_S = 4
CONNECT_TIMEOUT_S = 4


def check(store: Store, experiment: bool = False, reading: bool = False) -> None:
    """Raise StoreError, in one line and within seconds, unless the store can be used: a
    tracking server answers and is an MLflow tracking server, a database server answers;
    `reading` (a command that reads the store, such as predict.py --model): a SQLite store's
    file is there (MLflow would create an empty one); with `experiment` (the commands that read
    the experiment), that and the experiment too.

    The one check every command makes before its work (Store.check), and prepare() for the
    others. Its MLflow calls are made with MLflow's retries off and a short timeout
    (short_requests); the work after it has MLflow's own, so that a slow but healthy server
    still works."""
    found, there = None, []
    if store.uri.startswith(SERVERS):
        check_server(store)
        with short_requests():
            found, there = look_up(store, experiment)
    elif store.database is not None:
        check_database(store)
        if experiment:
            found, there = look_up(store, experiment)
    elif reading or experiment:
        if (db := store.sqlite_file) is not None and not db.is_file():
            raise StoreError(
                f"{store.option}={store.uri}: no MLflow store there ({db.resolve()} does not"
                f" exist); run the command where you trained, or point {store.option} at"
                " your store"
            )
        if experiment:
            found, there = look_up(store, experiment)
    if experiment and found is None:
        names_there = ", ".join(repr(name) for name in there) or "none"
        raise StoreError(
            f"--experiment {store.experiment_name}: no such experiment in {store.shown_uri}"
            f" (experiments there: {names_there}); pass --experiment with one of those, or"
            f" point {store.option} at the store you trained into"
        )


def look_up(store: Store, listing: bool) -> tuple[Experiment | None, list[str]]:
    """The experiment (None if it is not there) and, with `listing` when it is not, the
    names of those that are: for a tracking server, cheap calls of MLflow's API, which prove
    it is MLflow's. Any answer that is not MLflow's is a StoreError."""
    try:
        found = store.client.get_experiment_by_name(store.experiment_name)
        if found is not None and found.name != store.experiment_name:
            raise StoreError(
                f"{store.uri} is not an MLflow tracking server (it answers MLflow's API, but"
                f" not as MLflow does); point MLFLOW_TRACKING_URI / {store.option} at the"
                " address `mlflow server` serves"
            )
        if found is not None or not listing:
            return found, []
        return None, [e.name for e in store.client.search_experiments(max_results=20)]
    except (MlflowException, SQLAlchemyError) as err:
        raise StoreError(unusable(store, err)) from None


def unusable(store: Store, err: Exception) -> str:
    """Why the store cannot be used, as MLflow's client said it."""
    if not store.uri.startswith(SERVERS):
        where = store.sqlite_file or store.shown_uri
        return (
            f"{store.option}={store.shown_uri}: {where} is not a usable MLflow store"
            f" ({one_line(err)[:200]}); point {store.option} at another store"
        )
    if isinstance(err.__context__, requests.Timeout) or "timed out" in str(err).lower():
        return (
            f"MLflow tracking server {store.uri} answers its health check but not its API"
            f" within {API_TIMEOUT_S} s; try again when it is less busy, or point"
            f" MLFLOW_TRACKING_URI / {store.option} at a store that works"
        )
    reason = one_line(err).replace(f"API request to {store.uri.rstrip('/')}", "")[:160]
    return (
        f"{store.uri} is not an MLflow tracking server (its API: {reason}); point"
        f" MLFLOW_TRACKING_URI / {store.option} at the address `mlflow server` serves"
    )


def check_server(store: Store, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise StoreError, in one line, unless the tracking server answers its health check."""
    try:
        answer = requests.get(f"{store.uri.rstrip('/')}/health", timeout=timeout)
    except requests.RequestException as err:
        raise StoreError(
            f"MLflow tracking server {store.uri} does not answer ({type(err).__name__}); "
            f"start it, or point MLFLOW_TRACKING_URI / {store.option} at a store that works"
        ) from None
    if answer.status_code != 200:
        raise StoreError(
            f"{store.uri} is not an MLflow tracking server (GET /health answered"
            f" {answer.status_code} {answer.reason}); point MLFLOW_TRACKING_URI /"
            f" {store.option} at the address `mlflow server` serves"
        )


def check_database(store: Store, timeout: int = CONNECT_TIMEOUT_S) -> None:
    """Raise StoreError, in one line, unless the database server of a database store answers
    (MLflow itself retries a connection for minutes), with its driver installed."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    quick = {"connect_timeout": timeout} if store.database in ("postgresql", "mysql") else {}
    try:
        engine = create_engine(make_url(store.uri), poolclass=NullPool, connect_args=quick)
    except ImportError as err:  # its driver (SQLAlchemy 2.1: postgresql:// is psycopg 3)
        hint = (
            "write postgresql+psycopg2:// (pip install -e '.[postgres]' installs psycopg2)"
            if store.database == "postgresql"
            else f"name an installed one ({store.database}+<driver>://)"
        )
        raise StoreError(
            f"{store.option}={store.shown_uri}: its database driver {err.name} is not"
            f" installed; install it, or {hint}"
        ) from None
    except SQLAlchemyError as err:
        raise StoreError(f"{store.option}={store.shown_uri}: {one_line(err)[:200]}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        reason = one_line(getattr(err, "orig", None) or err)[:200]
        raise StoreError(
            f"the database server of {store.shown_uri} does not answer ({reason}); start it,"
            f" or point MLFLOW_TRACKING_URI / {store.option} at a store that works"
        ) from None
    finally:
        engine.dispose()


@contextmanager
def short_requests() -> Iterator[None]:
    """MLflow's HTTP requests in the block: no retry, API_TIMEOUT_S each. MLflow reads these
    settings at every request (mlflow/utils/rest_utils.py: http_request), so they hold for the
    block only; what was set before (by the user too) is put back after it."""
    short = {MLFLOW_HTTP_REQUEST_MAX_RETRIES: 0, MLFLOW_HTTP_REQUEST_TIMEOUT: API_TIMEOUT_S}
    saved = {setting: setting.get_raw() for setting in short}
    for setting, value in short.items():
        setting.set(value)
    try:
        yield
    finally:
        for setting, value in saved.items():
            if value is None:
                setting.unset()
            else:
                setting.set(value)
