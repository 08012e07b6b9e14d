"""Several processes, one training: DDP on CPU over gloo, 2 processes x 1 thread (trainer=ddp_cpu),
and every trainer flag that cannot work refused in one line before any run is recorded."""

from __future__ import annotations

import json
import re
import signal
import time

import mlflow
import optuna
import psutil
import pytest
import torch
from helpers import compose_tiny, job_runs, run_cli, runs_in, start_training, steps_of
from omegaconf import OmegaConf

from lstm_mnist.data import MNISTDataModule
from lstm_mnist.module import ClassifierModule
from lstm_mnist.training import train
from lstm_mnist.world import FlagError, World, world_of

DDP = ["trainer=ddp_cpu"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer=gpu", "trainer.accelerator=gpu: no CUDA GPU is visible on this machine; use"),
        ("trainer.accelerator=tpu", "trainer.accelerator=tpu is invalid: must be cpu, gpu, cuda"),
        ("trainer.devices=0", "trainer.devices=0 is invalid: must be an integer >= 1, -1 (all)"),
        ("trainer.devices=[0,1]", "trainer.devices=[0, 1]: a list names GPUs; on cpu give a"),
        ("trainer.strategy=deepspeed", "trainer.strategy=deepspeed is invalid: must be auto, ddp"),
        ("trainer.num_nodes=2", "trainer.num_nodes=2: several nodes need a SLURM job"),
        ("trainer.num_nodes=0", "trainer.num_nodes=0 is invalid: must be an integer >= 1"),
        ("trainer.precision=16-mixed", "trainer.precision=16-mixed: float16 needs a GPU"),
        ("trainer.precision=8", "trainer.precision=8 is invalid: must be 32-true, 32, 64-true"),
    ],
)
def test_a_trainer_flag_that_cannot_work_is_refused_before_any_run(tmp_path, override, message):
    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    cfg, store = compose_tiny(tmp_path, override)
    with pytest.raises(ValueError) as refused:
        train(cfg)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "mlflow.db").exists()  # no store, so no run: nothing recorded


def test_trainer_gpu_without_a_gpu_is_one_line_from_the_command(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    proc = run_cli(tmp_path, "trainer=gpu")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.accelerator=gpu: no CUDA GPU is visible on this machine;"
        " use trainer=cpu (or trainer=ddp_cpu for several processes)"
    ]
    assert not runs_in(f"sqlite:///{tmp_path}/mlflow.db")


def flags(**keys) -> OmegaConf:
    defaults = {"accelerator": "gpu", "devices": 1, "strategy": "auto", "num_nodes": 1}
    return OmegaConf.create({**defaults, **keys})


def test_gpu_flags_are_honoured_on_a_machine_with_four_gpus():
    assert world_of(flags(devices=4), visible_gpus=4) == World("gpu", (0, 1, 2, 3))
    assert world_of(flags(devices=[0, 2]), visible_gpus=4).gpus == (0, 2)
    assert world_of(flags(devices=-1, strategy="ddp"), visible_gpus=4).size == 4
    assert world_of(flags(devices="auto", accelerator="auto"), visible_gpus=2).size == 2
    assert world_of(flags(accelerator="auto"), visible_gpus=0) == World("cpu", 1)
    assert world_of(flags(devices=2, num_nodes=2), visible_gpus=4, tasks=4).size == 4
    refusals = {
        "trainer.devices=5: only 4 CUDA GPUs are visible on this machine": {"devices": 5},
        "trainer.devices=[1, 4]: 4 CUDA GPUs are visible (indices 0..3)": {"devices": [1, 4]},
        "trainer.devices=[1, 1]: 4 CUDA GPUs are visible": {"devices": [1, 1]},
    }
    for message, keys in refusals.items():
        with pytest.raises(FlagError, match=re.escape(message)):
            world_of(flags(**keys), visible_gpus=4)
    with pytest.raises(FlagError, match="ask for 2 processes but the SLURM job has 4 tasks"):
        world_of(flags(devices=2), visible_gpus=4, tasks=4)


def evaluate_whole_split(ckpt, split: str) -> tuple[float, float]:
    """Accuracy and mean loss of a checkpoint on a whole split, in this one process."""
    module = ClassifierModule.load_from_checkpoint(ckpt, map_location="cpu")
    data = MNISTDataModule(eval_batch_size=2500)
    data.setup()
    correct, loss, n = 0, 0.0, 0
    with torch.inference_mode():
        for x, y in data.whole_split(split):
            logits = module.eval()(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    assert n == {"val": 5000, "test": 10000}[split]
    return correct / n, loss / n


@pytest.mark.slow
def test_a_ddp_run_is_one_run_whose_metrics_cover_the_whole_splits(tmp_path):
    proc = run_cli(tmp_path, *DDP, "max_steps=30", "val_every=30", "keep_checkpoints=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (run,) = runs_in(store)  # rank 1 recorded nothing
    params = run.data.params
    assert run.info.status == "FINISHED"
    assert (params["world_size"], params["strategy"], params["num_nodes"]) == ("2", "ddp", "1")
    assert (params["batch_size_per_device"], params["global_batch_size"]) == ("64", "128")
    assert steps_of(store, run, "train_loss") == [10, 20, 30]
    assert rank_1_knobs(tmp_path / "outputs" / "rank-1.log") == (run.info.run_id, knobs_of(run))
    # Reduced over both ranks' shards: the values of the whole split, not rank 0's half.
    (ckpt,) = (tmp_path / "checkpoints" / run.info.run_id).glob("step=30.ckpt")
    for split in ("val", "test"):
        accuracy, loss = evaluate_whole_split(ckpt, split)
        assert run.data.metrics[f"{split}_acc"] == pytest.approx(accuracy, abs=1e-6)
        assert run.data.metrics[f"{split}_loss"] == pytest.approx(loss, rel=1e-4)


def rank_1_knobs(log) -> tuple[str, dict[str, str]]:
    """The run and the top-level knobs rank 1 said it trains with."""
    (line,) = [line for line in log.read_text().splitlines() if line.startswith("rank 1 of 2")]
    run_id, knobs = line.removeprefix("rank 1 of 2: run ").split(", ", 1)
    return run_id, {k: str(v) for k, v in json.loads(knobs).items() if k in KNOBS}


def knobs_of(run) -> dict[str, str]:
    return {k: v for k, v in run.data.params.items() if "." not in k and k in KNOBS}


KNOBS = ("num_layers", "num_units", "dropout", "lr", "batch_size", "max_steps", "seed")


def ranks_of(proc) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while not (children := psutil.Process(proc.pid).children(recursive=True)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return children


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name
)
def test_an_interrupted_ddp_run_is_one_killed_run_no_rank_left_and_resume_continues_it(
    tmp_path, signum
):
    # The signal goes once step 10 is in the store: 1000 steps leave a margin for that poll on a
    # loaded machine; few validations, as they cost most of a tiny run.
    steps = ["max_steps=1000", "val_every=200"]
    proc, run_id = start_training(tmp_path, *DDP, *steps)
    ranks = ranks_of(proc)
    # to rank 0 only, as a terminal's Ctrl-C or hangup, or a scheduler's SIGTERM
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (run,) = runs_in(store)
    assert run.info.status == "KILLED"

    proc = run_cli(tmp_path, *DDP, *steps, f"resume={run_id}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(store)  # the same run
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert steps_of(store, run, "train_loss") == list(range(10, 1001, 10))  # each step once
    assert steps_of(store, run, "val_acc") == list(range(200, 1001, 200))

    proc = run_cli(tmp_path, *steps, f"resume={run_id}")  # not with another world
    assert "error: resume=" in proc.stderr  # FINISHED now; the world check is in the params


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_in_one_line_without_a_hang(tmp_path):
    proc, run_id = start_training(tmp_path, *DDP)
    (rank_1,) = ranks_of(proc)
    rank_1.kill()
    killed = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 60
    assert proc.returncode == 1
    (last,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert last.startswith("error: rank 1 ended with signal SIGKILL")
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("RankFailed: rank 1 ended with signal SIGKILL")


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_is_one_run_per_job_under_one_parent(tmp_path):
    proc = run_cli(tmp_path, *DDP, "seed=1,2", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (parent,) = runs_in(store, parents=True)
    runs = job_runs(store, tmp_path / "multirun")
    assert len(runs) == 2 and len(runs_in(store)) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert all(r.data.params["world_size"] == "2" for r in runs)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_finished"] == "2"
    again = run_cli(tmp_path, *DDP, "seed=1,2", multirun=True)  # the same sweep: nothing to do
    assert "2 of 2 jobs already FINISHED" in again.stdout and len(runs_in(store)) == 2


@pytest.mark.slow
def test_an_optuna_sweep_of_ddp_jobs_asks_each_trial_once_and_prunes_every_rank(tmp_path):
    search = [
        "sweeps=optuna",
        "~hydra.sweeper.params.num_units",
        "~hydra.sweeper.params.num_layers",
        "hydra.sweeper.n_trials=2",
        "~hydra.sweeper.pruner",
        "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.2}",
        "hydra.sweeper.enqueue=[{lr:1.0e-2},{lr:1.0e-7}]",  # the second is pruned at step 20
    ]
    proc = run_cli(tmp_path, *DDP, *search, "max_steps=60", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    (parent,) = runs_in(store, parents=True)
    study = optuna.load_study(
        study_name=parent.data.tags["optuna_study"], storage=f"sqlite:///{tmp_path}/optuna.db"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]  # asked once each
    runs = {r.data.tags["optuna_trial"]: r for r in runs_in(store)}
    assert sorted(runs) == ["0", "1"]
    assert steps_of(store, runs["1"], "val_acc") == [20] and "pruned" in runs["1"].data.tags
    assert steps_of(store, runs["0"], "val_acc") == [20, 40, 60]
    rank_1 = dict(rank_1_knobs(log) for log in (tmp_path / "multirun").glob("*/rank-1.log"))
    for run in runs.values():  # rank 1 trained the trial rank 0 asked for
        assert rank_1[run.info.run_id] == knobs_of(run)
    client = mlflow.MlflowClient(store)
    assert client.get_run(parent.info.run_id).data.tags["jobs_pruned"] == "1"
