"""What every trained reconstruction detector shares: fit through `train_model` (checkpoints,
resume, progress), weights in safetensors, the training history in JSON, image score from the map.

Subclasses provide `build_model()`, `loss(model, x) -> dict` and `predict`; their Config derives
from `TrainingConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import torch
from torch import nn

from latentad.data.base import ImageSet, require_nonempty
from latentad.detectors.base import Detector, DetectorConfig
from latentad.errors import ModelFileError
from latentad.training import TrainSchedule, train_model


@dataclass
class TrainingConfig(DetectorConfig):
    """The schedule fields every trained detector's config shares (see `latentad.training.TrainSchedule`)."""

    epochs: int = 10
    lr: float = 1e-3
    augment_to: int | None = 1024  # images per epoch (the paper: 1024); None = the set as is
    rotation: bool = True
    flips: bool = True
    max_angle: float = 180.0
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    channels_last: bool = True
    score: str = "mean"  # image score from the map: "mean" (the paper's protocol) or "max"


_SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainSchedule))


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
        return TrainSchedule(**{k: getattr(self.config, k) for k in _SCHEDULE_FIELDS})

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
