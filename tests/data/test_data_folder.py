"""Plain folder-of-classes loader on small synthetic trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.folder import load_folder, split_indices
from latentad.errors import ConfigError, DataError


def _png(path: Path, value: int = 100, size: int = 12, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _mask(path: Path, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size, size), dtype=np.uint8)
    m[2:5, 3:7] = 255
    Image.fromarray(m).save(path)


def _tree(root: Path, n_normal: int = 6, classes: dict[str, int] | None = None, masks: bool = False) -> Path:
    for i in range(n_normal):
        _png(root / "normal" / f"n{i:02d}.png", 100 + i)
    for name, n in (classes or {"crack": 2, "hole": 3}).items():
        for i in range(n):
            _png(root / name / f"{name}{i}.png", 200)
            if masks:
                suffix = "_mask" if i % 2 else ""
                _mask(root / "masks" / name / f"{name}{i}{suffix}.png")
    return root


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_split_counts_labels_and_info(tmp_path):
    split = load_folder(_tree(tmp_path), size=8)
    assert len(split.train) == 3 and len(split.test) == 3 + 5
    assert set(split.train.labels) == {0}
    assert sorted(split.test.labels.tolist()) == [0] * 3 + [1] * 5
    info = split.info
    assert info["format"] == "folder" and info["abnormal"] == ["crack", "hole"]
    assert info["n_train"] == 3 and info["n_test_normal"] == 3 and info["n_test_anomalous"] == 5
    assert info["masks"] is False
    json.dumps(info)
    batch = split.test.load_all()
    assert batch.images.shape == (8, 3, 8, 8) and batch.masks is None
    train_names = {Path(r.path).name for r in split.train.records}
    assert train_names.isdisjoint(info["test_normal_files"])


def test_seeded_split_is_reproducible_and_seed_dependent(tmp_path):
    root = _tree(tmp_path, n_normal=20)
    a = load_folder(root, seed=1).info["test_normal_files"]
    assert a == load_folder(root, seed=1).info["test_normal_files"]
    assert a != load_folder(root, seed=2).info["test_normal_files"]
    test_idx, train_idx = split_indices(10, 3, seed=0)
    assert len(test_idx) == 3 and sorted(np.concatenate([test_idx, train_idx]).tolist()) == list(range(10))


def test_test_fraction_keeps_one_training_image(tmp_path):
    root = _tree(tmp_path, n_normal=2)
    assert len(load_folder(root, test_fraction=0.9).train) == 1
    assert len(load_folder(root, test_fraction=0.0).train) == 2
    with pytest.raises(ConfigError):
        load_folder(root, test_fraction=1.0)


def test_abnormal_list_and_masks(tmp_path):
    root = _tree(tmp_path, masks=True)
    split = load_folder(root, abnormal=["hole"], size=None)
    assert split.info["abnormal"] == ["hole"] and split.info["masks"] is True
    batch = split.test.load_all()
    assert batch.masks is not None
    anomalous = batch.labels == 1
    assert int(anomalous.sum()) == 3
    assert (batch.masks[anomalous].sum(dim=(1, 2)) == 12).all()  # 3x4 drawn pixels, both naming styles
    assert batch.masks[~anomalous].sum() == 0


def test_grayscale_folder_has_one_channel(tmp_path):
    for i in range(2):
        _png(tmp_path / "normal" / f"{i}.png", mode="L")
    _png(tmp_path / "bad" / "x.png", mode="L")
    split = load_folder(tmp_path, size=None)
    assert split.train.channels == 1 and split.test[0].image.shape == (1, 12, 12)


def test_missing_normal_folder(tmp_path):
    _png(tmp_path / "crack" / "a.png")
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path)
    _one_line(exc, str(tmp_path / "normal"), "missing")


def test_no_abnormal_folder(tmp_path):
    _png(tmp_path / "normal" / "a.png")
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path)
    _one_line(exc, "no abnormal class folder")


def test_named_abnormal_folder_not_found(tmp_path):
    root = _tree(tmp_path)
    with pytest.raises(DataError) as exc:
        load_folder(root, abnormal=["scratch"])
    _one_line(exc, "scratch", "not found")


def test_empty_folders(tmp_path):
    (tmp_path / "normal").mkdir()
    _png(tmp_path / "crack" / "a.png")
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path)
    _one_line(exc, str(tmp_path / "normal"), "no images")
    _png(tmp_path / "normal" / "a.png")
    (tmp_path / "hole").mkdir()
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path)
    _one_line(exc, str(tmp_path / "hole"), "no images")


def test_non_image_file_is_named(tmp_path):
    root = _tree(tmp_path)
    (root / "crack" / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as exc:
        load_folder(root)
    _one_line(exc, "notes.txt", "not an image")


def test_missing_mask_when_masks_folder_has_the_class(tmp_path):
    root = _tree(tmp_path, masks=True)
    (root / "masks" / "crack" / "crack0.png").unlink()
    with pytest.raises(DataError) as exc:
        load_folder(root)
    _one_line(exc, "crack0.png", "no mask")


def test_masks_for_only_some_classes_warns_and_disables(tmp_path):
    root = _tree(tmp_path, classes={"crack": 1, "hole": 1})
    _mask(root / "masks" / "crack" / "crack0.png")
    with pytest.warns(UserWarning, match="hole"):
        split = load_folder(root)
    assert split.info["masks"] is False and split.test.has_masks is False


def test_root_not_found(tmp_path):
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path / "nope")
    _one_line(exc, "nope", "not found")


def test_numbered_class_folders_work_from_text_and_from_ints(tmp_path):
    from latentad.data.open import open_dataset

    for digit in range(3):
        for i in range(4):
            _png(tmp_path / "digits" / str(digit) / f"{i}.png", 50 * digit + i)
    root = tmp_path / "digits"
    from_cli = open_dataset(root, format="folder", normal="1")  # `-d normal=1` arrives as text
    from_api = load_folder(root, normal=1)
    for split in (from_cli, from_api):
        assert split.info["normal"] == "1" and split.info["abnormal"] == ["0", "2"]
        assert {r.defect_type for r in split.test.records} == {"good", "0", "2"}
    picked = open_dataset(root, format="folder", normal="1", abnormal="2")
    assert picked.info["abnormal"] == ["2"]


def test_sub_folders_upper_case_suffixes_and_hidden_files(tmp_path, caplog):
    root = _tree(tmp_path / "d", masks=True)
    _png(root / "normal" / "batch2" / "deep" / "N99.PNG", 120)
    _png(root / "crack" / "line2" / "c9.JPG", 200)
    _mask(root / "masks" / "crack" / "line2" / "c9.png")
    (root / "normal" / ".DS_Store").write_bytes(b"\0\1")
    (root / "normal" / "Thumbs.db").write_bytes(b"\0\1")
    (root / "normal" / ".hidden").mkdir()
    _png(root / "normal" / ".hidden" / "x.png")
    with caplog.at_level("INFO", logger="latentad"):
        split = load_folder(root)
    assert "skipped 3 hidden or system file(s)" in caplog.text
    paths = [r.path for r in split.train.records + split.test.records]
    assert any(p.endswith("N99.PNG") for p in paths) and any(p.endswith("c9.JPG") for p in paths)
    assert not any(".hidden" in p or "Thumbs" in p for p in paths)
    assert split.test.has_masks
    c9 = next(r for r in split.test.records if r.path.endswith("c9.JPG"))
    assert c9.load()[1].any()
    flat = load_folder(root, recursive=False)
    assert not any("N99" in r.path for r in flat.train.records + flat.test.records)


def test_a_stray_non_image_file_is_still_named(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "crack" / "notes").mkdir()
    (root / "crack" / "notes" / "README.txt").write_text("x")
    with pytest.raises(DataError, match="README.txt: not an image file"):
        load_folder(root)
