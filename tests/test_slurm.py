"""Sweeps on a real single-node SLURM cluster (services.py starts it, with accounting), tracked
into an `mlflow server` on PostgreSQL, as on a cluster."""

from __future__ import annotations

import subprocess

import mlflow
from conftest import run_cli
from test_postgres import job_runs

# One CPU per job: the 2 jobs of a sweep run at once even on a 2-core machine.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


def accounting(*columns: str) -> list[list[str]]:
    """sacct's lines for this cluster's jobs (job steps left out), as lists of `columns`."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-S", "now-1hour", "-o", ",".join(columns)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_grid_sweep_runs_as_one_slurm_job_array(slurm, mlflow_server, tmp_path):
    before = {line[0] for line in accounting("JobID")}
    proc = run_cli(
        tmp_path,
        "num_layers=1,2",
        *SLURM,
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + "\nserver log:\n" + mlflow_server.log()

    # The scheduler ran both jobs as the two tasks of one job array, and accounted for them.
    jobs = [line for line in accounting("JobID", "State", "ExitCode") if line[0] not in before]
    assert len(jobs) == 2, jobs
    assert len({line[0].split("_")[0] for line in jobs}) == 1  # one array
    assert sorted(line[0].split("_")[1] for line in jobs) == ["0", "1"]
    assert all(line[1:] == ["COMPLETED", "0:0"] for line in jobs), jobs

    # Tracked as on one machine: two FINISHED runs nested under one FINISHED parent.
    client = mlflow.MlflowClient(mlflow_server.url)
    runs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert [r.data.params["num_layers"] for r in runs] == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    (parent_id,) = {r.data.tags["mlflow.parentRunId"] for r in runs}
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_finished"] == "2"
    assert "sweep num_layers=1,2: 2 of 2 jobs finished" in proc.stdout


def test_failed_slurm_job_is_recorded_and_named(slurm, mlflow_server, tmp_path):
    proc = run_cli(
        tmp_path,
        "num_units=16,2000000",  # the second cannot be allocated
        *SLURM,
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "sweep done; 1 of 2 job(s) failed:" in proc.stderr
    assert "num_units=2000000" in proc.stderr and "can't allocate memory" in proc.stderr
    runs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
