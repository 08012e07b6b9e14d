"""The sweeps command on one machine (list, show, stop, finish, --json, bad ids), on SQLite and on
an `mlflow server` on PostgreSQL; budgets; the detached sweep's closing race, forced."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from helpers import EXPERIMENT, ROOT, run_cli, runs_in, steps_of, sweeps, tiny_cli_args

from lstm_mnist.job import JobContext, SweepPlace
from lstm_mnist.sweeping.detached import job_ended
from lstm_mnist.tracking import Objective, Store, SweepRun


def runs_of(store: str, experiment: str, parents: bool = False) -> list:
    client = mlflow.MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if ("sweep_key" in r.data.tags) == parents]


def start_sweep(
    tmp_path: Path, store: str, experiment: str, *overrides: str
) -> tuple[subprocess.Popen, str]:
    """A long local sweep of two tiny jobs in the background, once its first run trains;
    returns the process and its parent run's id."""
    Store(store, experiment).prepare()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), "-m", *tiny_cli_args(tmp_path)]
        + ["max_steps=100000", f"logger.tracking_uri={store}", *overrides]
        + [f"logger.experiment_name={experiment}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = [r for r in runs_of(store, experiment) if r.info.status == "RUNNING"]
        if runs and steps_of(store, runs[0], "train_loss"):
            return proc, runs[0].data.tags["mlflow.parentRunId"]
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the sweep did not start: " + proc.communicate()[1][-2000:])


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]


def check_the_sweeps_command(tmp_path: Path, store: str, experiment: str) -> None:
    def command(*args: str) -> subprocess.CompletedProcess:
        return sweeps(store, *args, experiment=experiment)

    # A finished sweep: in the list, with its jobs, best and compute.
    done = run_cli(
        tmp_path,
        "num_layers=1,2",
        f"logger.tracking_uri={store}",
        f"logger.experiment_name={experiment}",
        multirun=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (finished,) = json.loads(command("list", "--json").stdout)
    client = mlflow.MlflowClient(store)
    parent = client.get_run(finished["run_id"])
    assert finished["state"] == "FINISHED" and finished["kind"] == "grid"
    assert finished["jobs"]["finished"] == 2 and finished["jobs"]["queued"] == 0
    assert finished["best"] == parent.data.metrics["best_val_acc"]
    assert finished["compute"]["core_s"] == pytest.approx(parent.data.metrics["compute_core_s"])
    assert finished["where"].startswith("local")
    listed = subprocess.run(  # as a user runs it
        [sys.executable, str(ROOT / "src" / "sweeps.py"), "list", "--tracking-uri", store]
        + ["--experiment", experiment],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert finished["run_id"] in listed.stdout and "FINISHED" in listed.stdout

    shown = json.loads(command("show", finished["run_id"], "--json").stdout)
    assert sorted(r["params"]["num_layers"] for r in shown["runs"]) == ["1", "2"]
    # finish on a closed sweep prints the summary it ended with, which its parent keeps
    again = command("finish", finished["run_id"])
    assert again.returncode == 0 and again.stdout.startswith("sweep num_layers=1,2: 2 of 2 jobs")

    # Bad ids: one line each, naming the id.
    one_line_error(command("show", "no-such-run"), "no-such-run", "no such run")
    a_run = shown["runs"][0]["run_id"]
    one_line_error(command("stop", a_run), a_run, "not a sweep's parent run")
    one_line_error(command("finish", "nope"), "nope")

    # A running sweep, stopped from another terminal: its process stops it, every run KILLED.
    proc, running = start_sweep(tmp_path, store, experiment, "num_layers=1,3")
    listed = {s["run_id"]: s for s in json.loads(command("list", "--json").stdout)}
    assert listed[running]["state"] == "RUNNING" and listed[running]["jobs"]["running"] == 1
    assert listed[running]["jobs"]["queued"] == 1
    stopped = command("stop", "latest")
    assert stopped.returncode == 0, stopped.stderr
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    parent = client.get_run(running)
    assert parent.info.status == "KILLED" and parent.data.tags["stopped_by"] == "stop"
    assert all(
        r.info.status == "KILLED" for r in runs_of(store, experiment) if r.info.status != "FINISHED"
    )
    assert "ended already: KILLED" in command("stop", running).stdout  # idempotent

    # A sweep whose process died without a word: `finish` closes what it left RUNNING.
    proc, orphan = start_sweep(tmp_path, store, experiment, "num_layers=1,4")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert client.get_run(orphan).info.status == "RUNNING"
    closed = command("finish", orphan, "--json")
    assert closed.returncode == 0, closed.stderr
    lines = json.loads(closed.stdout)["summary"]
    assert lines[0] == "1 run(s) left RUNNING by jobs that died: marked KILLED"
    assert lines[1].startswith("sweep num_layers=1,4: 0 of 2 jobs finished, 1 killed, 1 never")
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags["jobs_unstarted"] == "1"
    assert any(line.startswith("resume: python ") and "num_layers=1,4" in line for line in lines)


@pytest.mark.slow
def test_sweeps_command_on_sqlite(tmp_path):
    check_the_sweeps_command(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", EXPERIMENT)


@pytest.mark.slow
@pytest.mark.services
def test_sweeps_command_on_an_mlflow_server_on_postgresql(tmp_path, mlflow_server):
    # an experiment of its own: the server's store is shared by the session's tests
    check_the_sweeps_command(tmp_path, mlflow_server.url, f"sweeps-{tmp_path.name}")


@pytest.mark.slow
def test_a_compute_budget_leaves_the_rest_of_a_grid_unstarted(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(tmp_path, "num_layers=1,2,3", "hydra.sweeper.max_compute_s=0.5", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = runs_in(store, parents=True)
    (ran,) = runs_in(store)  # the first job spent the budget: the others never started
    assert ran.data.params["num_layers"] == "1"
    tags = parent.data.tags
    assert tags["stopped_by"] == "max_compute_s" and tags["jobs_skipped"] == "2"
    assert parent.info.status == "FINISHED"
    assert "1 of 3 jobs finished, 2 skipped; stopped by max_compute_s" in proc.stdout
    assert proc.stdout.count("not started: the sweep's budget hydra.sweeper.max_compute_s") == 2


@pytest.mark.slow
def test_a_sweep_whose_command_died_before_its_last_job_is_closed_killed_and_its_command_resumes_it(
    tmp_path,
):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    Store(store, EXPERIMENT).prepare()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), "-m", *tiny_cli_args(tmp_path)]
        + ["num_units=16,24,32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len([r for r in runs_in(store) if r.info.status == "FINISHED"]) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # as the third job starts: it has a run or not yet
    proc.wait()
    first_two = {r.info.run_id for r in runs_in(store) if r.info.status == "FINISHED"}

    closed = sweeps(store, "finish", "latest")
    assert closed.returncode == 0, closed.stderr
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "KILLED"  # not FINISHED: the third configuration did not run
    third = "1 killed" if len(runs_in(store)) == 3 else "1 never started"
    assert f"sweep num_units=16,24,32: 2 of 3 jobs finished, {third};" in closed.stdout
    (resume,) = [line for line in closed.stdout.splitlines() if line.startswith("resume: ")]
    # its report too, written by `finish`: the parent's status and the killed count in it
    report = Path(parent.data.tags["sweep_id"]) / "report.html"
    assert f"report: {report} (and report.html in the parent run)" in closed.stdout
    page = report.read_text()
    assert "KILLED" in page and f"2 of 3 jobs finished, {third};" in page

    again = resume.removeprefix("resume: ").split("   (")[0]
    done = subprocess.run(
        [sys.executable, *shlex.split(again)[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 of 3 jobs finished (2 of them before: not run again)" in done.stdout
    finished = [r for r in runs_in(store) if r.info.status == "FINISHED"]
    assert len(finished) == 3 and first_two < {r.info.run_id for r in finished}
    assert sorted(r.data.params["num_units"] for r in finished) == ["16", "24", "32"]
    (parent,) = runs_in(store, parents=True)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_unstarted"] == "0"


def end_job(store: str, parent_run: str, sweep_dir: str, num: int, barrier, results) -> None:
    place = SweepPlace(parent_run, None, sweep_dir, num, submission="s1", jobs=2)
    barrier.wait()
    results.put((num, job_ended(JobContext(Store(store, "lstm-mnist"), sweep=place))))


def test_two_jobs_ending_together_close_a_detached_sweep_once(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    objective = Objective("val_acc", "maximize")
    definition = "sweeper: grid\n"

    def parent(key: str) -> SweepRun:
        return SweepRun.open(
            Store(store, "lstm-mnist"), objective, key, key, "grid", definition, {}, facts={}
        )

    # Both jobs' marks are there when both count them (they ended at the same moment): the
    # exclusive claim lets one of them close the sweep.
    raced, ends = parent("raced"), tmp_path / "raced" / ".sweep-ends" / "s1"
    ends.mkdir(parents=True)
    (ends / "0").touch()
    (ends / "1").touch()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    jobs = [
        context.Process(
            target=end_job, args=(store, raced.run_id, str(tmp_path / "raced"), n, barrier, results)
        )
        for n in (0, 1)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    closed = dict(results.get(timeout=5) for _ in jobs)
    assert sorted(closed.values()) == [False, True], closed
    client = mlflow.MlflowClient(store)
    assert client.get_run(raced.run_id).info.status == "FINISHED"
    logged = [a.path for a in client.list_artifacts(raced.run_id)]
    assert logged == ["report.html", "summary.txt", "sweep.yaml"]  # once, by the job that closed
    assert (
        (ends / "closed-by").read_text().startswith(f"job {[n for n, c in closed.items() if c][0]}")
    )

    # One after the other: the first is not the last; the second closes it.
    calm = parent("calm")
    ctx = [
        JobContext(
            Store(store, "lstm-mnist"),
            sweep=SweepPlace(calm.run_id, None, str(tmp_path / "calm"), n, submission="s1", jobs=2),
        )
        for n in (0, 1)
    ]
    assert job_ended(ctx[1]) is False
    assert client.get_run(calm.run_id).info.status == "RUNNING"
    assert job_ended(ctx[0]) is True
    assert client.get_run(calm.run_id).info.status == "FINISHED"
