"""The real services tests track into, started here and stopped by the PIDs started: a
throw-away PostgreSQL cluster (initdb + pg_ctl, as user `postgres` when run as root), an `mlflow
server` whose backend store is one of its databases, another database as an Optuna storage URL,
and a single-node SLURM cluster (tests/slurm.py). They are session-scoped and return URLs, for
reuse. conftest.py loads this module as a pytest plugin.
"""

from __future__ import annotations

import fcntl
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

import pytest

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


@pytest.fixture(scope="session")
def slurm() -> dict[str, str]:
    """A single-node SLURM cluster with accounting (tests/slurm.py); SLURM_CONF is set in this
    process's environment, which the commands the tests start inherit, while it runs."""
    from slurm import missing, slurm_cluster

    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root")
    if absent := missing():
        pytest.skip(f"SLURM not installed ({', '.join(absent)}): .ci/run installs it")
    # SLURM's daemons listen on fixed ports and there is one node per machine, so one cluster at
    # a time: under `pytest -n 2 --dist loadfile` test_slurm.py's tests all run on one worker,
    # and a SLURM test in another file would wait here for that worker's cluster to stop.
    lock = open(Path(tempfile.gettempdir()) / "lstm-mnist-slurm.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    work = Path(tempfile.mkdtemp(prefix="lstm-slurm-"))
    try:
        with lock, slurm_cluster(work) as env:
            os.environ.update(env)
            try:
                yield env
            finally:
                os.environ.pop("SLURM_CONF", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
