"""Saving and loading without pickle: tensors in safetensors, everything else in JSON; atomic writes.

Every write goes to a temporary file in the same folder and is renamed into place, so a killed
process never leaves a half-written model, checkpoint or metrics file. Small files (JSON, text) are
also durable: the file and its folder are synced before the write returns, so a power cut after a
recalibration does not bring back the old threshold or an empty file.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from latentad.errors import ModelFileError


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(_to_jsonable(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def sync_folder(folder: str | Path) -> None:
    """Make a rename or unlink in `folder` durable (where the platform can sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomic and durable: the bytes are synced before the rename, and the rename after it."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def png_bytes(image: np.ndarray, level: int = 1) -> bytes:
    """A lossless PNG of an HxW, HxWx1, HxWx3 or HxWx4 uint8 array at a fast zlib `level`, for many
    large images written in a hurry (predict's overlays and masks): Pillow's encoder, which releases
    the GIL, so writer threads encode side by side."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"png_bytes: expected HxW or HxWx(1|3|4) uint8, got {image.shape} {image.dtype}")
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image).save(
        buf, format="PNG", compress_level=level)
    return buf.getvalue()



def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save named tensors to safetensors (contiguous CPU copies), atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: json.dumps(_to_jsonable(v)) for k, v in (metadata or {}).items()}
    try:
        save_file(clean, str(tmp), metadata=meta or None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None


def flatten_state(prefix: str, state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Split a nested state (e.g. an optimizer's state_dict) into tensors and a JSON skeleton.

    Tensors go into `tensors` under dotted keys; the returned skeleton holds `{"__tensor__": key}`
    in their place, so `unflatten_state` can rebuild the original structure without pickle.
    """
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[_key(k), flatten_state(f"{prefix}.{k}", v, tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return {"__list__": [flatten_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]}
    return state


def _key(k: Any) -> Any:
    return {"__int__": k} if isinstance(k, int) else k


def _unkey(k: Any) -> Any:
    return k["__int__"] if isinstance(k, dict) and "__int__" in k else k


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {_unkey(k): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
    return skeleton
