"""End to end: real training on real MNIST into a real (temporary) SQLite MLflow store."""

import time

import mlflow
import pytest
from helpers import ROOT, run_cli, runs_in, steps_of
from hydra import compose, initialize_config_dir


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


def test_a_run_logs_exactly_the_metrics_an_objective_may_name_and_its_cost(short_run):
    from lstm_mnist.tracking import METRICS, names

    _, store = short_run
    (run,) = runs_in(store)
    logged = {m for m in run.data.metrics if not m.startswith(("system/", names.PHASE_PREFIX))}
    assert logged - {"step", "epoch"} == set(METRICS) | set(names.COMPUTE)
    cost = run.data.metrics
    threads = int(run.data.tags["torch_threads"])
    assert cost["core_s"] == pytest.approx(cost["wall_s"] * threads) and cost["gpu_s"] == 0
    # the whole run: from before its start to after its test
    assert cost["wall_s"] <= (run.info.end_time - run.info.start_time) / 1000 + 5


def phases_of(run) -> dict[str, float]:
    """The run's phases (time/<phase>_s), checked against the run's own record: every phase
    there, their sum its time/total_s, and those after the run's start its MLflow duration."""
    from lstm_mnist.phases import PHASES, TOTAL, metric

    metrics = run.data.metrics
    seconds = {p: metrics[metric(p)] for p in PHASES}
    assert min(seconds.values()) >= 0
    assert sum(seconds.values()) == pytest.approx(metrics[metric(TOTAL)], abs=0.01)
    before_the_run = ("startup", "data", "store")
    in_the_run = sum(s for p, s in seconds.items() if p not in before_the_run)
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert in_the_run == pytest.approx(duration, abs=1.0, rel=0.05)
    return seconds


def test_a_run_records_where_its_time_went(short_run):
    _, store = short_run
    (run,) = runs_in(store)
    seconds = phases_of(run)
    assert seconds["fit"] > seconds["test"] > 0
    assert seconds["report"] > 0 and seconds["model"] > 0  # both on in short_run
    assert seconds["validate"] == 0  # fit validated its last step (400 = 2 x val_every)


def test_cli_multirun_records_one_run_per_job(tmp_path):
    began = time.time()
    proc = run_cli(tmp_path, "num_layers=1,2", multirun=True)
    wall = time.time() - began
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(runs_in(f"sqlite:///{tmp_path}/mlflow.db"), key=lambda r: r.info.start_time)
    assert [r.data.params["num_layers"] for r in runs] == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    a, b = (dict(r.data.params) for r in runs)
    assert {k for k in a if a[k] != b.get(k)} == {"num_layers"}
    # The first job's clock started with the process (interpreter, imports: seconds), the
    # second's when the first had ended; both within the command's wall time.
    first, second = (phases_of(r) for r in runs)
    assert first["startup"] > 1.0 > second["startup"]
    assert sum(first.values()) + sum(second.values()) <= wall
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert sorted(r.info.run_name for r in runs)[0].startswith("num_layers=1")
    assert proc.stdout.count("test_acc=") == 2


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "num_layer=3",
            "error: Could not override 'num_layer': Key 'num_layer' not in 'Config'"
            " (did you mean num_layers?)",
        ),
        (
            "num_layers=two",
            "error: Error merging override num_layers=two: Value 'two' of type"
            " 'str' could not be converted to Integer",
        ),
        ("dropout=1.5", "error: dropout=1.5 is invalid: must be a number in [0, 1)"),
        (
            "model.lr_schedule=cosine",
            "error: model.lr_schedule=cosine is invalid: must be constant or onecycle",
        ),
        (
            "data=kmnist",
            "error: In 'config': Could not find 'data/kmnist'; available options in"
            " 'data': fashion_mnist, mnist",
        ),
    ],
)
def test_bad_override_fails_in_one_line_and_records_no_run(tmp_path, override, message):
    proc = run_cli(tmp_path, override)
    assert proc.returncode != 0
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [message]
    assert not (tmp_path / "mlflow.db").exists()  # no store, let alone a run


def test_named_sweeps_and_experiments_compose():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        layers = compose("config", overrides=["sweeps=layers"], return_hydra_config=True)
        grid = compose("config", overrides=["sweeps=grid"], return_hydra_config=True)
        search = compose("config", overrides=["sweeps=optuna"], return_hydra_config=True)
        plain = compose("config", return_hydra_config=True)
        fast = compose("config", overrides=["+experiment=fast"])
    assert layers.hydra.sweeper.params == {"num_layers": "1,2,3"}
    assert layers.hydra.sweeper._target_ == plain.hydra.sweeper._target_
    assert plain.hydra.sweeper._target_.endswith("GridSweeper")
    assert [len(v.split(",")) for v in grid.hydra.sweeper.params.values()] == [2, 2, 2]
    assert search.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(search.hydra.sweeper.params) == {"lr", "num_units", "num_layers", "dropout"}
    assert search.hydra.sweeper.params.lr.log is True
    assert (fast.num_layers, fast.num_units, fast.model.lr_schedule) == (2, 128, "onecycle")


def test_run_records_system_metrics_of_this_machine(short_run):
    result, store = short_run
    (run,) = [r for r in runs_in(store) if r.info.run_id == result["run_id"]]
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    assert steps_of(store, run, "system/cpu_utilization_percentage")[:2] == [0, 1]  # a series
    assert not any(k.startswith("system/gpu_") for k in system)  # no GPU here
    assert "gpu" not in run.data.tags


def test_early_stopping_ends_a_run_that_stops_improving_and_says_so(make_cfg, tmp_path):
    from lstm_mnist.training import train

    # lr=1e-9 cannot change a prediction: val_acc never improves on its first value.
    cfg, store = make_cfg("lr=1e-9", "dropout=0", "val_every=5", "patience=2")
    result = train(cfg)
    (run,) = runs_in(store)
    assert run.info.status == "FINISHED"
    assert steps_of(store, run, "val_acc") == [5, 10, 15]  # stopped after 2 without progress
    assert run.data.tags["early_stopped"].startswith("at step 15: Monitored metric val_acc")
    assert "test_acc" in result  # tested as usual
    assert not (tmp_path / "checkpoints" / run.info.run_id).exists()  # FINISHED: removed
