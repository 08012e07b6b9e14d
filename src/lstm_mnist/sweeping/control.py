"""Stopping and finishing a sweep from any terminal (`sweeps stop`, `sweeps finish`), from what
its parent run records: the SLURM jobs it runs as, or the process that drives it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import psutil
from mlflow.exceptions import MlflowException

from lstm_mnist.cluster import cancel, in_queue
from lstm_mnist.sweeping.closing import finish_sweep
from lstm_mnist.sweeping.inventory import slurm_arrays
from lstm_mnist.tracking import Store, SweepRecord, SweepRun, names

log = logging.getLogger(__name__)


def stop(store: Store, which: str, wait_s: float = 120) -> list[str]:
    """Stop the sweep `which` (a parent run id, or "latest"): its running jobs checkpoint and
    are KILLED, queued ones never start, the parent is KILLED. Returns what was done, in lines;
    a sweep that has ended already is left as it is."""
    run = SweepRecord.find(store, which, what="sweep")
    run_id = run.info.run_id
    if run.info.status != "RUNNING":
        return [f"sweep {run_id} has ended already: {run.info.status}; nothing to stop"]
    parent = SweepRun.of(store, run)
    parent.stopped_by("stop")  # whichever job closes it from now on closes it KILLED
    lines = []
    if driver := run.data.tags.get(names.DRIVER):  # an attached sweep: its command stops it
        host, _, pid = driver.partition(" ")
        if host != socket.gethostname():
            raise ValueError(
                f"sweep {run_id} is run by process {pid} on host {host}: run this stop there"
            )
        if is_sweep_driver(int(pid)):
            os.kill(int(pid), signal.SIGTERM)
            if wait_until_ended(parent, wait_s):
                return [f"sweep {run_id}: its process {pid} stopped it; parent run KILLED"]
            lines.append(f"its process {pid} did not stop it in {wait_s:.0f} s")
    arrays = slurm_arrays(run, parent.children())
    if queued := in_queue(arrays):
        cancel(arrays)
        lines.append(f"cancelled {len(queued)} SLURM job(s) of array(s) {', '.join(arrays)}")
    # the jobs mark their runs KILLED as they stop; a job that could not is marked here
    killed = parent.end_running_jobs(grace_s=30)
    if killed:
        lines.append(f"{killed} run(s) left RUNNING by jobs that died: marked KILLED")
    finish_sweep(parent, status="KILLED")
    lines.append(f"sweep {run_id}: stopped; parent run KILLED")
    return lines


def finish(store: Store, which: str, stale_after_s: float = 900) -> list[str]:
    """Close the sweep `which`, whose jobs have all ended but whose parent was left RUNNING
    (its command killed, its jobs cancelled by hand): its summary, from what is recorded.
    Refused while any of its jobs runs or is queued. A sweep that has ended already: its
    summary as it was written."""
    run = SweepRecord.find(store, which, what="sweep")
    run_id = run.info.run_id
    if run.info.status != "RUNNING":
        try:
            text = store.client.download_artifacts(run_id, names.SUMMARY)
            return Path(text).read_text().splitlines()
        except (MlflowException, OSError):  # a sweep closed before summaries were stored
            return [f"sweep {run_id} has ended already: {run.info.status}"]
    parent = SweepRun.of(store, run)
    arrays = run.data.tags.get(names.SLURM_JOBS, "").split()
    if queued := in_queue(arrays):
        raise ValueError(
            f"sweep {run_id}: {len(queued)} of its SLURM jobs are still queued or running"
            f" ({', '.join(arrays)}); it closes itself when they end, or stop it: sweeps stop"
        )
    host, _, pid = run.data.tags.get(names.DRIVER, "").partition(" ")
    if host == socket.gethostname() and is_sweep_driver(int(pid)):
        raise ValueError(f"sweep {run_id}: its process {pid} still runs it; or stop it")
    # Nothing queued and no driver here: whatever is RUNNING died, unless a driver elsewhere
    # still runs it, which only its runs' heartbeats can tell.
    if host and host != socket.gethostname() and (alive := parent.running_jobs(stale_after_s)):
        raise ValueError(
            f"sweep {run_id}: {len(alive)} of its runs still beat a heartbeat"
            f" ({', '.join(alive)}); its process {pid} on {host} may still run it"
        )
    killed = parent.end_running_jobs(grace_s=0)
    lines = [f"{killed} run(s) left RUNNING by jobs that died: marked KILLED"] if killed else []
    # a sweep whose jobs were killed did not run to its end
    interrupted = any(r.info.status == "KILLED" for r in parent.children())
    return lines + finish_sweep(parent, status="KILLED" if interrupted else None)


def is_sweep_driver(pid: int) -> bool:
    """Whether `pid` is alive and runs the train command (not a process that reused the pid)."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "train" in command


def wait_until_ended(parent: SweepRun, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if parent.store.client.get_run(parent.run_id).info.status != "RUNNING":
            return True
        time.sleep(1)
    return False
