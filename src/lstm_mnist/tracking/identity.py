"""What identifies a training run, without torch: its params (every hyperparameter once), the
hashes that tell which runs trained the same thing, its name and its tags."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective

if TYPE_CHECKING:
    from lstm_mnist.job import JobContext

# Not hyperparameters: where the run is recorded, which run or sweep it continues, what a sweep
# optimises.
SKIPPED = (
    "_target_",
    "tracking_uri",
    "resume",
    "sweep",
    "detach",
    "replicates",
    "objective",
    "hydra",
)
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


def config_hash(params: dict[str, Any]) -> str:
    """A digest of a run's params: equal for two runs exactly when they train the same thing.
    A sweep run again skips the jobs whose hash already FINISHED in it."""
    return digest(params)


def group_hash(params: dict[str, Any]) -> str:
    """A digest of a run's params without the seed: equal for the replicates of a
    configuration (the `config_group` tag; MLflow's UI can group runs by it)."""
    return digest({k: v for k, v in params.items() if k != names.SEED})


def run_name(job: JobContext) -> str:
    """The overrides that make this run differ from the defaults, or 'default': an asynchronous
    Optuna worker's trial values first, then the command line's."""
    given = [o for o in job.overrides if not o.startswith(("logger.", "hydra.", "sweep."))]
    name = ",".join([*job.trial_overrides, *given]) or "default"
    return name if len(name) <= names.MAX_NAME else name[: names.MAX_NAME - 1] + "…"


def run_tags(
    cfg: DictConfig, job: JobContext, params: dict[str, Any], threads: int
) -> dict[str, str]:
    """Git commit, overrides, config hash, objective, torch threads, and for a sweep's job its
    parent run (MLflow nests the run under it), sweep folder, job number and Optuna trial."""
    tags = {
        names.CONFIG_HASH: config_hash(params),
        names.CONFIG_GROUP: group_hash(params),
        names.OBJECTIVE: Objective.from_config(cfg).tag,
        names.TORCH_THREADS: str(threads),
    }
    if (sweep := job.sweep) is not None:
        tags[names.SWEEP_RUN] = sweep.parent_run
        tags[names.PARENT_RUN] = sweep.configuration_run or sweep.parent_run
        if sweep.dir is not None:
            tags[names.SWEEP_DIR] = sweep.dir
            tags[names.JOB_NUM] = str(sweep.job_num)
    if (trial := job.trial) is not None and trial.number is not None:
        tags[names.OPTUNA_TRIAL] = str(trial.number)
        if trial.retry_of is not None:
            tags[names.RETRY_OF] = str(trial.retry_of)
    if job.slurm is not None:
        tags[names.SLURM_JOB] = job.slurm.id
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    )
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
    if job.overrides or job.trial_overrides:
        tags[names.OVERRIDES] = " ".join([*job.overrides, *job.trial_overrides])
    return tags
