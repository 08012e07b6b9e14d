"""GPUs of their own for the parallel jobs of a sweep on one machine: `jobs_per_gpu` jobs share
each GPU, and a job training on several (`gpus_per_job`, DDP) claims that many. Hydra's joblib
launcher gives no job a device of its own (its jobs would all train on GPU 0), so each job
claims free slots on distinct visible GPUs with file locks, trains on those GPUs and frees the
slots when it ends; the OS frees them if the job is killed. Slots are handed out round robin
(every GPU gets one job before any gets two), and a job waits while too few are free.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

# Machine-wide, so that two sweeps started side by side share the GPUs too.
LOCK_DIR = Path(tempfile.gettempdir()) / "lstm-mnist-gpu-slots"


@contextmanager
def gpu_slots(
    gpus: Sequence[int],
    jobs_per_gpu: int,
    count: int = 1,
    lock_dir: Path = LOCK_DIR,
    poll_s: float = 1.0,
) -> Iterator[list[int]]:
    """Hold a slot on each of `count` distinct GPUs out of `gpus` (CUDA device indices) for the
    duration; yield those GPUs."""
    gpus = list(gpus)
    if not gpus:
        raise ValueError("no GPU is visible to share among the jobs (CUDA_VISIBLE_DEVICES?)")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu} is invalid: must be an integer >= 1")
    if not 1 <= count <= len(gpus):
        raise ValueError(
            f"gpus_per_job={count} is invalid: must be an integer in [1, {len(gpus)}]"
            f" ({len(gpus)} GPUs are visible)"
        )
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = [(gpu, k) for k in range(jobs_per_gpu) for gpu in gpus]
    while True:
        held = ExitStack()
        taken: list[int] = []
        for gpu, k in slots:
            if gpu in taken:
                continue
            lock = FileLock(lock_dir / f"gpu{gpu}-slot{k}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            held.callback(lock.release)
            taken.append(gpu)
            if len(taken) == count:
                break
        if len(taken) == count:
            with held:
                yield taken
            return
        held.close()  # too few free: let the others have them meanwhile
        time.sleep(poll_s)


@contextmanager
def gpu_slot(
    gpus: Sequence[int], jobs_per_gpu: int, lock_dir: Path = LOCK_DIR, poll_s: float = 1.0
) -> Iterator[int]:
    """Hold a slot on one of `gpus` for the duration; yield its GPU."""
    with gpu_slots(gpus, jobs_per_gpu, 1, lock_dir, poll_s) as (gpu,):
        yield gpu
