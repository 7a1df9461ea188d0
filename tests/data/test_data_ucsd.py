"""UCSD Ped1 loader on a tiny tree generated in the published layout (238x158 grayscale tif frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.ucsd import load_ucsd_ped1, parse_gt_frames
from latentad.errors import DataError

W, H = 238, 158
M_FILE = """TestDataset = {};
% frame-level ground truth (1-based frame numbers)
TestDataset.gt_frame{1} = [2:3];
TestDataset.gt_frame{2} = [1, 3];   % two single frames
TestDataset.gt_frame{3} = [1:2];
"""


def _frame(path: Path, value: int, ext_mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W), value, dtype=np.uint8), ext_mode).save(path)


def _tree(root: Path, n_frames: int = 3) -> Path:
    ped = root / "UCSDped1"
    for c in (1, 2):
        for f in range(1, n_frames + 1):
            _frame(ped / "Train" / f"Train{c:03d}" / f"{f:03d}.tif", 10 * c + f)
    for c in (1, 2, 3):
        for f in range(1, n_frames + 1):
            _frame(ped / "Test" / f"Test{c:03d}" / f"{f:03d}.tif", 100 + 10 * c + f)
    gt = ped / "Test" / "Test003_gt"
    for f in range(1, n_frames + 1):
        mask = np.zeros((H, W), dtype=np.uint8)
        if f == 2:
            mask[40:60, 100:130] = 255
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(gt / f"{f:03d}.bmp")
    (ped / "Test" / "UCSDped1.m").write_text(M_FILE)
    return root


def test_split_labels_and_info(tmp_path):
    split = load_ucsd_ped1(_tree(tmp_path))
    assert len(split.train) == 6 and set(split.train.labels) == {0}
    # Test001 [2:3], Test002 [1, 3] from the .m file; Test003 from its bitmaps (frame 2 only)
    assert split.test.labels.tolist() == [0, 1, 1, 1, 0, 1, 0, 1, 0]
    assert split.test.has_masks is False  # only some clips have pixel ground truth
    info = split.info
    assert info["test_clips"] == {"Test001": "frame-ranges", "Test002": "frame-ranges", "Test003": "pixel"}
    assert info["n_test_anomalous"] == 5 and info["train_clips"] == ["Train001", "Train002"]
    json.dumps(info)
    sample = split.train[0]
    assert sample.image.shape == (1, H, W)
    assert abs(float(sample.image[0, 0, 0]) - 11 / 255) < 1e-6


def test_pixel_only_uses_masks(tmp_path):
    split = load_ucsd_ped1(_tree(tmp_path), pixel_only=True, size=64)
    assert split.test.has_masks is True and split.test.labels.tolist() == [0, 1, 0]
    batch = split.test.load_all()
    assert batch.masks is not None and batch.masks.shape == (3, 64, 64)
    assert batch.masks[0].sum() == 0 and batch.masks[1].sum() > 0 and batch.masks[2].sum() == 0
    raw, mask = split.test.records[1].load()
    assert mask.shape == (H, W) and int(mask.sum()) == 20 * 30


def test_root_variants(tmp_path):
    _tree(tmp_path / "UCSD_Anomaly_Dataset.v1p2")
    wrapper = tmp_path / "UCSD_Anomaly_Dataset.v1p2"
    for root in (tmp_path, wrapper, wrapper / "UCSDped1"):
        assert len(load_ucsd_ped1(root).train) == 6


def test_parse_gt_frames(tmp_path):
    m = tmp_path / "UCSDped1.m"
    m.write_text("TestDataset.gt_frame{1} = [60:152];\n% TestDataset.gt_frame{2} = [1:2];\n"
                 "TestDataset.gt_frame{5} = [5:90, 140:142];\nTestDataset.gt_frame{7} = [1:2:7 10];\n")
    ranges = parse_gt_frames(m)
    assert set(ranges) == {1, 5, 7}
    assert ranges[1] == set(range(60, 153))
    assert ranges[5] == set(range(5, 91)) | {140, 141, 142}
    assert ranges[7] == {1, 3, 5, 7, 10}
    m.write_text("TestDataset.gt_frame{1} = [a:b];\n")
    with pytest.raises(DataError, match="UCSDped1.m"):
        parse_gt_frames(m)


def test_clip_without_labels(tmp_path):
    root = _tree(tmp_path)
    (root / "UCSDped1" / "Test" / "UCSDped1.m").write_text("TestDataset.gt_frame{1} = [2:3];\n")
    with pytest.raises(DataError) as exc:
        load_ucsd_ped1(root)
    assert "Test002" in str(exc.value) and "no frame labels" in str(exc.value)


def test_missing_bitmap_and_stray_files(tmp_path):
    root = _tree(tmp_path)
    test = root / "UCSDped1" / "Test"
    (test / "Test001" / "Thumbs.db").write_bytes(b"\x00" * 10)  # ignored, as in real copies
    (test / "Test003_gt" / "002.bmp").unlink()
    with pytest.raises(DataError) as exc:
        load_ucsd_ped1(root)
    assert "002.tif" in str(exc.value) and "Test003_gt" in str(exc.value)
    _tree(tmp_path / "b")
    (tmp_path / "b" / "UCSDped1" / "Train" / "Train001" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="readme.txt: not an image"):
        load_ucsd_ped1(tmp_path / "b")


def test_no_layout(tmp_path):
    with pytest.raises(DataError, match="no UCSD layout"):
        load_ucsd_ped1(tmp_path)
    (tmp_path / "UCSDped1" / "Train").mkdir(parents=True)
    (tmp_path / "UCSDped1" / "Test").mkdir()
    with pytest.raises(DataError, match="Train001"):
        load_ucsd_ped1(tmp_path)
