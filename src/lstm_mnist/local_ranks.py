"""Ranks 1.. of a DDP training on this machine, as processes rank 0 starts, hands their RankSpec
(ranks.py), watches and ends: a rank that died is named (`RankFailed`), none outlives training."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from lstm_mnist.ranks import RankFailed, RankSpec
from lstm_mnist.world import World


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


def watch_rank_0(poll_s: float = 1.0) -> None:
    """In a rank rank 0 started: exit as soon as rank 0 is gone (killed outright, it ends no
    one), instead of waiting for a collective to time out."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-rank-0").start()
