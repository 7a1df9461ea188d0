"""The benchmark spec: a TOML file (read with the standard library) describing a grid of data sets x
methods x seeds. Every mistake is refused before any cell runs, in one line naming the key.

    [benchmark]
    seeds = [0, 1, 2]
    eval_size = 256                  # optional: the common resolution of pixel metrics
    calibration_fraction = 0.1       # optional, as fit's --calibration-fraction
    shots = [1, 2, 4, 8, 16]         # optional: a few-shot grid, each method fitted on K normal images
                                     # drawn by each seed (fit's --shots); rows labelled <label>-k<K>
    target_fpr = 0.01                # optional, as fit's --target-fpr
    [[data]]
    name = "bottle"
    path = "data/mvtec_ad/bottle"    # or root = "data/mvtec_ad" + categories = ["bottle"] or "*"
    format = "mvtec"                 # optional, as --format
    options = {}                     # optional, as -d
    tune = {kinds = ["cutpaste", "scar", "blend"]}
                                     # optional: tune settings (not candidates) for this data set,
                                     # over every method's tune table: which synthetic defects are
                                     # visible, and so can rank candidates, depends on the images
    [[method]]
    name = "padim"
    preset = "default"               # optional
    options = {image_size = 224}     # optional, as -o
    label = "padim-224"              # optional: the row name (default: the method, plus the preset)
    tune = {candidates = [{levels = ["stage4"]}, {levels = ["stage3", "stage4"]}]}
                                     # optional: options chosen per cell on a validation split of the
                                     # normal training images with synthetic defects (latentad.tuning)
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentad.errors import ConfigError

BENCHMARK_KEYS = {"seeds", "eval_size", "calibration_fraction", "target_fpr", "shots"}
DATA_KEYS = {"name", "path", "root", "categories", "format", "options", "tune"}
DATA_TUNE_KEYS = {"criterion", "fraction", "kinds", "folds", "rule"}  # a tune table's keys but candidates
METHOD_KEYS = {"name", "preset", "options", "label", "tune"}


@dataclass(frozen=True)
class DataEntry:
    name: str
    path: str
    format: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] | None = None


@dataclass(frozen=True)
class MethodEntry:
    name: str
    label: str
    preset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] | None = None


@dataclass
class Spec:
    seeds: list[int]
    data: list[DataEntry]
    methods: list[MethodEntry]
    eval_size: int | None = None
    calibration_fraction: float = 0.1
    target_fpr: float = 0.01
    source: str = "spec"
    shots: list[int] | None = None

    def cells(self) -> list[dict[str, Any]]:
        """Every (data, method, [shots,] seed) cell as a plain dict (what a worker process receives);
        a few-shot cell carries `shots` and its method's label ends in -k<K>."""
        return [
            {
                "data": _without_none_tune(asdict(d)),
                "method": _method_dict(m) if k is None else {**_method_dict(m), "label": f"{m.label}-k{k}"},
                "seed": s,
                "eval_size": self.eval_size,
                "calibration_fraction": self.calibration_fraction,
                "target_fpr": self.target_fpr,
                **({"shots": k} if k is not None else {}),
            }
            for d in self.data
            for m in self.methods
            for k in (self.shots or [None])
            for s in self.seeds
        ]


def _method_dict(m: MethodEntry) -> dict[str, Any]:
    """The entry as a cell carries it (the data set's tune settings merged into its tune table)."""
    return _without_none_tune(asdict(m))


def _without_none_tune(d: dict[str, Any]) -> dict[str, Any]:
    """An entry without `tune` when it has none, so that cells finished before the key existed still
    count as the same entry."""
    if d["tune"] is None:
        del d["tune"]
    return d


def _unknown(where: str, table: dict, known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if (
        not isinstance(value, kind)
        or isinstance(value, bool)
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ConfigError(f"{where}: {key} = {value!r} must be {what}")
    return value


def categories_under(root: Path, where: str) -> list[str]:
    """Folders under `root` that hold a data set (a `train` folder, or images for the flat formats)."""
    if not root.is_dir():
        raise ConfigError(f"{where}: root {str(root)!r} is not a folder")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())
    if not found:
        raise ConfigError(f"{where}: no category (a folder with train/) under {str(root)!r}")
    return found


def _resolve(path: str, base: Path) -> Path:
    """Absolute paths as they are; relative ones from the spec's folder, else from the current one."""
    p = Path(path)
    if p.is_absolute():
        return p
    return (base / p).resolve() if (base / p).exists() else (Path.cwd() / p).resolve()


def _data_entries(i: int, t: dict, base: Path) -> list[DataEntry]:
    where = f"[[data]] {i + 1}"
    _unknown(where, t, DATA_KEYS)
    fmt = _typed(where, "format", t.get("format", "auto"), str, "a format name")
    opts = _typed(where, "options", t.get("options", {}), dict, "a table")
    tune = None
    if "tune" in t:
        from latentad.tuning import TuneSpec

        tune = _typed(where, "tune", t["tune"], dict, "a table")
        _unknown(f"{where} tune", tune, DATA_TUNE_KEYS)
        TuneSpec.parse({"candidates": [{}, {}], **tune}, f"{where} tune")  # its values checked now
    if ("path" in t) == ("root" in t):
        raise ConfigError(f"{where}: give either path or root (with categories)")
    if "path" in t:
        path = _typed(where, "path", t["path"], str, "a path")
        if "categories" in t:
            raise ConfigError(f"{where}: categories goes with root, not with path")
        name = _typed(where, "name", t.get("name", Path(path).name), str, "a name")
        if path == "elpv":  # the packaged data set, no folder
            return [DataEntry(name, path, fmt if fmt != "auto" else "elpv", opts, tune)]
        full = _resolve(path, base)
        if not full.exists():
            raise ConfigError(
                f"{where}: path {path!r} does not exist (relative paths: from the spec's folder, then the current one)"
            )
        return [DataEntry(name, str(full), fmt, opts, tune)]
    root = _resolve(_typed(where, "root", t["root"], str, "a path"), base)
    cats = t.get("categories", "*")
    names = categories_under(root, where) if cats == "*" else _typed(where, "categories", cats, list, 'a list or "*"')
    for c in names:
        if not (root / c).is_dir():
            raise ConfigError(f"{where}: category {c!r} not found under {str(root)!r}")
    prefix = t.get("name")
    return [DataEntry(f"{prefix}/{c}" if prefix else c, str(root / c), fmt, opts, tune) for c in names]


def _method_entry(i: int, t: dict) -> MethodEntry:
    from latentad.registry import available_methods, get_method

    where = f"[[method]] {i + 1}"
    _unknown(where, t, METHOD_KEYS)
    if "name" not in t:
        raise ConfigError(f"{where}: name is missing (one of {', '.join(available_methods())})")
    name = _typed(where, "name", t["name"], str, "a method name")
    if name not in available_methods():
        raise ConfigError(f"{where}: name = {name!r} is not a method (one of {', '.join(available_methods())})")
    preset = t.get("preset")
    preset = None if preset in (None, "default") else _typed(where, "preset", preset, str, "a preset name")
    cls = get_method(name)
    if preset is not None and preset not in cls.presets:
        raise ConfigError(
            f"{where}: preset = {preset!r} is not a preset of {name} (one of default, {', '.join(cls.presets)})"
        )
    opts = _typed(where, "options", t.get("options", {}), dict, "a table")
    try:
        cls.config_for(preset, **opts)  # the same validation fit applies, before any cell runs
    except ConfigError as exc:
        raise ConfigError(f"{where} ({name}): {exc}") from None
    label = _typed(where, "label", t.get("label", name if preset is None else f"{name}-{preset}"), str, "a name")
    tune = None
    if "tune" in t:
        from latentad.tuning import TuneSpec

        tune = _typed(where, "tune", t["tune"], dict, "a table")
        for k, cand in enumerate(TuneSpec.parse(tune, f"{where} tune").candidates):
            try:
                cls.config_for(preset, **{**opts, **cand})
            except ConfigError as exc:
                raise ConfigError(f"{where} tune candidate {k + 1} ({name}): {exc}") from None
    return MethodEntry(name, label, preset, opts, tune)


def parse_spec(text: str, source: str = "spec", base: Path | None = None) -> Spec:
    """Parse and check a spec; relative data paths are taken from `base` (the spec's folder)."""
    base = base or Path.cwd()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    _unknown(source, raw, {"benchmark", "data", "method"})
    bench = raw.get("benchmark", {})
    _unknown("[benchmark]", bench, BENCHMARK_KEYS)
    seeds = bench.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"[benchmark]: seeds = {seeds!r} must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"[benchmark]: seeds = {seeds!r} repeats a seed")
    eval_size = bench.get("eval_size")
    if eval_size is not None and (not isinstance(eval_size, int) or eval_size < 8):
        raise ConfigError(f"[benchmark]: eval_size = {eval_size!r} must be an integer >= 8")
    frac = _typed(
        "[benchmark]",
        "calibration_fraction",
        bench.get("calibration_fraction", 0.1),
        (int, float),
        "a number in [0, 1)",
    )
    fpr = _typed("[benchmark]", "target_fpr", bench.get("target_fpr", 0.01), (int, float), "a number in (0, 1)")
    if not 0 <= frac < 1 or not 0 < fpr < 1:
        raise ConfigError("[benchmark]: calibration_fraction must be in [0, 1) and target_fpr in (0, 1)")
    shots = bench.get("shots")
    if shots is not None and (not isinstance(shots, list) or not shots or len(set(shots)) != len(shots)
                              or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in shots)):
        raise ConfigError(f"[benchmark]: shots = {shots!r} must be a list of distinct integers >= 1")
    if not raw.get("data"):
        raise ConfigError(f"{source}: no [[data]] entry")
    if not raw.get("method"):
        raise ConfigError(f"{source}: no [[method]] entry")
    data = [e for i, t in enumerate(raw["data"]) for e in _data_entries(i, t, base)]
    methods = [_method_entry(i, t) for i, t in enumerate(raw["method"])]
    tuned_data = [d.name for d in data if d.tune is not None]
    if tuned_data and not any(m.tune is not None for m in methods):  # else silently unused
        raise ConfigError(f"{source}: data {tuned_data[0]!r} has tune settings, but no [[method]] has a tune table")
    for kind, names in (("data", [d.name for d in data]), ("method label", [m.label for m in methods])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{source}: {kind} {dup[0]!r} appears twice (give each a distinct name / label)")
    return Spec(list(seeds), data, methods, eval_size, float(frac), float(fpr), source, shots)


def load_spec(path: Path) -> Spec:
    if not path.is_file():
        raise ConfigError(f"{path}: spec file not found")
    return parse_spec(path.read_text(), str(path), path.resolve().parent)
