"""Names that several modules must agree on, each defined once: tag keys, the metrics a run
logs, and the objective."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"  # the store when none is named (conf/logger/mlflow.yaml's too)

# Tags of a training run.
PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests the run under its parent in the UI
SWEEP_RUN = "sweep_run"  # the sweep's parent run, also when the run is nested under a configuration
CONFIG_HASH = "config_hash"  # equal for two runs that train the same thing
CONFIG_GROUP = "config_group"  # equal for two runs that differ at most in their seed
SEED = "seed"  # the param that tells a configuration's replicates apart
OVERRIDES = "overrides"
TORCH_THREADS = "torch_threads"
SLURM_JOB = (
    "slurm_job"  # the SLURM job (array job_task) that trains the run; a requeue continues it
)
GPU = "gpu"  # the CUDA device index the run trained on, in a parallel sweep on several GPUs
SWEEP_DIR = "sweep_id"  # the sweep's Hydra output folder
JOB_NUM = "job_num"
OPTUNA_TRIAL = "optuna_trial"
RETRY_OF = "retry_of"  # the Optuna trial this trial tries again (its job died without a word)
HEARTBEAT = "heartbeat"  # Unix time, stamped while the run trains
ERROR = "error"  # on a FAILED run: why
PRUNED = "pruned"  # on a pruned trial's (FINISHED) run: when and why
EARLY_STOPPED = "early_stopped"  # on a run that early stopping ended: when and why
OBJECTIVE = "objective"  # "val_acc maximize": what `best` means for this run or sweep

# Tags of a configuration's run (replicates=N): its seeds' runs are nested under it.
CONFIGURATION = "configuration"  # its knobs, "num_layers=2 num_units=64"; marks the run as one

# Tags of a sweep's parent run.
SWEEP_KEY = "sweep_key"  # identifies the sweep, so running it again reopens the same parent
SWEEP_KIND = "sweep_kind"
SWEEP_NAME = "sweep_name"
OPTUNA_STUDY = "optuna_study"
OPTUNA_STORAGE = "optuna_storage"  # with the password masked
BEST_RUN_ID = "best_run_id"
BEST_RUN_NAME = "best_run_name"
TRADE_OFFS = (
    "trade_offs"  # a Pareto sweep's further objectives: "num_params minimize,latency_ms ..."
)
PARETO_SET = "pareto_set"  # its non-dominated configurations' runs, by run id
MODELS_KEPT = "models_kept"  # with artifacts.model=best: "1 of 3" logged models kept
MODEL_POLICY = "model_policy"  # artifacts.model and keep_models: "best 1", "true 1"
JOBS_PLANNED = "jobs_planned"  # the jobs (an Optuna sweep: trials x replicates) it should run
TRIALS_PLANNED = "trials_planned"  # an Optuna sweep's n_trials
SWEEP_COMMAND = "sweep_command"  # the command that runs it, and runs again what did not finish
DETACHED = "detached"  # "true": its jobs run on without the command that submitted them
SLURM_JOBS = "slurm_jobs"  # the SLURM job (array) ids its jobs run as, space-separated
DRIVER = "sweep_driver"  # "host pid": the process running an attached sweep
STOPPED_BY = "stopped_by"  # the budget (timeout_s, max_compute_s) that ended it, or "stop":
# `sweeps stop` was run, and whoever closes the sweep closes it KILLED
SUMMARY = "summary.txt"  # the parent's artifact: the lines the sweep ended with

# Metrics of a training run: what it cost. A requeued run adds each segment's.
WALL_S = "wall_s"  # seconds it ran (queueing between requeues left out)
CORE_S = "core_s"  # wall_s x the cores it was given (threads x processes)
GPU_S = "gpu_s"  # wall_s x the GPUs it trained on
COMPUTE = (WALL_S, CORE_S, GPU_S)  # the parent's are their sums: compute_wall_s, ...
# ... and where its last session's wall time went: time/<phase>_s, time/total_s (phases.py)
PHASE_PREFIX = "time/"


def jobs(state: str) -> str:
    """The parent's tag counting its jobs in `state`: jobs_finished, jobs_failed, ..."""
    return f"jobs_{state}"


MAX_NAME = 250  # MLflow's limit on run names and param values (PostgreSQL enforces it)
MAX_TAG = 5000  # MLflow's limit on a tag value

DIRECTIONS = ("maximize", "minimize")

# The metrics a training run logs (module.py; cost.py after testing): what an objective or a
# Pareto sweep's trade-off may name.
METRICS = (
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "train_acc",
    "train_loss",
    "num_params",
    "latency_ms",
)


@dataclass(frozen=True)
class Objective:
    """The metric sweeps optimise and `best` means everywhere, as conf/config.yaml's `objective`
    names it; recorded on every run and parent as the `objective` tag."""

    metric: str
    direction: str

    @classmethod
    def from_config(cls, cfg: Any) -> Objective:
        return cls(cfg.objective.metric, cfg.objective.direction)

    @classmethod
    def default(cls) -> Objective:
        """conf/config.yaml's, for commands that have no composed config."""
        from omegaconf import OmegaConf

        from lstm_mnist.resources import CONF_DIR

        return cls.from_config(OmegaConf.load(CONF_DIR / "config.yaml"))

    @classmethod
    def from_tag(cls, tag: str) -> Objective:
        metric, direction = tag.split()
        return cls(metric, direction)

    @classmethod
    def checked(cls, metric: str, direction: str) -> Objective:
        if metric not in METRICS:
            raise ValueError(f"{metric}: not a metric a run logs; those are {', '.join(METRICS)}")
        if direction not in DIRECTIONS:
            raise ValueError(
                f"{metric}: {direction}: a direction is one of {', '.join(DIRECTIONS)}"
            )
        return cls(metric, direction)

    @property
    def tag(self) -> str:
        return f"{self.metric} {self.direction}"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def sign(self) -> int:
        """1 when larger is better, -1 when smaller is."""
        return 1 if self.maximize else -1

    @property
    def order_by(self) -> str:
        """MLflow's search order, best first."""
        return f"metrics.`{self.metric}` {'DESC' if self.maximize else 'ASC'}"

    def value(self, run: Any) -> float:
        """The run's metric, signed so that larger is better."""
        return run.data.metrics[self.metric] * self.sign

    def best(self, runs: Iterable[Any]) -> Any | None:
        """The run (an mlflow Run) with the best value of the metric; None if none has it."""
        scored = [r for r in runs if self.metric in r.data.metrics]
        if not scored:
            return None
        return max(scored, key=self.value)


def trade_offs_tag(trade_offs: Iterable[Objective]) -> str:
    return ",".join(t.tag for t in trade_offs)


def trade_offs_from_tag(tag: str) -> tuple[Objective, ...]:
    return tuple(Objective.from_tag(t) for t in tag.split(",") if t)
