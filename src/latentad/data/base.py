"""Core data types: lazily loaded image sets that every data set format produces.

An `ImageSet` is a sequence of records; images are decoded and resized only when a batch is asked
for, so 900x900 images are never all held at full size. Every format (MVTec layout, plain folder,
MNIST, CIFAR-10, ELPV, UCSD, synthetic) builds `ImageSet`s and a `Split` from them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from latentad.data.color import to_channels
from latentad.data.geometry import Shape, as_shape, place_uint8
from latentad.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SYSTEM_FILES = ("thumbs.db", "desktop.ini", "ehthumbs.db")
log = logging.getLogger("latentad")

# Loads one record: returns (image HxWxC uint8, mask HxW bool or None).
Loader = Callable[[], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class ImageSample:
    """One image ready for a detector: float image in [0, 1] (C,H,W), mask {0,1} (H,W) or None."""

    image: torch.Tensor
    mask: torch.Tensor | None
    label: int
    path: str
    defect_type: str
    orig_size: tuple[int, int] | None = None  # (h0, w0) of the decoded file, to map maps back onto it
    original: np.ndarray | None = None  # the decoded file (HxWxC uint8), kept only when asked (overlays)


@dataclass(frozen=True)
class Batch:
    """A stack of samples: images (B,C,H,W) float [0,1]; masks (B,H,W) float {0,1} or None;
    orig_sizes: each image's (h0, w0) before it was placed in the input."""

    images: torch.Tensor
    masks: torch.Tensor | None
    labels: torch.Tensor
    paths: list[str]
    defect_types: list[str]
    orig_sizes: list[tuple[int, int]] | None = None
    originals: list[np.ndarray] | None = None  # the decoded files, when the set keeps them


@dataclass(frozen=True)
class Record:
    """Where one image comes from. `load` returns raw pixels; `label` is 0 normal, 1 anomalous."""

    path: str
    label: int
    defect_type: str
    load: Loader
    # the same pixels decoded at a reduced size of at least (h, w) where the format can (JPEG draft)
    load_at: Callable[[tuple[int, int]], tuple[np.ndarray, np.ndarray | None]] | None = None


def read_image_file(path: str | Path, mode: str | None = None, at_least: tuple[int, int] | None = None
                    ) -> np.ndarray:
    """Decode an image file to HxWxC uint8, raising a one-line DataError naming the file.

    `mode` is "L" or "RGB"; a grayscale image in an RGB set is converted (documented behaviour),
    as is RGBA / palette input. `at_least` (h, w): a JPEG at least twice that size is decoded at a
    reduced scale (1/2, 1/4 or 1/8, in the DCT, by PIL's `draft`) that still covers it, which costs
    a fraction of a full decode; other formats decode in full.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    return decode_image(path, str(path), mode, at_least)


@contextmanager
def image_errors(name: str) -> Iterator[None]:
    """PIL's failures on a file as one DataError line starting with `name`."""
    try:
        yield
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image file (cannot identify its format)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: corrupt or truncated image ({exc})") from None


def check_pixels(img: Image.Image, name: str, max_pixels: int | None) -> int:
    """The image's pixel count from its header; over `max_pixels` (default: PIL's bomb limit) refused."""
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise DataError(f"{name}: refused, {img.width}x{img.height} pixels is over the limit of {limit} "
                        "(a decompression bomb?)")
    return img.width * img.height


def peek_pixels(source, name: str, max_pixels: int | None = None) -> int:
    """Pixels of an image from its header alone (no pixel decoded); same refusals as `decode_image`."""
    with image_errors(name), Image.open(source) as img:
        return check_pixels(img, name, max_pixels)


def decode_image(source, name: str, mode: str | None = None, at_least: tuple[int, int] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode a file or file-like object (an upload) to HxWxC uint8; errors are one DataError line
    starting with `name`. Images over `max_pixels` (default: PIL's bomb limit) are refused before
    their pixels are decoded."""
    with image_errors(name), Image.open(source) as img:
        check_pixels(img, name, max_pixels)
        if at_least is not None and img.format == "JPEG":
            img.draft(img.mode, (at_least[1], at_least[0]))  # PIL sizes are (w, h)
        img.load()
        if mode is not None and img.mode != mode:
            img = img.convert(mode)
        elif img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def read_mask_file(path: str | Path) -> np.ndarray:
    """Decode a mask file to HxW bool (any non-zero pixel is defect)."""
    arr = read_image_file(path, mode="L")
    return arr[:, :, 0] > 0


def image_mode(path: str | Path) -> str:
    """The PIL mode of an image file from its header (cheap: no pixel decode)."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            return img.mode
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (cannot identify its format)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open image ({exc})") from None


def file_record(
    path: Path, label: int, defect_type: str, mode: str, mask_path: Path | None, with_masks: bool
) -> Record:
    """A record reading `path` lazily; a missing mask of a normal image is all zero."""

    def load(at_least: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        image = read_image_file(path, mode, at_least)
        if not with_masks:
            return image, None
        if mask_path is None:
            return image, np.zeros(image.shape[:2], dtype=bool)
        mask = read_mask_file(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {path.name} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return image, mask

    # a mask is checked against its image's full size: no reduced decoding when there is one
    return Record(str(path), label, defect_type, load, load if mask_path is None else None)


def array_record(name: str, image: np.ndarray, label: int, defect_type: str) -> Record:
    """A record over an in-memory HxW or HxWxC uint8 array (MNIST, CIFAR-10, ELPV)."""
    arr = image if image.ndim == 3 else image[:, :, None]
    return Record(name, label, defect_type, lambda: (arr, None))


def is_hidden(path: Path) -> bool:
    """Dot files and the files operating systems leave in image folders (.DS_Store, Thumbs.db)."""
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of a folder (and its sub-folders when `recursive`), sorted, any suffix case.

    Hidden and system files (and hidden folders) are skipped, with their count in the log; any other
    non-image file is refused with its name, so a stray file is never silently ignored."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    entries = folder.rglob("*") if recursive else folder.iterdir()
    files, skipped = [], 0
    for p in sorted(entries):
        if any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]):
            skipped += p.is_file()
            continue
        if not p.is_file():
            continue
        if is_hidden(p):
            skipped += 1
            continue
        files.append(p)
    if skipped:
        log.info("%s: skipped %d hidden or system file(s) (.DS_Store, Thumbs.db, dot files)", folder, skipped)
    bad = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise DataError(
            f"{bad[0]}: not an image file (suffix {bad[0].suffix or 'none'}; expected one of "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def majority_mode(files: Sequence[Path]) -> str:
    """'L' when every image is single-channel, else 'RGB' (grayscale ones are then converted)."""
    modes = {image_mode(p) for p in files}
    if modes <= {"L", "1", "I", "I;16", "F"}:
        return "L"
    gray = [p for p in files if image_mode(p) in ("L", "1")]
    if gray:
        warnings.warn(
            f"{gray[0]}: grayscale image among RGB ones, converted to RGB ({len(gray)} such file(s))",
            stacklevel=2,
        )
    return "RGB"


def to_input(image: np.ndarray, size: Shape | None, channels: int, resize: str = "squash") -> torch.Tensor:
    """uint8 HxWxC -> float (C,H,W) in [0,1], placed in `size` by `resize` (see `data.geometry`),
    resampled bilinearly (antialiased).

    Colour to grey goes through `data.color.to_channels` (BT.601 luma, in float, before resizing), the
    same function the Python API applies to tensors, so both paths give one model the same pixels."""
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[2] == 3 and channels == 1:
        grey = to_channels(torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0, 1)[0].numpy()
        if size is not None:
            grey = place_uint8(grey, size, resize)  # float32 -> PIL mode "F"
        return torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())[None]
    if image.shape[2] != channels:
        image = np.repeat(image, channels, axis=2)
    arr = place_uint8(image, size, resize) if size is not None else image
    arr = np.asarray(arr, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _mask_to_tensor(mask: np.ndarray, size: Shape | None) -> torch.Tensor:
    """Masks are squashed (nearest neighbour) to the evaluation grid, whatever the input placement."""
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    if size is not None and pil.size != (size[1], size[0]):
        pil = pil.resize((size[1], size[0]), Image.NEAREST)
    return torch.from_numpy(np.asarray(pil) > 127).float()


@dataclass
class ImageSet:
    """A lazily decoded, resized sequence of images (with masks where the set has them).

    `size` is the side (int) or (H, W) images are brought to (None keeps the original size, which
    must then be the same for all images), `resize` how (squash | fit | crop, `data.geometry`);
    `channels` is 1 or 3; `mask_size` the grid masks are squashed to (default: `size`), so pixel
    metrics can be computed at another resolution than the model's; `keep_originals` hands each
    decoded file along with its batch (so overlays reuse it instead of decoding it again).
    """

    records: list[Record]
    size: int | Shape | None = 256
    channels: int = 3
    has_masks: bool = False
    name: str = "images"
    mask_size: int | Shape | None = None
    resize: str = "squash"
    keep_originals: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> ImageSample:
        rec = self.records[i]
        shape = as_shape(self.size) if self.size is not None else None
        image, mask = rec.load_at(shape) if shape is not None and rec.load_at is not None else rec.load()
        img_t = to_input(image, as_shape(self.size), self.channels, self.resize)
        mask_side = as_shape(self.mask_size if self.mask_size is not None else self.size)
        mask_t = _mask_to_tensor(mask, mask_side) if (self.has_masks and mask is not None) else None
        return ImageSample(img_t, mask_t, rec.label, rec.path, rec.defect_type, tuple(image.shape[:2]),
                           image if self.keep_originals else None)

    def with_size(self, size: int | Shape | None, channels: int | None = None, mask_size: int | Shape | None = None,
                  resize: str | None = None) -> ImageSet:
        """The same records at another resolution (the detector's input size; masks at `mask_size`)."""
        return ImageSet(self.records, size, channels or self.channels, self.has_masks, self.name, mask_size,
                        resize or self.resize, self.keep_originals)

    def subset(self, indices: Sequence[int]) -> ImageSet:
        return ImageSet([self.records[i] for i in indices], self.size, self.channels, self.has_masks,
                        self.name, self.mask_size, self.resize, self.keep_originals)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    def batches(self, batch_size: int = 16, progress: str | None = None, workers: int | None = None
                ) -> Iterator[Batch]:
        """Yield batches in order; images are decoded by `workers` threads (`data.pipeline`) at most
        two batches ahead of the consumer."""
        from latentad.data.pipeline import prefetched
        from latentad.progress import track

        samples = prefetched(range(len(self)), self.__getitem__, workers, ahead=2 * batch_size)
        starts = range(0, len(self), batch_size)
        for start in track(starts, description=progress, total=len(starts)):
            yield collate([next(samples) for _ in range(min(batch_size, len(self) - start))])

    def load_all(self, progress: str | None = None) -> Batch:
        """All images as one batch at the set's (resized) size; use only for small sizes."""
        return concat_batches(list(self.batches(32, progress)))


def collate(samples: Sequence[ImageSample]) -> Batch:
    images = torch.stack([s.image for s in samples])
    masks = None
    if samples and all(s.mask is not None for s in samples):
        masks = torch.stack([s.mask for s in samples])  # type: ignore[misc]
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    originals = [s.original for s in samples] if samples and all(s.original is not None for s in samples) else None
    return Batch(images, masks, labels, [s.path for s in samples], [s.defect_type for s in samples],
                 [s.orig_size for s in samples], originals)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    if not batches:
        raise DataError("no images to load")
    masks = None
    if all(b.masks is not None for b in batches):
        masks = torch.cat([b.masks for b in batches])  # type: ignore[misc]
    return Batch(
        torch.cat([b.images for b in batches]),
        masks,
        torch.cat([b.labels for b in batches]),
        [p for b in batches for p in b.paths],
        [d for b in batches for d in b.defect_types],
        [o for b in batches for o in (b.orig_sizes or [None] * len(b.paths))],
    )


@dataclass
class Split:
    """A train set of normal images and a test set (normal + anomalous), plus what defines them.

    `info` goes into the run's config.json: format, root, class choices, seed and split sizes, so a
    one-vs-rest split can be reproduced exactly.
    """

    train: ImageSet
    test: ImageSet
    info: dict = field(default_factory=dict)

    def with_size(self, size: int | None, channels: int | None = None) -> Split:
        return Split(self.train.with_size(size, channels), self.test.with_size(size, channels), self.info)


def require_nonempty(images: ImageSet, where: str) -> None:
    if len(images) == 0:
        raise DataError(f"{where}: no images found")
