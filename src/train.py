"""Train, validate and test the stacked-LSTM classifier; record the run in MLflow.

python src/train.py                          # the reference recipe
python src/train.py -m num_layers=1,2,3      # a sweep: one MLflow run per job
python src/train.py -m sweeps=layers        # a named sweep from sweeps/ (grid, optuna, ...)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
import mlflow
import optuna
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from lstm_mnist import report
from lstm_mnist.checkpoints import (
    AtomicCheckpointIO,
    CheckpointOnInterrupt,
    Interrupted,
    latest_checkpoint,
    raise_interrupted,
)
from lstm_mnist.config import one_line, validate
from lstm_mnist.data import DataError
from lstm_mnist.pruning import OptunaPruning, optuna_trial
from lstm_mnist.store import Heartbeat, mark_stale_runs, prepare_store
from lstm_mnist.sweep import default_storage, parallel_jobs
from lstm_mnist.tracking import (
    log_classifier,
    log_config,
    log_test_report,
    run_name,
    run_params,
    run_tags,
)


def resume_point(cfg: DictConfig) -> Path:
    """The checkpoint to resume run `cfg.resume` from; the config must be the run's own."""
    client = mlflow.MlflowClient(cfg.logger.tracking_uri)
    try:
        run = client.get_run(cfg.resume)
    except mlflow.MlflowException as err:
        raise ValueError(f"resume={cfg.resume}: no such run in the store") from err
    if run.info.status == "FINISHED":
        raise ValueError(f"resume={cfg.resume}: that run has FINISHED; nothing to resume")
    for key, value in run_params(cfg).items():
        if run.data.params.get(key, str(value)) != str(value)[:250]:
            raise ValueError(
                f"resume={cfg.resume}: {key}={value} here but {run.data.params[key]} in that run;"
                f" repeat its overrides: {run.data.tags.get('overrides', '')}"
            )
    path = latest_checkpoint(Path(cfg.ckpt_dir) / cfg.resume)
    if path is None:
        raise ValueError(
            f"resume={cfg.resume}: no usable checkpoint in {cfg.ckpt_dir}/{cfg.resume}"
        )
    return path


def thread_count(cfg: DictConfig) -> int:
    """num_threads, or this machine's cores shared among a parallel sweep's jobs."""
    if cfg.num_threads:
        return cfg.num_threads
    n_jobs = parallel_jobs(HydraConfig.get().launcher) if HydraConfig.initialized() else 1
    return max(1, len(os.sched_getaffinity(0)) // n_jobs)


def train(cfg: DictConfig) -> dict[str, float | str]:
    """Fit on train, validate every `val_every` steps and at the end, test once; return metrics.

    With `resume=<run id>`, continue that run from its last checkpoint, into the same MLflow run.
    """
    validate(cfg)
    torch.set_num_threads(thread_count(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()  # before the MLflow run exists: a data error records no run
    experiment_id = prepare_store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    mark_stale_runs(cfg.logger.tracking_uri, experiment_id, cfg.stale_after_s)
    ckpt_path = resume_point(cfg) if cfg.resume else None
    logger = instantiate(cfg.logger, run_name=run_name(), tags=run_tags(cfg), run_id=cfg.resume)
    try:
        if cfg.resume:
            logger.experiment.update_run(cfg.resume, status="RUNNING")
        logger.log_hyperparams(run_params(cfg))
        log_config(logger, cfg)
        model, metrics = fit_and_test(cfg, datamodule, logger, ckpt_path)
    except optuna.TrialPruned as pruned:  # the study's pruner stopped it: not a failure
        logger.experiment.set_tag(logger.run_id, "pruned", str(pruned))
        logger.experiment.set_terminated(logger.run_id, "FINISHED")
        raise
    except Exception as err:  # FAILED, and why, where people look (out of memory, a bad value)
        logger.experiment.set_tag(logger.run_id, "error", f"{type(err).__name__}: {err}")
        logger.experiment.set_terminated(logger.run_id, "FAILED")
        raise
    except (Interrupted, KeyboardInterrupt):  # stopped by the user, not failed: KILLED
        logger.experiment.set_terminated(logger.run_id, "KILLED")
        raise
    if cfg.artifacts.pictures:
        predictions = report.predict_all(model.model, datamodule.test_dataloader())
        log_test_report(logger, predictions)
    if cfg.artifacts.model:
        example, _ = next(iter(datamodule.test_dataloader()))
        log_classifier(logger, model.model, example[:8])
    return {**metrics, "run_id": logger.run_id, "tracking_uri": cfg.logger.tracking_uri}


def fit_and_test(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    logger: MLFlowLogger,
    ckpt_path: Path | None,
) -> tuple[pl.LightningModule, dict[str, float]]:
    """Build the model and trainer, fit, validate at the end, test; return the model and the
    final val_/test_ metrics."""
    model = instantiate(cfg.model)
    ckpt_dir = Path(cfg.ckpt_dir) / logger.run_id
    callbacks = [
        *instantiate(cfg.trainer.callbacks),
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step={step:.0f}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.val_every,
            monitor="step",
            mode="max",
            save_top_k=2,  # the newest two: one to fall back on if the newest is damaged
            enable_version_counter=False,
        ),
        CheckpointOnInterrupt(ckpt_dir),
        Heartbeat(every_s=cfg.stale_after_s / 10),
    ]
    if cfg.sweep.trial is not None:  # a trial of an Optuna sweep (hydra_plugins/optuna_sweeper)
        sweeper = HydraConfig.get().sweeper
        storage = sweeper.storage or default_storage(cfg.logger.tracking_uri)
        trial = optuna_trial(storage, cfg.sweep.study, cfg.sweep.trial, instantiate(sweeper.pruner))
        callbacks.append(OptunaPruning(trial, monitor="val_acc"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()]
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.global_step % cfg.val_every:  # the last validation was before the last step
        trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # test resets them
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return model, metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    try:
        result = train(cfg)
    except (ValueError, DataError, FloatingPointError, ConnectionError, OSError) as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the job as failed and goes on with the others
        sys.exit(f"error: {err}")
    except Interrupted as stop:  # ends a sweep too: its remaining jobs do not start
        print(f"interrupted by {stop}: the run is marked KILLED", file=sys.stderr)
        sys.exit(128 + stop.signum)
    uri = result["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        ui = f"open {uri}"
    else:
        ui = "mlflow ui" if uri == "sqlite:///mlflow.db" else f"mlflow ui --backend-store-uri {uri}"
    print(
        f"run {result['run_id']}: val_acc={result['val_acc']:.4f} test_acc={result['test_acc']:.4f}"
        f" | compare runs: {ui}"
    )
    return result["val_acc"]


if __name__ == "__main__":
    # Hydra then raises its errors instead of printing them over several lines: we print one.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as err:
        sys.exit(f"error: {one_line(err)}")
