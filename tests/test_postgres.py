"""Tracking a sweep the way many machines would: a real PostgreSQL, an `mlflow server` on it, and
the SLURM launcher's config.

The fixtures start a throw-away PostgreSQL cluster (initdb + pg_ctl, as user `postgres` when run
as root), an `mlflow server` whose backend store is one of its databases, and give another
database as an Optuna storage URL. They are session-scoped and return URLs, for reuse.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

PG_USER, PG_PASSWORD = "lstm", "test-only-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The PostgreSQL server programs' folder: Debian's newest, or the one on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    dir: Path

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        # The driver is explicit: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name`; return its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
        )
        conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 and a free port, password-protected; its data
    and unix socket in a temporary folder removed at teardown."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.skip("running as root, and no runuser to run PostgreSQL as user postgres")
    # Not under pytest's tmp_path: user postgres cannot enter root's 0700 pytest folders.
    base = Path(tempfile.mkdtemp(prefix="lstm-pg-"))
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    (base / "pw").write_text(PG_PASSWORD)
    if as_root:
        for path in (base, base / "pw"):
            shutil.chown(path, "postgres")

    def pg(*args: str) -> None:
        proc = subprocess.run(
            [*prefix, *args], cwd=base, capture_output=True, text=True, timeout=120
        )
        if proc.returncode:
            log = base / "postgres.log"
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed:\n{proc.stdout}{proc.stderr}{detail}")

    port = free_port()
    data = base / "data"
    try:
        initdb = ["-D", str(data), "-U", PG_USER, f"--pwfile={base / 'pw'}", "--no-sync"]
        pg(str(bin_dir / "initdb"), *initdb, "--auth=scram-sha-256", "-E", "UTF8")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(base / "postgres.log")
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", log, "-w", "-o", options, "start")
    except Exception:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        yield Postgres("127.0.0.1", port, PG_USER, PG_PASSWORD, base)
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def optuna_storage_url(postgres: Postgres) -> str:
    """An empty database of `postgres`, as the SQLAlchemy URL Optuna takes as its storage."""
    return postgres.create_database("optuna")


@dataclass
class MlflowServer:
    url: str  # the tracking URI: http://127.0.0.1:PORT
    backend_store_uri: str  # its PostgreSQL database
    artifacts: Path  # where it stores the runs' artifacts
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> MlflowServer:
    """`mlflow server` with its backend store in `postgres` and its artifacts in a temporary
    folder, on 127.0.0.1 and a free port; stopped at teardown."""
    backend = postgres.create_database("mlflow")
    tmp = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    server = MlflowServer(
        f"http://127.0.0.1:{port}", backend, tmp / "artifacts", tmp / "server.log"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
        + ["--artifacts-destination", str(server.artifacts)]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(server.log_file, "w"),
        stderr=subprocess.STDOUT,
        cwd=tmp,
        env=env,
        start_new_session=True,  # its own process group: the workers are stopped with it
    )
    try:
        deadline = time.monotonic() + 180  # creating the schema on a busy 2-core machine: ~30 s
        while True:
            try:
                urllib.request.urlopen(f"{server.url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{server.log()}")
                time.sleep(0.5)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def job_runs(tracking_uri: str, sweep_dir: Path) -> list:
    """The runs of a sweep's jobs (not its parent run, if any), in job order."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lstm-mnist")
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep_id = '{sweep_dir}'")
    jobs = [r for r in runs if "job_num" in r.data.tags]
    return sorted(jobs, key=lambda r: int(r.data.tags["job_num"]))


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
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=optuna_storage_url
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    values = {r.data.tags["optuna_trial"]: r.data.metrics["val_acc"] for r in jobs}
    assert {str(t.number): t.value for t in study.trials} == values


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
