"""`feature_cache()`: candidates fitted and scored in turn on the same images extract each batch's
backbone features once, and fit and score exactly as without it."""

import numpy as np
import pytest
import torch

from latentad import create
from latentad.backbones import feature_cache
from latentad.data.synthetic import make_synthetic

CANDIDATES = (("gaussian", {}), ("padim", {}), ("patchcore", {"whiten": True, "embed_dim": 0}), ("patchcore", {}))


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=8, n_test_good=2, n_test_defect=2, size=48)


def run_candidates(split) -> list:
    out = []
    for method, options in CANDIDATES:
        det = create(method, image_size=48, **options).fit(split.train)
        out.append(det.predict(split.test))
    return out



def test_fits_and_scores_under_the_cache_equal_those_without(split, one_thread, backbone_passes):
    calls = backbone_passes
    plain = run_candidates(split)
    n_plain = len(calls)
    with feature_cache() as cache:
        cached = run_candidates(split)
        assert cache.hits > 0 and cache.nbytes > 0
    n_cached = len(calls) - n_plain
    assert n_cached <= n_plain / 2  # four candidates on one backbone: a second pass only for padim's stage2
    for a, b in zip(plain, cached, strict=True):
        np.testing.assert_array_equal(a.image_scores, b.image_scores)
        if a.anomaly_maps is not None:
            np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)


def test_the_cache_is_bounded_keyed_by_content_and_gone_after_the_block(split, one_thread):
    det = create("padim", image_size=48).fit(split.train)
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with feature_cache(max_bytes=200_000) as cache:
        with torch.inference_mode():
            det.features(x)
            det.features(x.clone())  # same content: a hit
            det.features(x.flip(-1))  # other content: a miss
        assert (cache.hits, cache.misses) == (1, 2)
        assert 0 < cache.nbytes <= 200_000
        feats = det.features(x)  # outside inference mode: ordinary tensors autograd can use
        assert not any(f.is_inference() for f in feats.values())
    from latentad.backbones import active_cache

    assert active_cache() is None and cache.nbytes == 0
