"""GPU checks (`pytest -m gpu`); they skip where torch sees no CUDA device."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lstm_mnist.data import MNISTDataModule
from lstm_mnist.module import ClassifierModule

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_batches_come_out_on_the_gpu(device):
    dm = MNISTDataModule(download=False, device=device)
    dm.setup()
    assert all(ds.images.is_cuda and ds.labels.is_cuda for ds in dm.splits.values())
    x, y = next(iter(dm.train_dataloader()))
    assert x.is_cuda and y.is_cuda
    assert x.shape == (100, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 5_000
    assert all(b[0].is_cuda for b in dm.test_dataloader())
    dm.teardown("fit")  # back on the host, as Lightning puts the model back
    assert not dm.splits["test"].images.is_cuda


def test_tiny_fit_on_the_gpu_keeps_the_data_there_and_learns():
    pl.seed_everything(0)
    dm = MNISTDataModule(download=False, batch_size=64, eval_batch_size=2500, device="auto")
    model = ClassifierModule(num_units=32, num_layers=1, dropout=0.0, lr=3e-3)
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch[0].device.type)

    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=150,
        limit_val_batches=1,
        val_check_interval=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Spy()],
    )
    trainer.fit(model, datamodule=dm)
    assert set(seen) == {"cuda"} and len(seen) == 150
    assert trainer.callback_metrics["val_acc"] > 0.5
    assert not dm.splits["train"].images.is_cuda  # teardown moved it back
