"""Evaluation at one common resolution (`eval_size`), recorded in the metrics."""

import pytest

from latentad import create
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError
from latentad.evaluation import evaluate


@pytest.fixture(scope="module")
def fitted():
    split = make_synthetic(n_train=6, n_test_good=2, n_test_defect=2, size=48, seed=0)
    det = create("ae_l2", image_size=32, epochs=1, augment_to=8, batch_size=4, base_width=4, latent_dim=4)
    return det.fit(split.train), split.test


def test_default_resolution_is_the_detector_input_size(fitted):
    det, test = fitted
    result = evaluate(det, test)
    c = result.metrics["conditions"]
    assert c["pixel_metrics_size"] == [32, 32] and c["eval_size"] is None and c["detector_input_size"] == [32, 32]
    assert result.prediction.anomaly_maps.shape[-2:] == (32, 32)


def test_eval_size_resizes_maps_and_masks_and_is_recorded(fitted):
    det, test = fitted
    result = evaluate(det, test, eval_size=40)
    assert result.prediction.anomaly_maps.shape[-2:] == (40, 40) and result.masks.shape[-2:] == (40, 40)
    assert result.metrics["conditions"]["pixel_metrics_size"] == [40, 40]
    assert result.metrics["conditions"]["eval_size"] == 40
    assert result.metrics["image_auroc"] == evaluate(det, test).metrics["image_auroc"]  # image scores unchanged
    assert set(result.per_defect["scratch"]) >= {"pixel_auroc", "aupro", "aupimo", "image_auroc", "n_images"}


def test_a_tiny_eval_size_is_refused(fitted):
    with pytest.raises(ConfigError, match="--eval-size 2"):
        evaluate(*fitted, eval_size=2)


def test_defects_alone_are_scored_by_their_pixels_and_refused_without_maps(fitted):
    from latentad.errors import DataError

    det, test = fitted
    defects = test.subset([i for i, y in enumerate(test.labels) if y == 1])
    with pytest.warns(UserWarning, match="no normal test image"):
        result = evaluate(det, defects)
    m = result.metrics
    assert m["image_auroc"] is None and m["f1_max"] is None and 0 <= m["pixel_auroc"] <= 1
    assert all(row["image_auroc"] is None for row in result.per_defect.values())
    normals = test.subset([i for i, y in enumerate(test.labels) if y == 0])
    with pytest.raises(DataError, match="needs both normal and anomalous images"):
        evaluate(det, normals)
    gaussian = create("gaussian", image_size=32).fit(make_synthetic(n_train=6, size=32, seed=1).train)
    with pytest.raises(DataError, match="for a method that gives maps"):
        evaluate(gaussian, defects)
