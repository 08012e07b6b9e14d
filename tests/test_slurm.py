"""Sweeps on a real single-node SLURM cluster (services.py starts it, with accounting), tracked
into an `mlflow server` on PostgreSQL, as on a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from helpers import (
    ASYNC_SEARCH,
    ROOT,
    assert_no_barrier,
    job_runs,
    run_cli,
    steps_of,
    sweeps,
    tiny_cli_args,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

# One CPU per job: the 2 jobs of a sweep run at once even on a 2-core machine.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


def accounting(*columns: str, settle_s: float = 30) -> list[list[str]]:
    """sacct's lines for this cluster's jobs (job steps left out), as lists of `columns`, once no
    job reads RUNNING or COMPLETING any more (the job's result can be in before slurmdbd has its
    end: seen here, both tasks still RUNNING right after the sweep returned), `settle_s` at most."""
    deadline = time.monotonic() + settle_s
    while True:
        out = subprocess.run(
            [
                "sacct",
                "-n",
                "-X",
                "-P",
                "-a",
                "-S",
                "now-1hour",
                "-o",
                f"State,{','.join(columns)}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        lines = [line.split("|") for line in out.splitlines() if line]
        busy = any(line[0] in ("RUNNING", "COMPLETING") for line in lines)
        if not busy or time.monotonic() > deadline:
            return [line[1:] for line in lines]
        time.sleep(1)


def test_grid_sweep_runs_as_one_slurm_job_array(slurm, mlflow_server, tmp_path):
    before = {line[0] for line in accounting("JobID", settle_s=0)}
    proc = run_cli(
        tmp_path,
        "num_layers=1,2",
        *SLURM,
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + "\nserver log:\n" + mlflow_server.log()

    # The scheduler ran both jobs as the two tasks of one job array, and accounted for them.
    jobs = [line for line in accounting("JobID", "State", "ExitCode") if line[0] not in before]
    assert len(jobs) == 2, jobs
    assert len({line[0].split("_")[0] for line in jobs}) == 1  # one array
    assert sorted(line[0].split("_")[1] for line in jobs) == ["0", "1"]
    assert all(line[1:] == ["COMPLETED", "0:0"] for line in jobs), jobs

    # Tracked as on one machine: two FINISHED runs nested under one FINISHED parent.
    client = mlflow.MlflowClient(mlflow_server.url)
    runs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert [r.data.params["num_layers"] for r in runs] == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["torch_threads"] == "1" for r in runs)  # cpus_per_task, not all cores
    (parent_id,) = {r.data.tags["mlflow.parentRunId"] for r in runs}
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_finished"] == "2"
    assert "sweep num_layers=1,2: 2 of 2 jobs finished" in proc.stdout


def test_failed_slurm_job_is_recorded_and_named(slurm, mlflow_server, tmp_path):
    proc = run_cli(
        tmp_path,
        "num_units=16,2000000",  # the second cannot be allocated
        *SLURM,
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "sweep done; 1 of 2 job(s) failed:" in proc.stderr
    assert "num_units=2000000" in proc.stderr and "can't allocate memory" in proc.stderr
    runs = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def start_sweep(tmp_path, *overrides: str) -> subprocess.Popen:
    """A SLURM sweep of tiny runs, started in the background."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), "-m", *tiny_cli_args(tmp_path)]
        + [*SLURM, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )


def training_runs(tracking_uri: str, tmp_path, past_step: int, count: int = 1) -> list:
    """The sweep's first `count` runs, once each has logged train_loss past `past_step`."""
    client = mlflow.MlflowClient(tracking_uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = (
            job_runs(tracking_uri, tmp_path / "multirun")
            if client.get_experiment_by_name("lstm-mnist")
            else []
        )
        steps = [steps_of(tracking_uri, run, "train_loss")[-1:] for run in runs[:count]]
        if len(steps) == count and all(s >= [past_step] for s in steps):
            return runs[:count]
        time.sleep(0.5)
    raise AssertionError(f"{count} run(s) did not train past step {past_step} in 180 s")


def assert_one_continuous_run(tracking_uri: str, tmp_path, status: str, max_steps: int = 0) -> None:
    """The sweep's one run ended `status`, continued by a restarted job with every metric step
    once: up to `max_steps` (a finished run) or to its last logged step (a cancelled one)."""
    (run,) = job_runs(tracking_uri, tmp_path / "multirun")
    assert run.info.status == status
    logged = steps_of(tracking_uri, run, "train_loss")
    assert logged == list(range(10, (max_steps or logged[-1]) + 1, 10))
    validated = steps_of(tracking_uri, run, "val_acc")  # every 500 steps
    assert validated == list(range(500, (max_steps or 500 * len(validated)) + 1, 500))
    log = (tmp_path / "multirun" / "0" / "train.log").read_text()
    assert f"continuing its run {run.info.run_id}" in log


def test_requeued_job_continues_its_own_run(slurm, mlflow_server, tmp_path):
    steps = ["max_steps=3000", "val_every=500"]
    proc = start_sweep(tmp_path, *steps, f"logger.tracking_uri={mlflow_server.url}")
    (run,) = training_runs(mlflow_server.url, tmp_path, past_step=300)
    subprocess.run(["scontrol", "requeue", run.data.tags["slurm_job"]], check=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    assert_one_continuous_run(mlflow_server.url, tmp_path, "FINISHED", max_steps=3000)


# A 2-minute limit; SIGUSR2 30 s before it. SLURM checks time limits every 30 s and may send the
# signal up to 60 s early (sbatch(1), --signal), so it comes 30-90 s after the job's start: after
# Python has installed submitit's handler (a signal before that kills the job; with submitit's
# default of 120 s and a 1-minute limit, it came at once).
TIME_LIMIT = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30"]


def test_job_at_its_time_limit_requeues_itself_continues_its_run_and_then_ends_killed(
    slurm, mlflow_server, tmp_path
):
    # One job meets two time limits (one test: each costs a minute or two of SLURM's clock). The
    # first requeues it (max_num_timeout=1) and it continues its run; the second finds no requeue
    # left and ends the run KILLED with a clear line. The training outlasts any time limit here,
    # however fast the machine (5000 steps took from 40 to 100 s on the same kind of machine).
    steps = ["max_steps=1000000", "val_every=500"]
    limit = [*TIME_LIMIT, "hydra.launcher.max_num_timeout=1"]
    proc = start_sweep(tmp_path, *steps, *limit, f"logger.tracking_uri={mlflow_server.url}")
    log = tmp_path / "multirun" / "0" / "train.log"
    deadline = time.monotonic() + 300
    while "continuing its run" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None, "the job was not requeued"
        time.sleep(1)
    (run,) = job_runs(mlflow_server.url, tmp_path / "multirun")
    stopped_at = steps_of(mlflow_server.url, run, "train_loss")[-1]
    training_runs(mlflow_server.url, tmp_path, past_step=stopped_at + 100)  # it trains on
    submitit_log = next((tmp_path / "multirun" / ".submitit").glob("*/*_0_log.out")).read_text()
    assert "this job is timed-out" in submitit_log  # requeued by the time limit's SIGUSR2

    _, stderr = proc.communicate(timeout=600)  # until the second time limit
    assert proc.returncode == 1, stderr[-4000:]
    assert "timed-out too many times" in stderr
    assert_one_continuous_run(mlflow_server.url, tmp_path, "KILLED")  # once continued
    assert list((tmp_path / "checkpoints" / run.info.run_id).glob("*.ckpt"))


def test_sigterm_to_a_slurm_sweep_cancels_its_jobs_and_leaves_no_run_running(
    slurm, mlflow_server, tmp_path
):
    steps = ["max_steps=100000", "val_every=500"]
    proc = start_sweep(
        tmp_path, "num_layers=1,2", *steps, f"logger.tracking_uri={mlflow_server.url}"
    )
    runs = training_runs(mlflow_server.url, tmp_path, past_step=20, count=2)
    jobs = {run.data.tags["slurm_job"] for run in runs}
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 143, stderr[-4000:]

    # No job of the sweep is left in the queue; each checkpointed and marked its run KILLED.
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert not jobs & set(queue.split()), queue
    states = {line[0]: line[1] for line in accounting("JobID", "State")}
    assert all(states[job].startswith("CANCELLED") for job in jobs), states
    client = mlflow.MlflowClient(mlflow_server.url)
    for run in runs:
        assert client.get_run(run.info.run_id).info.status == "KILLED"
        assert list((tmp_path / "checkpoints" / run.info.run_id).glob("*.ckpt"))
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"


def test_asynchronous_optuna_workers_as_slurm_array_tasks(
    slurm, mlflow_server, optuna_storage_url, tmp_path
):
    import optuna

    proc = run_cli(
        tmp_path,
        *ASYNC_SEARCH,
        *SLURM,
        "hydra.launcher.array_parallelism=2",  # two workers
        f"hydra.sweeper.storage={optuna_storage_url}",
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = [line for line in accounting("JobID", "JobName", "State")]
    runs = job_runs(mlflow_server.url, tmp_path / "multirun")
    parent = mlflow.MlflowClient(mlflow_server.url).get_run(runs[0].data.tags["mlflow.parentRunId"])
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=optuna_storage_url
    )
    assert_no_barrier(study, runs, parent)
    # The two workers were the two tasks of one array.
    workers = {r.data.tags["slurm_job"] for r in runs}
    assert len(workers) == 2 and len({w.split("_")[0] for w in workers}) == 1, jobs


DDP_TASKS = ["trainer=ddp_cpu", "hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=4"]


def test_a_two_task_slurm_job_is_one_ddp_run_and_requeued_continues_it(
    slurm, mlflow_server, tmp_path
):
    steps = ["max_steps=3000", "val_every=500"]
    proc = start_sweep(tmp_path, *DDP_TASKS, *steps, f"logger.tracking_uri={mlflow_server.url}")
    (run,) = training_runs(mlflow_server.url, tmp_path, past_step=300)
    subprocess.run(["scontrol", "requeue", run.data.tags["slurm_job"]], check=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    # SLURM started both ranks, twice; rank 0 recorded one run, continued after the requeue.
    assert_one_continuous_run(mlflow_server.url, tmp_path, "FINISHED", max_steps=3000)
    (run,) = job_runs(mlflow_server.url, tmp_path / "multirun")
    assert run.data.params["world_size"] == "2"
    handoffs = sorted(p.name for p in (tmp_path / "multirun" / "0").glob(".rank-0-of-*"))
    assert [name.rsplit("-", 1)[1] for name in handoffs] == ["0.pkl", "1.pkl"]  # per start


def test_tasks_that_disagree_with_the_trainer_flags_are_refused_in_one_line(
    slurm, mlflow_server, tmp_path
):
    proc = run_cli(
        tmp_path,
        "seed=1",
        *SLURM,
        "hydra.launcher.tasks_per_node=2",  # trainer=cpu: one device
        f"logger.tracking_uri={mlflow_server.url}",
        multirun=True,
    )
    assert proc.returncode == 1
    assert "trainer.devices=1 trainer.num_nodes=1 ask for 1 processes but the SLURM job has 2" in (
        proc.stderr
    )
    assert not job_runs(mlflow_server.url, tmp_path / "multirun")


DETACHED = [*SLURM, "detach=true", "hydra.launcher.array_parallelism=2"]


def detached_parent(proc: subprocess.CompletedProcess) -> str:
    """The parent run id a detached sweep's command printed, once it returned 0."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if ": detached; " in line)
    return line.rsplit("parent run ", 1)[1].strip()


def ended(tracking_uri: str, run_id: str, timeout_s: float = 300):
    """The run once it is no longer RUNNING."""
    client = mlflow.MlflowClient(tracking_uri)
    deadline = time.monotonic() + timeout_s
    while (run := client.get_run(run_id)).info.status == "RUNNING":
        assert time.monotonic() < deadline, f"run {run_id} still RUNNING after {timeout_s} s"
        time.sleep(1)
    return run


def in_queue(*arrays: str, wait_s: float = 0) -> list[str]:
    """These arrays' jobs still in the queue (after `wait_s` at most for none to be)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
        jobs = [job for job in out.stdout.split() if job.split("_")[0] in arrays]
        if not jobs or time.monotonic() >= deadline:
            return jobs
        time.sleep(1)


def runs_of_parent(tracking_uri: str, parent_id: str) -> list:
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.sweep_run = '{parent_id}'")


def summary_of(tracking_uri: str, run_id: str) -> str:
    client = mlflow.MlflowClient(tracking_uri)
    return open(client.download_artifacts(run_id, "summary.txt")).read()


def test_a_detached_optuna_sweep_returns_at_once_and_its_last_job_closes_it(
    slurm, mlflow_server, optuna_storage_url, tmp_path
):
    import optuna

    url = mlflow_server.url
    command = [*ASYNC_SEARCH, *DETACHED, f"hydra.sweeper.storage={optuna_storage_url}"]
    command.append(f"logger.tracking_uri={url}")
    started = time.monotonic()
    proc = run_cli(tmp_path, *command, multirun=True)
    returned_s = time.monotonic() - started
    parent_id = detached_parent(proc)
    assert returned_s < 60, returned_s
    assert f"sweeps.py stop {parent_id}" in proc.stdout  # what to run next, said
    client = mlflow.MlflowClient(url)
    arrays = client.get_run(parent_id).data.tags["slurm_jobs"].split()
    assert in_queue(*arrays)  # its jobs run on, with no command waiting for them
    listed = {s["run_id"]: s for s in json.loads(sweeps(url, "list", "--json").stdout)}
    assert listed[parent_id]["state"] == "RUNNING" and listed[parent_id]["detached"]
    assert listed[parent_id]["where"] == f"SLURM {' '.join(arrays)}"

    parent = ended(url, parent_id)
    assert parent.info.status == "FINISHED"
    assert not in_queue(*arrays, wait_s=60)  # the job that closed it ends too: nothing left
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=optuna_storage_url
    )
    assert sum(t.state.is_finished() for t in study.trials) == 4
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert parent.data.metrics["best_val_acc"] == max(t.value for t in complete)
    text = summary_of(url, parent_id)
    assert text.startswith("sweep optuna: ") and "core-s" in text and "best: " in text
    # one of the two workers closed it, once
    (closer,) = (tmp_path / "multirun" / ".sweep-ends").glob("*/closed-by")
    logs = [p.read_text() for p in (tmp_path / "multirun" / ".submitit").glob("*/*_log.out")]
    assert sum("this job was the sweep's last" in log for log in logs) == 1, closer.read_text()
    shown = json.loads(
        sweeps(url, "show", parent_id, "--json", "--storage", optuna_storage_url).stdout
    )
    assert len(shown["trials"]) == len(study.trials)

    # The same command again resumes it, as an attached sweep: its study is full, so it ends.
    again = run_cli(tmp_path, *command, multirun=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 trials already finished; resuming" in again.stdout
    assert summary_of(url, parent_id).splitlines()[0] in again.stdout  # its summary, again
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert len(runs_of_parent(url, parent_id)) == len(study.trials)  # nothing ran again


def test_sweeps_stop_cancels_a_detached_sweep(slurm, mlflow_server, tmp_path):
    url = mlflow_server.url
    command = ["num_layers=1,2", "max_steps=100000", "val_every=500", *DETACHED]
    command.append(f"logger.tracking_uri={url}")
    parent_id = detached_parent(run_cli(tmp_path, *command, multirun=True))
    runs = training_runs(url, tmp_path, past_step=20, count=2)
    arrays = mlflow.MlflowClient(url).get_run(parent_id).data.tags["slurm_jobs"].split()
    # the same command while it runs: refused, not submitted twice
    twice = run_cli(tmp_path, *command, multirun=True)
    assert twice.returncode == 1
    assert f"error: sweep {parent_id} still runs as SLURM job(s) {arrays[0]}" in twice.stderr
    stopped = sweeps(url, "stop", parent_id)
    assert stopped.returncode == 0, stopped.stderr
    assert "cancelled 2 SLURM job(s)" in stopped.stdout
    assert not in_queue(*arrays)
    client = mlflow.MlflowClient(url)
    for run in runs:  # each checkpointed as SLURM cancelled it, and is KILLED
        assert client.get_run(run.info.run_id).info.status == "KILLED"
        assert list((tmp_path / "checkpoints" / run.info.run_id).glob("*.ckpt"))
    parent = client.get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags["stopped_by"] == "stop"
    assert "ended already: KILLED" in sweeps(url, "stop", parent_id).stdout


def test_sweeps_finish_closes_a_detached_sweep_whose_jobs_were_cancelled_by_hand(
    slurm, mlflow_server, tmp_path
):
    url = mlflow_server.url
    proc = run_cli(
        tmp_path,
        "num_layers=1,2",
        "max_steps=100000",
        *DETACHED,
        f"logger.tracking_uri={url}",
        multirun=True,
    )
    parent_id = detached_parent(proc)
    training_runs(url, tmp_path, past_step=20, count=2)
    arrays = mlflow.MlflowClient(url).get_run(parent_id).data.tags["slurm_jobs"].split()
    subprocess.run(["scancel", *arrays], check=True)
    assert not in_queue(*arrays, wait_s=60)
    listed = {s["run_id"]: s for s in json.loads(sweeps(url, "list", "--json").stdout)}
    assert listed[parent_id]["state"] == "RUNNING (left over)"
    finished = sweeps(url, "finish", parent_id)
    assert finished.returncode == 0, finished.stderr
    assert "sweep num_layers=1,2: 0 of 2 jobs finished, 2 killed" in finished.stdout
    parent = mlflow.MlflowClient(url).get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags["jobs_killed"] == "2"
    assert summary_of(url, parent_id).startswith("sweep num_layers=1,2: 0 of 2 jobs")


def test_a_timeout_budget_stops_a_detached_study_its_unstarted_trials_skipped(
    slurm, mlflow_server, optuna_storage_url, tmp_path
):
    import optuna

    url = mlflow_server.url
    proc = run_cli(
        tmp_path,
        *ASYNC_SEARCH,
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.timeout_s=30",
        *DETACHED,
        f"hydra.sweeper.storage={optuna_storage_url}",
        f"logger.tracking_uri={url}",
        multirun=True,
    )
    parent = ended(url, detached_parent(proc))
    tags = parent.data.tags
    assert tags["stopped_by"] == "timeout_s"
    study = optuna.load_study(study_name=tags["optuna_study"], storage=optuna_storage_url)
    started = [t for t in study.trials if t.datetime_start is not None]
    assert all(t.state.is_finished() for t in study.trials)  # the running ones finished
    # no trial started after the budget's end (measured from the sweep's start, a little later
    # than its parent run's)
    deadline = parent.info.start_time / 1000 + 30 + 5
    assert all(t.datetime_start.timestamp() <= deadline for t in started)
    assert int(tags["jobs_skipped"]) == 20 - len(started) > 0
    assert f"{tags['jobs_skipped']} skipped; stopped by timeout_s" in summary_of(
        url, parent.info.run_id
    )
