"""What every trained reconstruction detector shares: fit through `train_model` (checkpoints,
resume, progress), weights in safetensors, the training history in JSON, image score from the map.

Subclasses provide `build_model()`, `loss(model, x) -> dict` and `predict`; their Config derives
from `TrainingConfig`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import torch
from torch import nn

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT, Bound
from latentad.data.base import ImageSet, require_nonempty
from latentad.detectors.base import Detector, DetectorConfig
from latentad.errors import ConfigError, ModelFileError
from latentad.training import TrainSchedule, check_resume, run_settings, train_model


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
    score: Literal["mean", "max"] = "mean"  # image score from the map: "mean" (the paper's protocol) or "max"
    bounds: ClassVar[dict[str, Bound]] = {
        "epochs": AT_LEAST_ONE, "lr": POSITIVE, "augment_to": AT_LEAST_ONE, "max_angle": Bound(ge=0, le=180),
        "warmup_epochs": NON_NEGATIVE, "min_lr_ratio": UNIT, "weight_decay": NON_NEGATIVE,
    }


_SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(TrainSchedule))


class TrainableDetector(Detector):
    """A detector whose state is one trained `nn.Module`."""

    map_scored: ClassVar[bool] = True  # False: `score` (mean / max of the map) does not apply

    model: nn.Module

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        n_down = getattr(c, "n_down", 0)
        if any(side % (2**n_down) for side in self.input_shape):  # across two fields: not a per-field bound
            raise ConfigError(f"{self.name}: image_size {c.image_size} is not divisible by 2**n_down = {2**n_down}")
        if not self.map_scored and c.score != type(c)().score:  # never silently ignored
            raise ConfigError(f"{self.name}: option score={c.score!r} does not apply (its image score is not a "
                              "statistic of a map)")
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

    def training_settings(self) -> dict:
        """What a checkpoint records and a resume must match: the whole config (schedule and seed
        included), so a resumed fit is the uninterrupted one or is refused."""
        return run_settings(self.schedule(), self.config.seed, dataclasses.asdict(self.config))

    def set_checkpointing(self, directory, resume: bool = False) -> None:
        """As `Detector.set_checkpointing`; with `resume`, a checkpoint of other settings is refused now,
        before any work (and before a run folder's config is rewritten)."""
        super().set_checkpointing(directory, resume)
        if resume and self.checkpoint_dir is not None:
            check_resume(self.checkpoint_dir, self.training_settings())

    def fit(self, train: ImageSet) -> Self:
        require_nonempty(train, train.name)
        if train.channels != self.config.channels:  # the config decides; the data are converted, loudly
            how = "BT.601 luma" if self.config.channels == 1 else "the grey channel repeated"
            warnings.warn(
                f"{train.name}: {len(train)} {train.channels}-channel images (first: {train.records[0].path}) "
                f"converted to {self.config.channels} channel(s) ({how}) as configured (channels="
                f"{self.config.channels}); set -o channels={train.channels} to train on the data's own channels",
                stacklevel=2,
            )
        images = train.with_size(self.input_shape, self.config.channels, resize=self.config.resize).load_all(
            progress=f"{self.name} load {len(train)} images"
        ).images
        self.seed_everything()
        self.model = self.build_model().to(self.device)
        self.prepare(images)
        self.history = train_model(
            self.model, images, self.loss, self.schedule(), self.config.seed,
            checkpoint_dir=self.checkpoint_dir, resume=self.resume, epoch_end=self.epoch_end,
            description=f"{self.name} fit", settings=self.training_settings(), precision=self.compute_precision,
        )
        self.model.eval()
        self.fitted = True
        return self

    def prepare(self, images: torch.Tensor) -> None:
        """Work between building the model and training it (data statistics, pretraining, a centre);
        none by default. `images`: the training set (N,C,H,W) on the CPU."""
        del images

    def map_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map (B,H,W) of one batch at the input size: what each method defines."""
        raise NotImplementedError

    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The map of the batch (`map_batch`), its image score from it (`image_score`)."""
        with self.autocast():
            amap = self.map_batch(x)
        amap = amap.float()
        return self.image_score(amap), amap

    @property
    def map_statistic(self) -> str:  # type: ignore[override]
        return self.config.score

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        """Image score from (B,H,W) maps: the mean (the paper's protocol) or the max."""
        return amap.flatten(1).amax(1) if self.config.score == "max" else amap.flatten(1).mean(1)

    def move_state(self, device: torch.device) -> None:
        if getattr(self, "model", None) is not None:
            self.model.to(device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model = self.build_model().to(self.device)
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
