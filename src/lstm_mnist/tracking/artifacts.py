"""What a training run uploads beside its metrics: its config, Hydra's record of it, why early
stopping ended it, the classifier as an MLflow Model, and the test report."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import torch
from mlflow.models import infer_signature
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch import nn

from lstm_mnist import report
from lstm_mnist.tracking import names


def log_config(cfg: DictConfig, hydra_dir: Path | None) -> None:
    """The resolved config, and Hydra's own record of the run (config, overrides) when present."""
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if hydra_dir is not None and hydra_dir.is_dir():
        mlflow.log_artifacts(str(hydra_dir), "hydra")


def log_early_stop(stopper: EarlyStopping, step: int) -> None:
    """Tag the run `early_stopped` with when and why, if `stopper` ended its training."""
    if stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
        mlflow.set_tag(names.EARLY_STOPPED, f"at step {step}: {stopper.stopping_reason_message}")


def log_classifier(net: nn.Module, example: torch.Tensor) -> None:
    """Log `net` as an MLflow Model (PyTorch flavour) named "model" that maps a float32 batch of
    28x28 images in [0, 1] to class probabilities: usable by `mlflow models predict/serve`, the
    registry and src/predict.py."""
    model = nn.Sequential(net, nn.Softmax(dim=-1)).eval()
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    with warnings.catch_warnings():
        # torch.export's note on nn.LSTM's cached weight list; harmless for inference
        warnings.filterwarnings("ignore", "The tensor attributes .* assigned during export")
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example[:2].numpy(),
            serialization_format="pt2",  # torch.export: loads without this repository's code
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no slow inference
        )


def log_test_report(predictions: report.Predictions) -> None:
    """Confusion matrix (PNG and CSV), the most confident mistakes, per-class accuracy."""
    cm = report.confusion_matrix(predictions)
    csv = "\n".join(",".join(str(int(v)) for v in row) for row in cm.tolist())
    mlflow.log_text(csv + "\n", "test_report/confusion_matrix.csv")
    figures = {
        "confusion_matrix.png": report.confusion_matrix_figure(predictions),
        "worst_mistakes.png": report.worst_mistakes_figure(predictions),
    }
    for name, fig in figures.items():
        if fig is not None:
            mlflow.log_figure(fig, f"test_report/{name}")
            plt.close(fig)
    mlflow.log_table(report.per_class_accuracy(predictions), "test_report/per_class_accuracy.json")
