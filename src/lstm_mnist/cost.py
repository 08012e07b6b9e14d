"""What a model costs besides its accuracy, recorded on every run so that sweeps can trade it
off (sweeps/pareto.yaml): its parameter count and its inference latency per image."""

from __future__ import annotations

import statistics
import time

import pytorch_lightning as pl
import torch


class ModelCost(pl.Callback):
    """Logs `num_params` and `latency_ms` when testing ends: the median wall time of `reps`
    forward passes over one test image (batch size 1, as a served request), in eval mode on the
    trainer's device, after `warmup` untimed passes."""

    def __init__(self, reps: int = 50, warmup: int = 5) -> None:
        self.reps, self.warmup = reps, warmup

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx, *args
    ) -> None:
        if batch_idx == 0:
            self.image = batch[0][:1].detach().clone()

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log(
            "num_params", float(sum(p.numel() for p in pl_module.parameters())), rank_zero_only=True
        )
        latency = latency_ms(pl_module, self.image, self.reps, self.warmup)
        pl_module.log("latency_ms", latency, rank_zero_only=True)  # rank 0's, unsynced


def latency_ms(model: torch.nn.Module, image: torch.Tensor, reps: int, warmup: int) -> float:
    """Median milliseconds of one forward pass of `model` on `image`."""
    cuda = image.device.type == "cuda"
    times = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            start = time.perf_counter()
            model(image)
            if cuda:  # kernels run asynchronously: wait for them
                torch.cuda.synchronize(image.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
