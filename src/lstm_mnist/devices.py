"""One GPU per job, or `jobs_per_gpu` jobs per GPU, for the parallel jobs of a sweep on one
machine. Hydra's joblib launcher gives no job a device of its own (its jobs would all train on
GPU 0), so each job claims a free slot on a visible GPU with a file lock, trains on that GPU and
frees the slot when it ends; the OS frees it if the job is killed. Slots are handed out round
robin (every GPU gets one job before any gets two), and a job waits while all are taken.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

# Machine-wide, so that two sweeps started side by side share the GPUs too.
LOCK_DIR = Path(tempfile.gettempdir()) / "lstm-mnist-gpu-slots"


@contextmanager
def gpu_slot(
    gpus: Sequence[int], jobs_per_gpu: int, lock_dir: Path = LOCK_DIR, poll_s: float = 1.0
) -> Iterator[int]:
    """Hold a slot on one of `gpus` (CUDA device indices) for the duration; yield its GPU."""
    if not gpus:
        raise ValueError("no GPU is visible to share among the jobs (CUDA_VISIBLE_DEVICES?)")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu} is invalid: must be an integer >= 1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = [(gpu, k) for k in range(jobs_per_gpu) for gpu in gpus]
    while True:
        for gpu, k in slots:
            lock = FileLock(lock_dir / f"gpu{gpu}-slot{k}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield gpu
            finally:
                lock.release()
            return
        time.sleep(poll_s)
