"""What MLflow records about a training run beyond Lightning's metrics: params, tags, config
files, the model and the test report."""

from __future__ import annotations

import hashlib
import json
import os
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
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch import nn

from lstm_mnist import report
from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective

# Not hyperparameters: where the run is recorded, which run or sweep it continues, what a sweep
# optimises.
SKIPPED = ("_target_", "tracking_uri", "resume", "sweep", "replicates", "objective", "hydra")
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


def group_hash(cfg: DictConfig) -> str:
    """A digest of run_params(cfg) without the seed: equal for the replicates of a
    configuration (the `config_group` tag; MLflow's UI can group runs by it)."""
    return digest({k: v for k, v in run_params(cfg).items() if k != names.SEED})


def given_overrides(cfg: DictConfig) -> list[str]:
    """The overrides this run was made with: the command line's, then those an asynchronous
    Optuna worker applied for its trial (`sweep.overrides`)."""
    given = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return given + list(cfg.sweep.get("overrides") or [])


def run_name(cfg: DictConfig) -> str:
    """The overrides that make this run differ from the defaults, or 'default': an asynchronous
    Optuna worker's trial values first, then the command line's."""
    trial = list(cfg.sweep.get("overrides") or [])
    given = [o for o in given_overrides(cfg)[: len(given_overrides(cfg)) - len(trial)]]
    shown = trial + [o for o in given if not o.startswith(("logger.", "hydra.", "sweep."))]
    name = ",".join(shown) or "default"
    return name if len(name) <= names.MAX_NAME else name[: names.MAX_NAME - 1] + "…"


def slurm_job() -> str | None:
    """The SLURM job this process runs in (`<array job>_<task>` for an array task), or None."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Git commit, overrides, config hash, objective, torch threads, and for a sweep's job its
    parent run (MLflow nests the run under it), sweep folder, job number and Optuna trial."""
    tags = {
        names.CONFIG_HASH: config_hash(cfg),
        names.CONFIG_GROUP: group_hash(cfg),
        names.OBJECTIVE: Objective.from_config(cfg).tag,
        names.TORCH_THREADS: str(torch.get_num_threads()),
    }
    if cfg.sweep.parent_run:
        tags[names.SWEEP_RUN] = cfg.sweep.parent_run
        tags[names.PARENT_RUN] = cfg.sweep.configuration_run or cfg.sweep.parent_run
    if cfg.sweep.trial is not None:
        tags[names.OPTUNA_TRIAL] = str(cfg.sweep.trial)
    if cfg.sweep.get("retry_of") is not None:
        tags[names.RETRY_OF] = str(cfg.sweep.retry_of)
    if (job := slurm_job()) is not None:
        tags[names.SLURM_JOB] = job
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    )
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        tags[names.OVERRIDES] = " ".join(given_overrides(cfg))
        if hc.mode == RunMode.MULTIRUN:
            tags[names.SWEEP_DIR] = hc.sweep.dir
            tags[names.JOB_NUM] = str(hc.job.num)
    return tags


def log_config(cfg: DictConfig) -> None:
    """The resolved config, and Hydra's own record of the run (config, overrides) when present."""
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if HydraConfig.initialized() and HydraConfig.get().output_subdir:
        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / HydraConfig.get().output_subdir
        if hydra_dir.is_dir():
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
