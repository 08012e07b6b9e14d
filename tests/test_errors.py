"""Bad input and failed runs, as a new user meets them: one line naming the key or file and
what is allowed, and no run left that misleads."""

from __future__ import annotations

import importlib
import inspect

import mlflow
import optuna
import pytest
import pytorch_lightning as pl
from helpers import ROOT, run_cli, runs_in
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.lstm_mnist_sweepers import Facade
from lstm_mnist.data import BatchedTensorDataset
from lstm_mnist.schema import SWEEPER_RULES, validate_sweeper
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
            "error: hydra.sweeper.timeout_s=0 is invalid: must be null or a finite number of"
            " seconds > 0",
        ),
        (
            ["hydra.sweeper.max_compute_s=abc"],
            "error: hydra.sweeper.max_compute_s=abc is invalid: must be null or a finite number"
            " of seconds > 0",
        ),
        (
            ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=0"],
            "error: hydra.sweeper.n_trials=0 is invalid: must be an integer >= 1",
        ),
    ],
)
@pytest.mark.slow  # a sweep's start: ~20 s each
def test_a_sweep_that_cannot_run_as_asked_is_refused_in_one_line(tmp_path, overrides, message):
    proc = run_cli(tmp_path, "num_layers=1,2", *overrides, multirun=True)
    assert proc.returncode == 1
    assert error_lines(proc)[-1].startswith(message), proc.stderr[-2000:]
    assert runs_in(f"sqlite:///{tmp_path}/mlflow.db", parents=True) == []  # no parent opened


def sweeper_of(*overrides: str) -> Facade:
    """The sweeper Hydra builds from hydra.sweeper for `overrides`, as it builds it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return instantiate(cfg.hydra.sweeper)


GRID, OPTUNA = [], ["hydra/sweeper=optuna"]
SECONDS = "null or a finite number of seconds > 0"


@pytest.mark.parametrize(
    "sweeper, override, message",
    [
        (GRID, "max_compute_s=abc", f"max_compute_s=abc is invalid: must be {SECONDS}"),
        (GRID, "timeout_s=nan", f"timeout_s=nan is invalid: must be {SECONDS}"),
        (GRID, "timeout_s=-1", f"timeout_s=-1 is invalid: must be {SECONDS}"),
        (GRID, "max_batch_size=true", "max_batch_size=true is invalid: must be null or an integer"),
        (GRID, "max_batch_size=0", "max_batch_size=0 is invalid: must be null or an integer >= 1"),
        (GRID, "max_batch_size=1.5", "max_batch_size=1.5 is invalid: must be null or an integer"),
        (GRID, "params=[lr]", "params=['lr'] is invalid: must be null or a mapping"),
        (GRID, "name=[a]", "name=['a'] is invalid: must be null or a string"),
        (OPTUNA, "n_trials=0", "n_trials=0 is invalid: must be an integer >= 1"),
        (OPTUNA, "n_trials=abc", "n_trials=abc is invalid: must be an integer >= 1"),
        (OPTUNA, "n_trials=false", "n_trials=false is invalid: must be an integer >= 1"),
        (
            OPTUNA,
            "storage=optuna.db",
            "storage=optuna.db is invalid: must be null or a database URL",
        ),
        (
            OPTUNA,
            "storage=grpc://localhost",
            "storage=grpc://localhost is invalid: must be null or",
        ),
        (  # a mistyped URL's password is not printed
            OPTUNA,
            "storage='postgresql:/me:secret@db/optuna'",
            "storage=postgresql:/me:***@db/optuna is invalid: must be null or a database URL",
        ),
        (OPTUNA, "asynchronous=yes", "asynchronous=yes is invalid: must be true or false"),
        (OPTUNA, "asynchronous=1", "asynchronous=1 is invalid: must be true or false"),
        (
            OPTUNA,
            "heartbeat_s=0",
            "heartbeat_s=0 is invalid: must be a finite number of seconds > 0",
        ),
        (OPTUNA, "retries=-1", "retries=-1 is invalid: must be an integer >= 0"),
        (OPTUNA, "retries=true", "retries=true is invalid: must be an integer >= 0"),
        (OPTUNA, "enqueue=[0.1]", "enqueue=[0.1] is invalid: must be a list of mappings"),
        (OPTUNA, "params=null", "params=null is invalid: must be a mapping"),
        (OPTUNA, "max_compute_s=abc", f"max_compute_s=abc is invalid: must be {SECONDS}"),
    ],
)
def test_a_wrong_sweeper_setting_is_refused_in_one_line_before_the_sweep_starts(
    sweeper, override, message
):
    facade = sweeper_of(*sweeper, f"hydra.sweeper.{override}")
    with pytest.raises(ValueError) as refused:  # before it needs Hydra's context: None here
        facade.setup(hydra_context=None, task_function=None, config=None)
    assert str(refused.value).startswith(f"hydra.sweeper.{message}")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "settings, message",
    [  # Hydra's composition refuses these as overrides (a list for a mapping): from Python
        ({"trade_offs": ["num_params"]}, "trade_offs=['num_params'] is invalid: must be a mapping"),
        ({"enqueue": {"lr": 0.1}}, "enqueue={'lr': 0.1} is invalid: must be a list of mappings"),
        ({"enqueue": "lr=0.1"}, "enqueue=lr=0.1 is invalid: must be a list of mappings"),
        ({"storage": 5432}, "storage=5432 is invalid: must be null or a database URL"),
    ],
)
def test_a_wrong_optuna_setting_given_from_python_is_refused_in_one_line(settings, message):
    good = sweeper_of(*OPTUNA).settings
    with pytest.raises(ValueError) as refused:
        validate_sweeper("optuna", {**good, **settings})
    assert str(refused.value).startswith(f"hydra.sweeper.{message}")


@pytest.mark.parametrize(
    "overrides",
    [
        GRID,
        ["hydra.sweeper.max_batch_size=2", "hydra.sweeper.timeout_s=1.5e3"],
        ["hydra.sweeper.max_compute_s=600", "hydra.sweeper.name=wide"],
        OPTUNA,
        ["sweeps=optuna", "hydra.sweeper.enqueue=[{lr:1e-3,num_units:256}]"],
        ["sweeps=pareto"],
        [*OPTUNA, "hydra.sweeper.storage=sqlite:///optuna.db", "hydra.sweeper.retries=0"],
        [*OPTUNA, "hydra.sweeper.storage='postgresql+psycopg2://me:pw@db:5432/optuna'"],
        [*OPTUNA, "hydra.sweeper.storage=mysql+pymysql://me@db/optuna"],
        [*OPTUNA, "hydra.sweeper.storage=grpc://localhost:13000", "hydra.sweeper.heartbeat_s=0.5"],
        [*OPTUNA, "hydra.sweeper.asynchronous=false", "hydra.sweeper.timeout_s=null"],
    ],
)
def test_the_sweepers_shipped_and_documented_settings_pass_the_check(overrides):
    facade = sweeper_of(*overrides)
    validate_sweeper(facade.kind, facade.settings)  # raises if a rule refused a good value
    assert facade.kind in ("grid", "optuna")


def test_every_sweeper_setting_has_a_rule():
    from lstm_mnist.sweeping.grid import GridSweep
    from lstm_mnist.sweeping.optuna.sweeper import OptunaSweep

    objects = {"sampler", "pruner"}  # built by Hydra from their _target_: no type of ours
    for kind, sweep in (("grid", GridSweep), ("optuna", OptunaSweep)):
        taken = set(inspect.signature(sweep.__init__).parameters) - {"self"}
        shipped = set(OmegaConf.load(ROOT / "conf" / "hydra" / "sweeper" / f"{kind}.yaml"))
        assert set(SWEEPER_RULES[kind]) == taken - objects == shipped - objects - {"_target_"}


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
