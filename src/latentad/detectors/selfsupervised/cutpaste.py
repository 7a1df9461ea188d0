"""`cutpaste` (Li, Sohn, Yoon, Pfister, CVPR 2021): learn to tell normal images from CutPaste and scar
augmentations, then a Gaussian density estimator on the learnt embedding.

Training: every normal image of a batch appears three times, as it is (class 0), with a CutPaste patch
(class 1) and with a scar (class 2) (`data.defects`); the encoder (EfficientNet-Lite0 from ImageNet
weights; the paper used ResNet-18) and a classification head on its pooled stage-4 features minimise
the 3-way cross-entropy. Image score: Mahalanobis distance of the pooled stage-4 features to their
Ledoit-Wolf Gaussian over the normal training images (the paper's Gaussian density estimator).

Localisation: the paper's patch-level variant trains a second model on 64 x 64 patches and upsamples
the patch scores with Gaussian smoothing. Here the map comes instead from per-position Gaussians of the
fine-tuned stage-2/3 features (PaDiM on the CutPaste encoder): one training serves both, at the cost of
not being the paper's patch model. Published (paper): MVTec AD image AUROC 95.2 (3-way), pixel 96.0
(patch level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from latentad.detectors.base import DetectorConfig
from latentad.detectors.selfsupervised.finetune import Encoder, FineTuneConfig, FineTunedGaussian, views, with_defects


@dataclass
class CutPasteConfig(FineTuneConfig):
    proj_dim: int = 3  # the head is the 3-way classifier (normal / cutpaste / scar)


_SMALL = dict(image_size=64, map_levels=("stage2", "stage3"), epochs=10, batch_size=64, rotation=False, flips=False)
# MNIST: 3 epochs, so that the ten one-vs-rest digits fit a session on 2 cores (10 took ~12 min a digit)
_MNIST = {**_SMALL, "epochs": 3}


class CutPaste(FineTunedGaussian):
    """CutPaste (Li et al. 2021): a 3-way normal / CutPaste / scar classifier, then a Gaussian on its embedding."""

    name: ClassVar[str] = "cutpaste"
    Config: ClassVar[type[DetectorConfig]] = CutPasteConfig
    config: CutPasteConfig
    preset_notes: ClassVar[dict[str, str]] = {
        "mnist": "MNIST one-vs-rest: digits upsampled to 64 px, 3 epochs (sized by time), no rotation or flips",
        "paper_cifar": "CIFAR-10 one-vs-rest: 64 px, 10 epochs",
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {"mnist": _MNIST, "paper_cifar": _SMALL}

    def objective_loss(self, model: Encoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
        base = views(x, self.config.photometric)
        cut, _ = with_defects(base, ("cutpaste",))
        scar, _ = with_defects(base, ("scar",))
        logits = model.logits(torch.cat([base, cut, scar]))
        labels = torch.arange(3, device=x.device).repeat_interleave(len(x))
        loss = F.cross_entropy(logits, labels)
        return {"loss": loss, "accuracy": (logits.argmax(1) == labels).float().mean().detach()}
