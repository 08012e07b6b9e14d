"""Train, validate and test the classifier the config describes, inside its tracked MLflow run:
in one process, or as rank 0 of a DDP training whose other ranks (ranks.py) run `train_rank`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lstm_mnist import report
from lstm_mnist.checkpoints import AtomicCheckpointIO, checkpoint_callbacks
from lstm_mnist.cluster import SlurmJob, torch_threads
from lstm_mnist.devices import gpu_slots
from lstm_mnist.display import one_line
from lstm_mnist.job import JobContext
from lstm_mnist.local_ranks import local_ranks
from lstm_mnist.phases import PhaseClock
from lstm_mnist.ranks import (
    LOCALHOST,
    RankSpec,
    ddp_strategy,
    free_port,
    hand_over,
    handoff_file,
    receive,
)
from lstm_mnist.schema import validate
from lstm_mnist.stopping import early_stopping
from lstm_mnist.tracking import artifacts, identity, tracked_run
from lstm_mnist.tracking.run import as_logged
from lstm_mnist.world import World, world_of


def train(
    cfg: DictConfig, job: JobContext | None = None, callbacks: Sequence[pl.Callback] = ()
) -> dict[str, float | str]:
    """Fit on train, validate every `val_every` steps and at the end, test once; return the final
    val_/test_ metrics, the run id and where to see the run in the MLflow UI. `job` says where
    the run belongs (the entry point builds it); without one, a plain run into the config's
    store. `callbacks` are further Lightning callbacks: an Optuna trial's heartbeat and pruning
    (sweeping/optuna/callbacks.py), which the caller that knows the trial passes in.

    With `resume=<run id>`, continue that run from its last checkpoint, into the same MLflow run.
    With several devices (world.py), this process is rank 0 and starts the others.
    """
    job = job or JobContext.plain(cfg)
    validate(cfg)
    slurm = job.slurm if job.slurm is not None and job.slurm.tasks > 1 else None  # its ranks
    world = world_of(  # a bad flag: before any run
        cfg.trainer, torch.cuda.device_count(), slurm.tasks if slurm else None
    )
    threads = torch_threads(cfg.num_threads, job.slurm, job.parallel_jobs * world.per_node)
    if slurm is not None and slurm.task != 0:
        return follow_rank_0(cfg, slurm, threads)
    job_dir = Path(cfg.trainer.default_root_dir)
    clock = PhaseClock(job.started)
    with (
        job_devices(cfg, job, world) as world,
        local_ranks(world, job_dir, by_slurm=slurm is not None) as ranks,
    ):
        clock.done("startup")
        with clock.phase("data"):
            datamodule = prepared_data(cfg, threads)  # a data error records no run either
        with tracked_run(cfg, job, threads, world, clock) as run:
            spec = RankSpec(
                cfg=OmegaConf.to_container(cfg, resolve=True),
                world=world,
                local_rank=0,
                node_rank=0,
                main_address=slurm.main_address() if slurm else LOCALHOST,
                main_port=slurm.main_port if slurm else free_port() if world.distributed else 0,
                timeout_s=cfg.ddp_timeout_s,
                run_id=run.run_id,
                resume_from=str(run.resume_from) if run.resume_from else None,
                threads=threads,
                followers=tuple(c.for_other_ranks() for c in callbacks if followed(c)),
            )
            if slurm is not None:  # SLURM started the other ranks
                hand_over(spec, handoff_file(job_dir, slurm.id, slurm.restarts))
            if ranks is not None:
                ranks.hand_over(spec)
            with ranks.watched() if ranks is not None else nullcontext():
                with clock.phase("fit"):
                    trainer, model = build_trainer(
                        cfg, spec, logger=run.logger(), callbacks=[*run.callbacks(), *callbacks]
                    )
                metrics = fit_and_test(cfg, trainer, model, datamodule, run.resume_from, clock)

            with clock.phase("report"):
                if cfg.artifacts.pictures:
                    predictions = report.predict_all(model.model, datamodule.whole_split("test"))
                    artifacts.log_test_report(predictions)
            with clock.phase("model"):
                if cfg.artifacts.model:
                    example, _ = next(iter(datamodule.whole_split("test")))
                    artifacts.log_classifier(model.model, example[:8])
    return {**metrics, "run_id": run.run_id, "url": run.store.where_to_look(run.url)}


def train_rank(spec: RankSpec) -> None:
    """Rank 1.. of a DDP training that rank 0 (`train`) started: the same fit, validations and
    test at the same steps, recording nothing (rank 0's Trainer logs the reduced metrics)."""
    cfg = OmegaConf.create(spec.cfg)
    knobs = {k: v for k, v in identity.run_params(cfg).items() if "." not in k}
    print(  # in its log: the knobs it trains with, which rank 0's run records as params
        f"rank {spec.global_rank} of {spec.world.size}: run {spec.run_id}, {json.dumps(knobs)}",
        flush=True,
    )
    datamodule = prepared_data(cfg, spec.threads)
    ckpt_dir = Path(cfg.ckpt_dir) / spec.run_id
    trainer, model = build_trainer(
        cfg,
        spec,
        logger=False,
        callbacks=[*checkpoint_callbacks(ckpt_dir, cfg.val_every), *spec.followers],
    )
    fit_and_test(cfg, trainer, model, datamodule, spec.resume_from, PhaseClock(time.time()))


def followed(callback: pl.Callback) -> bool:
    """Whether the other ranks run a follower of `callback` (its decisions are rank 0's)."""
    return callable(getattr(callback, "for_other_ranks", None))


def follow_rank_0(cfg: DictConfig, slurm: SlurmJob, threads: int) -> dict[str, float | str]:
    """Rank 1.. of a SLURM job of several tasks: train as rank 0 says (`train_rank`); the job's
    result is rank 0's, so this one returns none."""
    job_dir = Path(cfg.trainer.default_root_dir)
    spec = receive(handoff_file(job_dir, slurm.id, slurm.restarts), cfg.ddp_timeout_s)
    spec = replace(spec, local_rank=slurm.local_task, node_rank=slurm.node, threads=threads)
    try:
        train_rank(spec)
    except optuna.TrialPruned:  # at the same validation as rank 0, which records it
        pass
    return {}


def prepared_data(cfg: DictConfig, threads: int) -> pl.LightningDataModule:
    torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)  # the same on every rank: one epoch order
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    datamodule.setup()
    return datamodule


def build_trainer(
    cfg: DictConfig, spec: RankSpec, logger: Any, callbacks: list[pl.Callback]
) -> tuple[pl.Trainer, pl.LightningModule]:
    """The model and the Trainer of one rank (or the only process), on the spec's devices."""
    model = build_model(cfg)
    configured = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    world = spec.world
    distributed = {"strategy": ddp_strategy(spec), "use_distributed_sampler": False}
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        **world.trainer_flags(),
        **(distributed if world.distributed else {"strategy": "auto"}),
        logger=logger,
        callbacks=[*configured, *early_stopping(cfg), *callbacks],
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, model


def fit_and_test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    resume_from: Path | str | None,
    clock: PhaseClock,
) -> dict[str, float]:
    """Fit, validate once more if the last step was not validated, test; the final val_ and
    test_ metrics (over the whole splits, reduced across ranks). `clock` times each."""
    with clock.phase("fit"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        if trainer.early_stopping_callback is not None and trainer.is_global_zero:
            artifacts.log_early_stop(trainer.early_stopping_callback, trainer.global_step)
    with clock.phase("validate"):
        if trainer.global_step % cfg.val_every:  # the last validation was before the last step
            trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: as_logged(v) for k, v in trainer.callback_metrics.items()}  # test resets
    with clock.phase("test"):
        trainer.test(model, datamodule=datamodule, verbose=False)
    metrics.update({k: as_logged(v) for k, v in trainer.callback_metrics.items()})
    return metrics


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


@contextmanager
def job_devices(cfg: DictConfig, job: JobContext, world: World) -> Iterator[World]:
    """The World a job trains on: on GPUs in a parallel sweep, `world.per_node` slots of its own
    on the visible GPUs (lstm_mnist/devices.py), else the devices the flags name."""
    if world.accelerator != "gpu" or job.parallel_jobs == 1:
        yield world
        return
    with gpu_slots(range(torch.cuda.device_count()), cfg.jobs_per_gpu, world.per_node) as gpus:
        yield replace(world, devices=tuple(gpus))
