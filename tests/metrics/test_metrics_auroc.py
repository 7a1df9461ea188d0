"""image_auroc / pixel_auroc against scikit-learn, including ties and torch inputs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from latentad.metrics import image_auroc, pixel_auroc

torch.set_num_threads(1)


def test_image_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float) + labels  # heavy ties
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-15)


def test_image_auroc_hand_value_and_torch_input():
    # pairs (anomalous, normal): 0.8>0.1, 0.8>0.4, 0.35>0.1, 0.35<0.4 -> 3/4
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    assert image_auroc(labels, scores) == pytest.approx(0.75)


def test_image_auroc_one_class_raises():
    with pytest.raises(ValueError, match="only one class"):
        image_auroc([1, 1, 1], [0.1, 0.2, 0.3])


def test_image_auroc_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        image_auroc([0, 2, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("levels", [3, 17, None])
def test_pixel_auroc_equals_sklearn(levels):
    rng = np.random.default_rng(levels or 1)
    masks = rng.random((7, 23, 31)) < 0.2
    if levels is None:
        maps = rng.random(masks.shape).astype(np.float32)
    else:  # few distinct values: many ties between defect and normal pixels
        maps = (rng.integers(0, levels, masks.shape) + masks * rng.integers(0, 2, masks.shape)).astype(
            np.float32
        )
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-13)


def test_pixel_auroc_hand_value_with_tie():
    # defect scores {2, 1}, normal {1, 0}: pairs 2>1, 2>0, 1=1 (half), 1>0 -> 3.5 / 4
    masks = np.array([[[1, 1, 0, 0]]])
    maps = np.array([[[2.0, 1.0, 1.0, 0.0]]])
    assert pixel_auroc(masks, maps) == 0.875


def test_pixel_auroc_torch_and_uint8_masks():
    rng = np.random.default_rng(3)
    masks = (rng.random((4, 16, 16)) < 0.3).astype(np.uint8) * 255
    maps = rng.random((4, 16, 16)).astype(np.float32) + 0.2 * (masks > 0)
    expected = roc_auc_score((masks > 0).ravel(), maps.ravel())
    assert pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps)) == pytest.approx(expected, abs=1e-13)


def test_pixel_auroc_accepts_single_channel_layout():
    masks = np.array([[[[1, 1, 0, 0]]]])  # (N,1,H,W)
    maps = np.array([[[[2.0, 1.0, 1.0, 0.0]]]])
    assert pixel_auroc(masks, maps) == 0.875


def test_pixel_auroc_errors():
    with pytest.raises(ValueError, match="defect"):
        pixel_auroc(np.zeros((2, 4, 4)), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        maps = np.ones((1, 2, 2))
        maps[0, 0, 0] = np.nan
        pixel_auroc(np.array([[[1, 0], [0, 0]]]), maps)
