"""PatchCore: greedy coreset, nearest neighbours, the paper's image-score re-weighting, bank size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentad.detectors.pretrained.patchcore import PatchCore, greedy_coreset


def test_greedy_coreset_on_a_hand_example():
    # Points on a line; from 0 the farthest is 20, then 10 (min distance 10 beats 11's 9), then
    # 2 or 5: distances to {0, 10, 20} are 1:1, 2:2, 5:5, 11:1, so 5.
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0], [5.0]])
    assert greedy_coreset(x, 4, start=0).tolist() == [0, 5, 3, 6]
    # Started elsewhere: from 11 the farthest is 0, then 20 (9 from 11), then 5.
    assert greedy_coreset(x, 4, start=4).tolist() == [4, 0, 5, 6]
    # n larger than the set: every point once.
    assert sorted(greedy_coreset(x, 10, start=0).tolist()) == list(range(7))


def test_greedy_coreset_covers_clusters_in_2d():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    pts = np.concatenate([c + 0.1 * rng.normal(size=(50, 2)) for c in centres]).astype(np.float32)
    idx = greedy_coreset(torch.from_numpy(pts), 4, start=0).numpy()
    assert sorted(set(idx // 50)) == [0, 1, 2, 3]  # one per cluster
    # Brute-force check of the k-center rule at each step.
    chosen = [0]
    for _ in range(3):
        d = np.min(((pts[:, None] - pts[chosen][None]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    assert idx.tolist() == chosen


def _fitted(tiny_net, tiny_split, **kw):
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 4, "embed_dim": 0}
    return PatchCore(backbone=tiny_net(), **{**opts, **kw}).fit(tiny_split.train)


def test_memory_bank_size_is_bounded(tiny_net, tiny_split):
    n_patches = len(tiny_split.train) * 8 * 8
    det = _fitted(tiny_net, tiny_split, coreset_ratio=0.1, max_memory=10_000)
    assert det.memory.shape == (math.ceil(0.1 * n_patches), 8 + 12)
    det = _fitted(tiny_net, tiny_split, coreset_ratio=0.5, max_memory=30)
    assert det.memory.shape[0] == 30
    det = _fitted(tiny_net, tiny_split, max_candidates=200, coreset_ratio=1.0, max_memory=10_000)
    assert 100 < det.memory.shape[0] < 300  # random subset of about 200 candidates, kept whole


def test_pca_embedding_is_stored_and_used(tiny_net, tiny_split):
    det = _fitted(tiny_net, tiny_split, embed_dim=5, coreset_ratio=0.5, max_memory=40)
    assert det.memory.shape == (40, 5) and det.components.shape == (20, 5)
    gram = det.components.T @ det.components
    torch.testing.assert_close(gram, torch.eye(5), atol=1e-5, rtol=0)


def test_whitened_search_is_a_mahalanobis_nearest_neighbour(tiny_net, tiny_split):
    """whiten=true: the map's patch scores are min over the bank of sqrt((p - m)^T (C + eps I)^-1 (p - m)),
    C the training patches' covariance, with every direction kept (embed_dim=0)."""
    det = _fitted(tiny_net, tiny_split, whiten=True, eps=0.05, coreset_ratio=0.5, max_memory=50, sigma=0.0,
                  num_neighbors=1)
    train = torch.cat(list(det.patch_grids(tiny_split.train.load_all().images)))
    flat = train.permute(0, 2, 3, 1).reshape(-1, train.shape[1]).double()
    cov = torch.cov(flat.T) + 0.05 * torch.eye(flat.shape[1], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    bank = det.memory.double() @ torch.linalg.pinv(det.components.double()) + det.mean.double()  # raw features
    x = tiny_split.test.load_all().images
    grids = torch.cat(list(det.patch_grids(x)))
    b, d, h, w = grids.shape
    patches = grids.permute(0, 2, 3, 1).reshape(b * h * w, d).double()
    delta = patches[:, None] - bank[None]
    maha = torch.einsum("pmi,ij,pmj->pm", delta, prec, delta).clamp_min(0).sqrt().min(1).values
    np.testing.assert_allclose(det.predict(x).image_scores, maha.view(b, -1).amax(1).numpy(), rtol=1e-3)
    assert det.components.shape == (d, d)
    plain = _fitted(tiny_net, tiny_split, coreset_ratio=0.5, max_memory=50, sigma=0.0, num_neighbors=1)
    assert not np.allclose(plain.predict(x).image_scores, det.predict(x).image_scores, rtol=1e-2)


def test_scores_are_nearest_neighbour_distances_with_paper_reweighting(tiny_net, tiny_split):
    det = _fitted(tiny_net, tiny_split, coreset_ratio=0.5, max_memory=50, sigma=0.0, num_neighbors=3)
    x = tiny_split.test.load_all().images
    grids = torch.cat(list(det.patch_grids(x)))
    b, d, h, w = grids.shape
    patches = grids.permute(0, 2, 3, 1).reshape(b, h * w, d).double()
    mem = det.memory.double()
    dist = torch.cdist(patches, mem[None].expand(b, -1, -1))  # (B, P, M)
    nn_d, nn_i = dist.min(-1)
    # Plain max with b = 1
    det.config.num_neighbors = 1
    np.testing.assert_allclose(det.predict(x).image_scores, nn_d.amax(1).numpy(), rtol=1e-4)
    # Paper eq. 7 with b = 3, brute force
    det.config.num_neighbors = 3
    expected = []
    for i in range(b):
        j = int(nn_d[i].argmax())
        s_star = nn_d[i, j]
        m_star = mem[nn_i[i, j]]
        support = torch.cdist(m_star[None], mem)[0].argsort()[:3]
        dd = torch.linalg.vector_norm(mem[support] - patches[i, j], dim=-1)
        expected.append(float((1 - torch.exp(s_star) / torch.exp(dd).sum()) * s_star))
    got = det.predict(x).image_scores
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.all(got < nn_d.amax(1).numpy())
    # With sigma 0 the map is the bilinearly upsampled nearest-neighbour distance grid.
    maps = det.predict(x).anomaly_maps
    up = torch.nn.functional.interpolate(nn_d.view(b, 1, h, w).float(), size=(32, 32), mode="bilinear")
    np.testing.assert_allclose(maps, up[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_defects_score_higher_than_normal_regions(tiny_net, tiny_split):
    det = _fitted(tiny_net, tiny_split, coreset_ratio=0.5, max_memory=200)
    batch = tiny_split.test.load_all()
    pred = det.predict(batch.images)
    masks = batch.masks.numpy() > 0
    defective = batch.labels.numpy() == 1
    inside = np.mean([pred.anomaly_maps[i][masks[i]].mean() for i in np.nonzero(defective)[0]])
    outside = np.mean([pred.anomaly_maps[i][~masks[i]].mean() for i in np.nonzero(defective)[0]])
    assert inside > outside
    assert pred.image_scores[defective].mean() > pred.image_scores[~defective].mean()


def test_the_whitening_regulariser_alone_is_refused(tiny_net):
    from latentad.errors import ConfigError

    with pytest.raises(ConfigError, match="eps .* needs whiten=true"):
        PatchCore(backbone=tiny_net(), eps=0.1)
