"""Fixtures shared by the test packages."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny workloads (OpenMP barriers dominate them on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def backbone_passes(monkeypatch) -> list:
    """Every backbone forward pass from here on, recorded (levels, batch shape) as it runs."""
    from latentad.backbones.extractor import FeatureExtractor

    calls: list = []
    forward = FeatureExtractor._forward

    def counted(self, x):
        calls.append((tuple(self.levels), tuple(x.shape)))
        return forward(self, x)

    monkeypatch.setattr(FeatureExtractor, "_forward", counted)
    return calls


@pytest.fixture
def no_test_images(monkeypatch):
    """Make `latentad.runs.open_split` hand out test sets whose images raise when read: a fit that
    reads a test image fails."""
    from dataclasses import replace

    import latentad.runs as runs
    from latentad.data.base import Record

    opened = runs.open_split

    def guarded(*args, **kwargs):
        split = opened(*args, **kwargs)

        def refuse(*_):
            raise AssertionError("a test image was read during fit")

        test = replace(split.test, records=[Record(r.path, r.label, r.defect_type, refuse) for r in split.test.records])
        return replace(split, test=test)

    monkeypatch.setattr(runs, "open_split", guarded)


@pytest.fixture(scope="session")
def two(tmp_path_factory):
    """Two small synthetic products, alpha and beta, for the multi-class tests (fit, predict, service)."""
    from latentad.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("multi")
    make_synthetic(root / "alpha", n_train=12, n_test_good=3, n_test_defect=3, size=32, seed=0)
    make_synthetic(root / "beta", n_train=12, n_test_good=3, n_test_defect=3, size=32, seed=1)
    return root
