"""A training loader that resumes exactly where a checkpoint left it: the same epoch order, the
same next batch, the same random stream for dropout. Lightning stores its `state_dict` in every
checkpoint and hands it back on resume (its "stateful dataloader" interface), so a run interrupted
and resumed ends with the same weights and metrics as the run never interrupted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader


def rng_states() -> dict[str, Any]:
    """The global random streams training draws from: the CPU's, and the GPUs' once used."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableBatches:
    """An epoch's batches from `batches` (a shuffling batch sampler, which draws its order from
    the global random stream when the epoch starts), able to start again mid-epoch: it keeps the
    random state the epoch's order was drawn from and how far training got."""

    def __init__(self, batches: Iterable, datamodule: pl.LightningDataModule) -> None:
        self.batches, self.datamodule = batches, datamodule
        self.resume: dict[str, Any] | None = None
        self.epoch_rng: dict[str, Any] = {}
        self.start_step = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        # Runs when the epoch's first batch is asked for, as the sampler it wraps would.
        resume, self.resume = self.resume, None
        mid_epoch = resume is not None and resume["consumed"] < len(self)
        if resume is not None:  # the epoch's order, or for a new epoch the state training left
            set_rng_states(resume["epoch_rng"] if mid_epoch else resume["rng"])
        self.epoch_rng = rng_states()
        order = list(self.batches)  # the epoch's one draw from the global stream
        skip = 0
        if mid_epoch:
            set_rng_states(resume["rng"])  # where training left the stream (dropout's)
            skip = resume["consumed"]
        self.start_step = self.datamodule.trainer.global_step - skip
        yield from order[skip:]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch_rng": self.epoch_rng,
            "rng": rng_states(),
            "consumed": self.datamodule.trainer.global_step - self.start_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resume = state


class ResumableLoader(DataLoader):
    """A DataLoader over ResumableBatches with Lightning's stateful-dataloader interface."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
