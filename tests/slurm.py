"""A throw-away single-node SLURM cluster on 127.0.0.1, with accounting (slurmdbd on MariaDB) so
that `sacct`, and submitit with it, sees cancelled and timed-out jobs. Debian's packages:
slurmctld slurmd slurm-client munge slurmdbd mariadb-server (.ci/run installs them). Needs root.
Every daemon runs in the foreground of a process started here and is stopped by its PID.

    python tests/slurm.py /tmp/cluster     # start one by hand; Ctrl-C stops it
    export SLURM_CONF=/tmp/cluster/slurm.conf
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PROGRAMS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch", "sacctmgr")
CLUSTER = "lstmci"


def missing() -> list[str]:
    """The programs this cluster needs that are not installed."""
    dirs = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in PROGRAMS if shutil.which(p, path=dirs) is None]


def which(program: str) -> str:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or program


def wait_for(what: str, check, timeout_s: float, logs: list[Path]) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        if check():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s\n{tails}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def daemon(command: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """Run `command` in the foreground of a child process; stop it by its PID at the end."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def slurm_conf(work: Path, host: str) -> str:
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
# a requeued job would wait 120 s (PENDING, BeginTime) for its old credential to expire
AuthInfo=cred_expire=5
StateSaveLocation={work}/state
SlurmdSpoolDir={work}/spool
SlurmctldPidFile={work}/slurmctld.pid
SlurmdPidFile={work}/slurmd.pid
SlurmctldLogFile={work}/slurmctld.log
SlurmdLogFile={work}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs may ask for more cores and memory than this small machine has (the launcher asks 4 CPUs)
SlurmdParameters=config_overrides
# submitit ignores SIGTERM: a cancelled job would sit 30 s in COMPLETING
KillWait=5
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurmdbd_conf(work: Path, host: str, password: str) -> str:
    return f"""\
AuthType=auth/munge
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile={work}/slurmdbd.pid
LogFile={work}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
"""


@contextmanager
def slurm_cluster(work: Path) -> Iterator[dict[str, str]]:
    """Start munge, MariaDB, slurmdbd, slurmctld and slurmd with their state under `work`;
    yield the environment clients need (SLURM_CONF); stop them all by their PIDs."""
    if os.geteuid() != 0:
        raise RuntimeError("a local SLURM cluster needs root")
    if absent := missing():
        raise RuntimeError(f"not installed: {', '.join(absent)}")
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # munged (user munge) writes in a folder of its own below it
    for sub in ("state", "spool", "mysql"):
        (work / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    password = secrets.token_hex(8)
    (work / "slurm.conf").write_text(slurm_conf(work, host))
    dbd = work / "slurmdbd.conf"
    dbd.write_text(slurmdbd_conf(work, host, password))
    dbd.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(work / "slurm.conf")}
    logs = [work / "munge" / "munged.log", work / "munged.stdout"]
    logs += [work / f"{name}.log" for name in ("mariadb", "slurmdbd", "slurmctld", "slurmd")]

    with ExitStack() as stack:
        # munge: as the munge user, on its default socket (where Slurm's auth/munge looks)
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        own = work / "munge"  # munged writes its log, PID and seed files as the munge user
        own.mkdir(exist_ok=True)
        shutil.chown(own, "munge", "munge")
        munge = [which("runuser"), "-u", "munge", "--", which("munged"), "--foreground"]
        munge += ["--log-file", str(own / "munged.log"), "--pid-file", str(own / "munged.pid")]
        munge += ["--seed-file", str(own / "munged.seed")]
        stack.enter_context(daemon(munge, work / "munged.stdout"))
        socket_path = run_dir / "munge.socket.2"
        wait_for("munged", socket_path.exists, 20, logs)

        # MariaDB: its own data folder, 127.0.0.1 only
        mysql_socket = work / "mysql.sock"
        install = [which("mariadb-install-db"), f"--datadir={work / 'mysql'}", "--user=root"]
        install += ["--auth-root-authentication-method=socket", "--skip-test-db"]
        subprocess.run(install, check=True, capture_output=True)
        mariadb = [which("mariadbd"), "--no-defaults", f"--datadir={work / 'mysql'}", "--user=root"]
        mariadb += [f"--socket={mysql_socket}", "--bind-address=127.0.0.1", "--port=3306"]
        mariadb += [f"--pid-file={work / 'mariadb.pid'}", "--skip-log-bin"]
        stack.enter_context(daemon(mariadb, work / "mariadb.log"))
        wait_for("MariaDB", lambda: port_open(3306) and mysql_socket.exists(), 60, logs)
        sql = (
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
            f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        client = [which("mariadb"), f"--socket={mysql_socket}", "-uroot", "-e", sql]
        subprocess.run(client, check=True, capture_output=True)

        stack.enter_context(daemon([which("slurmdbd"), "-D"], work / "slurmdbd.stdout", env=env))
        wait_for("slurmdbd", lambda: port_open(6819), 60, logs)
        add = [which("sacctmgr"), "-i", "add", "cluster", CLUSTER]
        subprocess.run(add, env=env, capture_output=True)  # exists already: fine
        stack.enter_context(daemon([which("slurmctld"), "-D", "-i"], work / "ctld.stdout", env=env))
        wait_for("slurmctld", lambda: port_open(6817), 60, logs)
        stack.enter_context(daemon([which("slurmd"), "-D"], work / "slurmd.stdout", env=env))

        def idle() -> bool:
            sinfo = [which("sinfo"), "-h", "-o", "%T"]
            out = subprocess.run(sinfo, env=env, capture_output=True, text=True).stdout
            return out.strip() == "idle"

        wait_for("the node", idle, 60, logs)

        def accounting() -> bool:
            sacct = [which("sacct"), "-n", "-X", "-S", "now-1minute"]
            return subprocess.run(sacct, env=env, capture_output=True).returncode == 0

        wait_for("sacct", accounting, 60, logs)
        yield {"SLURM_CONF": str(work / "slurm.conf")}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the daemons on SIGTERM too
    with slurm_cluster(Path(sys.argv[1]).resolve()) as cluster_env:
        print(f"cluster up: export SLURM_CONF={cluster_env['SLURM_CONF']}  (Ctrl-C stops it)")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
