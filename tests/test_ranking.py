"""Unit tests of the objective and of ranking runs by configuration (tracking/names.py,
tracking/ranking.py), on in-memory MLflow runs."""

import pytest
from helpers import mlflow_run

from lstm_mnist.tracking import METRICS, Objective
from lstm_mnist.tracking.ranking import (
    best_configuration,
    by_configuration,
    pareto_configurations,
    ranked_configurations,
)

ACC = Objective("val_acc", "maximize")
LOSS = Objective("val_loss", "minimize")


def seeds(config: str, values: list[float], metric: str = "val_acc") -> list:
    return [
        mlflow_run(f"{config}-{i}", {metric: v}, {"num_layers": config, "seed": str(i)})
        for i, v in enumerate(values)
    ]


def test_objective_signs_orders_and_picks_the_best_run():
    a, b = mlflow_run("a", {"val_acc": 0.9, "val_loss": 0.3}), mlflow_run("b", {"val_acc": 0.8})
    assert (ACC.sign, LOSS.sign) == (1, -1)
    assert ACC.value(a) == 0.9 and LOSS.value(a) == -0.3
    assert ACC.best([b, a]) is a and LOSS.best([b, a]) is a  # b has no val_loss
    assert LOSS.best([b]) is None
    assert ACC.order_by == "metrics.`val_acc` DESC" and LOSS.order_by == "metrics.`val_loss` ASC"
    assert Objective.from_tag(ACC.tag) == ACC


@pytest.mark.parametrize(
    "metric, direction, message",
    [
        ("val_acc", "biggest", "val_acc: biggest: a direction is one of maximize, minimize"),
        ("accuracy", "maximize", "accuracy: not a metric a run logs; those are val_acc, "),
    ],
)
def test_objective_refuses_what_no_run_logs_or_no_direction_means(metric, direction, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Objective.checked(metric, direction)
    assert Objective.checked("latency_ms", "minimize").metric in METRICS


def test_configurations_are_ranked_by_their_mean_not_their_best_seed():
    lucky = seeds("1", [0.99, 0.80, 0.81])  # mean 0.8667, best single seed
    steady = seeds("2", [0.90, 0.91, 0.89])  # mean 0.90
    runs = lucky + steady + [mlflow_run("no-metric", {}, {"num_layers": "3"})]
    assert len(by_configuration(runs)) == 3  # the seed does not make a configuration
    ranked = ranked_configurations(ACC, runs)
    assert [g[0].data.params["num_layers"] for g in ranked] == ["2", "1"]
    assert best_configuration(ACC, runs) == steady
    assert best_configuration(ACC, []) == []


def test_a_smaller_loss_ranks_first_when_the_objective_is_minimised():
    runs = seeds("1", [0.3, 0.35], "val_loss") + seeds("2", [0.2, 0.25], "val_loss")
    assert best_configuration(LOSS, runs)[0].data.params["num_layers"] == "2"


def test_pareto_configurations_are_those_no_other_beats_on_every_objective():
    size = Objective("num_params", "minimize")

    def config(name: str, acc: float, params: float) -> list:
        return [mlflow_run(name, {"val_acc": acc, "num_params": params}, {"num_units": name})]

    big, small, worse, tiny = (
        config("256", 0.95, 1e6),
        config("64", 0.94, 2e4),
        config("128", 0.93, 3e5),  # beaten by 64 on both
        config("16", 0.80, 1e3),
    )
    unscored = [mlflow_run("x", {"val_acc": 0.99}, {"num_units": "512"})]  # no num_params
    front = pareto_configurations((ACC, size), big + small + worse + tiny + unscored)
    assert [g[0].data.params["num_units"] for g in front] == ["256", "64", "16"]  # best acc first
