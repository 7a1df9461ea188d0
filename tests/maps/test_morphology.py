"""Grey dilation by a flat square: the max over the window, identity for size <= 1."""

import numpy as np
import torch
from scipy.ndimage import grey_dilation as scipy_dilation

from latentad.maps.morphology import grey_dilation


def test_spike_becomes_a_square_and_size_one_is_identity():
    m = torch.zeros(1, 9, 9)
    m[0, 4, 4] = 2.0
    d = grey_dilation(m, 3)
    assert d.shape == m.shape
    assert torch.all(d[0, 3:6, 3:6] == 2.0) and float(d.sum()) == 18.0
    assert torch.equal(grey_dilation(m, 1), m) and torch.equal(grey_dilation(m, 0), m)


def test_matches_scipy_max_filter_and_never_decreases():
    rng = np.random.default_rng(0)
    arr = rng.random((2, 17, 13)).astype(np.float32)
    for size in (3, 5):
        got = grey_dilation(torch.from_numpy(arr), size).numpy()
        want = np.stack([scipy_dilation(a, size=(size, size), mode="nearest") for a in arr])
        assert np.allclose(got, want)
        assert np.all(got >= arr)


def test_four_dimensional_input_keeps_its_shape():
    x = torch.rand(2, 3, 8, 8)
    assert grey_dilation(x, 3).shape == x.shape
