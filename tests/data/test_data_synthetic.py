"""Synthetic textures with drawn defects: determinism, exact masks, contrast, MVTec layout on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentad.data.synthetic import BLOB_LEVEL, SCRATCH_LEVEL, make_synthetic
from latentad.errors import ConfigError, DataError


def _raw(split):
    return [r.load() for r in split.test.records]


def test_in_memory_split_and_exact_masks():
    split = make_synthetic(n_train=4, n_test_good=2, n_test_defect=4, size=32, seed=0)
    assert len(split.train) == 4 and set(split.train.labels) == {0}
    assert split.test.labels.tolist() == [0, 0, 1, 1, 1, 1]
    kinds = [r.defect_type for r in split.test.records]
    assert kinds == ["good", "good", "scratch", "blob", "scratch", "blob"]
    assert split.train.records[0].load()[0].shape == (32, 32, 3)
    for rec, (image, mask) in zip(split.test.records, _raw(split), strict=True):
        assert mask.shape == (32, 32)
        if rec.label == 0:
            assert not mask.any()
        else:
            level = SCRATCH_LEVEL if rec.defect_type == "scratch" else BLOB_LEVEL
            assert mask.sum() >= 8
            assert (image[mask] == level).all()
        assert ((image[~mask] >= 70) & (image[~mask] <= 180)).all()  # texture range: >= 60 levels contrast
    batch = split.test.load_all()
    assert batch.masks is not None and batch.masks.shape == (6, 32, 32)
    json.dumps(split.info)
    assert split.info["format"] == "synthetic" and split.info["layout"] == "memory"


def test_deterministic_under_seed():
    a, b = _raw(make_synthetic(size=24, seed=5)), _raw(make_synthetic(size=24, seed=5))
    c = _raw(make_synthetic(size=24, seed=6))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[-1][0], c[-1][0])


def test_simple_detector_separates_defects():
    split = make_synthetic(n_train=8, n_test_good=6, n_test_defect=6, size=48, seed=1)
    train = split.train.load_all().images
    reference = train.median(dim=0).values
    test = split.test.load_all()
    scores = (test.images - reference).abs().amax(dim=(1, 2, 3))
    good, bad = scores[test.labels == 0], scores[test.labels == 1]
    assert float(bad.min()) > float(good.max())


def test_grayscale():
    split = make_synthetic(channels=1, size=20, n_train=2, n_test_good=1, n_test_defect=2)
    assert split.train.channels == 1 and split.test[2].image.shape == (1, 20, 20)


def test_written_in_mvtec_layout_and_reused(tmp_path):
    root = tmp_path / "syn"
    split = make_synthetic(root, n_train=3, n_test_good=2, n_test_defect=3, size=32, seed=2)
    assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
    assert (root / "ground_truth" / "scratch" / "001_mask.png").is_file()
    assert (root / "ground_truth" / "blob" / "000_mask.png").is_file()
    assert split.info["layout"] == "mvtec" and split.info["n_test"] == 5
    memory = make_synthetic(n_train=3, n_test_good=2, n_test_defect=3, size=32, seed=2)
    disk = split.test.load_all()
    mem = memory.test.load_all()
    order = np.argsort(disk.paths)  # mvtec lists blob/, good/, scratch/
    mem_keys = [f"{d}/{p.rsplit('/', 1)[1]}" for d, p in zip(mem.defect_types, mem.paths, strict=True)]
    mem_order = np.argsort(mem_keys)
    assert np.array_equal(disk.masks[order].numpy(), mem.masks[mem_order].numpy())
    assert np.allclose(disk.images[order].numpy(), mem.images[mem_order].numpy())
    again = make_synthetic(root, n_train=3, n_test_good=2, n_test_defect=3, size=32, seed=2)
    assert again.info == split.info
    with pytest.raises(DataError, match="not empty"):
        make_synthetic(root, n_train=4, size=32)


def test_bad_options(tmp_path):
    for kwargs in ({"channels": 2}, {"n_train": 0}, {"n_test_good": 0, "n_test_defect": 0}, {"size": 8}):
        with pytest.raises(ConfigError):
            make_synthetic(**kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_synthetic(tmp_path / "file")
