"""What every trained reconstruction detector shares: fit through `train_model` (checkpoints,
resume, progress), weights in safetensors, the training history in JSON, image score from the map.

Subclasses provide `build_model()`, `loss(model, x) -> dict` and `predict`; their Config needs the
schedule fields `epochs, lr, batch_size, augment_to, max_angle, flips` and `score`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import torch
from torch import nn

from latentad.data.base import ImageSet, require_nonempty
from latentad.detectors.base import Detector
from latentad.errors import ModelFileError
from latentad.training import TrainSchedule, train_model


class TrainableDetector(Detector):
    """A detector whose state is one trained `nn.Module`."""

    model: nn.Module

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.history: list[dict] = []

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def epoch_end(self, epoch: int, entry: dict) -> dict:
        """Extra per-epoch statistics (e.g. codebook usage); none by default."""
        return {}

    def schedule(self) -> TrainSchedule:
        c = self.config
        return TrainSchedule(
            epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, augment_to=c.augment_to,
            rotation=c.max_angle > 0, flips=c.flips, max_angle=c.max_angle,
        )

    def fit(self, train: ImageSet) -> Self:
        require_nonempty(train, train.name)
        if train.channels != self.config.channels:
            self.config = dataclasses.replace(self.config, channels=train.channels)
        images = train.with_size(self.config.image_size, self.config.channels).load_all(
            progress=f"{self.name} load {len(train)} images"
        ).images
        self.seed_everything()
        self.model = self.build_model()
        self.history = train_model(
            self.model, images, self.loss, self.schedule(), self.config.seed,
            checkpoint_dir=self.checkpoint_dir, resume=self.resume, epoch_end=self.epoch_end,
            description=f"{self.name} fit",
        )
        self.model.eval()
        self.fitted = True
        return self

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        """Image score from (B,H,W) maps: the mean (the paper's protocol) or the max."""
        return amap.flatten(1).amax(1) if self.config.score == "max" else amap.flatten(1).mean(1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model = self.build_model()
        try:
            self.model.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ModelFileError(f"{self.name}: saved weights do not fit the config ({str(exc).splitlines()[0]})"
                                 ) from None
        self.model.eval()

    def state_json(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
