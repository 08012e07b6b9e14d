"""What the launcher and the scheduler say about a job, in one place: the SLURM job a process
runs in (its id, whether it was started again, the cores it was given), how many jobs a launcher
runs at once, and cancelling a sweep's SLURM jobs. Only the entry points and the sweepers read
the process environment and Hydra's launcher config; they hand these facts down."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmJob:
    id: str  # "<array job>_<task>" for an array task, else the job id
    restarts: int  # SLURM_RESTART_COUNT: >= 1 once requeued (preemption, time limit, scontrol)
    cpus: int | None  # SLURM_CPUS_PER_TASK: the cores the job was given
    tasks: int = 1  # SLURM_NTASKS: with more than one, each task is a rank of one DDP training
    task: int = 0  # SLURM_PROCID: this task's global rank
    local_task: int = 0  # SLURM_LOCALID: its rank on its node
    node: int = 0  # SLURM_NODEID: its node's number in the job
    nodes: int = 1  # SLURM_NNODES
    nodelist: str = ""  # SLURM_JOB_NODELIST
    job_id: int = 0  # SLURM_JOB_ID: this job's own number (an array task's too)

    def main_address(self) -> str:
        """Where rank 0 of the job's tasks listens: its first node."""
        if self.nodes == 1:
            return "127.0.0.1"
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", self.nodelist], capture_output=True, text=True
        )
        return hosts.stdout.split()[0]

    @property
    def main_port(self) -> int:
        return 20000 + self.job_id % 20000  # one per job: two jobs on one node do not collide

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> SlurmJob | None:
        """The SLURM job of a process with environment `environ`, or None outside SLURM."""
        if "SLURM_ARRAY_JOB_ID" in environ:
            job = f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
        elif "SLURM_JOB_ID" in environ:
            job = environ["SLURM_JOB_ID"]
        else:
            return None
        cpus = environ.get("SLURM_CPUS_PER_TASK")
        restarts = int(environ.get("SLURM_RESTART_COUNT", "0"))
        return cls(
            job,
            restarts,
            int(cpus) if cpus else None,
            tasks=int(environ.get("SLURM_NTASKS", "1")),
            task=int(environ.get("SLURM_PROCID", "0")),
            local_task=int(environ.get("SLURM_LOCALID", "0")),
            node=int(environ.get("SLURM_NODEID", "0")),
            nodes=int(environ.get("SLURM_NNODES", "1")),
            nodelist=environ.get("SLURM_JOB_NODELIST", ""),
            job_id=int(environ.get("SLURM_JOB_ID", "0")),
        )


def submitit_slurm_job(environ: Mapping[str, str]) -> bool:
    """Whether this process is a job of hydra/launcher=slurm (submitit's, which requeues it)."""
    return environ.get("SUBMITIT_EXECUTOR") == "slurm"


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs the launcher runs at once on this machine: joblib's n_jobs (-1: one per
    core), else 1."""
    n_jobs = launcher.get("n_jobs", 1) or 1
    return n_jobs if n_jobs >= 1 else len(os.sched_getaffinity(0))


def parallel_slots(launcher: DictConfig) -> int:
    """How many jobs the launcher runs at once anywhere: joblib's n_jobs, or submitit's (SLURM's)
    array_parallelism."""
    if "array_parallelism" in launcher:
        return launcher.array_parallelism
    return parallel_jobs(launcher)


def is_slurm_launcher(launcher: DictConfig) -> bool:
    """Whether the launcher is hydra/launcher=slurm (submitit's)."""
    return launcher.get("_target_", "").endswith("SlurmLauncher")


def cancel_slurm_jobs(launcher: DictConfig, sweep_dir: Path, wait_s: float = 60) -> list[str]:
    """With hydra/launcher=slurm, cancel the sweep's SLURM jobs and wait until they have left
    the queue; returns their ids, none for another launcher."""
    submitted = sweep_dir / ".submitit"  # submitit's folder: one subfolder per SLURM job
    if not is_slurm_launcher(launcher) or not submitted.is_dir():
        return []
    ids = sorted({p.name.split("_")[0] for p in submitted.iterdir() if p.name[:1].isdigit()})
    return cancel(ids, wait_s)


def array_ids(job_ids: Sequence[str]) -> list[str]:
    """The SLURM job ids to cancel or query for these array tasks: their arrays'."""
    return sorted({j.split("_")[0] for j in job_ids}, key=int)


def in_queue(slurm_ids: Sequence[str]) -> list[str]:
    """Which of these SLURM jobs (or arrays' tasks) are still pending or running."""
    if not slurm_ids:
        return []
    out = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(slurm_ids), "-o", "%i"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def cancel(ids: list[str], wait_s: float = 60) -> list[str]:
    """Cancel these SLURM jobs (SLURM sends each SIGTERM: it checkpoints and marks its run
    KILLED) and wait until they have left the queue, `wait_s` at most; returns their ids."""
    if not ids:
        return []
    subprocess.run(["scancel", *ids], check=False)
    deadline = time.monotonic() + wait_s
    while in_queue(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    log.info(f"SLURM jobs {', '.join(ids)} were cancelled")
    return ids


def torch_threads(num_threads: int | None, slurm: SlurmJob | None, parallel: int) -> int:
    """num_threads if set; in a SLURM job the cores it was given; else this machine's cores
    shared among the `parallel` jobs a launcher runs at once."""
    if num_threads:
        return num_threads
    cores = len(os.sched_getaffinity(0))
    if slurm is not None and slurm.cpus:
        # Where SLURM does not pin the job to its cores (task/none), more threads than those
        # would fight the node's other jobs: measured 16x slower, 2 jobs x 2 threads on 2 cores.
        return max(1, min(cores, slurm.cpus))
    return max(1, cores // parallel)
