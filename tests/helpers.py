"""What the tests share: tiny configs composed with Hydra's compose API on the real bundled MNIST,
the CLI run on them in a throw-away folder, and readers of the MLflow store they record into."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import select
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import lstm_mnist.schema  # noqa: F401  (registers the schema)
from lstm_mnist.cli import sweeps_command
from lstm_mnist.tracking import Store

ROOT = Path(__file__).resolve().parents[1]

# A model and run small enough for a test; everything else is the real code path.
TINY = [
    "num_layers=1",
    "num_units=16",
    "batch_size=64",
    "max_steps=30",
    "log_every=10",
    "val_every=20",
    "data.eval_batch_size=2500",
]


def tiny_cli_args(tmp_path: Path) -> list[str]:
    """TINY plus a throw-away MLflow store and Hydra output dir under tmp_path."""
    return TINY + [
        "artifacts.model=false",
        "artifacts.pictures=false",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.run.dir={tmp_path}/outputs",
        f"ckpt_dir={tmp_path}/checkpoints",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]


def compose_tiny(tmp: Path, *overrides: str) -> tuple[DictConfig, str]:
    """TINY plus `overrides`, with the store, outputs and checkpoints under tmp; returns the
    config and the store URI."""
    store = f"sqlite:///{tmp}/mlflow.db"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=TINY
            + [
                f"logger.tracking_uri={store}",
                f"trainer.default_root_dir={tmp}/outputs",
                f"ckpt_dir={tmp}/checkpoints",
                *overrides,
            ],
        )
    return cfg, store


def steps_of(store: str, run, metric: str, values: bool = False) -> list:
    history = mlflow.MlflowClient(store).get_metric_history(run.info.run_id, metric)
    return [(m.step, m.value) if values else m.step for m in history]


def runs_in(store: str, parents: bool = False, configurations: bool = False) -> list:
    """The training runs in the store (or, with parents=True, the sweeps' parent runs; with
    configurations=True, the configuration runs of sweeps with replicates)."""
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("lstm-mnist")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [
        r
        for r in runs
        if ("sweep_key" in r.data.tags) == parents
        and ("configuration" in r.data.tags) == configurations
    ]


def run_cli(
    tmp_path, *overrides: str, multirun: bool = False, replace: list[str] | None = None
) -> subprocess.CompletedProcess:
    """src/train.py with tiny_cli_args (or `replace`) and `overrides`, run in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    base = tiny_cli_args(tmp_path) if replace is None else replace
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *(["-m"] if multirun else [])]
        + [*base, *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


def mlflow_run(
    run_id: str,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    status: str = "FINISHED",
    seconds: float = 10.0,
):
    """An mlflow Run entity as the search API returns it, built in memory: for the unit tests of
    what reads runs (ranking, tables), which need no store."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    info = RunInfo(
        run_id=run_id,
        experiment_id="1",
        user_id="test",
        status=status,
        start_time=1_000_000,
        end_time=1_000_000 + int(seconds * 1000),
        lifecycle_stage="active",
        run_name=run_id,
    )
    data = RunData(
        metrics=[Metric(k, v, 0, 1) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    return Run(info, data)


def job_runs(tracking_uri: str, sweep_dir: Path) -> list:
    """The runs of a sweep's jobs (not its parent run, if any), in job order."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lstm-mnist")
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep_id = '{sweep_dir}'")
    jobs = [r for r in runs if "job_num" in r.data.tags]
    return sorted(jobs, key=lambda r: int(r.data.tags["job_num"]))


ASYNC_SEARCH = [
    "sweeps=optuna",
    "~hydra.sweeper.params.num_units",
    "~hydra.sweeper.params.num_layers",
    "~hydra.sweeper.params.dropout",
    "hydra.sweeper.n_trials=4",
    "max_steps=300",
    "~hydra.sweeper.pruner",
    "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.2,n_warmup_steps:30}",
    "hydra.sweeper.enqueue=[{lr:1.0e-2},{lr:1.0e-7},{lr:3.0e-3},{lr:5.0e-3}]",
]


def assert_no_barrier(study, runs: list, parent) -> None:
    """The pruned trial's worker started the next trial while the other worker's first trial was
    still training; one run per trial, all under the parent, each with its trial's value."""
    trials = sorted(study.trials, key=lambda t: t.datetime_start)
    assert [t.state.name for t in trials].count("PRUNED") == 1 and len(trials) == 4
    (pruned,) = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned.params["lr"] == 1.0e-7
    first_other = trials[0] if trials[0] is not pruned else trials[1]
    following = [t for t in trials if t.datetime_start >= pruned.datetime_complete]
    assert following and following[0].datetime_start < first_other.datetime_complete
    by_trial = {r.data.tags["optuna_trial"]: r for r in runs}
    assert sorted(by_trial) == ["0", "1", "2", "3"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    for t in study.trials:
        run = by_trial[str(t.number)]
        assert run.info.run_name.startswith(f"lr={t.params['lr']},")  # the trial's own value
        if t.state.name == "COMPLETE":
            assert t.value == run.data.metrics["val_acc"]
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_pruned"] == "1"


def start_training(
    tmp_path, *overrides: str, multirun: bool = False, terminal: Terminal | None = None
) -> tuple:
    """A long tiny-model training (or sweep) in a subprocess, once it is really training (in
    `terminal` if given, else with stderr piped). Returns the process and the id of its
    (first) run."""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    Store(store, "lstm-mnist").prepare()  # so that polling it below never races its creation
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    streams = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *(["-m"] if multirun else [])]
        + [*tiny_cli_args(tmp_path), "max_steps=100000", *overrides],
        **(terminal.streams() if terminal else streams),
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = runs_in(store)
        if runs and steps_of(store, runs[0], "train_loss"):
            return proc, runs[0].info.run_id
        time.sleep(0.5)
    proc.kill()
    said = terminal.text() if terminal else proc.communicate()[1]
    pytest.fail("training did not start: " + said[-2000:])


class Terminal:
    """A pseudo-terminal for a command, as a terminal window or an SSH session gives one: the
    command leads its own session and the terminal is its controlling one; `hang_up` closes
    it, as closing the window or losing the connection does (the kernel sends the command
    SIGHUP, and a write to the terminal fails from then on)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.output = bytearray()
        self.open = True
        self.reader = threading.Thread(target=self.read, daemon=True)  # else it fills and blocks
        self.reader.start()

    def streams(self) -> dict:
        return {
            "stdin": self.slave,
            "stdout": self.slave,
            "stderr": self.slave,
            # after start_new_session's setsid(): the terminal becomes the session's
            "preexec_fn": lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        }

    def read(self) -> None:
        while self.open:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    data = os.read(self.master, 1 << 16)
                except OSError:
                    return
                if not data:
                    return
                self.output += data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def hang_up(self) -> None:
        os.close(self.slave)  # the command's copies are its own
        self.open = False
        self.reader.join()
        os.close(self.master)


EXPERIMENT = "lstm-mnist"


def sweeps(store: str, *args: str, experiment: str = EXPERIMENT) -> subprocess.CompletedProcess:
    """The sweeps command, in this process (its imports cost seconds a time)."""
    argv = [*args, "--tracking-uri", store, "--experiment", experiment]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            sweeps_command.main(argv)
            code = 0
        except SystemExit as exit:
            code = int(exit.code or 0)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
