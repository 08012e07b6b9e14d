"""compare.py --csv and --json: the records of a tiny replicate sweep checked cell by cell against
its runs as MLflow holds them; the pruned step, a running run's empty cells and a lone seed's
configuration on in-memory runs; options that do not go together."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import scipy.stats
from helpers import mlflow_run, run_cli, runs_in, tiny_cli_args
from mlflow.entities import Run, RunInfo

from lstm_mnist.cli import compare_command
from lstm_mnist.tracking import Objective, Store, SweepRecord

RUN_COLUMNS = [
    "run_id",
    "run_name",
    "status",
    "num_units",
    "seed",
    "objective_metric",
    "objective",
    "val_acc",
    "test_acc",
    "duration_s",
    "wall_s",
    "core_s",
    "gpu_s",
    "pruned_step",
]
CONFIGURATION_COLUMNS = [
    "num_units",
    "n",
    "objective_metric",
    "objective_mean",
    "objective_std",
    "objective_ci_low",
    "objective_ci_high",
    "test_acc_mean",
    "test_acc_std",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[str, Path]:
    """One tiny replicate sweep for the module: num_units=8,16 x 2 seeds, 30 steps each, no
    model logged. Returns its store's URI and its folder."""
    tmp = tmp_path_factory.mktemp("export")
    args = [a for a in tiny_cli_args(tmp) if not a.startswith("num_units")]
    proc = run_cli(tmp, "num_units=8,16", "replicates=2", multirun=True, replace=args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return f"sqlite:///{tmp}/mlflow.db", tmp


def compare(capsys, store: str, *args: str) -> tuple[int, str, str]:
    """compare.py in this process (its imports cost seconds a time): exit code, stdout, stderr."""
    try:
        compare_command.main(["--tracking-uri", store, *args])
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def check_runs(rows: list[dict], store: str, empty: object) -> None:
    """Every job run of the sweep once, best val_acc first, each cell as MLflow holds the run;
    `empty` is how a missing value reads (CSV: "", JSON: None)."""
    client = mlflow.MlflowClient(store)
    assert sorted(row["run_id"] for row in rows) == sorted(r.info.run_id for r in runs_in(store))
    assert len(rows) == 4
    for row in rows:
        run = client.get_run(row["run_id"])
        info, params, metrics = run.info, run.data.params, run.data.metrics
        assert list(row) == RUN_COLUMNS
        assert row["run_name"] == info.run_name
        assert row["status"] == "finished" and info.status == "FINISHED"
        assert row["num_units"] == params["num_units"] and row["seed"] == params["seed"]
        assert row["objective_metric"] == "val_acc"
        # exact: both formats write floats in full
        assert float(row["objective"]) == float(row["val_acc"]) == metrics["val_acc"]
        assert float(row["test_acc"]) == metrics["test_acc"]
        for key in ("wall_s", "core_s", "gpu_s"):
            assert float(row[key]) == metrics[key]
        assert float(row["duration_s"]) == (info.end_time - info.start_time) / 1000
        assert row["pruned_step"] == empty
    values = [float(row["val_acc"]) for row in rows]
    assert values == sorted(values, reverse=True)  # compare's table's order


def check_configurations(rows: list[dict], store: str) -> None:
    """A row per num_units, its mean, std and interval recomputed from its seeds' runs."""
    seeds: dict[str, list] = {}
    for run in runs_in(store):
        seeds.setdefault(run.data.params["num_units"], []).append(run)
    assert sorted(row["num_units"] for row in rows) == ["16", "8"]
    for row in rows:
        group = seeds[row["num_units"]]
        values = [r.data.metrics["val_acc"] for r in group]
        tests = [r.data.metrics["test_acc"] for r in group]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        half = scipy.stats.t.ppf(0.975, 1) * std / math.sqrt(2)
        assert list(row) == CONFIGURATION_COLUMNS
        assert row["n"] == 2 and row["objective_metric"] == "val_acc"
        assert row["objective_mean"] == pytest.approx(mean)
        assert row["objective_std"] == pytest.approx(std)
        assert row["objective_ci_low"] == pytest.approx(mean - half)
        assert row["objective_ci_high"] == pytest.approx(mean + half)
        assert row["test_acc_mean"] == pytest.approx(statistics.fmean(tests))
        assert row["test_acc_std"] == pytest.approx(statistics.stdev(tests))
    means = [row["objective_mean"] for row in rows]
    assert means == sorted(means, reverse=True)  # best mean first


@pytest.mark.slow
def test_csv_is_one_row_per_run_as_mlflow_holds_it_and_draws_nothing(sweep, capsys):
    store, tmp = sweep
    code, out, err = compare(capsys, store, "--csv", "--out", str(tmp / "plots"))
    assert code == 0, err
    # as text, to compare each cell exactly; pandas' own reading must work too
    check_runs(
        pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False).to_dict("records"),
        store,
        "",
    )
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == RUN_COLUMNS and table["val_acc"].dtype == float
    assert not (tmp / "plots").exists()
    (parent,) = runs_in(store, parents=True)
    assert mlflow.MlflowClient(store).list_artifacts(parent.info.run_id, "compare") == []


@pytest.mark.slow
def test_json_holds_the_sweep_its_runs_and_its_configurations(sweep, capsys):
    store, tmp = sweep
    code, out, err = compare(capsys, store, "--json", "--out", str(tmp / "plots"))
    assert code == 0, err
    found = json.loads(out)  # nothing else on stdout
    (parent,) = runs_in(store, parents=True)
    assert found["sweep"] == {
        "run_id": parent.info.run_id,
        "run_name": parent.info.run_name,
        "status": "FINISHED",
        "objective": {"metric": "val_acc", "direction": "maximize"},
        "trade_offs": [],
    }
    check_runs(found["runs"], store, None)
    check_configurations(found["configurations"], store)
    assert not (tmp / "plots").exists()

    # the same runs in the same order as the CSV's
    code, out, err = compare(capsys, store, "--csv")
    rows = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    assert list(rows["run_id"]) == [row["run_id"] for row in found["runs"]]

    # --csv --configurations: JSON's configurations, cell for cell
    code, out, err = compare(capsys, store, "--csv", "--configurations")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    assert list(table.columns) == CONFIGURATION_COLUMNS
    for cells, row in zip(table.to_dict("records"), found["configurations"], strict=True):
        for key, value in row.items():
            if isinstance(value, str):
                assert cells[key] == value
            else:
                assert float(cells[key]) == value


@pytest.mark.slow
def test_output_file_holds_what_stdout_would_and_stdout_stays_empty(sweep, capsys):
    store, tmp = sweep
    for option, name in (("--json", "sweep.json"), ("--csv", "runs.csv")):
        code, printed, err = compare(capsys, store, option)
        assert code == 0, err
        code, out, err = compare(capsys, store, option, "-o", str(tmp / name))
        assert code == 0 and out == "", err
        assert (tmp / name).read_text() == printed
    code, out, err = compare(capsys, store, "--json", "-o", str(tmp / "no" / "such" / "x.json"))
    assert code == 1 and out == "" and err.startswith("error: -o ") and err.count("\n") == 1


SWEEP = SweepRecord(
    Store("sqlite:///unused.db", "lstm-mnist"), "p", Objective("val_acc", "maximize")
)


def test_a_pruned_runs_step_and_a_running_runs_empty_cells():
    from lstm_mnist import export

    params = {"lr": "0.1", "seed": "42"}
    pruned = mlflow_run("a", {"val_acc": 0.5}, params, {"pruned": "pruned at step 20: val_acc=0.5"})
    other_seed = "at step 30, as another seed was pruned at step 20: val_acc=0.5000"
    sibling = mlflow_run("b", {"val_acc": 0.4}, {**params, "lr": "0.2"}, {"pruned": other_seed})
    started = mlflow_run("c", {"val_acc": 0.3}, {**params, "lr": "0.3"}, status="RUNNING")
    i = started.info
    running = Run(  # no end time yet
        RunInfo(i.run_id, i.experiment_id, i.user_id, i.status, i.start_time, None, "active"),
        started.data,
    )
    records = export.run_records(SWEEP, [pruned, sibling, running])
    assert [r["status"] for r in records] == ["pruned", "pruned", "running"]
    assert [r["pruned_step"] for r in records] == [20, 30, None]
    assert records[2]["duration_s"] is None and records[2]["wall_s"] is None
    assert records[0]["duration_s"] == 10.0 and records[0]["lr"] == "0.1"
    assert records[0]["test_acc"] is None  # never logged
    # val_acc, then test_acc, duration, compute and step empty
    assert export.to_csv(records).splitlines()[3].endswith(",0.3,,,,,,")


def test_a_lone_seed_configuration_has_no_std_and_json_has_no_nan():
    from lstm_mnist import export

    runs = [
        mlflow_run("a", {"val_acc": 0.9, "test_acc": 0.8}, {"num_layers": "1", "seed": "1"}),
        mlflow_run("b", {"val_acc": 0.7, "test_acc": 0.6}, {"num_layers": "1", "seed": "2"}),
        mlflow_run("c", {"val_acc": 0.95}, {"num_layers": "2", "seed": "1"}),
    ]
    first, second = export.configuration_records(SWEEP, runs)
    assert first["num_layers"] == "2" and first["n"] == 1 and first["objective_mean"] == 0.95
    assert first["objective_std"] is first["objective_ci_low"] is first["test_acc_mean"] is None
    assert second["n"] == 2 and second["objective_mean"] == pytest.approx(0.8)
    assert second["objective_std"] == pytest.approx(statistics.stdev([0.9, 0.7]))
    json.loads(export.to_json(export.document(SWEEP, runs[0], runs)))  # strict: no NaN
    assert export.configuration_records(SWEEP, runs[:1] + runs[2:]) == []  # no replicates


@pytest.mark.parametrize(
    "args, message",
    [
        (["--csv", "--json"], "--csv or --json, not both"),
        (["--json", "--configurations"], "--configurations goes with --csv"),
        (["-o", "x.csv"], "-o/--output goes with --csv or --json"),
    ],
)
def test_options_that_do_not_go_together_are_one_line(args, message, capsys):
    code, out, err = compare(capsys, "sqlite:///never-opened.db", *args)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
