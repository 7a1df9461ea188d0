"""ELPV loader: label handling on a tiny labels.csv written here, plus the installed package (few images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.elpv import load_elpv
from latentad.errors import ConfigError, DataError

ROWS = [  # (probability, type) for cell0001.. in labels.csv order
    (0.0, "mono"), (0.0, "mono"), (0.0, "mono"), (0.0, "mono"), (0.0, "poly"), (0.0, "poly"),
    (1.0, "mono"), (1.0, "poly"), (0.3333333333333333, "mono"), (0.6666666666666666, "mono"),
    (0.3333333333333333, "poly"),
]


def _data_dir(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (prob, kind) in enumerate(ROWS, 1):
        name = f"images/cell{i:04d}.png"
        Image.fromarray(np.full((10, 10), i, dtype=np.uint8)).save(root / name)
        lines.append(f"{name}  {prob!r:<20}{kind}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_partial_excluded_by_default(tmp_path):
    split = load_elpv(data_dir=_data_dir(tmp_path), train_fraction=0.5)
    assert len(split.train) == 2 and set(split.train.labels) == {0}
    assert split.test.labels.tolist() == [0, 0, 1]
    assert [r.defect_type for r in split.test.records] == ["good", "good", "defective"]
    info = split.info
    assert info["partial"] == "exclude" and info["n_partial_cells"] == 2 and info["n_normal_cells"] == 4
    json.dumps(info)
    image, mask = split.train.records[0].load()
    assert image.shape == (10, 10, 1) and mask is None
    assert split.train.channels == 1 and split.test.has_masks is False


def test_partial_as_anomalous_and_cell_types(tmp_path):
    root = _data_dir(tmp_path)
    split = load_elpv(data_dir=root, partial="anomalous", train_fraction=0.5)
    kinds = [r.defect_type for r in split.test.records if r.label == 1]
    assert kinds == ["defective", "defective_p0.33", "defective_p0.67"]
    every = load_elpv(data_dir=root, cell_type="all", partial="anomalous", train_fraction=0.5)
    assert len(every.train) == 3 and int(every.test.labels.sum()) == 5
    poly = load_elpv(data_dir=root, cell_type="poly", train_fraction=0.5)
    assert len(poly.train) == 1 and poly.test.labels.tolist() == [0, 1]


def test_limit_is_seeded_and_per_class(tmp_path):
    root = _data_dir(tmp_path)
    a = load_elpv(data_dir=root, cell_type="all", partial="anomalous", limit=1, train_fraction=0.5)
    assert len(a.train) == 1 and a.test.labels.tolist() == [0, 1]
    b = load_elpv(data_dir=root, cell_type="all", partial="anomalous", limit=1, train_fraction=0.5)
    assert [r.path for r in a.test.records] == [r.path for r in b.test.records]
    c = load_elpv(data_dir=root, cell_type="all", limit={"train": 2, "test": 1}, train_fraction=0.5)
    assert len(c.train) == 2 and len(c.test) == 2
    assert c.info["limit"] == {"train": 2, "test_normal": 1, "test_anomalous": 1}


def test_bad_options(tmp_path):
    root = _data_dir(tmp_path)
    for kwargs in ({"cell_type": "thin"}, {"partial": "normal"}, {"train_fraction": 1.0},
                   {"limit": 0}, {"limit": {"val": 2}}, {"limit": "3"}):
        with pytest.raises(ConfigError):
            load_elpv(data_dir=root, **kwargs)


def test_bad_labels_file(tmp_path):
    with pytest.raises(DataError, match="labels.csv: ELPV labels file not found"):
        load_elpv(data_dir=tmp_path)
    (tmp_path / "labels.csv").write_text("images/cell0001.png 0.0 mono\nimages/cell0002.png maybe mono\n")
    with pytest.raises(DataError, match=r"labels.csv:2: defect probability 'maybe'"):
        load_elpv(data_dir=tmp_path)


def test_missing_image_is_named_at_load(tmp_path):
    root = _data_dir(tmp_path)
    (root / "images" / "cell0001.png").unlink()
    split = load_elpv(data_dir=root, cell_type="all", train_fraction=0.5)
    rec = next(r for r in list(split.train.records) + list(split.test.records) if "cell0001" in r.path)
    with pytest.raises(DataError, match="cell0001.png: file not found"):
        rec.load()


def test_installed_package_counts_and_a_few_images():
    pytest.importorskip("elpv_dataset")
    full = load_elpv(cell_type="all")  # lists file names only, decodes nothing
    assert full.info["n_normal_cells"] == 1508 and full.info["n_partial_cells"] == 401
    assert full.info["n_test_anomalous"] == 715
    assert full.info["n_train"] + full.info["n_test_normal"] == 1508
    small = load_elpv(cell_type="mono", limit=2, seed=1, size=64)
    assert len(small.train) == 2 and small.test.labels.tolist() == [0, 0, 1, 1]
    batch = small.test.load_all()
    assert batch.images.shape == (4, 1, 64, 64) and batch.masks is None
    raw, _ = small.train.records[0].load()
    assert raw.shape == (300, 300, 1)
