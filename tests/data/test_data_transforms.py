"""augment_to: seeded rotations and flips growing a training set to n images."""

from __future__ import annotations

import pytest
import torch

from latentad.data.transforms import augment_to, rotate
from latentad.errors import ConfigError


def _images(n: int = 5, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(123))


def _match(out: torch.Tensor, candidates: torch.Tensor) -> int:
    """Index of the candidate equal to `out` (within float error), or -1."""
    diffs = (candidates - out).abs().flatten(1).amax(dim=1)
    hits = torch.nonzero(diffs < 1e-5).flatten()
    return int(hits[0]) if len(hits) else -1


def test_shape_and_determinism():
    x = _images()
    a = augment_to(12, x, torch.Generator().manual_seed(0))
    b = augment_to(12, x, torch.Generator().manual_seed(0))
    c = augment_to(12, x, torch.Generator().manual_seed(1))
    assert a.shape == (12, 3, 8, 8) and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, augment_to(12, x, torch.Generator().manual_seed(0), chunk=5))


def test_sources_cycle_through_a_permutation():
    x = _images(n=4)
    out = augment_to(10, x, torch.Generator().manual_seed(3), rotation=False, flips=False)
    sources = [_match(o, x) for o in out]
    assert -1 not in sources
    counts = torch.bincount(torch.tensor(sources), minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]
    assert sources[:4] == sources[4:8]  # one permutation, repeated
    assert len(set(sources[:4])) == 4


def test_flips_only_gives_flipped_copies():
    x = _images(n=3)
    variants = torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)])
    out = augment_to(24, x, torch.Generator().manual_seed(0), rotation=False)
    kinds = [_match(o, variants) // 3 for o in out]
    assert min(kinds) >= 0 and len(set(kinds)) > 1


def test_zero_angle_is_identity():
    x = _images(n=2)
    out = augment_to(2, x, torch.Generator().manual_seed(0), max_angle=0, flips=False)
    assert all(_match(o, x) >= 0 for o in out)


def test_rotate_matches_rot90_and_keeps_aspect():
    x = _images(n=2, h=6, w=6)
    r = rotate(x, torch.tensor([90.0, -90.0]))
    assert torch.allclose(r[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(r[1], torch.rot90(x[1], -1, dims=(-2, -1)), atol=1e-5)
    y = _images(n=1, h=4, w=10)
    assert torch.allclose(rotate(y, torch.tensor([180.0])), y.flip(-1).flip(-2), atol=1e-5)


def test_fill_modes():
    flat = torch.full((1, 1, 16, 16), 0.6)
    assert torch.allclose(rotate(flat, torch.tensor([45.0]), "reflect"), flat, atol=1e-5)
    assert torch.allclose(rotate(flat, torch.tensor([45.0]), "border"), flat, atol=1e-5)
    zeros = rotate(flat, torch.tensor([45.0]), "zeros")
    assert float(zeros[0, 0, 0, 0]) == 0.0 and abs(float(zeros[0, 0, 8, 8]) - 0.6) < 1e-5
    out = augment_to(6, flat.repeat(2, 1, 1, 1), torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 0.6), atol=1e-5)  # default fill: no black corners


def test_bad_inputs():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError):
        augment_to(4, torch.rand(3, 8, 8), g)
    with pytest.raises(ConfigError):
        augment_to(4, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), g)
    with pytest.raises(ConfigError):
        augment_to(4, torch.rand(0, 1, 8, 8), g)
    with pytest.raises(ConfigError):
        augment_to(4, torch.rand(2, 1, 8, 8), g, fill="wrap")
    assert augment_to(0, torch.rand(2, 1, 8, 8), g).shape == (0, 1, 8, 8)
