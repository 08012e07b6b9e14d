"""Checkpoints that survive interrupts and full disks, and finding the one to resume from.

Each run keeps its checkpoints in a stable folder, `<ckpt_dir>/<MLflow run id>/step=N.ckpt`
(not Hydra's timestamped output folder), so `resume=<run id>` finds them.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO

from lstm_mnist.interrupts import Interrupted, handled, noted

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync, then rename: a crash or a full disk
    never leaves a truncated checkpoint under a name that resume would load."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        buffer = io.BytesIO()  # serialise first: a failed write then raises a plain OSError
        torch.save(checkpoint, buffer)
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:  # disk full, read-only folder...: name what could not be written
            tmp.unlink(missing_ok=True)
            raise OSError(err.errno, f"cannot write checkpoint {path}: {err.strerror}") from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class CheckpointOnInterrupt(pl.Callback):
    """Ctrl-C, SIGTERM, SIGHUP or SIGUSR2 during training: finish the current step, checkpoint
    it, then stop by raising Interrupted. A second signal stops at once, but for a repeated
    SIGHUP: a closing terminal sends it to the whole command and a sweep passes it on to its
    workers too, and no one is there to ask for haste. Under DDP the ranks agree after
    every step on whether any was signalled (one tiny all-reduce), so that all checkpoint and
    stop at the same step: a signal to rank 0 alone stops the whole training."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath
        self.signum: int | None = None
        self.saved = False

    def _note(self, signum: int, frame: object) -> None:
        noted(signum)
        if self.signum is not None:
            if signum == signal.SIGHUP:
                return
            raise Interrupted(signum)
        self.signum = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning puts back the handlers it found when fit ends. SIGUSR2: submitit's warning
        # in a SLURM job that its time is nearly up (the job requeues itself once checkpointed).
        for signum in (*handled(), signal.SIGUSR2):
            signal.signal(signum, self._note)

    def signalled(self, trainer: pl.Trainer, device: torch.device) -> int | None:
        """The signal this rank, or under DDP any rank, was sent."""
        if trainer.world_size == 1:
            return self.signum
        mine = torch.tensor(self.signum or 0, device=device)
        return int(trainer.strategy.reduce(mine, reduce_op="max")) or None

    # Checkpoint at the end of the step, as ModelCheckpoint does (the state Lightning resumes
    # from cleanly), but stop only at the start of the next one: Lightning sends a step's
    # metrics to MLflow after on_train_batch_end, and resume must not miss them.
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.saved:
            return
        # Not assigned to self.signum unless a rank was signalled: a signal that comes while the
        # all-reduce waits is noted by _note as it returns, and must wait for the next step's
        # agreement rather than be overwritten (Ctrl-C to a DDP run was lost that way).
        agreed = self.signalled(trainer, pl_module.device)
        if agreed is not None:
            self.signum = agreed
            trainer.save_checkpoint(self.dirpath / f"step={trainer.global_step}.ckpt")
            self.saved = True

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.saved:
            raise Interrupted(self.signum)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum is not None:  # a signal during the very last step
            if not self.saved:
                trainer.save_checkpoint(self.dirpath / f"step={trainer.global_step}.ckpt")
            raise Interrupted(self.signum)


def checkpoint_callbacks(dirpath: Path, every_n_steps: int) -> list[pl.Callback]:
    """A run's checkpoints, on every rank of a DDP training (saving is collective; rank 0
    writes): one every `every_n_steps` (the newest only: resume needs no other), one on
    Ctrl-C/SIGTERM/SIGHUP."""
    return [
        ModelCheckpoint(
            dirpath=dirpath,
            filename="step={step:.0f}",
            auto_insert_metric_name=False,
            every_n_train_steps=every_n_steps,
            save_top_k=1,
            enable_version_counter=False,
        ),
        CheckpointOnInterrupt(dirpath),
    ]


def checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"step=(\d+)\.ckpt", path.name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(dirpath: Path) -> Path | None:
    """The newest checkpoint in `dirpath` that loads; empty or unreadable ones are skipped with a
    warning, never loaded."""
    for path in sorted(dirpath.glob("step=*.ckpt"), key=checkpoint_step, reverse=True):
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty file")
            torch.load(path, map_location="cpu", weights_only=True)
            return path
        except Exception as err:
            log.warning(f"skipping checkpoint {path}: unreadable ({err})")
    return None
