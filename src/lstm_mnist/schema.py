"""The typed schema of conf/config.yaml and the value checks Hydra's types cannot express: the
one place a config is checked.

Importing this module registers the schema, so `num_layers=two` fails at composition time,
before any run is recorded; `validate` checks every value with a closed set or range, for a run
before it starts and for every job of a sweep before the first one starts (sweeping/loop.py);
`validate_sweeper` checks the sweepers' settings (hydra.sweeper.*) before a sweep opens anything.
It imports nothing heavy: `--help` and a typo answer at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from difflib import get_close_matches
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lstm_mnist.display import masked
from lstm_mnist.resources import SWEEPS_PARENT
from lstm_mnist.tracking.names import DIRECTIONS, METRICS
from lstm_mnist.world import ACCELERATORS, DEVICES_ALLOWED, PRECISIONS, STRATEGIES, devices_ok


@dataclass
class Config:
    num_layers: int = MISSING
    num_units: int = MISSING
    dropout: float = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    max_steps: int = MISSING
    seed: int = MISSING
    replicates: int = MISSING
    num_threads: Optional[int] = None  # noqa: UP045
    jobs_per_gpu: int = MISSING
    gpus_per_job: int = MISSING
    log_every: int = MISSING
    val_every: int = MISSING
    patience: Optional[int] = None  # noqa: UP045
    detach: bool = MISSING
    artifacts: Any = MISSING
    ckpt_dir: str = MISSING
    keep_checkpoints: bool = MISSING
    resume: Optional[str] = None  # noqa: UP045  (OmegaConf reads this annotation at run time)
    stale_after_s: float = MISSING
    ddp_timeout_s: float = MISSING
    system_metrics_s: Optional[float] = None  # noqa: UP045
    objective: Any = MISSING
    sweep: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING


ConfigStore.instance().store(name="schema", node=Config)
# Lets conf/config.yaml put sweeps/ on Hydra's search path wherever the command is run from.
if not OmegaConf.has_resolver("lstm_mnist_sweeps"):
    OmegaConf.register_new_resolver("lstm_mnist_sweeps", lambda: str(SWEEPS_PARENT))

SEED_MAX = 2**32 - 1  # numpy's limit, which seed_everything passes the seed to
CELL_TYPES = ("lstm", "gru")  # model.cell: model.CELLS has the torch module of each
DATASETS = ("mnist", "fashion_mnist")  # data.name: data.DEFAULT_DIRS has where each is read from
LR_SCHEDULES = ("constant", "onecycle")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  # data.device


def one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]


# knob: (check, what is allowed)
RULES = {
    "num_layers": (lambda v: v >= 1, "an integer >= 1"),
    "num_units": (lambda v: v >= 1, "an integer >= 1"),
    "dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "max_steps": (lambda v: v >= 1, "an integer >= 1"),
    "seed": (lambda v: 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}]"),
    "replicates": (lambda v: v >= 1, "an integer >= 1"),
    "artifacts.model": (lambda v: v in (True, False, "best"), "true, false or best"),
    "artifacts.keep_models": (lambda v: v >= 1, "an integer >= 1"),
    "log_every": (lambda v: v >= 1, "an integer >= 1"),
    "val_every": (lambda v: v >= 1, "an integer >= 1"),
    "stale_after_s": (lambda v: 0 < v < math.inf, "a finite number of seconds > 0"),
    "num_threads": (lambda v: v is None or v >= 1, "null or an integer >= 1"),
    "jobs_per_gpu": (lambda v: v >= 1, "an integer >= 1"),
    "gpus_per_job": (lambda v: v >= 1, "an integer >= 1"),
    "ddp_timeout_s": (lambda v: 0 < v < math.inf, "a finite number of seconds > 0"),
    "system_metrics_s": (lambda v: v is None or 0 < v < math.inf, "null (off) or seconds > 0"),
    "patience": (lambda v: v is None or v >= 1, "null (no early stopping) or an integer >= 1"),
    "model.cell": (lambda v: v in CELL_TYPES, one_of(CELL_TYPES)),
    "model.lr_schedule": (lambda v: v in LR_SCHEDULES, one_of(LR_SCHEDULES)),
    "data.name": (lambda v: v in DATASETS, one_of(DATASETS)),
    "data.device": (lambda v: DEVICE.fullmatch(str(v)) is not None, "auto, cpu, cuda or cuda:N"),
    "trainer.accelerator": (lambda v: v in ACCELERATORS, one_of(ACCELERATORS)),
    "trainer.strategy": (lambda v: v in STRATEGIES, one_of(STRATEGIES)),
    "trainer.num_nodes": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "trainer.precision": (lambda v: str(v) in PRECISIONS, one_of(PRECISIONS)),
    "trainer.devices": (devices_ok, DEVICES_ALLOWED),
    "objective.metric": (lambda v: v in METRICS, f"a metric a run logs: {one_of(METRICS)}"),
    "objective.direction": (lambda v: v in DIRECTIONS, one_of(DIRECTIONS)),
}


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # True is an int to Python, not here


def is_seconds(v: Any) -> bool:
    """A finite number > 0 (NaN compares false)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf


def is_list_of_mappings(v: Any) -> bool:
    return (
        isinstance(v, Sequence)
        and not isinstance(v, str)
        and all(isinstance(e, Mapping) for e in v)
    )


# An Optuna storage: an SQLAlchemy URL (sqlite:///optuna.db, postgresql://user@host/db,
# mysql+pymysql://...) or an Optuna gRPC storage proxy (grpc://HOST:PORT).
DATABASE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
GRPC_URL = re.compile(r"grpc://[^\s:/]+:\d+/?")


def is_storage(v: Any) -> bool:
    if not isinstance(v, str) or DATABASE_URL.fullmatch(v) is None:
        return False
    return not v.startswith("grpc:") or GRPC_URL.fullmatch(v) is not None


SECONDS_OR_NULL = (
    lambda v: v is None or is_seconds(v),
    "null or a finite number of seconds > 0",
)
# hydra.sweeper.<knob>: (check, what is allowed), for each sweeper's settings (conf/hydra/sweeper/);
# the Optuna sampler and pruner are objects Hydra builds, and params' values are distributions
BUDGET_RULES = {"timeout_s": SECONDS_OR_NULL, "max_compute_s": SECONDS_OR_NULL}
NAME_RULE = (lambda v: v is None or isinstance(v, str), "null or a string")
SWEEPER_RULES = {
    "grid": {
        "name": NAME_RULE,
        "max_batch_size": (
            lambda v: v is None or (is_int(v) and v >= 1),
            "null or an integer >= 1",
        ),
        "params": (
            lambda v: v is None or isinstance(v, Mapping),
            "null or a mapping of key: values",
        ),
        **BUDGET_RULES,
    },
    "optuna": {
        "name": NAME_RULE,
        "n_trials": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "storage": (
            lambda v: v is None or is_storage(v),
            "null or a database URL, e.g. sqlite:///optuna.db, postgresql://USER@HOST/DB,"
            " mysql://USER@HOST/DB or grpc://HOST:PORT",
        ),
        "trade_offs": (lambda v: isinstance(v, Mapping), "a mapping of metric: direction"),
        "asynchronous": (lambda v: isinstance(v, bool), "true or false"),
        "heartbeat_s": (is_seconds, "a finite number of seconds > 0"),
        "retries": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        "enqueue": (is_list_of_mappings, "a list of mappings of key: value"),
        "params": (lambda v: isinstance(v, Mapping), "a mapping of key: distribution"),
        **BUDGET_RULES,
    },
}


def shown(value: Any) -> str:
    """A value as it is written in an override (true, null), with no password."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return masked(str(value))


def check(
    rules: Mapping[str, tuple[Callable[[Any], bool], str]],
    value_of: Callable[[str], Any],
    prefix: str = "",
) -> None:
    """Raise ValueError, in one line naming the key, its value and what is allowed, for the
    first value (`value_of(key)`) that its rule refuses; a value of the wrong type is refused."""
    for key, (ok, allowed) in rules.items():
        value = value_of(key)
        try:
            good = bool(ok(value))
        except TypeError:  # e.g. "abc" >= 1
            good = False
        if not good:
            raise ValueError(f"{prefix}{key}={shown(value)} is invalid: must be {allowed}")


def validate(cfg: DictConfig) -> None:
    """Raise ValueError, in one line naming the key, its value and what is allowed."""
    check(RULES, lambda key: OmegaConf.select(cfg, key))


def validate_sweeper(kind: str, settings: Mapping[str, Any]) -> None:
    """The settings of this project's `kind` sweeper ("grid" or "optuna"), as Hydra hands them
    to it (hydra.sweeper.*): the same one line as `validate`, before the sweep opens anything."""
    check(SWEEPER_RULES[kind], settings.get, prefix="hydra.sweeper.")


def composition_error(err: Exception) -> str:
    """Hydra's composition errors (misspelled key, wrong type, unknown option) in one line that
    names the key or value and what is allowed."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = lines[0].rstrip(".")
    if any(line.startswith("Available options") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [
            line for line in lines[start + 1 :] if not line.startswith(("Config ", "provider="))
        ]
        message += f"; {lines[start].rstrip(':').lower()}: {', '.join(options)}"
    if message.startswith("Ambiguous value"):
        message += " (a sweep needs -m; a list is key=[a,b])"
    cause = err.__cause__
    if cause is not None:
        message += f": {str(cause).splitlines()[0]}"
        key = getattr(cause, "key", None)
        top_level = isinstance(key, str) and getattr(cause, "full_key", key) == key
        if "not in" in str(cause) and top_level:
            known = [f.name for f in fields(Config)]
            close = get_close_matches(key, known, n=1)
            message += f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"
    return message
