"""The MVTec AD folder layout, the interchange format for user data.

    <category>/train/good/*.png
    <category>/test/good/*.png, <category>/test/<defect>/*.png
    <category>/ground_truth/<defect>/<stem>_mask.png   (optional; good images get an all-zero mask)

Masks are used when a `ground_truth` folder exists; then every defect image must have its mask.
"""

from __future__ import annotations

from pathlib import Path

from latentad.data.base import ImageSet, Split, file_record, list_images, majority_mode
from latentad.errors import DataError


def load_mvtec(root: str | Path, size: int | None = 256) -> Split:
    """Read an MVTec-layout category folder lazily (only file names are listed here)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    train_dir, test_dir, gt_dir = root / "train" / "good", root / "test", root / "ground_truth"
    if not train_dir.is_dir():
        raise DataError(f"{train_dir}: missing (an MVTec-layout folder needs train/good)")
    train_files = list_images(train_dir)
    if not train_files:
        raise DataError(f"{train_dir}: no images in the training folder")
    test_groups: dict[str, list[Path]] = {}
    if test_dir.is_dir():
        for sub in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            test_groups[sub.name] = list_images(sub)
    with_masks = gt_dir.is_dir()
    mode = majority_mode(train_files + [f for files in test_groups.values() for f in files])

    train = ImageSet(
        [file_record(p, 0, "good", mode, None, False) for p in train_files],
        size, 1 if mode == "L" else 3, False, f"{root.name}/train",
    )
    test_records = []
    for defect, files in test_groups.items():
        label = 0 if defect == "good" else 1
        for p in files:
            mask_path = None
            if with_masks and label == 1:
                mask_path = _find_mask(gt_dir, defect, p)
            test_records.append(file_record(p, label, defect, mode, mask_path, with_masks))
    test = ImageSet(test_records, size, train.channels, with_masks, f"{root.name}/test")
    info = {
        "format": "mvtec",
        "root": str(root.resolve()),
        "n_train": len(train),
        "n_test": len(test),
        "defect_types": [d for d in test_groups if d != "good"],
        "masks": with_masks,
        "mode": mode,
    }
    return Split(train, test, info)


def _find_mask(gt_dir: Path, defect: str, image: Path) -> Path:
    folder = gt_dir / defect
    if not folder.is_dir():
        raise DataError(f"{folder}: missing mask folder for test/{defect} (ground_truth exists)")
    for suffix in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
        for name in (f"{image.stem}_mask{suffix}", f"{image.stem}{suffix}"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{image}: no mask {folder / (image.stem + '_mask.png')}")
