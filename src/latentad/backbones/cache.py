"""Backbone features computed once for every detector that reads them: `feature_cache()`.

    from latentad.backbones import feature_cache
    with feature_cache():               # the auto search: candidates fitted and scored in turn
        for c in candidates:
            det = create(...).fit(train); det.predict(val)

While the context is active, the pretrained family's extraction (`PretrainedDetector.features`, which
`fit`, `predict` and `embed` all go through) looks a batch up by what decides its features (backbone
name, weights file, input normalisation, placement, precision, device: a `BackboneId`) and by the
batch's content (a hash of its bytes, its shape and dtype), and runs the backbone only on a miss,
with the union of the levels asked for that batch so far. Why: every candidate of the search reads
the same fitting and validation images through the same few backbones; each used to extract them
again. Features are the backbone's own outputs on the same bytes, so fits and scores are those of
the uncached path. The cache is bounded (least recently used batches are dropped past `max_bytes`)
and lives only inside the `with` block.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from latentad.backbones.extractor import FeatureExtractor

DEFAULT_MAX_BYTES = 1 << 30

Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BackboneId:
    """What decides a built-in backbone's features of a batch besides the batch itself."""

    name: str
    weights_path: str | None
    normalize: str
    placement: str
    precision: str
    device: str


def batch_digest(x: torch.Tensor) -> str:
    """A hash of a batch's content, shape and dtype (the same bytes give the same features)."""
    data = x.detach().contiguous().cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)}{data.dtype}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def _nbytes(feats: Features) -> int:
    return sum(f.numel() * f.element_size() for f in feats.values())


class FeatureCache:
    """Features of batches by (backbone, content), at most `max_bytes` of them (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[BackboneId, str], Features] = OrderedDict()
        self._bytes = 0
        self._extractors: dict[tuple[BackboneId, tuple[str, ...]], FeatureExtractor] = {}
        self._levels: dict[BackboneId, dict[str, None]] = {}

    def features(self, backbone: BackboneId, x: torch.Tensor, levels: Sequence[str],
                 run: Callable[[FeatureExtractor, torch.Tensor], Features]) -> Features:
        """`{level: features}` of batch `x` for `levels`, from the cache or from `run(extractor, x)`
        (the caller's forward: its precision, its casts) on an extractor of every level asked of this
        backbone so far (so that the next detector reading another of them finds it too)."""
        key = (backbone, batch_digest(x))
        have = self._entries.get(key, {})
        if all(lv in have for lv in levels):
            self.hits += 1
            self._entries.move_to_end(key)
            return _for_caller({lv: have[lv] for lv in levels})
        self.misses += 1
        seen = self._levels.setdefault(backbone, {})
        seen.update(dict.fromkeys([*have, *levels]))  # every level asked of this backbone so far
        union = tuple(seen)
        feats = {lv: f.detach() for lv, f in run(self._extractor(backbone, union, x.device), x).items()}
        self._store(key, feats)
        return _for_caller({lv: feats[lv] for lv in levels})

    def _extractor(self, backbone: BackboneId, levels: tuple[str, ...], device: torch.device) -> FeatureExtractor:
        from latentad.backbones import load_backbone

        key = (backbone, levels)
        if key not in self._extractors:
            self._extractors[key] = load_backbone(backbone.name, levels, backbone.weights_path).to(device)
        return self._extractors[key]

    def _store(self, key: tuple[BackboneId, str], feats: Features) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old)
        size = _nbytes(feats)
        if size > self.max_bytes:
            return
        self._entries[key] = feats
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= _nbytes(dropped)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._entries.clear()
        self._extractors.clear()
        self._levels.clear()
        self._bytes = 0


def _for_caller(feats: Features) -> Features:
    """Cached tensors as the caller may use them: made under inference mode, they are copied into
    ordinary tensors for a caller outside it (autograd refuses inference tensors)."""
    if torch.is_inference_mode_enabled():
        return feats
    return {lv: f.clone() if f.is_inference() else f for lv, f in feats.items()}


_ACTIVE: ContextVar[FeatureCache | None] = ContextVar("latentad_feature_cache", default=None)


def active_cache() -> FeatureCache | None:
    """The cache of the innermost active `feature_cache()` block, or None."""
    return _ACTIVE.get()


@contextmanager
def feature_cache(max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[FeatureCache]:
    """Share backbone features of the same batches across the detectors fitted and scored inside the
    block (see the module docstring); nested blocks reuse the outer cache."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    cache = FeatureCache(max_bytes)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        cache.clear()
