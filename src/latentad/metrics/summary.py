"""One call that computes every reported metric, so runs and reports use the same definitions."""

from __future__ import annotations

import warnings
from typing import Any

from latentad.metrics.aupimo import aupimo
from latentad.metrics.aupro import aupro
from latentad.metrics.auroc import check_pixel_inputs, image_auroc, pixel_auroc
from latentad.metrics.thresholds import f1_max


def compute_metrics(labels: Any, scores: Any, masks: Any = None, maps: Any = None) -> dict[str, float | None]:
    """Keys image_auroc, pixel_auroc, aupro, aupimo (its mean), f1_max (the best F1), as Python floats.

    The pixel-level three are None when masks or maps are missing or when no pixel is a defect;
    pixel_auroc and aupro are also None when every pixel is a defect. aupimo is None when there is no
    normal image or the normal pixels are too few to reach its FPR range (a warning says why).
    """
    result: dict[str, float | None] = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": None,
        "aupro": None,
        "aupimo": None,
        "f1_max": f1_max(labels, scores)[0],
    }
    if masks is None or maps is None:
        return result
    m, a = check_pixel_inputs(masks, maps)
    n_defect = int(m.sum())
    if n_defect == 0:
        return result
    if n_defect < m.size:
        result["pixel_auroc"] = pixel_auroc(m, a)
        result["aupro"] = aupro(m, a)
    try:
        result["aupimo"] = aupimo(m, a).mean
    except ValueError as error:
        warnings.warn(f"AUPIMO not computed: {error}", stacklevel=2)
    return result
