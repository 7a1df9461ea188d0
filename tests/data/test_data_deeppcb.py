"""DeepPCB's published layout, written small in that exact form: templates are the normal images,
tested boards the anomalous ones with their boxes as masks; the published split or a seeded one."""

import numpy as np
import pytest
from PIL import Image

from latentad.data.open import detect_format, open_dataset
from latentad.errors import DataError

SIDE = 48


def write_pcb(root, groups=("20085", "12000", "44000", "50600"), pairs=2, split_files=True, sep=","):
    base = root / "PCBData"
    rng = np.random.default_rng(0)
    listed = {"trainval": [], "test": []}
    for g_i, g in enumerate(groups):
        img_dir, note_dir = base / f"group{g}" / g, base / f"group{g}" / f"{g}_not"
        img_dir.mkdir(parents=True)
        note_dir.mkdir()
        for k in range(pairs):
            pid = f"{g}{k:03d}"
            board = (rng.random((SIDE, SIDE)) > 0.5).astype(np.uint8) * 255
            Image.fromarray(board).save(img_dir / f"{pid}_temp.jpg")
            tested = board.copy()
            tested[4:10, 6:14] = 255 - tested[4:10, 6:14]
            Image.fromarray(tested).save(img_dir / f"{pid}_test.jpg")
            lines = [sep.join(map(str, (6, 4, 13, 9, 2))), sep.join(map(str, (30, 30, 34, 36, 2))),
                     sep.join(map(str, (20, 20, 22, 22, 5)))]
            (note_dir / f"{pid}.txt").write_text("\n".join(lines) + "\n")
            which = "test" if g_i == 0 else "trainval"
            listed[which].append(f"group{g}/{g}/{pid}.jpg group{g}/{g}_not/{pid}.txt")
    if split_files:
        for name, rows in listed.items():
            (base / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_the_published_split_reads_templates_as_normal_and_boxes_as_masks(tmp_path):
    root = write_pcb(tmp_path / "deeppcb")
    assert detect_format(root) == "deeppcb"
    split = open_dataset(root, size=SIDE)
    assert split.info["format"] == "deeppcb" and "published" in split.info["split"]
    assert len(split.train) == 6 and all(r.path.endswith("_temp.jpg") for r in split.train.records)
    test = split.test
    assert list(test.labels) == [0, 1, 0, 1]  # each test pair: its template, then its tested board
    assert {r.defect_type for r in test.records} == {"good", "short"}  # the most frequent box type
    sample = test[1]
    mask = sample.mask.numpy().astype(bool).squeeze()
    assert mask[4:10, 6:14].all() and mask[30:37, 30:35].all() and mask[20:23, 20:23].all()
    assert mask.sum() == 6 * 8 + 7 * 5 + 3 * 3
    assert not test[0].mask.numpy().any()


def test_without_split_files_a_seeded_quarter_of_the_groups_is_the_test(tmp_path):
    root = write_pcb(tmp_path / "d", split_files=False, sep=" ")
    a, b = open_dataset(root, size=SIDE, seed=3), open_dataset(root, size=SIDE, seed=3)
    assert [r.path for r in a.test.records] == [r.path for r in b.test.records]
    assert len(a.test) == 4 and len(a.train) == 6 and "seed 3" in a.info["split"]
    assert {r.path.split("/")[-2] for r in a.test.records}.isdisjoint({r.path.split("/")[-2] for r in a.train.records})


def test_a_bad_annotation_line_and_a_missing_board_are_named(tmp_path):
    root = write_pcb(tmp_path / "d")
    note = next((root / "PCBData").glob("group*/*_not/*.txt"))
    note.write_text("6,4,13\n")
    with pytest.raises(DataError, match=rf"{note.name}:1: expected x1,y1,x2,y2,type"):
        open_dataset(root, size=SIDE)
    root2 = write_pcb(tmp_path / "e")
    board = next((root2 / "PCBData").glob("group*/*/*_test.jpg"))
    board.unlink()
    with pytest.raises(DataError, match="no tested board"):
        open_dataset(root2, size=SIDE)
