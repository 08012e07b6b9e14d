"""Unit tests of the tables a sweep is shown as (display.py, comparison.py, pareto.py), on
in-memory MLflow runs: every cell checked against the runs it comes from."""

from helpers import mlflow_run

from lstm_mnist import comparison, pareto
from lstm_mnist.display import one_line, table
from lstm_mnist.tracking import Objective, Store, SweepRecord

SWEEP = SweepRecord(
    Store("sqlite:///unused.db", "lstm-mnist"), "p", Objective("val_acc", "maximize")
)


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_table_aligns_columns_and_one_line_joins_a_message():
    assert table(["a", "bb"], [["xxx", "1"], ["y", "22"]]).splitlines() == [
        "a    bb",
        "xxx  1 ",  # every column padded to its width, the last too
        "y    22",
    ]
    assert one_line(ValueError("first\n   second  line\n")) == "first second line"


def test_runs_table_lists_finished_runs_best_first_then_the_others():
    runs = [
        mlflow_run("r1", {"val_acc": 0.91, "test_acc": 0.9}, {"lr": "0.001"}, seconds=12),
        mlflow_run("r2", {"val_acc": 0.95}, {"lr": "0.18727005942368125"}, seconds=3),
        mlflow_run("r3", {"val_acc": 0.99}, {"lr": "1e-07"}, tags={"pruned": "at step 20"}),
        mlflow_run("r4", {}, {"lr": "0.1"}, status="FAILED"),
    ]
    ranked = comparison.ranked(SWEEP.objective, runs)
    assert [r.info.run_id for r in ranked[:2]] == ["r2", "r1"]
    assert comparison.swept_params(runs) == ["lr"]
    lines = rows(comparison.table(ranked, ["lr"]))
    assert lines[0] == ["#", "run", "status", "val_acc", "test_acc", "lr", "duration"]
    assert lines[1] == ["1", "r2", "finished", "0.9500", "-", "0.1873", "3", "s"]
    assert lines[2] == ["2", "r1", "finished", "0.9100", "0.9000", "0.001", "12", "s"]
    assert lines[3][:3] == ["3", "r3", "pruned"] and lines[4][:4] == ["4", "r4", "failed", "-"]
    loss_first = comparison.ranked(
        Objective("val_loss", "minimize"),
        [
            mlflow_run("hi", {"val_loss": 0.5}),
            mlflow_run("lo", {"val_loss": 0.2}),
        ],
    )
    assert [r.info.run_id for r in loss_first] == ["lo", "hi"]


def test_configuration_table_ranks_means_with_intervals_and_welch_verdicts():
    def seeds(layers: str, values: list[float]) -> list:
        return [
            mlflow_run(
                f"{layers}-{i}",
                {"val_acc": v, "test_acc": v},
                {"num_layers": layers, "seed": str(i)},
            )
            for i, v in enumerate(values)
        ]

    runs = (
        seeds("1", [0.80, 0.81, 0.79])
        + seeds("2", [0.90, 0.91, 0.89])
        + seeds("3", [0.895, 0.905, 0.9])
    )
    text = comparison.configuration_table(SWEEP, runs, ["num_layers", "seed"])
    lines = rows(text)
    assert lines[0][:3] == ["#", "num_layers", "n"]
    assert [line[1] for line in lines[1:]] == ["2", "3", "1"]  # best mean first
    assert lines[1][2:6] == ["3", "0.9000", "±", "0.0100"] and lines[1][-1] == "best"
    assert lines[2][-3:-1] == ["≈", "best"]  # 0.9 vs 0.9: not told apart
    assert lines[3][-2] == "worse"
    one_seed_each = seeds("1", [0.8]) + seeds("2", [0.9])
    assert comparison.configuration_table(SWEEP, one_seed_each, ["num_layers"]) is None


def test_pareto_table_shows_each_member_with_its_objectives():
    size = Objective("num_params", "minimize")
    sweep = SweepRecord(SWEEP.store, "p", SWEEP.objective, (size,))
    runs = [
        mlflow_run("a", {"val_acc": 0.95, "num_params": 1348106}, {"num_units": "256"}),
        mlflow_run("b", {"val_acc": 0.94, "num_params": 24714}, {"num_units": "64"}),
        mlflow_run("c", {"val_acc": 0.90, "num_params": 300000}, {"num_units": "128"}),
    ]
    lines = rows(pareto.table(sweep, runs, ["num_units"]))
    assert lines == [
        ["#", "num_units", "n", "val_acc", "num_params"],
        ["1", "256", "1", "0.95", "1,348,106"],
        ["2", "64", "1", "0.94", "24,714"],
    ]
