"""The MVTec-layout loader on small synthetic trees, including bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.mvtec import load_mvtec
from latentad.errors import DataError


def _png(path: Path, value: int = 120, size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (*size, 3) if mode == "RGB" else size
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, dtype=np.uint8)
    m[4:8, 4:10] = 255
    Image.fromarray(m).save(path)
    return path


def _tree(root: Path, masks: bool = True) -> Path:
    for i in range(3):
        _png(root / "train" / "good" / f"{i:03d}.png", 100 + i)
    _png(root / "test" / "good" / "000.png")
    for i in range(2):
        _png(root / "test" / "crack" / f"{i:03d}.png", 220)
        if masks:
            _mask(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    return root


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


def test_loads_split_with_masks(tmp_path):
    split = load_mvtec(_tree(tmp_path), size=8)
    assert len(split.train) == 3 and set(split.train.labels) == {0}
    assert split.test.labels.tolist() == [1, 1, 0]  # test/ subfolders in name order: crack, good
    batch = split.test.load_all()
    assert batch.images.shape == (3, 3, 8, 8) and batch.masks is not None
    assert batch.masks[0].sum() > 0 and batch.masks[2].sum() == 0
    assert split.info["defect_types"] == ["crack"] and split.info["masks"] is True
    json.dumps(split.info)


def test_without_ground_truth_has_no_masks(tmp_path):
    split = load_mvtec(_tree(tmp_path, masks=False), size=None)
    assert split.test.has_masks is False and split.test.load_all().masks is None
    assert split.train[0].image.shape == (3, 16, 16)


def test_truncated_png_names_the_file(tmp_path):
    root = _tree(tmp_path)
    bad = root / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError) as exc:
        load_mvtec(root, size=8).train.load_all()
    _one_line(exc, str(bad))


def test_empty_train_good(tmp_path):
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        load_mvtec(tmp_path)
    _one_line(exc, "train/good", "no images")


def test_missing_train_good(tmp_path):
    _png(tmp_path / "test" / "good" / "0.png")
    with pytest.raises(DataError) as exc:
        load_mvtec(tmp_path)
    _one_line(exc, "train/good", "missing")


def test_mask_size_differs_from_image(tmp_path):
    root = _tree(tmp_path)
    _mask(root / "ground_truth" / "crack" / "001_mask.png", size=(12, 12))
    split = load_mvtec(root, size=8)
    with pytest.raises(DataError) as exc:
        split.test.load_all()
    _one_line(exc, "001_mask.png", "12x12", "16x16")


def test_missing_mask_folder(tmp_path):
    root = _tree(tmp_path, masks=False)
    (root / "ground_truth").mkdir()
    with pytest.raises(DataError) as exc:
        load_mvtec(root)
    _one_line(exc, str(root / "ground_truth" / "crack"), "missing mask folder")


def test_missing_single_mask(tmp_path):
    root = _tree(tmp_path)
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DataError) as exc:
        load_mvtec(root)
    _one_line(exc, "001.png", "no mask")


def test_grayscale_among_rgb_is_converted_with_warning(tmp_path):
    root = _tree(tmp_path)
    gray = _png(root / "train" / "good" / "009.png", 77, mode="L")
    with pytest.warns(UserWarning, match="009.png"):
        split = load_mvtec(root, size=None)
    assert split.train.channels == 3
    sample = next(split.train[i] for i in range(len(split.train)) if split.train[i].path == str(gray))
    assert sample.image.shape == (3, 16, 16)
    assert np.allclose(sample.image.numpy(), 77 / 255)


def test_all_grayscale_gives_one_channel(tmp_path):
    _png(tmp_path / "train" / "good" / "0.png", mode="L")
    _png(tmp_path / "test" / "good" / "0.png", mode="L")
    split = load_mvtec(tmp_path, size=None)
    assert split.train.channels == 1 and split.test[0].image.shape == (1, 16, 16)


def test_non_image_file_is_named(tmp_path):
    root = _tree(tmp_path)
    (root / "test" / "crack" / "readme.txt").write_text("notes")
    with pytest.raises(DataError) as exc:
        load_mvtec(root)
    _one_line(exc, "readme.txt", "not an image file")


def test_zero_byte_file(tmp_path):
    root = _tree(tmp_path)
    empty = root / "train" / "good" / "005.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        load_mvtec(root).train.load_all()
    _one_line(exc, str(empty))


def test_root_not_found(tmp_path):
    with pytest.raises(DataError) as exc:
        load_mvtec(tmp_path / "nope")
    _one_line(exc, "nope", "not found")
