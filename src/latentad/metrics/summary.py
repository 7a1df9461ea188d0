"""One call that computes every reported metric, so runs and reports use the same definitions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from latentad.metrics.aupimo import aupimo
from latentad.metrics.aupro import aupro
from latentad.metrics.auroc import check_pixel_inputs, image_auroc, pixel_auroc
from latentad.metrics.thresholds import f1_max

AUPRO_FPR_LIMIT = 0.3
AUPIMO_FPR_BOUNDS = (1e-5, 1e-4)


def compute_metrics(labels: Any, scores: Any, masks: Any = None, maps: Any = None,
                    defect_types: Sequence[str] | None = None) -> dict[str, Any]:
    """Keys image_auroc, pixel_auroc, aupro, aupimo (its mean), f1_max (the best F1), as Python floats,
    and `conditions`: what the figures depend on (AUPRO's FPR limit; AUPIMO's FPR range, the range
    actually integrated and whether it was narrowed, the normal pixels that set it; the resolution of
    the pixel metrics). With `defect_types`, `per_defect` holds each defect type's metrics, computed on
    its images plus every normal image.

    image_auroc and f1_max are None when the images are of one class (a set of defects alone, scored
    by its pixels). The pixel-level three are None when masks or maps are missing or when no pixel is a defect;
    pixel_auroc and aupro are also None when every pixel is a defect. aupimo is None when there is no
    normal image or the normal pixels are too few to reach its FPR range (a warning says why).
    """
    y = np.asarray(labels)
    both = np.unique(y).size == 2  # image-level figures need both classes (a set of defects alone: None)
    result: dict[str, Any] = {
        "image_auroc": image_auroc(labels, scores) if both else None,
        "pixel_auroc": None,
        "aupro": None,
        "aupimo": None,
        "f1_max": f1_max(labels, scores)[0] if both else None,
    }
    conditions: dict[str, Any] = {"aupro_fpr_limit": AUPRO_FPR_LIMIT, "aupimo_fpr_bounds": list(AUPIMO_FPR_BOUNDS),
                                  "aupimo_fpr_bounds_used": None, "aupimo_narrowed": None,
                                  "aupimo_normal_pixels": None, "pixel_metrics_size": None}
    result["conditions"] = conditions
    pim = None
    if masks is not None and maps is not None:
        m, a = check_pixel_inputs(masks, maps)
        conditions["pixel_metrics_size"] = list(m.shape[1:])
        n_defect = int(m.sum())
        if n_defect:
            if n_defect < m.size:
                result["pixel_auroc"] = pixel_auroc(m, a)
                result["aupro"] = aupro(m, a, AUPRO_FPR_LIMIT)
            try:
                pim = aupimo(m, a, AUPIMO_FPR_BOUNDS)
                result["aupimo"] = pim.mean
                result["aupimo_per_image"] = pim.per_image  # (N,), nan for normal images
                conditions.update(aupimo_fpr_bounds_used=list(pim.fpr_bounds_used), aupimo_narrowed=pim.narrowed,
                                  aupimo_normal_pixels=pim.n_normal_pixels)
            except ValueError as error:
                warnings.warn(f"AUPIMO not computed: {error}", stacklevel=2)
    if defect_types is not None:
        result["per_defect"] = _per_defect(y, np.asarray(scores), masks, maps, list(defect_types), pim)
    return result


def _per_defect(y: np.ndarray, scores: np.ndarray, masks: Any, maps: Any, defects: list[str], pim) -> dict:
    """Each defect type against all normal images: image AUROC and, with masks, the pixel metrics."""
    out = {}
    kinds = np.array(defects)
    for d in sorted(set(defects) - {"good"}):
        keep = (kinds == d) | (y == 0)
        pair = np.unique(y[keep]).size == 2
        row: dict[str, Any] = {"n_images": int((kinds == d).sum()),
                               "image_auroc": image_auroc(y[keep], scores[keep]) if pair else None,
                               "pixel_auroc": None, "aupro": None, "aupimo": None}
        if masks is not None and maps is not None:
            m, a = check_pixel_inputs(np.asarray(masks)[keep], np.asarray(maps)[keep])
            if 0 < m.sum() < m.size:
                row["pixel_auroc"] = pixel_auroc(m, a)
                row["aupro"] = aupro(m, a, AUPRO_FPR_LIMIT)
            if pim is not None:  # per-image AUPIMO uses the shared normal FPR: average this type's images
                values = pim.per_image[kinds == d]
                row["aupimo"] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        out[d] = row
    return out
