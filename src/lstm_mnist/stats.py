"""How sure a comparison of configurations is: the mean, standard deviation and 95% confidence
interval of a metric over a configuration's seeds (Student's t), and Welch's t-test of whether a
configuration can be told apart from the best one; and which of several objectives' values no
other point beats on every objective (the Pareto front)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05  # a configuration is "not distinguishable from the best" when p >= ALPHA


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    std: float  # sample standard deviation; nan for one value
    low: float  # the 95% confidence interval of the mean; nan for one value
    high: float

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {self.std:.4f}"

    @property
    def interval(self) -> str:
        return "-" if self.n < 2 else f"[{self.low:.4f}, {self.high:.4f}]"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean, sample standard deviation and Student's t 95% interval of the mean."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Estimate(n, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test that `a` and `b` have the same mean; nan when either
    has fewer than two values. Equal constant samples give 1."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if statistics.stdev(a) == statistics.stdev(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points that no other point dominates, every coordinate larger-is-better: a
    point is dominated by one at least as good in every coordinate and better in one."""

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(
            x > y for x, y in zip(a, b, strict=True)
        )

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
