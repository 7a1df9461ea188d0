"""The alignment map: zero exactly where the encoder output is a codebook vector."""

import torch

from latentad.maps.alignment import alignment_map, nearest_codes


def _latents_on_codes():
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(10, 4, generator=g)
    idx = torch.randint(10, (2, 3, 5), generator=g)
    z_e = codebook[idx].permute(0, 3, 1, 2).clone()  # (2,4,3,5), every position on a code
    return codebook, idx, z_e


def test_am_zero_where_z_e_equals_a_code_and_positive_elsewhere():
    codebook, idx, z_e = _latents_on_codes()
    z_e[0, :, 1, 2] += torch.tensor([0.05, -0.02, 0.01, 0.03])  # move one position off its code
    codes, dist = nearest_codes(z_e, codebook)
    am = alignment_map(z_e, codebook[codes].permute(0, 3, 1, 2))
    assert torch.equal(codes, idx)
    off = torch.zeros_like(am, dtype=torch.bool)
    off[0, 1, 2] = True
    assert torch.all(am[~off] == 0) and torch.all(dist[~off] == 0)
    assert float(am[off]) > 0
    assert torch.allclose(am[off], torch.tensor(0.05**2 + 0.02**2 + 0.01**2 + 0.03**2), atol=1e-6)
    assert torch.allclose(am, dist, atol=1e-6)


def test_nearest_codes_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    codebook, z_e = torch.randn(32, 6, generator=g), torch.randn(3, 6, 4, 4, generator=g)
    codes, dist = nearest_codes(z_e, codebook)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 6)
    brute = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1)
    assert torch.equal(codes.reshape(-1), brute.argmin(1))
    assert torch.allclose(dist.reshape(-1), brute.min(1).values, atol=1e-5)
