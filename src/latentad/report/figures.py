"""Heat-map overlays and score histograms (matplotlib, no screen needed)."""

from __future__ import annotations

import functools
import io as _io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from latentad import io  # noqa: E402


def _save_png(img: Image.Image, path: Path) -> None:
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    io.write_bytes(path, buf.getvalue())


def heat_scale(cal) -> tuple[float | None, float | None, float | None]:
    """(transparent below, colour scale top, pixel threshold) of a calibration: the heat map starts at
    the normal pixels' 99.9th percentile (below it the part shows through: a good part looks clean)
    and its colour saturates at twice the pixel threshold's height above the normal median, so the
    same defect looks the same on every image. Without a pixel threshold (older calibrations): the
    median to the 99.9th percentile, opaque."""
    if cal is None:
        return None, None, None
    if getattr(cal, "pixel_threshold", None) is None or cal.map_low is None:
        return cal.map_low, cal.map_high, None
    top = cal.map_low + 2.0 * (cal.pixel_threshold - cal.map_low)
    return cal.map_high, max(top, cal.map_high + 1e-12), cal.pixel_threshold


def overlay(image: np.ndarray, amap: np.ndarray | None, cal=None, alpha: float = 0.5,
            max_side: int | None = None, outline: bool = True) -> Image.Image:
    """A 'jet' heat map over `image` (HxWxC uint8) at the image's own size (or at most `max_side`), on
    the calibration's scale (`heat_scale`): transparent below the normal pixels' high quantile, so
    colours mean the same on every image of a run; the regions above the pixel threshold outlined in
    white. The map covers the whole original (the evaluation grid is the original squashed)."""
    base = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
    if max_side is not None and max(base.size) > max_side:
        scale = max_side / max(base.size)
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.BILINEAR)
    if amap is None:
        return base
    full = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(base.size, Image.BILINEAR))
    return Image.fromarray(heat_over(np.asarray(base), full, cal, alpha, outline, amap))


def overlay_pixels(image: np.ndarray, full: np.ndarray | None, cal=None, amap: np.ndarray | None = None
                   ) -> np.ndarray:
    """`overlay` as an HxWx3 uint8 array, from the map `amap` already brought to the image's own size
    (`full`: predict resizes each map once, for its mask and its overlay); None: the image alone."""
    if image.shape[2] == 3:
        base = image
    elif image.shape[2] == 1:
        base = np.repeat(image, 3, axis=2)  # grey to RGB, as PIL converts it
    else:
        base = np.asarray(Image.fromarray(image).convert("RGB"))
    return base if full is None else heat_over(base, full, cal, amap=amap)


def heat_over(base: np.ndarray, full: np.ndarray, cal=None, alpha: float = 0.5, outline: bool = True,
              amap: np.ndarray | None = None) -> np.ndarray:
    """The heat map `full` (HxW float32, at `base`'s size) blended over `base` (HxWx3 uint8); without a
    calibrated scale, the range of `amap` (the map before resizing; default `full`) is the scale. Only
    the pixels the heat map covers are coloured (a good part is mostly clear, so mostly copied),
    through a table of the colour map's 256 colours: the colour map's own colours, without its
    per-pixel RGBA arrays."""
    low, high, threshold = heat_scale(cal)
    span = full if amap is None else amap
    lo = float(np.min(span)) if low is None else low
    hi = float(np.max(span)) if high is None else high
    out = base.copy()
    covered = np.ones(full.shape, bool) if threshold is None else full > lo
    norm = np.clip((full[covered] - lo) / max(hi - lo, 1e-12), 0, 1)
    with np.errstate(invalid="ignore"):  # NaN: its index is set below
        index = np.minimum((norm * 256).astype(np.intp), 255)  # as the colour map indexes floats
    index[np.isnan(norm)] = 256
    blend = base[covered].astype(np.float64) * (1 - alpha) + _jet()[index] * alpha
    out[covered] = blend.round().astype(np.uint8)
    if outline and threshold is not None:
        out[outline_of(full > threshold, max(1, round(max(full.shape) / 300)))] = 255
    return out


@functools.cache
def _jet() -> np.ndarray:
    """The 'jet' colour map's 256 colours (0-255, float) and its colour for NaN last."""
    cmap = plt.get_cmap("jet")
    return np.concatenate([cmap(np.arange(256))[:, :3], [cmap.get_bad()[:3]]]) * 255


def outline_of(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner edge of `mask`, `width` pixels wide, as a binary erosion of the whole image (its border
    counted as outside) gives it, computed on the mask's bounding box only: outside the box the mask
    is empty, as the erosion's border is."""
    edge = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return edge
    from scipy import ndimage

    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    edge[box] = mask[box] & ~ndimage.binary_erosion(mask[box], iterations=width)
    return edge


def save_overlay(path: Path, image: np.ndarray, amap: np.ndarray | None, cal=None) -> Path:
    _save_png(overlay(image, amap, cal), path)
    return path


def legend(path: Path, cal) -> Path | None:
    """The colour scale of a run's heat maps as a small PNG: transparent below, colours up to the top,
    the pixel threshold marked; None when the calibration has no map scale."""
    low, high, threshold = heat_scale(cal)
    if low is None or high is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 0.9))
    ax.imshow(np.linspace(0, 1, 256)[None], cmap="jet", aspect="auto", extent=(low, high, 0, 1))
    if threshold is not None:
        ax.axvline(threshold, color="white", lw=2)
        ax.set_title(f"map value: clear below {low:.3g}; white outline above the pixel threshold {threshold:.3g}",
                     fontsize=7)
    ax.set_yticks([])
    return save_figure(fig, path)


def score_histogram(path: Path, scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> Path:
    """Histogram of image scores, normal vs anomalous, with the calibrated threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    bins = np.histogram_bin_edges(scores, bins=30)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal", color="tab:blue")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomalous", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label="threshold")
    ax.set_xlabel("image score (higher = more anomalous)")
    ax.set_ylabel("images")
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a figure as PNG atomically, then free it."""
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return path


def roc_pro_curves(path: Path, labels: np.ndarray, scores: np.ndarray, masks: np.ndarray | None,
                   maps: np.ndarray | None, fpr_limit: float = 0.3) -> Path:
    """Image ROC curve and, with masks, the PRO curve (per-region overlap against pixel FPR, up to the
    AUPRO limit), side by side: what the AUROC and AUPRO figures are areas of."""
    from sklearn.metrics import roc_curve

    from latentad.metrics.aupro import pro_curve

    with_pro = masks is not None and maps is not None and masks.any() and not masks.all()
    fig, axes = plt.subplots(1, 2 if with_pro else 1, figsize=(9 if with_pro else 4.5, 3.6), dpi=100)
    axes = np.atleast_1d(axes)
    if np.unique(labels).size == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        axes[0].plot(fpr, tpr, color="tab:red")
    else:  # a set of defects alone: no image ROC, the PRO curve beside still holds
        axes[0].text(0.5, 0.5, "no normal test image:\nno image ROC", ha="center", va="center")
    axes[0].plot([0, 1], [0, 1], color="0.7", linestyle=":")
    axes[0].set(xlabel="false-positive rate (images)", ylabel="true-positive rate", title="image ROC",
                xlim=(0, 1), ylim=(0, 1.02))
    if with_pro:
        f, p = pro_curve(masks, maps, fpr_limit)
        axes[1].plot(f, p, color="tab:purple")
        axes[1].set(xlabel="false-positive rate (normal pixels)", ylabel="per-region overlap",
                    title=f"PRO curve (to FPR {fpr_limit:g})", xlim=(0, fpr_limit), ylim=(0, 1.02))
    return save_figure(fig, path)


def auto_candidates(path: Path, record: dict) -> Path:
    """Each candidate's validation criterion at the last rung it reached, with its standard error over
    folds (the bar), the chosen one in colour: why `fit --method auto` chose what it chose."""
    rows = [r for r in record["candidates"] if r["rungs"]]
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(rows) + 1.2))
    for y, r in enumerate(rows):
        last = r["rungs"][-1]
        chosen = r["name"] == record["chosen"]["name"]
        ax.errorbar(last["value"], y, xerr=last["se"], fmt="o", capsize=3, color="C3" if chosen else "C0")
    ax.set_yticks(range(len(rows)), [f"{r['name']} ({r['rungs'][-1]['images']} img)" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("validation image AUROC (normal vs synthetic defects), mean ± s.e. over folds")
    return save_figure(fig, path)
