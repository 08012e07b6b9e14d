"""Train, validate and test the stacked-LSTM classifier; record the run in MLflow.

python src/train.py                          # the reference recipe
python src/train.py -m num_layers=1,2,3      # a sweep: one MLflow run per job
python src/train.py -m +sweeps=layers        # a named sweep from sweeps/
"""

from __future__ import annotations

import signal
import sys

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from lstm_mnist import report
from lstm_mnist.config import validate
from lstm_mnist.data import DataError
from lstm_mnist.tracking import (
    log_classifier,
    log_config,
    log_test_report,
    prepare_store,
    run_name,
    run_params,
    run_tags,
)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, like KeyboardInterrupt: it stops the run but is not
    the run's error, and Lightning passes it through instead of swallowing it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def train(cfg: DictConfig) -> dict[str, float | str]:
    """Fit on train, validate every `val_every` steps and at the end, test once; return metrics."""
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()  # before the MLflow run exists: a data error records no run
    model = instantiate(cfg.model)
    prepare_store(cfg.logger.tracking_uri, cfg.logger.experiment_name)
    logger = instantiate(cfg.logger, run_name=run_name(), tags=run_tags())
    logger.log_hyperparams(run_params(cfg))
    log_config(logger, cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger)
    try:
        trainer.fit(model, datamodule=datamodule)
        if trainer.global_step % cfg.val_every:  # the last validation was before the last step
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # test resets them
        trainer.test(model, datamodule=datamodule, verbose=False)
    except Exception as err:  # Lightning has marked the run FAILED; say why, where people look
        logger.experiment.set_tag(logger.run_id, "error", f"{type(err).__name__}: {err}")
        raise
    except (Interrupted, KeyboardInterrupt):  # stopped by the user, not failed: KILLED
        logger.experiment.set_terminated(logger.run_id, "KILLED")
        raise
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if cfg.artifacts.pictures:
        predictions = report.predict_all(model.model, datamodule.test_dataloader())
        log_test_report(logger, predictions)
    if cfg.artifacts.model:
        example, _ = next(iter(datamodule.test_dataloader()))
        log_classifier(logger, model.model, example[:8])
    return {**metrics, "run_id": logger.run_id, "tracking_uri": cfg.logger.tracking_uri}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    try:
        result = train(cfg)
    except (ValueError, DataError, FloatingPointError) as err:
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
    main()
