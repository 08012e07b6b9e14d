"""Train, validate and test the classifier the config describes, inside its tracked MLflow run."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist import report
from lstm_mnist.checkpoints import AtomicCheckpointIO
from lstm_mnist.config import validate
from lstm_mnist.devices import gpu_slot
from lstm_mnist.stopping import early_stopping
from lstm_mnist.tracking import record
from lstm_mnist.tracking.run import as_logged, tracked_run
from lstm_mnist.tracking.sweeper import parallel_jobs
from lstm_mnist.trial import trial_callbacks


def train(cfg: DictConfig) -> dict[str, float | str]:
    """Fit on train, validate every `val_every` steps and at the end, test once; return the final
    val_/test_ metrics, the run id and where to see the run in the MLflow UI.

    With `resume=<run id>`, continue that run from its last checkpoint, into the same MLflow run.
    """
    validate(cfg)
    torch.set_num_threads(thread_count(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    datamodule.setup()  # before the MLflow run exists: a data error records no run
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks += early_stopping(cfg)

    with job_gpu(cfg) as gpu, tracked_run(cfg, gpu) as run:
        model = build_model(cfg)
        trainer: pl.Trainer = instantiate(
            cfg.trainer,
            **({"devices": [gpu]} if gpu is not None else {}),
            logger=run.logger(),
            callbacks=callbacks + run.callbacks() + trial_callbacks(cfg),
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=run.resume_from)
        if trainer.early_stopping_callback is not None:
            record.log_early_stop(trainer.early_stopping_callback, trainer.global_step)
        if trainer.global_step % cfg.val_every:  # the last validation was before the last step
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = {k: as_logged(v) for k, v in trainer.callback_metrics.items()}  # test resets
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({k: as_logged(v) for k, v in trainer.callback_metrics.items()})

        if cfg.artifacts.pictures:
            record.log_test_report(report.predict_all(model.model, datamodule.test_dataloader()))
        if cfg.artifacts.model:
            example, _ = next(iter(datamodule.test_dataloader()))
            record.log_classifier(model.model, example[:8])
    return {**metrics, "run_id": run.run_id, "url": run.store.where_to_look(run.url)}


def build_model(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of conf/model; a network too large for memory says so in one line."""
    try:
        return instantiate(cfg.model)
    except InstantiationException as err:  # Hydra wraps what the constructor raised
        cause = err.__cause__ or err
        if "can't allocate memory" in str(cause) or isinstance(cause, torch.OutOfMemoryError):
            size = f"num_layers={cfg.num_layers} num_units={cfg.num_units}"
            reason = " ".join(str(cause).split())
            raise MemoryError(f"{size}: the model does not fit in memory ({reason})") from None
        raise cause from None


def job_gpu(cfg: DictConfig) -> AbstractContextManager[int | None]:
    """The CUDA device a run on GPUs trains on: in a parallel sweep, a slot of its own on one of
    the visible GPUs (lstm_mnist/devices.py), else GPU 0; None on CPU."""
    if cfg.trainer.accelerator not in ("gpu", "cuda"):
        return nullcontext(None)
    n_jobs = parallel_jobs(HydraConfig.get().launcher) if HydraConfig.initialized() else 1
    if n_jobs == 1:
        return nullcontext(0)
    return gpu_slot(range(torch.cuda.device_count()), cfg.jobs_per_gpu)


def thread_count(cfg: DictConfig) -> int:
    """num_threads; in a SLURM job the cores it was given; else this machine's cores shared
    among a parallel sweep's jobs."""
    if cfg.num_threads:
        return cfg.num_threads
    cores = len(os.sched_getaffinity(0))
    if allotted := os.environ.get("SLURM_CPUS_PER_TASK"):
        # Where SLURM does not pin the job to its cores (task/none), more threads than those
        # would fight the node's other jobs: measured 16x slower, 2 jobs x 2 threads on 2 cores.
        return max(1, min(cores, int(allotted)))
    n_jobs = parallel_jobs(HydraConfig.get().launcher) if HydraConfig.initialized() else 1
    return max(1, cores // n_jobs)
