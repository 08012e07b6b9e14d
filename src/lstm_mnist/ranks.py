"""One DDP training as several processes, started from the job's own config, not its command line.

Lightning's `ddp` launcher starts the other ranks by running `sys.argv` again: under a Hydra
sweep each rank then starts the whole sweep again, with Optuna each asks a trial of its own, and
each records an MLflow run (Lightning #15737, hydra #2070, mlflow #11782). Here the job's
process is rank 0: it owns the run (the tracked run, its heartbeat, status and artifacts) and
starts the other ranks as fresh processes (local_ranks.py) that are handed the job's resolved
config, the run id and the checkpoint to resume from: a `RankSpec`. They record nothing;
Lightning is told the ranks exist (`RankEnvironment`, a public ClusterEnvironment) and launches
none.

In a SLURM job of several tasks (hydra.launcher.tasks_per_node), SLURM starts every rank: each
runs the job, rank 0 (SLURM_PROCID 0) owns the run as above and hands its spec to the others
through a file in the job's folder (`hand_over`, `receive`), which every node sees.

Rank 0 ends the others: they run in sessions of their own, so a terminal's Ctrl-C reaches rank 0
only, and an interrupt reaches all ranks at the same step through a collective
(checkpoints.CheckpointOnInterrupt). A rank that dies ends the training with a one-line reason
(`RankFailed`) as soon as rank 0 notices, or at the latest after `ddp_timeout_s`; a rank whose
rank 0 is gone stops within a second.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.environments import ClusterEnvironment

from lstm_mnist.world import World

LOCALHOST = "127.0.0.1"


class RankFailed(RuntimeError):
    """Another rank of the training died; the message says which and how."""


@dataclass(frozen=True)
class RankSpec:
    """What a rank process is told: everything it needs, nothing it must look up."""

    cfg: dict[str, Any]  # the job's config, resolved
    world: World
    local_rank: int
    node_rank: int
    main_address: str
    main_port: int
    timeout_s: float
    run_id: str  # rank 0's run: its checkpoint folder
    resume_from: str | None  # the checkpoint every rank continues from
    threads: int
    # What rank 0's extra callbacks (an Optuna trial's pruning) run on the other ranks: each
    # callback with a `for_other_ranks()` gives its follower, which receives rank 0's decisions.
    followers: tuple[Any, ...] = ()

    @property
    def global_rank(self) -> int:
        return self.node_rank * self.world.per_node + self.local_rank


class RankEnvironment(ClusterEnvironment):
    """Lightning's view of ranks this module (or SLURM) started: it launches no process."""

    def __init__(self, spec: RankSpec) -> None:
        self.spec = spec

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self.spec.main_address

    @property
    def main_port(self) -> int:
        return self.spec.main_port

    @staticmethod
    def detect() -> bool:
        return False

    def world_size(self) -> int:
        return self.spec.world.size

    def set_world_size(self, size: int) -> None:
        pass  # fixed by the spec

    def global_rank(self) -> int:
        return self.spec.global_rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self.spec.local_rank

    def node_rank(self) -> int:
        return self.spec.node_rank


def ddp_strategy(spec: RankSpec) -> Any:
    """Lightning's DDP strategy over the ranks `spec` belongs to (gloo on CPU, NCCL on GPUs);
    a collective that waits longer than `spec.timeout_s` fails the training."""
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(
        cluster_environment=RankEnvironment(spec),
        process_group_backend="nccl" if spec.world.accelerator == "gpu" else "gloo",
        timeout=timedelta(seconds=spec.timeout_s),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def handoff_file(job_dir: Path, slurm_id: str, restarts: int) -> Path:
    """Where rank 0 of a SLURM job's tasks leaves its RankSpec for the other tasks, per start."""
    return job_dir / f".rank-0-of-{slurm_id}-start-{restarts}.pkl"


def hand_over(spec: RankSpec, path: Path) -> None:
    """Rank 0 of a SLURM job: tell the other tasks, which SLURM started, the run and the rest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(spec))
    os.replace(tmp, path)  # whole or not at all


def receive(path: Path, timeout_s: float, poll_s: float = 0.2) -> RankSpec:
    """Another task of a SLURM job: rank 0's RankSpec, once it has started the run."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise RankFailed(f"rank 0 started no run within ddp_timeout_s={timeout_s:g} s ({path})")
        time.sleep(poll_s)
    return pickle.loads(path.read_bytes())
