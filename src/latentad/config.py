"""Typed options in one place: text from the command line becomes a value of the type its target
declares, and every detector config is checked (known key, type, allowed value, range) before any
work starts.

Why one module: an option that is parsed by how its text looks (`-d normal=1` became the int 1 and
crashed a path join) or checked in some detectors and not others (`score=median` behaved as `mean`)
is silently wrong. Here the declared type decides: a dataclass field's annotation for a detector
option, a loader's signature for a data-set option. Enumerated fields are `Literal[...]`; ranges are
`Bound`s in a config class's `bounds` (merged along its bases).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from latentad.errors import ConfigError

NONE_WORDS = ("null", "none", "None")
TRUE_WORDS = ("true", "True", "yes", "1", "on")
FALSE_WORDS = ("false", "False", "no", "0", "off")


@dataclass(frozen=True)
class Bound:
    """An allowed numeric range, optionally odd-only: `Bound(gt=0)`, `Bound(ge=0, le=1)`, `Bound(odd=True)`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    odd: bool = False

    def allows(self, v: float) -> bool:
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt)
                    or (self.odd and int(v) % 2 == 0))

    def describe(self) -> str:
        parts = [f"{op} {_num(x)}" for op, x in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if x is not None]
        if self.odd:
            parts.append("odd")
        return " and ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Bound(gt=0)
NON_NEGATIVE = Bound(ge=0)
AT_LEAST_ONE = Bound(ge=1)
UNIT = Bound(ge=0, le=1)
FRACTION = Bound(gt=0, le=1)


# -- types -----------------------------------------------------------------------------------------
def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def type_name(tp: Any) -> str:
    """How a type reads in an error message: `int or null`, `one of 'mean', 'max'`, `list of str`."""
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in _args(tp))
    if _is_union(tp):
        return " or ".join(type_name(a) for a in _args(tp))
    if typing.get_origin(tp) in (tuple, list, typing.get_origin(typing.Sequence[str])):
        inner = [a for a in _args(tp) if a is not Ellipsis]
        return f"list of {type_name(inner[0]) if inner else 'values'}"
    return getattr(tp, "__name__", str(tp))


def conforms(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether `value` has type `tp`, the value normalised: int -> float, list -> tuple)."""
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if _is_union(tp):
        for option in _args(tp):
            ok, v = conforms(value, option)
            if ok:
                return True, v
        return False, value
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in _args(tp)), value
    if origin in (tuple, list) or (origin is not None and origin.__name__ == "Sequence"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return False, value
        inner = [a for a in _args(tp) if a is not Ellipsis] or [Any]
        items = []
        for item in value:
            ok, v = conforms(item, inner[0])
            if not ok:
                return False, value
            items.append(v)
        return True, tuple(items) if origin is tuple else list(items)
    if origin is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return True, float(value)
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def coerce_text(text: str, tp: Any, key: str) -> Any:
    """The value `text` (from `key=text` on a command line) denotes for a target of type `tp`."""
    if not isinstance(text, str):
        return text
    if tp is Any or tp is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    candidates = list(_args(tp)) if _is_union(tp) else [tp]
    if type(None) in candidates and text in NONE_WORDS:
        return None
    for option in candidates:
        value = _parse_one(text, option)
        if value is not _FAIL:
            return value
    raise ConfigError(f"option {key}={text}: expected {type_name(tp)}")


_FAIL = object()


def _parse_one(text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    try:
        if tp is str:
            return text
        if tp is bool:
            return True if text in TRUE_WORDS else False if text in FALSE_WORDS else _FAIL
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if origin is Literal:
            for a in _args(tp):
                if str(a) == text:
                    return a
            return _FAIL
        if origin in (tuple, list) or (origin is not None and origin.__name__ == "Sequence"):
            inner = [a for a in _args(tp) if a is not Ellipsis] or [str]
            seps = ",x" if inner[0] is int else ","  # "224x448" is a shape
            raw = json.loads(text) if text.startswith("[") else [t for t in re.split(f"[{seps}]", text) if t.strip()]
            items = [coerce_text(r, inner[0], "item") if isinstance(r, str) else r for r in raw]
            return tuple(items) if origin is tuple else items
        if origin is dict or tp is dict:
            value = json.loads(text)
            return value if isinstance(value, dict) else _FAIL
    except (ValueError, ConfigError):
        return _FAIL
    return _FAIL


# -- detector configs ------------------------------------------------------------------------------
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def bounds_of(cls: type) -> dict[str, Bound]:
    merged: dict[str, Bound] = {}
    for base in reversed(cls.__mro__):
        merged.update(getattr(base, "__dict__", {}).get("bounds", {}))
    return merged


def coerce_options(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Command-line option texts -> values of the config class's field types (unknown keys kept as
    they are, for `check_config` to refuse by name)."""
    types_ = field_types(cls)
    return {k: coerce_text(v, types_[k], k) if k in types_ else v for k, v in raw.items()}


def check_keys(cls: type, keys: typing.Iterable[str], method: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in keys if k not in names]
    if unknown:
        raise ConfigError(f"{method}: unknown option {unknown[0]!r} (known: {', '.join(names)})")


def check_config(cfg: Any, method: str) -> Any:
    """Check every field of `cfg` against its type and bound; returns `cfg` with normalised values
    (ints in float fields, lists as tuples). One line naming the key, the value and what is allowed."""
    types_ = field_types(type(cfg))
    bounds = bounds_of(type(cfg))
    fixed = {}
    for name, tp in types_.items():
        value = getattr(cfg, name)
        ok, norm = conforms(value, tp)
        if not ok:
            raise ConfigError(f"{method}: option {name}={value!r} is not allowed (expected {type_name(tp)})")
        bound = bounds.get(name)
        if bound is not None and isinstance(norm, int | float) and not isinstance(norm, bool):
            if not bound.allows(norm):
                raise ConfigError(f"{method}: option {name}={value!r} is out of range (allowed: {bound.describe()})")
        if norm is not value:
            fixed[name] = norm
    return dataclasses.replace(cfg, **fixed) if fixed else cfg
