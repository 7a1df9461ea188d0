"""One copy of each large constant in an exported graph.

The tracer inserts a network's weights as constants at every call: an ensemble's shared backbone
run at two input sizes, or two members whose fitted statistics happen to be equal (PaDiM's means with
and without NPCA), would otherwise ship the same tensor twice. `dedupe_constants` keeps the first of
identical tensors (same dtype, shape and bytes) and points every reader of the others at it;
`weight_copies` counts them, for the checks.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

MIN_ELEMENTS = 1024  # smaller constants (shapes, scalars, tiny kernels) are left as the exporter wrote them


def _digest(tensor) -> tuple[str, tuple[int, ...], int]:
    from onnx import numpy_helper

    a = numpy_helper.to_array(tensor)
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest(), tuple(a.shape), int(tensor.data_type)


def _large(tensor, min_elements: int) -> bool:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n >= min_elements


def _constant_value(node):
    if node.op_type != "Constant":
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return attr.t
    return None


def dedupe_constants(path: Path, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite the ONNX file at `path` with one copy of each large constant; returns copies removed."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for init in list(graph.initializer):
        if _large(init, min_elements):
            key = _digest(init)
            if key in first:
                rename[init.name] = first[key]
                graph.initializer.remove(init)
            else:
                first[key] = init.name
    for node in list(graph.node):
        value = _constant_value(node)
        if value is not None and _large(value, min_elements):
            key = _digest(value)
            if key in first:
                rename[node.output[0]] = first[key]
                graph.node.remove(node)
            else:
                first[key] = node.output[0]
    if not rename:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph.output:
        if out.name in rename:
            raise ValueError(f"graph output {out.name} is a duplicated constant")
    onnx.save(model, str(path))
    return len(rename)


def weight_copies(path: Path, min_elements: int = MIN_ELEMENTS) -> Counter:
    """How many times each large constant of the ONNX file at `path` is stored: {(hash, shape, dtype): n}."""
    import onnx

    graph = onnx.load(str(path)).graph
    tensors = [t for t in graph.initializer] + [v for v in map(_constant_value, graph.node) if v is not None]
    return Counter(_digest(t) for t in tensors if _large(t, min_elements))
