"""What MLflow records about a run beyond Lightning's metrics: params, tags, config files, the
model and the test report."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.models import infer_signature
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn

from lstm_mnist import report
from lstm_mnist.config import PROJECT_ROOT

log = logging.getLogger(__name__)

# Not hyperparameters: where the run is recorded, and which run or sweep it continues.
SKIPPED = ("_target_", "tracking_uri", "resume", "sweep", "hydra")
# Group keys whose short name is what people search for in `mlflow ui`.
SHORT_NAMES = {"data.name": "dataset", "trainer.precision": "precision"}


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """Every hyperparameter once: top-level knobs by name, other group keys as `group.key`.

    Group keys that only interpolate a knob (model.num_units: ${num_units}) are left out as
    duplicates, and so is the tracking URI, which may hold credentials, and `resume`, which
    differs between the first and the resumed session of one run, and `sweep`, which only says
    which sweep the run belongs to.
    """
    params: dict[str, Any] = {}

    def visit(node: DictConfig, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            if key in SKIPPED or OmegaConf.is_interpolation(node, key):
                continue
            value = node[key]
            if isinstance(value, DictConfig):
                visit(value, f"{name}.")
            elif not OmegaConf.is_list(value):
                params[SHORT_NAMES.get(name, name)] = value

    visit(cfg, "")
    return params


def digest(value: object) -> str:
    """A short, stable hash of a JSON-able value (config hashes, sweep keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    """A digest of run_params(cfg): equal for two runs exactly when they train the same thing.
    A sweep run again skips the jobs whose hash already FINISHED in it."""
    return digest(run_params(cfg))


def run_name() -> str:
    """The command-line overrides that make this run differ from the defaults, or 'default'."""
    if not HydraConfig.initialized():
        return "default"
    overrides = [
        o
        for o in HydraConfig.get().overrides.task
        if not o.startswith(("logger.", "hydra.", "sweep."))
    ]
    name = ",".join(overrides) or "default"
    return name if len(name) <= 250 else name[:249] + "…"  # MLflow's limit (PostgreSQL enforces it)


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Git commit, overrides, config hash, torch threads, and for a sweep's job its parent run
    (MLflow nests the run under it), sweep directory, job number and Optuna trial."""
    tags = {"config_hash": config_hash(cfg), "torch_threads": str(torch.get_num_threads())}
    if cfg.sweep.parent_run:
        tags["mlflow.parentRunId"] = cfg.sweep.parent_run
    if cfg.sweep.trial is not None:
        tags["optuna_trial"] = str(cfg.sweep.trial)
    commit = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        tags["overrides"] = " ".join(hc.overrides.task)
        if hc.mode == RunMode.MULTIRUN:
            tags["sweep_id"] = hc.sweep.dir
            tags["job_num"] = str(hc.job.num)
    return tags


def log_config(logger: MLFlowLogger, cfg: DictConfig) -> None:
    """The resolved config, and Hydra's own record of the run (config, overrides) when present."""
    logger.experiment.log_text(logger.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if HydraConfig.initialized() and HydraConfig.get().output_subdir:
        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / HydraConfig.get().output_subdir
        if hydra_dir.is_dir():
            logger.experiment.log_artifacts(logger.run_id, str(hydra_dir), "hydra")


def log_classifier(logger: MLFlowLogger, net: nn.Module, example: torch.Tensor) -> None:
    """Log `net` as an MLflow Model (PyTorch flavour) named "model" that maps a float32 batch of
    28x28 images in [0, 1] to class probabilities: usable by `mlflow models predict/serve`, the
    registry and src/predict.py."""
    model = nn.Sequential(net, nn.Softmax(dim=-1)).eval()
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    mlflow.set_tracking_uri(logger.experiment.tracking_uri)
    with mlflow.start_run(run_id=logger.run_id), warnings.catch_warnings():
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


def log_test_report(logger: MLFlowLogger, predictions: report.Predictions) -> None:
    """Confusion matrix (PNG and CSV), the most confident mistakes, per-class accuracy."""
    client, run_id = logger.experiment, logger.run_id
    cm = report.confusion_matrix(predictions)
    csv = "\n".join(",".join(str(int(v)) for v in row) for row in cm.tolist())
    client.log_text(run_id, csv + "\n", "test_report/confusion_matrix.csv")
    figures = {
        "confusion_matrix.png": report.confusion_matrix_figure(predictions),
        "worst_mistakes.png": report.worst_mistakes_figure(predictions),
    }
    for name, fig in figures.items():
        if fig is not None:
            client.log_figure(run_id, fig, f"test_report/{name}")
            plt.close(fig)
    client.log_table(
        run_id, report.per_class_accuracy(predictions), "test_report/per_class_accuracy.json"
    )
