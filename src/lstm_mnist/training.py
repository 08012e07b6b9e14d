"""Train, validate and test the classifier the config describes, inside its tracked MLflow run."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist import report
from lstm_mnist.checkpoints import AtomicCheckpointIO
from lstm_mnist.cluster import torch_threads
from lstm_mnist.devices import gpu_slot
from lstm_mnist.display import one_line
from lstm_mnist.job import JobContext
from lstm_mnist.schema import validate
from lstm_mnist.stopping import early_stopping
from lstm_mnist.tracking import artifacts, tracked_run
from lstm_mnist.tracking.run import as_logged


def train(
    cfg: DictConfig, job: JobContext | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict[str, float | str]:
    """Fit on train, validate every `val_every` steps and at the end, test once; return the final
    val_/test_ metrics, the run id and where to see the run in the MLflow UI. `job` says where
    the run belongs (the entry point builds it); without one, a plain run into the config's
    store. `callbacks` are further Lightning callbacks: an Optuna trial's heartbeat and pruning
    (sweeping/optuna/callbacks.py), which the caller that knows the trial passes in.

    With `resume=<run id>`, continue that run from its last checkpoint, into the same MLflow run.
    """
    job = job or JobContext.plain(cfg)
    validate(cfg)
    threads = torch_threads(cfg.num_threads, job.slurm, job.parallel_jobs)
    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    datamodule.setup()  # before the MLflow run exists: a data error records no run
    configured = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    configured += early_stopping(cfg)

    with job_gpu(cfg, job) as gpu, tracked_run(cfg, job, threads, gpu) as run:
        model = build_model(cfg)
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            **({"devices": [gpu]} if gpu is not None else {}),
            logger=run.logger(),
            callbacks=[*configured, *run.callbacks(), *callbacks],
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=run.resume_from)
        if trainer.early_stopping_callback is not None:
            artifacts.log_early_stop(trainer.early_stopping_callback, trainer.global_step)
        if trainer.global_step % cfg.val_every:  # the last validation was before the last step
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = {k: as_logged(v) for k, v in trainer.callback_metrics.items()}  # test resets
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({k: as_logged(v) for k, v in trainer.callback_metrics.items()})

        if cfg.artifacts.pictures:
            artifacts.log_test_report(report.predict_all(model.model, datamodule.test_dataloader()))
        if cfg.artifacts.model:
            example, _ = next(iter(datamodule.test_dataloader()))
            artifacts.log_classifier(model.model, example[:8])
    return {**metrics, "run_id": run.run_id, "url": run.store.where_to_look(run.url)}


def build_model(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of conf/model; a network too large for memory says so in one line."""
    try:
        return instantiate(cfg.model)
    except InstantiationException as err:  # Hydra wraps what the constructor raised
        cause = err.__cause__ or err
        if "can't allocate memory" in str(cause) or isinstance(cause, torch.OutOfMemoryError):
            size = f"num_layers={cfg.num_layers} num_units={cfg.num_units}"
            raise MemoryError(
                f"{size}: the model does not fit in memory ({one_line(cause)})"
            ) from None
        raise cause from None


def job_gpu(cfg: DictConfig, job: JobContext) -> AbstractContextManager[int | None]:
    """The CUDA device a run on GPUs trains on: in a parallel sweep, a slot of its own on one of
    the visible GPUs (lstm_mnist/devices.py), else GPU 0; None on CPU."""
    if cfg.trainer.accelerator not in ("gpu", "cuda"):
        return nullcontext(None)
    if job.parallel_jobs == 1:
        return nullcontext(0)
    return gpu_slot(range(torch.cuda.device_count()), cfg.jobs_per_gpu)
