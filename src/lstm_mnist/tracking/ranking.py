"""A sweep's runs grouped by configuration (the replicates of one configuration differ only in
their seed), and the configurations ranked: by the mean objective, or for several objectives
by Pareto dominance."""

from __future__ import annotations

import statistics

from mlflow.entities import Run

from lstm_mnist.stats import pareto_front
from lstm_mnist.tracking import names
from lstm_mnist.tracking.names import Objective


def configuration(run: Run) -> tuple[tuple[str, str], ...]:
    """What a run trained, apart from its seed: equal for the replicates of a configuration."""
    return tuple(sorted((k, v) for k, v in run.data.params.items() if k != names.SEED))


def by_configuration(runs: list[Run]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(configuration(run), []).append(run)
    return groups


def mean(objective: Objective, group: list[Run]) -> float:
    """The group's mean objective, signed so that larger is better."""
    return statistics.fmean(objective.value(r) for r in group)


def ranked_configurations(objective: Objective, runs: list[Run]) -> list[list[Run]]:
    """The runs that have the objective, grouped by configuration, best mean first."""
    scored = [r for r in runs if objective.metric in r.data.metrics]
    return sorted(by_configuration(scored).values(), key=lambda g: -mean(objective, g))


def best_configuration(objective: Objective, runs: list[Run]) -> list[Run]:
    """The runs of the configuration with the best mean objective (its seeds); [] if none."""
    ranked = ranked_configurations(objective, runs)
    return ranked[0] if ranked else []


def pareto_configurations(objectives: tuple[Objective, ...], runs: list[Run]) -> list[list[Run]]:
    """The configurations that no other beats on every objective's mean (the Pareto set), best
    first by the first objective; runs missing an objective are left out."""
    scored = [r for r in runs if all(o.metric in r.data.metrics for o in objectives)]
    groups = list(by_configuration(scored).values())
    front = pareto_front([[mean(o, g) for o in objectives] for g in groups])
    return sorted((groups[i] for i in front), key=lambda g: -mean(objectives[0], g))
