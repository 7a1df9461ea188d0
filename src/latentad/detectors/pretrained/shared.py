"""One backbone pass per batch for every pretrained-family detector of a group that reads the same
backbone: what an ensemble's members and the search's candidates have in common.

Members whose `backbone_id` is equal (backbone, weights, normalisation, placement, precision, device)
and whose input size is equal get the same features of a batch, so `SharedPass` runs one extractor per
distinct backbone, with the union of the levels its members need, once per distinct input size, and
each member scores from those features (`score_features`). Members of other families, members with
a user module, and a backbone only one member reads run their own `score_batch`. The extractor of a
backbone is one module whatever the input sizes it is run at, so a traced graph holds its weights
once. `LATENTAD_SHARED_PASS=0` turns sharing off (every member runs its own pass), to measure it.
"""

from __future__ import annotations

import os
from collections import Counter

import torch
import torch.nn.functional as F

from latentad.backbones import BackboneId, FeatureExtractor, load_backbone
from latentad.detectors.base import Detector
from latentad.detectors.pretrained.common import PretrainedDetector

ENV = "LATENTAD_SHARED_PASS"
Scored = tuple[torch.Tensor, torch.Tensor | None]


def sharing_on() -> bool:
    """False when the environment variable `LATENTAD_SHARED_PASS` is 0 / false / off / no."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def shared_id(det: Detector) -> BackboneId | None:
    """A detector's backbone identity when its features can come from a shared pass, else None."""
    if not isinstance(det, PretrainedDetector) or getattr(det, "full_resolution", False):
        return None
    if type(det).features is not PretrainedDetector.features:  # a method that reads features its own way
        return None
    return det.backbone_id()


class SharedPass:
    """Scores of several detectors on one batch, one backbone pass per distinct backbone and size."""

    def __init__(self, members: list[Detector]) -> None:
        self.members = members
        self.ids = [shared_id(m) for m in members]
        counts = Counter(i for i in self.ids if i is not None)
        self.ids = [i if i is not None and counts[i] > 1 else None for i in self.ids]
        self._extractors: dict[BackboneId, FeatureExtractor] = {}

    def extractor(self, backbone: BackboneId) -> FeatureExtractor:
        """The one extractor of a backbone, recording every level any of its members reads."""
        if backbone not in self._extractors:
            users = [m for m, i in zip(self.members, self.ids, strict=True) if i == backbone]
            levels = list(dict.fromkeys(lv for m in users for lv in m.levels))  # type: ignore[attr-defined]
            fx = load_backbone(backbone.name, levels, backbone.weights_path)
            self._extractors[backbone] = fx.to(users[0].device)
        return self._extractors[backbone]

    def score(self, inputs: list[torch.Tensor], share: bool | None = None) -> list[Scored]:
        """Each member's (scores, maps) of its batch `inputs[k]` (members at one size get the same
        tensor object); `share=False` (or `LATENTAD_SHARED_PASS=0`): every member on its own."""
        share = sharing_on() if share is None else share
        passes: dict[tuple[BackboneId, int], dict[str, torch.Tensor]] = {}
        out: list[Scored] = []
        for m, backbone, x in zip(self.members, self.ids, inputs, strict=True):
            if not share or backbone is None:
                out.append(m.score_batch(x))
                continue
            key = (backbone, id(x))  # not x.shape: a traced shape holds tensors, each its own key
            if key not in passes:
                passes[key] = m.extract(self.extractor(backbone), x)  # type: ignore[attr-defined]
            out.append(m.score_features(passes[key]))  # type: ignore[attr-defined]
        return out


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) operator of an antialiased bilinear resize along one axis (F.interpolate with
    antialias=True), so that a resize traces into two matrix products any runtime has."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, None, :]
    out = F.interpolate(eye, size=(1, n_out), mode="bilinear", antialias=True, align_corners=False)
    return out[:, 0, 0, :].T.contiguous().float()


def resize_batch(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A (B,C,H,W) batch brought to `shape` with antialiasing (unchanged when it has that shape)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])  # constants when traced: the input size is fixed
    if (h, w) == tuple(shape):
        return x
    a_h = resize_matrix(h, shape[0]).to(x.device)
    a_w = resize_matrix(w, shape[1]).to(x.device)
    return a_h @ x.float() @ a_w.T
