"""Training loop shared by the reconstruction detectors: augmentation, cosine schedule, progress bar
with every loss term, a checkpoint every epoch, and exact resume.

Exact resume works because nothing random carries over between epochs: the data order, the
augmentation and the model's own sampling (VAE noise) are re-seeded from (seed, epoch) at the start
of each epoch, and the checkpoint holds the model and optimizer state. A run killed after epoch k
and resumed therefore computes epochs k+1.. exactly as the uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from latentad import io
from latentad.errors import ConfigError, ModelFileError

LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
EpochHook = Callable[[int, dict], dict]

CHECKPOINT_JSON = "checkpoint.json"


@dataclass
class TrainSchedule:
    """How long and how a reconstruction model trains."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    augment_to: int | None = None  # images per epoch (the paper: 1024); None = the set as is
    rotation: bool = True
    flips: bool = True
    max_angle: float = 180.0
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.05  # cosine decay down to lr * min_lr_ratio
    weight_decay: float = 0.0
    channels_last: bool = True


def lr_at(schedule: TrainSchedule, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    warm = schedule.warmup_epochs * steps_per_epoch
    if step < warm:
        return schedule.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total_steps - warm)
    floor = schedule.min_lr_ratio
    return schedule.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_batches(n_images: int, schedule: TrainSchedule, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch: a seeded permutation, cycled to `augment_to` images if set."""
    total = schedule.augment_to or n_images
    reps = math.ceil(total / n_images)
    order = torch.cat([torch.randperm(n_images, generator=generator) for _ in range(reps)])[:total]
    return list(order.split(schedule.batch_size))


def augment_batch(images: torch.Tensor, schedule: TrainSchedule, generator: torch.Generator) -> torch.Tensor:
    """Rotations and flips, each on its own flag: `augment_to` only sets how many images an epoch
    draws, so `flips=True` with `augment_to=None` still flips (it once did not)."""
    if not (schedule.rotation or schedule.flips):
        return images
    from latentad.data.transforms import augment_to

    return augment_to(
        images.shape[0], images, generator, rotation=schedule.rotation, flips=schedule.flips,
        max_angle=schedule.max_angle,
    )


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


def run_settings(schedule: TrainSchedule, seed: int, extra: dict | None = None) -> dict:
    """What a checkpoint must have been written with to be resumed: the schedule, the seed and any
    other settings the caller names (a detector passes its whole config), JSON-normalised."""
    return json.loads(json.dumps({**(extra or {}), **asdict(schedule), "seed": seed}))


def check_resume(directory: Path, settings: dict) -> None:
    """Refuse to resume from a checkpoint written with other settings: the result would silently
    differ from an uninterrupted run. One line naming each changed field, its old and new value."""
    path = directory / CHECKPOINT_JSON
    if not path.is_file():
        return
    saved = io.read_json(path).get("settings") or {}
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in settings.items() if k in saved and saved[k] != v]
    if changed:
        raise ConfigError(
            f"{directory}: cannot --resume with other settings than the checkpoint's ({'; '.join(changed)}); "
            "rerun with the checkpoint's values, or fit again without --resume"
        )


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    history: list[dict], schedule: TrainSchedule, settings: dict | None = None) -> Path:
    """Write epoch `epoch`'s checkpoint (safetensors + JSON), then drop the previous one."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    skeleton = io.flatten_state("optim", optimizer.state_dict(), tensors)
    name = f"checkpoint-epoch{epoch:04d}.safetensors"
    io.write_tensors(directory / name, tensors)
    io.write_json(directory / CHECKPOINT_JSON, {
        "epoch": epoch, "tensors": name, "optimizer": skeleton, "history": history,
        "schedule": asdict(schedule), "settings": settings or {},
    })
    for old in directory.glob("checkpoint-epoch*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return directory / name


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    """Restore model and optimizer; returns (last finished epoch, history)."""
    meta = io.read_json(directory / CHECKPOINT_JSON)
    tensors = io.read_tensors(directory / meta["tensors"])
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"{directory / meta['tensors']}: does not fit this model ({first})") from None
    optimizer.load_state_dict(io.unflatten_state(meta["optimizer"], tensors))
    return int(meta["epoch"]), list(meta["history"])


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels while training, the caller's setting restored afterwards.

    With more than one thread, some CPU backward kernels accumulate in a thread-dependent order, so two
    runs of the same seed (or a killed-and-resumed run and an uninterrupted one) drift apart: seen on
    bottle in the third decimal of the pixel AUROC. Ops without a deterministic kernel warn instead of failing.

    The mode would also fill every new tensor with NaN first (`fill_uninitialized_memory`), a guard
    against kernels that read memory they never wrote. That is one more pass over every activation and
    gradient of every step, and it is off here: no kernel of training reads such memory (the repeat
    and resume tests compare weights bit for bit).
    """
    from torch.utils import deterministic

    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        deterministic.fill_uninitialized_memory = was_filling
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


@deterministic_algorithms()
def train_model(
    model: nn.Module,
    images: torch.Tensor,
    loss_fn: LossFn,
    schedule: TrainSchedule,
    seed: int,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    epoch_end: EpochHook | None = None,
    description: str = "train",
    settings: dict | None = None,
    precision: str = "32",
) -> list[dict]:
    """Train `model` on `images` (N,C,H,W) in [0,1]; returns the per-epoch history.

    `settings` (default: the schedule and seed, see `run_settings`) go into every checkpoint, and a
    resume from a checkpoint written with other settings is refused. The model may sit on any device:
    `images` stay on the CPU (random draws there too) and each batch is moved to the model's device;
    `precision` sets autocast for the forward and loss (with loss scaling for float16)."""
    from latentad import allocator
    from latentad.devices import autocast, grad_scaler
    from latentad.progress import enabled, make_progress, tick

    allocator.keep_freed_blocks()
    fmt = torch.channels_last if schedule.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    device = next(model.parameters()).device
    scaler = grad_scaler(device, precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    start, history = 0, []
    settings = settings if settings is not None else run_settings(schedule, seed)
    if resume and checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_JSON).is_file():
        check_resume(checkpoint_dir, settings)
        last, history = load_checkpoint(checkpoint_dir, model, optimizer)
        start = last + 1
    steps_per_epoch = math.ceil((schedule.augment_to or images.shape[0]) / schedule.batch_size)
    total_steps = steps_per_epoch * schedule.epochs

    progress = make_progress() if enabled() else None
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task(description, total=total_steps, completed=start * steps_per_epoch, info="")
    try:
        for epoch in range(start, schedule.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(seed, epoch))
            gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
            model.train()
            sums: dict[str, float] = {}
            count = 0
            for i, idx in enumerate(epoch_batches(images.shape[0], schedule, gen)):
                step = epoch * steps_per_epoch + i
                tick()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(schedule, step, total_steps, steps_per_epoch)
                x = augment_batch(images[idx], schedule, gen).to(device, non_blocking=True)
                x = x.contiguous(memory_format=fmt)
                with autocast(device, precision):
                    terms = loss_fn(model, x)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    terms["loss"].backward()
                    optimizer.step()
                else:
                    scaler.scale(terms["loss"]).backward()
                    scaler.step(optimizer)
                    scaler.update()
                count += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if progress is not None:
                    shown = "  ".join(f"{k} {v / count:.4g}" for k, v in sums.items())
                    progress.update(task, advance=1, info=f"epoch {epoch + 1}/{schedule.epochs}  {shown}")
            entry = {"epoch": epoch, "seconds": time.perf_counter() - t0,
                     **{k: v / max(1, count) for k, v in sums.items()}}
            if epoch_end is not None:
                entry.update(epoch_end(epoch, entry))
            history.append(entry)
            if checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, model, optimizer, epoch, history, schedule, settings)
    finally:
        if progress is not None:
            progress.stop()
        allocator.release()
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    return history
