"""`latentad demo`: the toolkit's point in five minutes. One method of each latent-space family
(an autoencoder trained from scratch, frozen ImageNet features, a self-supervised fine-tuned
encoder), and `fit --method auto` with a demo-sized budget, are fitted on the same ELPV solar cells,
evaluated on the same test cells, and one page compares them (`report.compare`), the auto run with
the members it fused and why (from its auto.json). Each run folder keeps its own report."""

from __future__ import annotations

import shutil
from pathlib import Path

from latentad import io
from latentad.calibration import Calibration
from latentad.errors import ConfigError
from latentad.progress import track
from latentad.report.compare import Compared, write_comparison
from latentad.runs import evaluate_run, fit_run, open_split

# (method, preset): presets sized so that the three fit and evaluate within minutes on 2 cores
DEMO_METHODS: tuple[tuple[str, str | None], ...] = (("ae_ssim", "demo"), ("padim", None), ("ssl_gaussian", "demo"),
                                                   ("auto", None))
DEMO_OPTIONS: dict[str, dict] = {"auto": {"budget": 150.0}}  # the default pool, in a budget the demo can hold
MARKER = "demo.json"


def family(method: str) -> str:
    from latentad.registry import get_method

    return "fusion (auto)" if method == "auto" else get_method(method).family


def auto_note(run: Path) -> str | None:
    """What a `--method auto` run is made of, from its auto.json: the members it fused and why."""
    if not (run / "auto.json").is_file():
        return None
    record = io.read_json(run / "auto.json")
    fusion = record.get("ensemble", {})
    made = (f"fused {', '.join(fusion['members'])} with equal weights ({fusion['why']})" if fusion.get("kept")
            else f"chose {record['chosen']['name']} ({fusion.get('why', 'no fusion')})")
    limited = "; the demo's budget left candidates out (budget_limited)" if record.get("budget_limited") else ""
    return f"{made}; {record['seconds']:.0f} s of a {record['budget_seconds']:.0f} s budget{limited}"


def clear(out: Path, force: bool) -> None:
    """An earlier demo folder is replaced only when told to (and only if it is a demo folder)."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise ConfigError(f"{out}: holds an earlier demo (use --force to replace it, or another --out)")
    if not (out / MARKER).is_file():
        raise ConfigError(f"{out}: not a demo folder (no {MARKER}); refusing to delete it, choose another --out")
    shutil.rmtree(out)


def run_demo(out: Path, force: bool = False, cell_type: str = "mono", methods: list[str] | None = None,
             epochs: int | None = None, data: tuple[str, str, dict] | None = None,
             method_options: dict[str, dict] | None = None) -> dict:
    """Fit, evaluate and compare; returns demo.json's content (metrics per method, the page's path).
    `data` (path, format, options) and `method_options` replace the ELPV cells and the presets' sizes
    (the tests run the same path on a few synthetic images)."""
    from latentad.registry import get_method

    chosen = [(m, p) for m, p in DEMO_METHODS if methods is None or m in methods]
    chosen += [(m, None) for m in methods or [] if m not in {c for c, _ in DEMO_METHODS}]
    for m, _ in chosen:
        family(m)  # an unknown name is refused before anything is written
    clear(out, force)
    path, fmt, opts = data or ("elpv", "elpv", {"cell_type": cell_type, "limit": {"train": 300, "test": 100}})
    io.write_json(out / MARKER, {"methods": [m for m, _ in chosen], "data": {"path": path, "format": fmt, **opts}})
    compared, reference = [], None
    for method, preset in track(chosen, description="demo", total=len(chosen)):
        options = dict((method_options or DEMO_OPTIONS).get(method, {}))
        if method == "auto":
            options.setdefault("candidates", None)
        elif epochs is not None and "epochs" in get_method(method).Config.__dataclass_fields__:
            options["epochs"] = epochs
        summary = fit_run(out / method, method, path, fmt, opts, preset, options, 0, False, False, 0.1, None)
        result = evaluate_run(out / method, None, None, None)
        if reference is None:
            reference = result
        elif result.paths != reference.paths:
            raise ConfigError(f"demo: {method} was scored on other test images than {chosen[0][0]}")
        cal = Calibration.load(out / method / "calibration.json")
        compared.append(Compared(method, family(method), out / method, result.metrics,
                                 result.prediction.image_scores, cal.image_threshold, summary["fit_seconds"],
                                 result.prediction.anomaly_maps, cal, auto_note(out / method)))
    test = open_split(path, fmt, opts).test
    title = f"three latent spaces and their fusion on ELPV {cell_type} cells" if data is None else \
        f"latent spaces on {path}"
    page = write_comparison(out, title, reference.labels, reference.paths, lambda i: test.records[i].load()[0],
                            compared)
    summary = {"methods": {c.name: {"family": c.family, "preset": p or "default", "fit_seconds": c.fit_seconds,
                                    **{k: c.metrics.get(k) for k in ("image_auroc", "f1_max", "at_threshold")}}
                           for c, (_, p) in zip(compared, chosen, strict=True)},
               "data": {"path": path, "format": fmt, **opts}, "page": str(page)}
    io.write_json(out / MARKER, summary)
    return summary
