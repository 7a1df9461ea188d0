"""DeepPCB (Tang et al., 2019) in its published layout: pairs of a defect-free template and a tested
printed circuit board, the tested board's defects boxed.

    <root>/[PCBData/]groupNNNNN/NNNNN/NNNNNNNN_temp.jpg    the template (640x640, binarised)
    <root>/[PCBData/]groupNNNNN/NNNNN/NNNNNNNN_test.jpg    the tested board of the same region
    <root>/[PCBData/]groupNNNNN/NNNNN_not/NNNNNNNN.txt     its defects, one per line: x1,y1,x2,y2,type
    <root>/[PCBData/]trainval.txt, test.txt                 the published split, one pair per line

As an anomaly split: train = the templates of the trainval pairs (normal); test = the templates of
the test pairs (normal) and their tested boards (anomalous, mask = the union of the boxes, defect
type = the most frequent box type: open, short, mousebite, spur, copper, pin-hole). Without the two
split files, a seeded quarter of the groups is the test. Box coordinates may be separated by commas
or spaces.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from latentad.data.base import ImageSet, Record, Split, read_image_file
from latentad.errors import DataError

TYPES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "copper", 6: "pin-hole"}
_PAIR = re.compile(r"(\d+)_temp$")


def find_pcb_root(root: Path) -> Path | None:
    """The folder holding the groupNNNNN/ folders (root itself or root/PCBData), or None."""
    for d in (root, root / "PCBData"):
        if d.is_dir() and any(g.is_dir() and any(g.glob("*/*_temp.jpg")) for g in d.glob("group*")):
            return d
    return None


def read_boxes(path: Path) -> list[tuple[int, int, int, int, int]]:
    """(x1, y1, x2, y2, type) per line of an annotation file; a one-line error names a bad line."""
    boxes = []
    for k, line in enumerate(path.read_text(encoding="latin1").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        try:
            x1, y1, x2, y2, kind = (int(float(p)) for p in parts)
        except ValueError:
            raise DataError(f"{path}:{k}: expected x1,y1,x2,y2,type, got {line.strip()!r}") from None
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), kind))
    return boxes


def _pairs(base: Path) -> dict[str, tuple[Path, Path, Path]]:
    """Pair id -> (template, tested board, annotation), over every group folder."""
    out = {}
    for temp in sorted(base.glob("group*/*/*_temp.jpg")):
        m = _PAIR.match(temp.stem)
        if m is None:
            continue
        pid = m.group(1)
        test = temp.with_name(f"{pid}_test.jpg")
        note = temp.parent.with_name(f"{temp.parent.name}_not") / f"{pid}.txt"
        if not test.is_file():
            raise DataError(f"{temp}: no tested board {test.name} beside the template")
        if not note.is_file():
            raise DataError(f"{test}: no annotation file {note}")
        out[str(temp.relative_to(base).parent / pid)] = (temp, test, note)
    return out


def _listed(path: Path) -> set[str]:
    """Pair ids (group/NNNNN/NNNNNNNN) named by a trainval.txt or test.txt line's image path."""
    out = set()
    for line in path.read_text(encoding="latin1").splitlines():
        if line.strip():
            image = Path(line.split()[0])
            out.add(str(image.parent / image.stem.removesuffix("_test").removesuffix("_temp")))
    return out


def _tested(test: Path, note: Path) -> Record:
    boxes = read_boxes(note)
    if not boxes:
        raise DataError(f"{note}: no defect box (a tested board needs at least one)")
    common = Counter(b[4] for b in boxes).most_common()
    top = min(k for k, n in common if n == common[0][1])
    kind = TYPES.get(top, f"type{top}")

    def load(*_: object) -> tuple[np.ndarray, np.ndarray]:
        image = read_image_file(test, "L")
        mask = np.zeros(image.shape[:2], dtype=bool)
        for x1, y1, x2, y2, _k in boxes:
            mask[max(0, y1):max(0, y2) + 1, max(0, x1):max(0, x2) + 1] = True
        return image, mask

    return Record(str(test), 1, kind, load)


def _template(temp: Path) -> Record:
    def load(*_: object) -> tuple[np.ndarray, np.ndarray]:
        image = read_image_file(temp, "L")
        return image, np.zeros(image.shape[:2], dtype=bool)

    return Record(str(temp), 0, "good", load)


def load_deeppcb(root: str | Path, size: int | None = None, seed: int = 0) -> Split:
    """DeepPCB as an anomaly split (see the module docstring). `size` None keeps 640x640."""
    root = Path(root)
    base = find_pcb_root(root) if root.is_dir() else None
    if base is None:
        raise DataError(f"{root}: no DeepPCB layout (expected [PCBData/]groupNNNNN/NNNNN/NNNNNNNN_temp.jpg)")
    pairs = _pairs(base)
    split_files = (base / "trainval.txt", base / "test.txt")
    if all(f.is_file() for f in split_files):
        train_ids, test_ids = (_listed(f) & set(pairs) for f in split_files)
        how = "the published trainval.txt / test.txt"
    else:
        groups = sorted({pid.split("/")[0] for pid in pairs})
        rng = np.random.default_rng(seed)
        held = set(rng.permutation(groups)[: max(1, len(groups) // 4)].tolist()) if len(groups) > 1 else set()
        test_ids = {pid for pid in pairs if pid.split("/")[0] in held}
        train_ids = set(pairs) - test_ids
        how = f"a quarter of the groups by seed {seed} (no trainval.txt / test.txt)"
    if not train_ids or not test_ids:
        raise DataError(f"{base}: the split leaves no {'training' if not train_ids else 'test'} pair")
    train = ImageSet([_template(pairs[p][0]) for p in sorted(train_ids)], size, 1, False, f"{root.name}/train")
    test_records = [r for p in sorted(test_ids) for r in (_template(pairs[p][0]), _tested(pairs[p][1], pairs[p][2]))]
    test = ImageSet(test_records, size, 1, True, f"{root.name}/test")
    info = {"format": "deeppcb", "root": str(base.resolve()), "seed": seed, "masks": True,
            "split": f"train = templates of the training pairs; test = templates and tested boards of the test "
                     f"pairs; pairs split by {how}",
            "n_train": len(train), "n_test": len(test), "n_test_normal": len(test_ids),
            "n_test_anomalous": len(test_ids)}
    return Split(train, test, info)
