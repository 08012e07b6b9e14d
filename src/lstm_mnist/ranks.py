"""One DDP training as several processes, started from the job's own config, not its command line.

Lightning's `ddp` launcher starts the other ranks by running `sys.argv` again: under a Hydra
sweep each rank then starts the whole sweep again, with Optuna each asks a trial of its own, and
each records an MLflow run (Lightning #15737, hydra #2070, mlflow #11782). Here the job's
process is rank 0: it owns the run (the tracked run, its heartbeat, status and artifacts) and
starts the other ranks as fresh processes that are handed the job's resolved config, the run id
and the checkpoint to resume from (`python -m lstm_mnist.cli.rank_command`, its RankSpec on
stdin). They record
nothing; Lightning is told the ranks exist (`RankEnvironment`, a public ClusterEnvironment) and
launches none.

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
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    pruned_by_rank_0: bool  # an Optuna trial: rank 0 asks the pruner, every rank follows

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


class LocalRanks:
    """Ranks 1.. of a DDP training on this node, started by rank 0 as early as it knows it needs
    them: each imports torch and Lightning meanwhile, then waits for its RankSpec on stdin
    (`hand_over`, once the run exists). Each logs to `log_dir/rank-N.log`."""

    def __init__(self, count: int, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.ranks: dict[int, tuple[subprocess.Popen, Path]] = {}
        for rank in range(1, count):
            log = log_dir / f"rank-{rank}.log"
            with open(log, "w") as out:
                self.ranks[rank] = (
                    subprocess.Popen(
                        [sys.executable, "-m", "lstm_mnist.cli.rank_command"],
                        stdin=subprocess.PIPE,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # the terminal's Ctrl-C reaches rank 0 only
                    ),
                    log,
                )

    def hand_over(self, rank_0: RankSpec) -> None:
        for rank, (process, _) in self.ranks.items():
            try:
                process.stdin.write(pickle.dumps(replace(rank_0, local_rank=rank)))
                process.stdin.close()
            except BrokenPipeError:  # it died starting: watched() names it
                pass

    @contextmanager
    def watched(self) -> Iterator[None]:
        """If the block fails on a collective while a rank has died, raise RankFailed naming
        it (gloo and NCCL raise RuntimeError; rank 0's own errors are other exceptions)."""
        try:
            yield
        except RuntimeError as err:
            if (dead := first_dead(self.ranks, wait_s=2)) is not None:
                raise RankFailed(dead) from err
            raise

    def end(self, wait_s: float = 30) -> None:
        """Wait for the ranks to end by themselves (they stop at the same step as rank 0, or at
        once if never handed a spec), then kill any left: no rank outlives the training."""
        deadline = time.monotonic() + wait_s
        for process, _ in self.ranks.values():
            if process.stdin and not process.stdin.closed:
                process.stdin.close()  # never handed over: it ends
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        import torch.distributed

        # Lightning leaves the process group up, and the next job of a sweep run in this
        # process would join this one's, whose other ranks are gone.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@contextmanager
def local_ranks(world: World, log_dir: Path, by_slurm: bool) -> Iterator[LocalRanks | None]:
    """For the block, ranks 1.. of a DDP training on this machine; None for one process, or
    where SLURM starts every rank (`by_slurm`)."""
    if not world.distributed or by_slurm:
        yield None
        return
    ranks = LocalRanks(world.per_node, log_dir)
    try:
        yield ranks
    except BaseException:
        ranks.end(wait_s=10)  # a rank still waiting on rank 0, which has stopped: not for long
        raise
    ranks.end()


def first_dead(ranks: dict[int, tuple[subprocess.Popen, Path]], wait_s: float) -> str | None:
    """How the first rank that ended with an error ended, waiting up to `wait_s` for one."""
    deadline = time.monotonic() + wait_s
    while True:
        for rank, (process, log) in sorted(ranks.items()):
            code = process.poll()
            if code is not None and code != 0:
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                return f"rank {rank} ended with {how} ({last_line(log)}); its log: {log}"
        if time.monotonic() > deadline or all(p.poll() is not None for p, _ in ranks.values()):
            return None
        time.sleep(0.1)


def last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "nothing logged"


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


def watch_rank_0(poll_s: float = 1.0) -> None:
    """In a rank rank 0 started: exit as soon as rank 0 is gone (killed outright, it ends no
    one), instead of waiting for a collective to time out."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-rank-0").start()
