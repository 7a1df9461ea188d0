"""Image scores from maps: maximum, top-fraction mean, and the names evaluation reads them by."""

from __future__ import annotations

import pytest
import torch

from latentad.maps.statistics import read_statistic, statistic_name, top_count, top_mean


def test_top_mean_averages_the_highest_fraction_and_zero_is_the_maximum():
    maps = torch.arange(200, dtype=torch.float32).reshape(2, 10, 10)  # 0..99, 100..199
    assert top_mean(maps, 0.0).tolist() == [99.0, 199.0]
    assert top_mean(maps, 0.05).tolist() == [97.0, 197.0]  # mean of the 5 highest
    assert top_count(100, 0.001) == 1 and top_count(100, 0.011) == 2
    one_peak = torch.zeros(1, 10, 10)
    one_peak[0, 3, 3] = 50.0  # a single noisy pixel decides the maximum, not the top-10 % mean
    assert top_mean(one_peak, 0.0).item() == 50.0 and top_mean(one_peak, 0.1).item() == pytest.approx(5.0)


def test_statistic_names_round_trip():
    values = torch.tensor([1.0, 4.0, 2.0, 3.0])
    assert statistic_name(0.0) == "max" and read_statistic(values, "max") == 4.0
    assert read_statistic(values, "mean") == 2.5
    assert read_statistic(values, statistic_name(0.5)) == 3.5
    with pytest.raises(ValueError, match="unknown map statistic"):
        read_statistic(values, "median")
