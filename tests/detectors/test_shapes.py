"""Every registered method on non-square images (48 x 96) and on tiles: map shapes, and defects
score higher than normal texture."""

import numpy as np
import pytest

from latentad import available_methods, create, registry
from latentad.data.synthetic import make_synthetic
from latentad.evaluation import score_set
from latentad.registry import get_method

TRAINED = {"epochs": 3, "augment_to": 24, "batch_size": 8}
SMALL = {
    "ae_l2": {"n_down": 3, "base_width": 8, "latent_dim": 16, **TRAINED},
    "ae_ssim": {"n_down": 3, "base_width": 8, "latent_dim": 16, **TRAINED},
    "vae_l2": {"n_down": 3, "width": 16, **TRAINED},
    "vae_kl": {"n_down": 3, "width": 16, **TRAINED},
    "vqvae_ssim": {"n_down": 3, "width": 16, "code_dim": 16, "codebook_size": 32, **TRAINED},
    "vqvae_ssim_am": {"n_down": 3, "width": 16, "code_dim": 16, "codebook_size": 32, **TRAINED},
    "simplenet": {"steps": 40},
    "dinomaly": {"epochs": 3, "batch_size": 8},
}
# the DINOv2 methods take sides that are multiples of its 14-pixel patch: their own shapes
VIT = {"dino_knn", "dinomaly"}


def shapes(method: str) -> tuple[tuple[int, int], int]:
    """(non-square input shape, tile side) for `method`."""
    return ((42, 98), 28) if method in VIT else ((48, 96), 32)


@pytest.fixture(scope="module")
def strip():
    return make_synthetic(n_train=10, n_test_good=2, n_test_defect=4, size=(48, 96), seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _check(det, split, shape, raw_shape):
    pred, labels, masks, _, _ = score_set(det, split.test, progress=None)
    assert pred.image_scores.shape == (len(split.test),) and np.isfinite(pred.image_scores).all()
    if not det.localizes:
        assert pred.anomaly_maps is None
        assert pred.image_scores[labels == 1].mean() > pred.image_scores[labels == 0].mean()
        return
    assert pred.anomaly_maps.shape == (len(split.test), *shape)
    raw = det.predict(split.test).anomaly_maps
    assert raw.shape[-2:] == raw_shape
    if get_method(det.name).family == "reconstruction" and det.name == "vae_kl":
        return  # its map ranks brightness, not novelty (RESULTS.md, mend issue): shapes only
    assert pred.anomaly_maps[masks].mean() > pred.anomaly_maps[~masks].mean()


@pytest.mark.parametrize("method", available_methods())
def test_every_method_on_non_square_images(method, strip):
    shape, _ = shapes(method)
    det = create(method, image_size=shape, **SMALL.get(method, {})).fit(strip.train)
    assert det.input_shape == shape
    _check(det, strip, shape, shape)


@pytest.mark.parametrize("method", available_methods())
def test_every_method_on_tiles(method, strip, tmp_path):
    _, tile = shapes(method)
    det = create(method, tile=tile, tile_overlap=8, **SMALL.get(method, {})).fit(strip.train)
    assert det.input_shape == (tile, tile) and det.config.tile == tile
    _check(det, strip, (tile, tile), (48, 96))  # evaluated on a one-tile grid; stitched at each image's own size
    det.save(tmp_path / "m")
    again = registry.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(strip.test).image_scores, det.predict(strip.test).image_scores,
                               rtol=1e-5)


def test_per_position_tiles_need_one_image_size(strip):
    from latentad.errors import DataError

    det = create("padim", tile=32, tile_mode="per_position").fit(strip.train)
    assert len(det.models) == len(det.positions) == 2 * 3
    assert det.predict(strip.test).anomaly_maps.shape == (len(strip.test), 48, 96)
    other = make_synthetic(n_train=2, n_test_good=1, n_test_defect=1, size=(48, 80), seed=1)
    with pytest.raises(DataError, match="per-position tiled model was fitted on 96x48"):
        det.predict(other.test)


def test_a_tiled_method_cannot_be_built_around_its_tiling():
    from latentad.errors import ConfigError

    with pytest.raises(ConfigError, match="tile_overlap"):
        create("patchcore", tile=32, tile_overlap=32)
    with pytest.raises(ConfigError, match="built by latentad.create"):
        get_method("patchcore")(tile=32)
    with pytest.raises(ConfigError, match="apply only with tile > 0"):
        create("patchcore", tile_overlap=8)  # would be silently ignored without tiles
    with pytest.raises(ConfigError, match="resize=fit does not apply with tile=32"):
        create("patchcore", tile=32, resize="fit")


@pytest.mark.parametrize("mode", ["fit", "crop"])
def test_aspect_preserving_modes_return_maps_on_the_original(mode, strip):
    det = create("patchcore", image_size=64, resize=mode).fit(strip.train)
    pred, _, masks, _, _ = score_set(det, strip.test, progress=None, eval_size=(48, 96))
    assert pred.anomaly_maps.shape == masks.shape == (len(strip.test), 48, 96)
    assert pred.anomaly_maps[masks].mean() > pred.anomaly_maps[~masks].mean()
