"""Fixtures: a short training shared by the tests that read a finished run, a config factory,
and (tests/services.py) PostgreSQL, an mlflow server and SLURM."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import compose_tiny

pytest_plugins = ["services"]  # PostgreSQL, mlflow server, SLURM: session fixtures

# The commands the tests start meet a hangup as they would from a terminal, however pytest was
# started: under `nohup pytest` they would inherit SIGHUP ignored, keep it ignored (as nohup
# asks) and the hangup tests would wait on a sweep that trains on. The nohup test ignores it
# for its own command.
signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> tuple[dict, str]:
    """A few hundred steps of a small model, with its model and test report logged: enough to
    learn MNIST reasonably, quick on two cores. Returns train()'s result and the store URI."""
    from lstm_mnist.training import train

    cfg, store = compose_tiny(
        tmp_path_factory.mktemp("short_run"),
        *["num_units=64", "lr=3e-3", "max_steps=400", "log_every=100", "val_every=200"],
        "system_metrics_s=1",
    )
    return train(cfg), store


@pytest.fixture
def make_cfg(tmp_path: Path):
    """compose_tiny(tmp_path, ...) as a fixture."""
    return lambda *overrides: compose_tiny(tmp_path, *overrides)
