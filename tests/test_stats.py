"""Unit tests of the statistics a comparison of configurations rests on (stats.py)."""

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from lstm_mnist.stats import estimate, pareto_front, welch_p


def test_estimate_of_one_value_has_no_spread_or_interval():
    found = estimate([0.9])
    assert (found.n, found.mean) == (1, 0.9)
    assert math.isnan(found.std) and math.isnan(found.low) and math.isnan(found.high)
    assert str(found) == "0.9000" and found.interval == "-"


def test_estimate_is_the_mean_sample_std_and_students_t_interval():
    values = [0.91, 0.93, 0.92, 0.96]
    found = estimate(values)
    half = scipy_stats.t.ppf(0.975, 3) * statistics.stdev(values) / 2  # sqrt(4) = 2
    assert found.mean == pytest.approx(0.93)
    assert found.std == pytest.approx(statistics.stdev(values))
    assert (found.low, found.high) == pytest.approx((0.93 - half, 0.93 + half))
    assert str(found) == f"0.9300 ± {statistics.stdev(values):.4f}"


def test_welch_p_tells_apart_only_what_differs():
    assert math.isnan(welch_p([0.9], [0.8, 0.85]))  # one value: no test
    assert welch_p([0.9, 0.9], [0.9, 0.9]) == 1.0  # equal constants
    assert welch_p([0.9, 0.9], [0.8, 0.8]) == 0.0
    close = welch_p([0.90, 0.91, 0.92], [0.905, 0.915, 0.925])
    far = welch_p([0.90, 0.91, 0.92], [0.70, 0.71, 0.72])
    assert close > 0.05 > far
    expected = scipy_stats.ttest_ind([0.90, 0.91, 0.92], [0.70, 0.71, 0.72], equal_var=False)
    assert far == pytest.approx(expected.pvalue)


def test_pareto_front_keeps_the_points_nothing_beats_on_every_coordinate():
    points = [[0.9, -100], [0.95, -1000], [0.85, -100], [0.95, -1000], [0.8, -10]]
    # 2 is dominated by 0 (worse accuracy, same size); 1 and 3 are equal: neither dominates
    assert pareto_front(points) == [0, 1, 3, 4]
    assert pareto_front([[1.0, 1.0]]) == [0]
    assert pareto_front([]) == []
