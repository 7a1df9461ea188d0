"""UCSD Anomaly Dataset (pedestrian walkways) in its published folder layout, frame by frame.

    <root>/UCSDped1/Train/Train001 .. Train034/*.tif      normal frames (238x158 grayscale)
    <root>/UCSDped1/Test/Test001 .. Test036/*.tif         test frames
    <root>/UCSDped1/Test/Test003_gt/*.bmp                 pixel ground truth, for some test clips
    <root>/UCSDped1/Test/UCSDped1.m                       frame-level ranges of every test clip

(`root` may also be the UCSDped1 folder itself or the UCSD_Anomaly_Dataset.v1p2 folder.)

Frame labels: in a clip with a `<clip>_gt` folder a frame is anomalous when its ground-truth bitmap
has any non-zero pixel (and that bitmap is its mask); in other clips the frame ranges of
`TestDataset.gt_frame{k} = [60:152];` (MATLAB vectors, e.g. `[5:90, 140:200]`) in the .m file label
the frames of clip k (1-based frame numbers). Each frame is one image: train = every training frame,
test = every test frame. Pixel masks are on when every kept test clip has a `_gt` folder; pass
`pixel_only=True` to keep only those clips (the usual pixel-level protocol on Ped1).
"""

from __future__ import annotations

import re
from pathlib import Path

from latentad.data.base import IMAGE_SUFFIXES, ImageSet, Split, file_record, read_mask_file
from latentad.errors import DataError

IGNORED_FILES = ("Thumbs.db", "desktop.ini")
_GT_FRAME = re.compile(r"gt_frame\s*\{\s*(\d+)\s*\}\s*=\s*\[([^\]]*)\]")


def parse_gt_frames(path: Path) -> dict[int, set[int]]:
    """Clip number -> anomalous frame numbers from a UCSDped*.m file (`TestDataset.gt_frame{k} = [..];`)."""
    text = path.read_text(encoding="latin1")
    text = "\n".join(line.split("%", 1)[0] for line in text.splitlines())  # MATLAB comments
    out: dict[int, set[int]] = {}
    for m in _GT_FRAME.finditer(text):
        frames: set[int] = set()
        for item in re.split(r"[,\s;]+", m.group(2).strip()):
            if not item:
                continue
            try:
                parts = [int(x) for x in item.split(":")]
            except ValueError:
                raise DataError(f"{path}: cannot read {item!r} in gt_frame{{{m.group(1)}}}") from None
            if len(parts) == 1:
                frames.add(parts[0])
            elif len(parts) == 2:
                frames.update(range(parts[0], parts[1] + 1))
            elif len(parts) == 3 and parts[1] != 0:
                frames.update(range(parts[0], parts[2] + (1 if parts[1] > 0 else -1), parts[1]))
            else:
                raise DataError(f"{path}: cannot read {item!r} in gt_frame{{{m.group(1)}}}")
        out[int(m.group(1))] = frames
    return out


def find_ucsd_dir(root: Path, subset: str = "UCSDped1") -> Path | None:
    """The `subset` folder (holding Train/ and Test/) under root, or None."""
    for d in (root / subset, root / "UCSD_Anomaly_Dataset.v1p2" / subset, root):
        if (d / "Train").is_dir() and (d / "Test").is_dir():
            return d
    return None


def _frames(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in IGNORED_FILES
    )
    bad = [p for p in files if p.suffix.lower() not in suffixes]
    if bad:
        raise DataError(f"{bad[0]}: not an image file (suffix {bad[0].suffix or 'none'})")
    if not files:
        raise DataError(f"{folder}: no frames in the clip folder")
    return files


def _number(path: Path) -> int | None:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else None


def _clips(folder: Path, prefix: str) -> list[Path]:
    pattern = re.compile(rf"{prefix}\d+")
    return sorted(p for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name))


def load_ucsd_ped1(
    root: str | Path, size: int | None = None, seed: int = 0, pixel_only: bool = False
) -> Split:
    """UCSD Ped1 frames as an anomaly split (see the module docstring). `size` None keeps 238x158.

    The split is fixed by the data set; `seed` is only recorded in `info`.
    """
    return load_ucsd(root, "UCSDped1", size=size, seed=seed, pixel_only=pixel_only)


def load_ucsd_ped2(
    root: str | Path, size: int | None = None, seed: int = 0, pixel_only: bool = False
) -> Split:
    """UCSD Ped2 (same layout with UCSDped2 / UCSDped2.m; 360x240 frames)."""
    return load_ucsd(root, "UCSDped2", size=size, seed=seed, pixel_only=pixel_only)


def load_ucsd(
    root: str | Path, subset: str = "UCSDped1", size: int | None = None, seed: int = 0,
    pixel_only: bool = False,
) -> Split:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    base = find_ucsd_dir(root, subset)
    if base is None:
        raise DataError(f"{root}: no UCSD layout (expected {subset}/Train/Train001/*.tif and {subset}/Test/)")
    train_clips = _clips(base / "Train", "Train")
    if not train_clips:
        raise DataError(f"{base / 'Train'}: no Train001.. clip folders")
    test_clips = _clips(base / "Test", "Test")
    if not test_clips:
        raise DataError(f"{base / 'Test'}: no Test001.. clip folders")

    m_files = sorted((base / "Test").glob("*.m")) + sorted(base.glob("*.m"))
    m_file = next((p for p in m_files if p.stem == subset), m_files[0] if m_files else None)
    ranges = parse_gt_frames(m_file) if m_file is not None else {}
    if pixel_only:
        test_clips = [c for c in test_clips if (c.parent / f"{c.name}_gt").is_dir()]
        if not test_clips:
            raise DataError(f"{base / 'Test'}: no clip has a pixel ground-truth folder (TestNNN_gt)")
    with_masks = all((c.parent / f"{c.name}_gt").is_dir() for c in test_clips)

    train_records = [
        file_record(p, 0, "good", "L", None, False) for clip in train_clips for p in _frames(clip)
    ]
    test_records = []
    sources: dict[str, str] = {}
    for clip in test_clips:
        frames = _frames(clip)
        gt_dir = clip.parent / f"{clip.name}_gt"
        if gt_dir.is_dir():
            sources[clip.name] = "pixel"
            gt = {_number(p): p for p in _frames(gt_dir)}
            for i, frame in enumerate(frames, 1):
                mask_path = gt.get(_number(frame) if _number(frame) is not None else i)
                if mask_path is None:
                    raise DataError(f"{frame}: no ground-truth bitmap for this frame in {gt_dir}")
                label = int(read_mask_file(mask_path).any())
                test_records.append(file_record(frame, label, "anomaly" if label else "good", "L",
                                                mask_path, with_masks))
            continue
        k = _number(clip)
        if k not in ranges:
            where = f"{m_file.name}" if m_file is not None else f"a {subset}.m file"
            raise DataError(
                f"{clip}: no frame labels (no {clip.name}_gt folder and no gt_frame{{{k}}} in {where})"
            )
        sources[clip.name] = "frame-ranges"
        for i, frame in enumerate(frames, 1):
            number = _number(frame) or i
            label = int(number in ranges[k])
            test_records.append(file_record(frame, label, "anomaly" if label else "good", "L", None, False))

    train = ImageSet(train_records, size, 1, False, f"{subset}/train")
    test = ImageSet(test_records, size, 1, with_masks, f"{subset}/test")
    labels = test.labels
    info = {
        "format": "ucsd",
        "subset": subset,
        "root": str(base.resolve()),
        "seed": seed,
        "pixel_only": pixel_only,
        "masks": with_masks,
        "frame_labels_file": str(m_file.resolve()) if m_file is not None else None,
        "split": "train = every frame of Train*/ clips; test = every frame of the kept Test*/ clips",
        "train_clips": [c.name for c in train_clips],
        "test_clips": sources,
        "n_train": len(train),
        "n_test": len(test),
        "n_test_normal": int((labels == 0).sum()),
        "n_test_anomalous": int(labels.sum()),
    }
    return Split(train, test, info)
