"""The report's curves on what evaluate accepts, a set of defects alone included."""

import warnings

import numpy as np

from latentad.report.figures import roc_pro_curves


def test_curves_of_a_set_of_defects_alone_draw_the_pro_curve_without_an_image_roc(tmp_path):
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    maps = rng.random((3, 16, 16)) + masks
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "no negative samples" would be one
        path = roc_pro_curves(tmp_path / "curves.png", np.ones(3, int), rng.random(3), masks, maps)
    assert path.stat().st_size > 1000
