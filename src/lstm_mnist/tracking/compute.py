"""What runs cost: wall time, core-seconds and GPU-seconds. A run records its own when it ends
(run.py); for one still running (or killed before it could) it is estimated from its start and
the cores and GPUs its tags and params say it had. Torch-free: the sweeps command reads it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.entities import Run

from lstm_mnist.tracking import names


@dataclass(frozen=True)
class Compute:
    wall_s: float = 0.0
    core_s: float = 0.0
    gpu_s: float = 0.0

    def __add__(self, other: Compute) -> Compute:
        return Compute(
            self.wall_s + other.wall_s, self.core_s + other.core_s, self.gpu_s + other.gpu_s
        )

    @property
    def budgeted_s(self) -> float:
        """What a compute budget counts: GPU-seconds where GPUs were used, else core-seconds."""
        return self.gpu_s or self.core_s

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}{names.WALL_S}": self.wall_s,
            f"{prefix}{names.CORE_S}": self.core_s,
            f"{prefix}{names.GPU_S}": self.gpu_s,
        }

    def __str__(self) -> str:
        text = amount(self.core_s, "core")
        if self.gpu_s:
            text += f", {amount(self.gpu_s, 'GPU')}"
        return text


def amount(seconds: float, unit: str) -> str:
    """1234 core-s, 5.6 core-h."""
    if seconds < 3600:
        return f"{seconds:.0f} {unit}-s"
    return f"{seconds / 3600:.3g} {unit}-h"


def segment(wall_s: float, cores: int, gpus: int) -> Compute:
    """What `wall_s` seconds on `cores` cores and `gpus` GPUs cost."""
    return Compute(wall_s, wall_s * cores, wall_s * gpus)


def of_run(run: Run, now: float | None = None) -> Compute:
    """What the run cost: as recorded, or, while it runs (or if it died before recording it),
    its time since it started on the cores and GPUs it had."""
    metrics = run.data.metrics
    if names.WALL_S in metrics and run.info.status != "RUNNING":
        return Compute(*(metrics.get(k, 0.0) for k in names.COMPUTE))
    end = run.info.end_time / 1000 if run.info.end_time else (now or time.time())
    wall = max(0.0, end - run.info.start_time / 1000)
    processes = int(run.data.params.get("world_size", 1))
    threads = int(run.data.tags.get(names.TORCH_THREADS, 1))
    gpus = len(run.data.tags[names.GPU].split(",")) if run.data.tags.get(names.GPU) else 0
    return segment(wall, threads * processes, gpus)


def total(runs: list[Run], now: float | None = None) -> Compute:
    found = Compute()
    for run in runs:
        found += of_run(run, now)
    return found
