"""Nothing lost, nothing stuck: each failure a long unattended sweep can meet, provoked for real."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import mlflow
import optuna
import psutil
import pytest
import pytorch_lightning as pl
import torch
from helpers import (
    ROOT,
    Terminal,
    run_cli,
    runs_in,
    start_training,
    steps_of,
    tiny_cli_args,
)

from lstm_mnist.checkpoints import checkpoint_step
from lstm_mnist.data import BatchedTensorDataset
from lstm_mnist.interrupts import Interrupted
from lstm_mnist.tracking import Store
from lstm_mnist.training import train


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
    for _ in range(2):
        cfg, store = make_cfg(
            "artifacts.model=false", "artifacts.pictures=false", "keep_checkpoints=true"
        )
        result = train(cfg)
        (run,) = [r for r in runs_in(store) if r.info.run_id == result["run_id"]]
        histories.append(
            {m: steps_of(store, run, m, values=True) for m in ("train_loss", "val_acc", "test_acc")}
        )
        (ckpt,) = (tmp_path / "checkpoints" / result["run_id"]).glob("*.ckpt")
        weights.append(torch.load(ckpt, weights_only=True)["state_dict"])
    assert histories[0] == histories[1]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_interrupted_and_resumed_run_is_bit_identical_to_the_uninterrupted_one(
    make_cfg, tmp_path, monkeypatch
):
    # Dropout, so that the resumed part must also draw the same random numbers.
    same = ["artifacts.model=false", "artifacts.pictures=false", "keep_checkpoints=true"]
    same += ["num_layers=2", "dropout=0.3", "max_steps=60", "val_every=20"]
    cfg, store = make_cfg(*same)
    whole = train(cfg)

    class SigtermAtStep37(pl.Callback):  # mid-epoch, between two checkpoints
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 37:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg, _ = make_cfg(*same)
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[SigtermAtStep37()])
    (killed,) = [r for r in runs_in(store) if r.info.status == "KILLED"]
    cfg, _ = make_cfg(*same, f"resume={killed.info.run_id}")
    resumed = train(cfg)
    assert resumed["run_id"] == killed.info.run_id

    def history(run_id):
        client = mlflow.MlflowClient(store)
        return {
            m: [(p.step, p.value) for p in client.get_metric_history(run_id, m)]
            for m in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc")
        }

    assert history(resumed["run_id"]) == history(whole["run_id"])
    weights = [
        torch.load(tmp_path / "checkpoints" / r["run_id"] / "step=60.ckpt", weights_only=True)
        for r in (whole, resumed)
    ]
    for key, value in weights[0]["state_dict"].items():
        assert torch.equal(value, weights[1]["state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_checkpoints_the_last_step_and_marks_the_run_killed(tmp_path, signum, exit_code):
    proc, run_id = start_training(tmp_path, "val_every=100000")  # no periodic checkpoints
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == exit_code, stderr[-2000:]
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (run,) = runs_in(store)
    assert run.info.status == "KILLED"
    (ckpt,) = (tmp_path / "checkpoints" / run_id).glob("*.ckpt")  # the interrupt's own
    state = torch.load(ckpt, weights_only=True)
    assert ckpt.name == f"step={state['global_step']}.ckpt"
    assert state["global_step"] >= max(steps_of(store, run, "train_loss"))


@pytest.mark.slow
def test_resume_refuses_another_config_then_continues_the_same_run_without_gaps_or_repeats(
    tmp_path,
):
    # SIGTERM goes once step 10 is in the store: 1000 steps leave a margin for that poll on a
    # loaded machine; few validations, as they cost most of a tiny run.
    steps = ["max_steps=1000", "val_every=200"]
    proc, run_id = start_training(tmp_path, *steps)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    damaged = tmp_path / "checkpoints" / run_id / "step=99999.ckpt"
    damaged.write_bytes(b"")  # newest by name, and unusable: must be skipped

    proc = run_cli(tmp_path, *steps, "num_units=32", f"resume={run_id}")
    assert proc.returncode != 0  # not with another config
    assert f"error: resume={run_id}: num_units=32 here but 16 in that run" in proc.stderr

    proc = run_cli(tmp_path, *steps, f"resume={run_id}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipping checkpoint {damaged}" in proc.stdout  # Hydra logs to stdout
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (run,) = runs_in(store)  # the same run, not a new one
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert steps_of(store, run, "train_loss") == list(range(10, 1001, 10))
    assert steps_of(store, run, "val_acc") == list(range(200, 1001, 200))
    assert steps_of(store, run, "test_acc") == [1000]


@pytest.mark.slow
def test_a_closed_terminal_checkpoints_the_run_and_resume_continues_it_unless_under_nohup(
    tmp_path,
):
    steps = ["max_steps=1000", "val_every=200"]
    terminal = Terminal()
    proc, run_id = start_training(tmp_path, *steps, terminal=terminal)
    terminal.hang_up()  # the window closed, the SSH session dropped: SIGHUP, then no terminal
    assert proc.wait(timeout=60) == 129, terminal.text()[-2000:]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (run,) = runs_in(store)
    assert run.info.status == "KILLED"
    ckpt = max((tmp_path / "checkpoints" / run_id).glob("*.ckpt"), key=checkpoint_step)
    assert checkpoint_step(ckpt) >= max(steps_of(store, run, "train_loss"))  # the last step's

    # Resumed under nohup (SIGHUP ignored): a hangup now leaves it training to the end.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *tiny_cli_args(tmp_path), *steps]
        + [f"resume={run_id}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 60
    while runs_in(store)[0].info.status != "RUNNING":  # reopened: its handlers are set
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    (run,) = runs_in(store)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert steps_of(store, run, "train_loss") == list(range(10, 1001, 10))  # each step once
    assert steps_of(store, run, "val_acc") == list(range(200, 1001, 200))


@pytest.mark.slow
def test_resume_after_sigkill_logs_no_step_twice(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    config = ["num_units=64", "max_steps=600", "val_every=200"]
    proc, run_id = start_training(tmp_path, *config)
    deadline = time.monotonic() + 120
    while max(steps_of(store, runs_in(store)[0], "train_loss")) < 230:  # past a checkpoint
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()  # no checkpoint of its own: the steps after the last one are trained again
    proc.communicate(timeout=60)
    (ckpt,) = (tmp_path / "checkpoints" / run_id).glob("*.ckpt")
    checkpointed = int(ckpt.stem.split("=")[1])
    assert max(steps_of(store, runs_in(store)[0], "train_loss")) > checkpointed

    proc = run_cli(tmp_path, *config, f"resume={run_id}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(store)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert steps_of(store, run, "train_loss") == list(range(10, 601, 10))  # each step once
    assert steps_of(store, run, "val_acc") == [200, 400, 600]


@pytest.mark.slow
def test_run_left_running_by_sigkill_is_marked_killed_at_next_start(tmp_path):
    proc, dead_id = start_training(tmp_path)
    proc.kill()  # SIGKILL: no handler runs, the run stays RUNNING
    proc.communicate(timeout=60)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    assert runs_in(store)[0].info.status == "RUNNING"
    time.sleep(3)
    proc = run_cli(tmp_path, "stale_after_s=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run {dead_id} was left RUNNING" in proc.stdout  # Hydra logs to stdout
    status = {r.info.run_id: r.info.status for r in runs_in(store)}
    assert status.pop(dead_id) == "KILLED"
    assert list(status.values()) == ["FINISHED"]

    # The run line, then the link to the run's page in the UI that this store needs.
    (run,) = [r for r in runs_in(store) if r.info.run_id != dead_id]
    page = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    start = f"mlflow ui --backend-store-uri {store}"
    assert f"see it: {page}  (start the UI first: {start})" in proc.stdout
    job_log = (tmp_path / "outputs" / "train.log").read_text()  # Hydra's log of the job
    assert f"run {run.info.run_id}: val_acc=" in job_log and f"see it: {page}" in job_log
    # Metrics are the numbers they are: k/5000 on the 5,000 validation images, no float32 noise.
    assert run.data.metrics["val_acc"] == round(run.data.metrics["val_acc"], 4)


@pytest.mark.slow
def test_full_disk_fails_the_run_and_leaves_no_truncated_checkpoint(tmp_path):
    def small_files_only():  # every file this process writes is capped at 4 MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(  # 512 units: a ~13 MB checkpoint, written at step 20
        [sys.executable, str(ROOT / "src" / "train.py"), *tiny_cli_args(tmp_path)]
        + ["num_units=512"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=small_files_only,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "error: [Errno 27] cannot write checkpoint" in proc.stderr
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FAILED"
    assert "cannot write checkpoint" in run.data.tags["error"]
    assert list((tmp_path / "checkpoints").rglob("*ckpt*")) == []  # not even a temporary file


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("dropout=0.1,1.5", "error: sweep rejected before any job ran: dropout=1.5 is invalid"),
        ("num_layers=1,two,3", "num_layers"),
        (
            "model.cell=lstm,rnn_tanh",
            "error: sweep rejected before any job ran: model.cell=rnn_tanh is invalid:"
            " must be lstm or gru\n",
        ),
    ],
)
def test_one_bad_job_rejects_the_whole_sweep_before_it_starts(tmp_path, sweep, message):
    proc = run_cli(tmp_path, sweep, multirun=True)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs_in(f"sqlite:///{tmp_path}/mlflow.db") == []  # not even the good jobs ran


@pytest.mark.slow
def test_unreachable_tracking_server_fails_fast_and_clearly(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    # Last override wins: the tracking URI replaces tiny_cli_args' SQLite store.
    proc = run_cli(tmp_path, f"logger.tracking_uri={uri}")
    assert time.monotonic() - started < 120  # MLflow's own retries would take minutes
    assert proc.returncode != 0
    assert f"error: MLflow tracking server {uri} does not answer" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_two_sweeps_at_once_into_one_fresh_sqlite_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sweeps = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "src" / "train.py"), "-m", *tiny_cli_args(tmp_path)]
            + ["num_layers=1,2,3", f"hydra.sweep.dir={tmp_path}/multirun_{name}", f"seed={seed}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for seed, name in enumerate("ab")
    ]
    errors = [p.communicate(timeout=600)[1] for p in sweeps]
    for proc, stderr in zip(sweeps, errors, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr
    store = f"sqlite:///{tmp_path}/mlflow.db"
    runs = runs_in(store)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["sweep_id"] for r in runs}) == 2
    parents = runs_in(store, parents=True)
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    assert [int(p.data.tags["jobs_finished"]) for p in parents] == [3, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {p.info.run_id for p in parents}
    for run in runs:  # every metric point of every run is there
        assert steps_of(store, run, "train_loss") == [10, 20, 30]
        assert steps_of(store, run, "val_acc") == [20, 30]
        assert steps_of(store, run, "test_acc") == [30]


@pytest.mark.slow
def test_interrupted_sweep_stops_and_lists_the_jobs_not_run(tmp_path):
    proc, _ = start_training(tmp_path, "num_layers=1,2,3", multirun=True)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "sweep interrupted; 2 job(s) not run:" in stderr
    assert "num_layers=2" in stderr and "num_layers=3" in stderr
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db")  # the other two never started
    assert run.info.status == "KILLED" and run.data.params["num_layers"] == "1"
    (parent,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db", parents=True)
    assert parent.info.status == "KILLED" and int(parent.data.tags["jobs_killed"]) == 1


def ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to every process of the command


def sigterm(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # as a scheduler or `kill` does: to the command only


def hang_up(proc: subprocess.Popen) -> None:
    # as a shell does when its terminal closes: to every process of the command; the sweep
    # passes it on to its workers too, so each is sent it twice
    os.killpg(proc.pid, signal.SIGHUP)


@pytest.mark.slow
# With SIGTERM, a third worker idles (loky starts n_jobs at once); with Ctrl-C or a hangup it
# would die of it, and loky would kill the others: a gap of loky's (interrupts.py).
@pytest.mark.parametrize(
    "interrupt, exit_code, n_jobs", [(sigterm, 143, 3), (ctrl_c, 130, 2), (hang_up, 129, 2)]
)
def test_interrupted_parallel_sweep_stops_every_worker_and_leaves_nothing_running(
    tmp_path, interrupt, exit_code, n_jobs
):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    # Two jobs whose steps differ 100-fold, so that one has ended its run long before the other:
    # loky kills every worker as soon as one exits.
    parallel = ["num_units=16,1024", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    proc, _ = start_training(tmp_path, *parallel, multirun=True)
    deadline = time.monotonic() + 120
    while not (
        len(runs_in(store)) == 2 and all(steps_of(store, r, "train_loss") for r in runs_in(store))
    ):
        assert time.monotonic() < deadline, "the second job did not start training"
        time.sleep(0.5)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    interrupt(proc)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == exit_code, stderr[-2000:]
    # No worker trains on after the command has exited, and no run is left RUNNING. Helpers
    # that ignore SIGTERM (the resource tracker) end with the command: give them a moment.
    _, left = psutil.wait_procs(workers, timeout=10)
    assert not [w for w in left if w.status() != psutil.STATUS_ZOMBIE], left
    runs = runs_in(store)
    job_logs = "".join(p.read_text() for p in sorted((tmp_path / "multirun").rglob("*.log")))
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"], stderr[-3000:] + job_logs
    for run in runs:  # each worker checkpointed its last step
        assert list((tmp_path / "checkpoints" / run.info.run_id).glob("*.ckpt"))
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "KILLED"


@pytest.mark.slow
def test_sweep_left_running_by_sigkill_is_marked_killed_at_next_start(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc, dead_job = start_training(tmp_path, "num_layers=1,2", multirun=True)
    proc.kill()  # the sweeper and its job die without a word
    proc.communicate(timeout=60)
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "RUNNING" and "heartbeat" in parent.data.tags
    time.sleep(3)
    proc = run_cli(tmp_path, "stale_after_s=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run {parent.info.run_id} was left RUNNING" in proc.stdout
    status = {r.info.run_id: r.info.status for r in runs_in(store)}
    assert status[dead_job] == "KILLED"
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "KILLED"


@pytest.mark.slow
def test_trial_whose_job_died_is_failed_and_retried_with_the_same_values(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = [
        "sweeps=optuna",
        "~hydra.sweeper.params.num_units",
        "~hydra.sweeper.params.num_layers",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.heartbeat_s=1",
        "stale_after_s=2",
        "max_steps=3000",
        "val_every=1000",
    ]
    proc, dead_run = start_training(tmp_path, *sweep, multirun=True)
    proc.kill()  # the sweep and its trial's job die without a word
    proc.communicate(timeout=60)
    time.sleep(3)  # past the trial's grace period (2 x heartbeat_s) and stale_after_s

    proc = run_cli(tmp_path, *sweep, multirun=True)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run {dead_run} was left RUNNING" in proc.stdout
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    dead, retry = study.trials
    assert (dead.state.name, retry.state.name) == ("FAIL", "COMPLETE")
    assert retry.params == dead.params and retry.system_attrs["failed_trial"] == 0
    runs = {r.data.tags["optuna_trial"]: r for r in runs_in(store)}
    assert runs["0"].info.run_id == dead_run and runs["0"].info.status == "KILLED"
    assert runs["1"].info.status == "FINISHED" and runs["1"].data.tags["retry_of"] == "0"


@pytest.mark.slow
def test_clean_removes_what_no_run_can_resume_from_and_purges_deleted_runs(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = Store(store, "lstm-mnist").prepare()
    client = mlflow.MlflowClient(store)
    runs = {}
    for status in ("FINISHED", "KILLED", "FAILED", "DELETED"):
        run_id = client.create_run(experiment).info.run_id
        client.set_terminated(run_id, "FINISHED" if status == "DELETED" else status)
        runs[status] = run_id
    client.delete_run(runs["DELETED"])
    runs["UNKNOWN"] = "0" * 32  # a folder whose run is in no store
    for run_id in runs.values():
        (tmp_path / "checkpoints" / run_id).mkdir(parents=True)
        (tmp_path / "checkpoints" / run_id / "step=20.ckpt").write_bytes(b"x" * 500_000)

    def clean(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "src" / "clean.py"), "--tracking-uri", store, *options],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )

    dry = clean("--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "3 checkpoint folder(s), would free 1.5 MB; kept 2 resumable" in dry.stdout
    assert len(list((tmp_path / "checkpoints").iterdir())) == 5  # nothing removed

    done = clean("--deleted-runs")
    assert done.returncode == 0, done.stderr[-2000:]
    left = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert left == {runs["KILLED"], runs["FAILED"]}  # resume=<run id> still works for them
    assert "freed 1.5 MB" in done.stdout
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_run(runs["DELETED"])  # purged by mlflow gc
    assert client.get_run(runs["FINISHED"]).info.status == "FINISHED"  # runs themselves stay
