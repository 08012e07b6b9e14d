"""End to end: real training on real MNIST into a real (temporary) SQLite MLflow store."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from conftest import ROOT, tiny_cli_args
from hydra import compose, initialize_config_dir

from lstm_mnist.data import BatchedTensorDataset
from lstm_mnist.tracking import prepare_store
from train import train


def steps_of(store: str, run, metric: str, values: bool = False) -> list:
    history = mlflow.MlflowClient(store).get_metric_history(run.info.run_id, metric)
    return [(m.step, m.value) if values else m.step for m in history]


def runs_in(store: str) -> list:
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("lstm-mnist")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_short_training_learns(short_run):
    result, _ = short_run
    assert result["val_acc"] > 0.8  # chance is 0.1
    assert result["test_acc"] > 0.8


def test_run_is_recorded_in_mlflow(short_run):
    result, store = short_run
    (run,) = runs_in(store)
    assert run.info.run_id == result["run_id"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["num_layers"] == "1" and params["num_units"] == "64"
    assert params["dataset"] == "mnist" and params["precision"] == "32-true"
    assert "logger.tracking_uri" not in params

    client = mlflow.MlflowClient(store)

    def steps(metric):
        return [m.step for m in client.get_metric_history(run.info.run_id, metric)]

    assert steps("train_acc") == steps("train_loss") == [100, 200, 300, 400]
    assert steps("val_acc") == steps("val_loss") == [200, 400]
    assert steps("test_acc") == steps("test_loss") == [400]
    assert run.data.metrics["test_acc"] == pytest.approx(result["test_acc"])

    config = client.download_artifacts(run.info.run_id, "config.yaml")
    assert "num_units: 64" in open(config).read()


def run_cli(tmp_path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *(["-m"] if multirun else [])]
        + [*tiny_cli_args(tmp_path), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


def test_cli_multirun_records_one_run_per_job(tmp_path):
    proc = run_cli(tmp_path, "num_layers=1,2", multirun=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert sorted(r.data.params["num_layers"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    a, b = (dict(r.data.params) for r in runs)
    assert {k for k in a if a[k] != b.get(k)} == {"num_layers"}
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert sorted(r.info.run_name for r in runs)[0].startswith("num_layers=1")
    assert proc.stdout.count("test_acc=") == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_layer=3", "num_layer"),  # misspelled key
        ("num_layers=two", "num_layers"),  # wrong type
        ("dropout=1.5", "dropout=1.5 is invalid: must be a number in [0, 1)"),
    ],
)
def test_bad_override_fails_clearly_and_records_no_run(tmp_path, override, message):
    proc = run_cli(tmp_path, override)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs_in(f"sqlite:///{tmp_path}/mlflow.db") == []


def test_named_sweep_layers_sweeps_num_layers():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+sweeps=layers"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params == {"num_layers": "1,2,3"}


def test_nan_loss_stops_the_run_as_failed_with_its_reason(make_cfg, monkeypatch):
    cfg, store = make_cfg("artifacts.model=false", "artifacts.pictures=false")
    gather = BatchedTensorDataset.__getitem__
    calls = []

    def poison_from_batch_15(self, indices):
        x, y = gather(self, indices)
        calls.append(1)
        return (x * float("nan"), y) if len(calls) >= 15 else (x, y)

    monkeypatch.setattr(BatchedTensorDataset, "__getitem__", poison_from_batch_15)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 1\d; training diverged"):
        train(cfg)
    (run,) = runs_in(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FloatingPointError: loss is nan at step 1")
    assert steps_of(store, run, "train_loss") == [10]  # stopped before the step-20 point


def test_same_seed_same_weights_and_metrics(make_cfg, tmp_path):
    histories, weights = [], []
    for attempt in ("a", "b"):
        cfg, store = make_cfg(
            "artifacts.model=false",
            "artifacts.pictures=false",
            f"trainer.default_root_dir={tmp_path}/{attempt}",
        )
        result = train(cfg)
        (run,) = [r for r in runs_in(store) if r.info.run_id == result["run_id"]]
        histories.append(
            {m: steps_of(store, run, m, values=True) for m in ("train_loss", "val_acc", "test_acc")}
        )
        (ckpt,) = (tmp_path / attempt).rglob("*.ckpt")
        weights.append(torch.load(ckpt, weights_only=True)["state_dict"])
    assert histories[0] == histories[1]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_is_killed_not_failed_or_running(tmp_path, signum, exit_code):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    prepare_store(store, "lstm-mnist")  # so that polling it below never races its creation
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *tiny_cli_args(tmp_path)]
        + ["max_steps=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until it is really training
            runs = runs_in(store)
            if runs and steps_of(store, runs[0], "train_loss"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("training did not start")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exit_code, stderr[-2000:]
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    (run,) = runs_in(store)
    assert run.info.status == "KILLED"
