"""The commands (train, predict, compare, sweeps, clean), one module each (*_command.py): they
parse, run the library and turn what it raises into one line and an exit code. Only these exit; they
import torch, Lightning, MLflow and Optuna after parsing, so `--help` and a mistyped option
answer at once."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from enum import IntEnum
from typing import NoReturn

from lstm_mnist.display import one_line
from lstm_mnist.tracking.names import DEFAULT_URI


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an error, or a sweep with failed jobs
    SIGHUP = 128 + signal.SIGHUP  # 129: stopped by a closed terminal (its hangup)
    SIGINT = 128 + signal.SIGINT  # 130: stopped by Ctrl-C
    SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM (a scheduler's)


def fail(err: BaseException | str) -> NoReturn:
    """Exit FAILED with `error: <message>` as one line on stderr."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(ExitCode.FAILED)


def user_errors() -> tuple[type[BaseException], ...]:
    """What a bad value, file, store or training outcome raises (as opposed to a bug here)."""
    from lstm_mnist.data import DataError
    from lstm_mnist.ranks import RankFailed
    from lstm_mnist.tracking import StoreError

    errors = (ValueError, DataError, StoreError, FloatingPointError, OSError, MemoryError)
    return (*errors, RankFailed)


def quiet() -> None:
    """Silence what a user cannot act on: Lightning's advertising tips, its hint to use `srun`
    wherever SLURM is installed, MLflow's notes on creating its tables, and other packages'
    deprecation warnings, and the system metrics monitor's start and stop notes."""
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.system_metrics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # its "View run ... at" lines, on stdout where --json output goes; the commands say where
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri and --experiment, with one meaning in every command."""
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI),
        help=f"MLflow store (default: $MLFLOW_TRACKING_URI or {DEFAULT_URI})",
    )
    parser.add_argument("--experiment", default="lstm-mnist", help="MLflow experiment name")


def add_sweep_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--sweep, with one meaning in every command."""
    parser.add_argument(
        "--sweep",
        default=default,
        help="a sweep's parent run id (train.py prints it at the end), or 'latest'"
        + (f" (default: {default})" if default else ""),
    )
