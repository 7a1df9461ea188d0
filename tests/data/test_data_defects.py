"""Synthetic defects for validation: each kind changes the image inside its mask and only there."""

import numpy as np
import pytest
from PIL import Image

from latentad.data.defects import ALL_KINDS, EVERY_KIND, KINDS, REAL_KINDS, VIEW, add_defect


@pytest.mark.parametrize("kind", EVERY_KIND)
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


def test_the_kinds_closer_to_real_defects_are_extra_and_small_at_the_models_view():
    assert EVERY_KIND[: len(ALL_KINDS)] == ALL_KINDS and not set(REAL_KINDS) & set(ALL_KINDS)
    image = np.random.default_rng(4).integers(90, 110, size=(448, 448, 3)).astype(np.uint8)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        _, faint, _ = add_defect(image, rng, "faint")
        ys, xs = np.nonzero(faint)
        assert faint.mean() < 0.01 and max(np.ptp(ys), np.ptp(xs)) < 0.2 * 448  # a short stroke, a few px wide
        _, view, _ = add_defect(image, np.random.default_rng(seed), "view")
        ys, xs = np.nonzero(view)
        assert 4 * 448 / VIEW - 1 <= np.ptp(ys) + 1 <= 16 * 448 / VIEW + 1  # 4-16 px at the 224-px view


def test_a_faint_defect_moves_the_grey_level_by_about_the_local_texture():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128, 1), 128, dtype=np.uint8)
    rough = np.clip(128 + rng.normal(0, 20, size=(128, 128, 1)), 0, 255).astype(np.uint8)
    d_flat = [np.abs(add_defect(flat, np.random.default_rng(s), "faint")[0].astype(int) - 128).max() for s in range(5)]
    d_rough = []
    for s in range(5):
        out, mask, _ = add_defect(rough, np.random.default_rng(s), "faint")
        d_rough.append(np.abs(out.astype(int) - rough)[mask].max())
    assert max(d_flat) <= 4 and min(d_rough) >= 15  # low contrast on a flat image, more on a rough one


def test_perlin_fills_from_the_donor_and_needs_one():
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    donor = np.full((64, 64, 3), 0, dtype=np.uint8)
    out, mask, _ = add_defect(image, np.random.default_rng(1), "perlin", donor)
    assert 0.01 < mask.mean() < 0.12 and np.all(out[mask] <= 100) and np.all(out[~mask] == 200)
    with pytest.raises(ValueError, match="donor"):
        add_defect(image, np.random.default_rng(1), "perlin")


def test_a_faint_stroke_that_walks_off_the_image_is_cut_at_its_border():
    image = np.random.default_rng(0).integers(0, 255, size=(300, 300, 1)).astype(np.uint8)
    for seed in (361, 427, 438, 475):  # strokes that walk off the image (found by search)
        out, mask, _ = add_defect(image, np.random.default_rng(seed), "faint")
        assert mask.any() and out.shape == image.shape
