"""Detached sweeps (detach=true, hydra/launcher=slurm): the command submits the sweep's jobs as
one SLURM job array and returns; nothing waits for them. Each job, as it ends, leaves a mark in
the sweep's folder (which every node sees, as submitit's own files need); the job whose mark
completes the set closes the sweep. Marks are created, then counted, so the last of two jobs
ending at once always counts them all; the closing itself is claimed by an exclusive create, so
only one of those two writes the summary.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lstm_mnist.job import JobContext

log = logging.getLogger(__name__)

ENDS = ".sweep-ends"  # <sweep dir>/.sweep-ends/<submission>/<job num>: one mark per ended job
CLOSER = "closed-by"  # beside the marks: created by the one job that closes the sweep


def submit(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Submit the jobs as one SLURM job array through hydra/launcher=slurm (submitit) without
    waiting for them, as its `launch` does up to where it waits; returns their SLURM ids
    (<array>_<task>). Each job runs as in an attached sweep: same callable, same requeue."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in queue_keys else f"slurm_{k}": v for k, v in params.items()}
    )
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    state = Singleton.get_state()
    arguments = [
        (list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", state)
        for num, overrides in enumerate(job_overrides)
    ]
    jobs = executor.map_array(launcher, *zip(*arguments, strict=True))
    return [job.job_id for job in jobs]


def job_ended(job: JobContext) -> bool:
    """Called by each job of a detached sweep as it ends (trained, failed, or skipped by a
    budget; not when interrupted: a requeued job ends later). Marks it ended and, if it is the
    last of its submission, closes the sweep; returns whether it did."""
    from lstm_mnist.sweeping.closing import finish_sweep

    place = job.sweep
    assert place is not None and place.detached and place.dir is not None
    ends = Path(place.dir) / ENDS / str(place.submission)
    ends.mkdir(parents=True, exist_ok=True)
    (ends / str(place.job_num)).touch()
    if sum(1 for p in ends.iterdir() if p.name.isdigit()) < (place.jobs or 0):
        return False
    try:
        claim = os.open(ends / CLOSER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # another job, ending at the same moment, closes it
        return False
    with os.fdopen(claim, "w") as f:
        f.write(f"job {place.job_num} on {socket.gethostname()}, pid {os.getpid()}\n")
    for line in finish_sweep(job.sweep_run()):
        log.info(line)
    return True
