"""Synthetic defects for validation: each kind changes the image inside its mask and only there."""

import numpy as np
import pytest
from PIL import Image

from latentad.data.defects import ALL_KINDS, KINDS, add_defect


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_defect_changes_the_image_inside_its_mask_only(kind):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:96]
    image = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], 2).astype(np.uint8)
    out, mask, drawn = add_defect(image, rng, kind, donor=255 - image)
    assert drawn == kind and out.shape == image.shape and mask.shape == image.shape[:2]
    assert 0 < mask.mean() < 0.5
    assert np.array_equal(out[~mask], image[~mask])
    assert np.abs(out[mask].astype(int) - image[mask]).mean() > 1


def test_same_seed_same_defect_and_unknown_kind_refused():
    image = np.full((48, 48, 3), 120, dtype=np.uint8)
    image[::4] = 30
    a = add_defect(image, np.random.default_rng(3))
    b = add_defect(image, np.random.default_rng(3))
    assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="defect kind"):
        add_defect(image, np.random.default_rng(0), "smudge")


def test_a_band_runs_from_one_edge_over_a_large_share_and_is_not_drawn_by_default():
    image = np.random.default_rng(1).integers(0, 255, size=(80, 60, 3)).astype(np.uint8)
    for seed in range(8):
        _, mask, _ = add_defect(image, np.random.default_rng(seed), "band")
        assert 0.1 < mask.mean() < 0.5
        edges = [mask[0].all(), mask[-1].all(), mask[:, 0].all(), mask[:, -1].all()]
        assert sum(edges) == 1  # one whole edge is inside the band
    drawn = {add_defect(image, np.random.default_rng(s))[2] for s in range(40)}
    assert drawn == set(KINDS)


def test_a_graft_is_another_images_band_and_needs_that_image():
    image = np.full((40, 50, 1), 100, dtype=np.uint8)
    donor = np.random.default_rng(2).integers(0, 255, size=(60, 30)).astype(np.uint8)  # other size, no channel
    out, mask, _ = add_defect(image, np.random.default_rng(5), "graft", donor)
    resized = np.asarray(Image.fromarray(donor).resize((50, 40)))
    assert out.shape == image.shape and 0.1 < mask.mean() < 0.5
    assert np.array_equal(out[mask][:, 0], resized[mask]) and np.all(out[~mask] == 100)
    with pytest.raises(ValueError, match="donor"):
        add_defect(image, np.random.default_rng(5), "graft")
