"""f1_max on worked examples; threshold_for_fpr returns the documented order statistic."""

import numpy as np
import pytest

from latentad.metrics import f1_max, threshold_for_fpr


def test_f1_max_worked_example():
    # thresholds (score >= t): 0.1 -> P 2/4 R 1 F1 2/3; 0.35 -> P 2/3 R 1 F1 0.8;
    # 0.4 -> P 1/2 R 1/2 F1 1/2; 0.8 -> P 1 R 1/2 F1 2/3
    f1, threshold = f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert f1 == pytest.approx(0.8)
    assert threshold == 0.35


def test_f1_max_perfect_separation():
    f1, threshold = f1_max([0, 1, 0, 1, 1], [0.2, 0.7, 0.3, 0.9, 0.6])
    assert f1 == 1.0
    assert threshold == 0.6


def test_f1_max_needs_an_anomaly():
    with pytest.raises(ValueError):
        f1_max([0, 0], [0.1, 0.2])


@pytest.mark.parametrize("target, k", [(0.05, 5), (0.29, 29), (0.01, 1), (0.015, 1), (0.5, 50)])
def test_threshold_is_the_order_statistic(target, k):
    rng = np.random.default_rng(0)
    values = rng.permutation(np.arange(100, dtype=np.float64)) / 7.0
    threshold = threshold_for_fpr(values, target)
    assert threshold == np.sort(values)[100 - k - 1]  # x_(n-k), 1-based
    assert np.sum(values > threshold) == k
    assert np.sum(values > threshold) / 100 <= target


def test_threshold_below_one_over_n_is_nudged_max():
    values = np.linspace(0.0, 1.0, 100, dtype=np.float32)
    threshold = threshold_for_fpr(values, 0.005)
    assert threshold == float(np.nextafter(np.float32(1.0), np.float32(np.inf)))
    assert threshold > 1.0
    assert np.sum(values >= threshold) == 0


def test_threshold_with_ties_never_exceeds_target():
    values = np.repeat(np.arange(10.0), 10)  # every value ten times
    for target in (0.05, 0.1, 0.15, 0.33):
        threshold = threshold_for_fpr(values, target)
        assert np.mean(values > threshold) <= target
    assert threshold_for_fpr(values, 0.15) == 8.0  # x_(85) = 8: only the ten 9s lie above it


def test_threshold_full_fpr_and_errors():
    assert threshold_for_fpr([3.0, 1.0, 2.0], 1.0) == 1.0
    with pytest.raises(ValueError):
        threshold_for_fpr([1.0, 2.0], 1.5)
    with pytest.raises(ValueError):
        threshold_for_fpr([], 0.1)
