"""Fixtures for the pretrained-feature detectors: a tiny random-init backbone and tiny data."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from latentad.data.synthetic import make_synthetic


class TinyNet(nn.Module):
    """A 3-stage conv net (strides 2/4/8), random weights: levels "layer1".."layer3"."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(x.mean((2, 3)))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for these tiny workloads (the 2 shared cores make OpenMP barriers
    between many tiny ops very slow); restored afterwards."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy / scipy / faiss BLAS and OpenMP pools too
        yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture(scope="session")
def tiny_split():
    """16 normal 32-px textures for training, 2 normal + 4 defective for testing (in memory)."""
    return make_synthetic(n_train=16, n_test_good=2, n_test_defect=4, size=32, seed=0)


# Small, fast options per method for the user-module backbone (levels are TinyNet submodules).
TINY = {
    "gaussian": {"levels": ("layer2", "layer3"), "image_size": 32},
    "padim": {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 4},
    "patchcore": {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 4, "max_memory": 64,
                  "coreset_ratio": 0.5, "embed_dim": 8},
    "simplenet": {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 4, "steps": 20,
                  "train_batch": 64, "hidden": 16},
}


@pytest.fixture
def tiny_options():
    return TINY
