"""The statuses of runs that are not the active one: a sweep's parent and configuration runs,
and runs found dead. With run.py's `tracked_run` (the training runs), the only writers of run
statuses; torch-free."""

from __future__ import annotations

import mlflow


def end_run(client: mlflow.MlflowClient, run_id: str, status: str) -> None:
    """Write the final status of a run that is not the active one (a parent, a dead run)."""
    client.set_terminated(run_id, status)


def reopen_run(client: mlflow.MlflowClient, run_id: str) -> None:
    """Set a run that is not the active one RUNNING again (a sweep's parent, or its
    configuration's run, when the sweep is run again)."""
    client.update_run(run_id, status="RUNNING")
