"""Bad input and failed runs, as a new user meets them: one line naming the key or file and
what is allowed, and no run left that misleads."""

from __future__ import annotations

import importlib

import mlflow
import optuna
import pytest
import pytorch_lightning as pl
from helpers import run_cli, runs_in

from lstm_mnist.data import BatchedTensorDataset
from lstm_mnist.training import train


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=inf", "error: lr=inf is invalid: must be a finite number > 0"),
        ("seed=-1", "error: seed=-1 is invalid: must be an integer in [0, 4294967295]"),
        (
            "batch_size=60000",
            "error: batch_size=60000 is larger than the training split:"
            " must be an integer in [1, 55000]",
        ),
    ],
)
def test_refused_value_is_one_line_and_records_no_run(tmp_path, override, message):
    proc = run_cli(tmp_path, override)
    assert proc.returncode == 1
    assert error_lines(proc) == [message]
    assert runs_in(f"sqlite:///{tmp_path}/mlflow.db") == []  # no empty FINISHED run


def test_train_itself_refuses_a_bad_value_for_callers_other_than_the_command(make_cfg, tmp_path):
    cfg, _ = make_cfg("dropout=1.5")  # the command refuses it before importing train()
    with pytest.raises(ValueError, match=r"^dropout=1.5 is invalid: must be a number in \[0, 1\)$"):
        train(cfg)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["detach=true"],
            "error: detach=true needs hydra/launcher=slurm: on one machine nothing runs the jobs"
            " once the command exits; keep the sweep running with `nohup python src/train.py -m"
            " ... > sweep.log 2>&1 &` or in tmux",
        ),
        (
            ["detach=true", "hydra/launcher=slurm", "hydra.sweeper.max_batch_size=1"],
            "error: detach=true: hydra.sweeper.max_batch_size=1 launches jobs in batches; run it"
            " attached (under nohup or tmux)",
        ),
        (
            ["hydra.sweeper.timeout_s=0"],
            "error: hydra.sweeper.timeout_s=0: must be > 0 seconds (or null)",
        ),
    ],
)
@pytest.mark.slow  # a sweep's start: ~20 s each
def test_a_sweep_that_cannot_run_as_asked_is_refused_in_one_line(tmp_path, overrides, message):
    proc = run_cli(tmp_path, "num_layers=1,2", *overrides, multirun=True)
    assert proc.returncode == 1
    assert error_lines(proc)[-1].startswith(message), proc.stderr[-2000:]
    assert runs_in(f"sqlite:///{tmp_path}/mlflow.db", parents=True) == []  # no parent opened


@pytest.mark.slow
def test_store_that_is_not_an_mlflow_database_is_named_in_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"my notes, not a database\n" * 100)
    proc = run_cli(tmp_path)
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert line.startswith(f"error: logger.tracking_uri=sqlite:///{db}: {db} is not a usable")
    assert db.read_bytes() == b"my notes, not a database\n" * 100  # left as it was


@pytest.mark.slow
def test_model_too_large_for_memory_fails_its_run_in_one_line(tmp_path):
    proc = run_cli(tmp_path, "num_units=1000000000")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert line.startswith(
        "error: num_layers=1 num_units=1000000000: the model does not fit in memory ("
    )
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("MemoryError: num_layers=1 num_units=1000000000")
    job_log = (tmp_path / "outputs" / "train.log").read_text()  # the job's log says why too
    assert "error: MemoryError: num_layers=1 num_units=1000000000" in job_log
    assert "error:" not in proc.stdout  # once on the console: stderr


class Spy:
    """Records every status written to an MLflow run, by anyone."""

    def __init__(self, monkeypatch) -> None:
        self.statuses: list[str] = []
        client = mlflow.MlflowClient
        set_terminated, update_run = client.set_terminated, client.update_run

        def spy_terminated(client_self, run_id, status=None, *args, **kwargs):
            self.statuses.append(status)
            return set_terminated(client_self, run_id, status, *args, **kwargs)

        def spy_update(client_self, run_id, status=None, *args, **kwargs):
            if status is not None:
                self.statuses.append(status)
            return update_run(client_self, run_id, status, *args, **kwargs)

        monkeypatch.setattr(client, "set_terminated", spy_terminated)
        monkeypatch.setattr(client, "update_run", spy_update)


def test_pruned_trial_run_never_reads_failed(make_cfg, monkeypatch):
    cfg, store = make_cfg("artifacts.model=false", "artifacts.pictures=false")

    class PruneAtFirstValidation(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")

    spy = Spy(monkeypatch)
    with pytest.raises(optuna.TrialPruned):
        train(cfg, callbacks=[PruneAtFirstValidation()])
    (run,) = runs_in(store)
    assert spy.statuses == ["FINISHED"]  # Lightning's "failed" never reached the store
    assert run.info.status == "FINISHED" and run.data.tags["pruned"] == "pruned at step 20"


def test_run_whose_model_upload_fails_is_not_finished(make_cfg, monkeypatch):
    cfg, store = make_cfg("artifacts.pictures=false")  # the model is logged

    def upload_fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # mlflow.pytorch is a lazy loader that replaces itself with the module: patch the module.
    monkeypatch.setattr(importlib.import_module("mlflow.pytorch"), "log_model", upload_fails)
    spy = Spy(monkeypatch)
    with pytest.raises(OSError):
        train(cfg)
    (run,) = runs_in(store)
    assert spy.statuses == ["FAILED"]  # never FINISHED, not even for a moment
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]


def test_divergence_error_starts_on_a_line_of_its_own(make_cfg, monkeypatch, capsys):
    cfg, _ = make_cfg("artifacts.model=false", "artifacts.pictures=false")
    gather = BatchedTensorDataset.__getitem__

    def poisoned(self, indices):
        x, y = gather(self, indices)
        return x * float("nan"), y

    monkeypatch.setattr(BatchedTensorDataset, "__getitem__", poisoned)
    with pytest.raises(FloatingPointError):
        train(cfg)
    out = capsys.readouterr().out  # Lightning draws its bars on stdout, errors go to stderr
    assert "Epoch 0" in out  # the progress bar was drawn...
    assert out.endswith("\n")  # ...and ended, so the error printed next starts a new line
