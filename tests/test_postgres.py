"""Tracking a sweep the way many machines would: a real PostgreSQL, an `mlflow server` on it
(fixtures in services.py), and the SLURM launcher's config."""

from __future__ import annotations

import mlflow
import pytest
from helpers import ROOT, job_runs, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate


@pytest.mark.slow
@pytest.mark.services
def test_optuna_sweep_with_its_study_in_postgres(mlflow_server, optuna_storage_url, tmp_path):
    import optuna
    import sqlalchemy

    proc = run_cli(
        tmp_path,
        *[
            "sweeps=optuna",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage={optuna_storage_url}",
        ],
        *["~hydra.sweeper.params.num_units", "~hydra.sweeper.params.num_layers"],
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + "\nserver log:\n" + mlflow_server.log()
    client = mlflow.MlflowClient(mlflow_server.url)
    jobs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert sorted(r.data.tags["optuna_trial"] for r in jobs) == ["0", "1"]
    parent = client.get_run(jobs[0].data.tags["mlflow.parentRunId"])
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and int(parent.data.tags["jobs_finished"]) == 2
    password = sqlalchemy.engine.make_url(optuna_storage_url).password
    for run in [parent, *jobs]:  # the storage's password is in no tag
        assert not any(password in value for value in run.data.tags.values())
    storage_given = optuna_storage_url.replace(f":{password}@", ":***@")  # as a user wrote it
    assert f"hydra.sweeper.storage={storage_given}" in parent.data.tags["sweep_command"]
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=optuna_storage_url
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    values = {r.data.tags["optuna_trial"]: r.data.metrics["val_acc"] for r in jobs}
    assert {str(t.number): t.value for t in study.trials} == values


@pytest.mark.slow
@pytest.mark.services
def test_sweep_logs_into_mlflow_server_on_postgres(mlflow_server, tmp_path):
    # The last of two values for a key wins: this replaces tiny_cli_args' SQLite store.
    proc = run_cli(
        tmp_path, "num_layers=1,2", f"logger.tracking_uri={mlflow_server.url}", multirun=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + "\nserver log:\n" + mlflow_server.log()

    client = mlflow.MlflowClient(mlflow_server.url)
    jobs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert [r.data.params["num_layers"] for r in jobs] == ["1", "2"], mlflow_server.log()
    parent = client.get_run(jobs[0].data.tags["mlflow.parentRunId"])  # the sweep's own run
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert parent.info.run_name == "num_layers=1,2" and int(parent.data.tags["jobs_finished"]) == 2
    for run in jobs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [20, 30]
        assert all(0 <= m.value <= 1 for m in history)
        # Artifacts went through the server into its --artifacts-destination.
        assert "config.yaml" in {f.path for f in client.list_artifacts(run.info.run_id)}
        assert list(mlflow_server.artifacts.glob(f"*/{run.info.run_id}/artifacts/config.yaml"))

    # And the runs are rows of the PostgreSQL database, not of some other store.
    import sqlalchemy

    engine = sqlalchemy.create_engine(mlflow_server.backend_store_uri)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sqlalchemy.text(
                    "SELECT run_uuid, status FROM runs WHERE run_uuid IN :ids"
                ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                {"ids": [r.info.run_id for r in jobs]},
            ).all()
    finally:
        engine.dispose()
    assert sorted(stored) == sorted((r.info.run_id, "FINISHED") for r in jobs)


# --- hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml) -------------------------------------

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def compose_with_launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_config_composes_and_submitit_accepts_it(tmp_path, monkeypatch):
    from hydra.plugins.launcher import Launcher
    from submitit.slurm.slurm import SlurmExecutor

    cfg = compose_with_launcher(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"
    )
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_ == SLURM_LAUNCHER
    assert issubclass(get_class(SLURM_LAUNCHER), Launcher)
    assert launcher_cfg.tasks_per_node == 1 and launcher_cfg.nodes == 1
    assert launcher_cfg.partition == "gpu"  # overridable; null in the file
    assert compose_with_launcher("hydra/launcher=slurm").hydra.launcher.partition is None

    # The sbatch script submitit would submit, without a cluster: srun is pretended, and the
    # submission stops at map_array. Every key must be one submitit knows.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    captured = {}

    def capture(executor, *args, **kwargs):
        captured["executor"] = executor
        raise StopIteration

    monkeypatch.setattr("submitit.AutoExecutor.map_array", capture)
    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(StopIteration):
        launcher.launch([["num_layers=1"]], initial_job_idx=0)
    sbatch = captured["executor"]._executor._make_submission_file_text("true", "0")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={launcher_cfg.cpus_per_task}",
        f"#SBATCH --mem={launcher_cfg.mem_gb}GB",
        f"#SBATCH --time={launcher_cfg.timeout_min}",
    ):
        assert line in sbatch.splitlines(), sbatch


@pytest.mark.slow
def test_sweep_runs_through_submitit_local_launcher(tmp_path):
    """hydra/launcher=slurm's sibling that needs no cluster: the job runs in a process submitit
    starts, and is recorded as usual."""
    proc = run_cli(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", multirun=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = job_runs(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "multirun")
    assert run.info.status == "FINISHED"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [20, 30]
    # submitit ran it: its job folder holds the job's log and pickled result.
    assert list((tmp_path / "multirun" / ".submitit").glob("*/*_0_result.pkl"))
