"""The LightningModule: the classifier, its loss, its metrics and its optimiser."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lstm_mnist.model import RNNClassifier


class ClassifierModule(pl.LightningModule):
    """Trains `RNNClassifier` with cross-entropy and Adam, at a constant lr or on a one-cycle
    schedule peaking at lr (`lr_schedule`); `net` are the network's own arguments (model.py).

    Logs train_loss/train_acc (per batch, at the trainer's log interval), val_loss/val_acc and
    test_loss/test_acc (over the whole split, all ranks' shards under DDP).
    """

    def __init__(self, lr: float = 1e-3, lr_schedule: str = "constant", **net: Any) -> None:
        super().__init__()
        # Plain numbers only, so checkpoints load with weights_only.
        self.save_hyperparameters(logger=False)
        self.model = RNNClassifier(**net)
        classes = self.model.num_classes
        self.train_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(classes, average="micro", validate_args=False)
        # Metric objects, not plain numbers: under DDP each rank sees a shard of the split and
        # the epoch's value is reduced over all of them (sums of samples, not a mean of means).
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):  # stop here: every later step and checkpoint would be garbage
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.global_step + 1}; training diverged"
            )
        self.train_acc(logits, y)
        # "step" is Lightning's x-axis key: steps completed (1..max_steps), not the 0-based index.
        self.log("step", self.global_step + 1.0)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        x, y = batch
        logits = self(x)
        accuracy, loss = (
            (self.val_acc, self.val_loss) if split == "val" else (self.test_acc, self.test_loss)
        )
        accuracy(logits, y)
        loss(F.cross_entropy(logits, y), weight=len(y))
        self.log("step", float(self.global_step), rank_zero_only=True)  # the same on every rank
        self.log(f"{split}_loss", loss, batch_size=len(y))
        self.log(f"{split}_acc", accuracy, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer | OptimizerLRSchedulerConfig:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        # One-cycle: warm up to lr, then anneal to ~0 by the last step; reaches a given
        # accuracy in far fewer steps than a constant lr (experiment configs fast and best).
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.hparams.lr, steps)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
