"""Run folders: what `fit` writes and what `evaluate` / `predict` / `calibrate` read back.

    RUN/config.json        method, preset, options, seed, data description, command, versions
    RUN/model/             model.safetensors + detector.json (no pickle)
    RUN/checkpoints/       checkpoint.json + checkpoint-epochNNNN.safetensors (trainable methods)
    RUN/calibration.json   threshold and heat-map scale from held-out normal images
    RUN/fit.json           fit seconds and the training history
    RUN/metrics.json, RUN/scores.csv, RUN/maps/*.png, RUN/report.html   (evaluate)
"""

from __future__ import annotations

import csv
import datetime as _dt
import io as _io
import logging
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentad import __version__, io, registry
from latentad.calibration import Calibration
from latentad.data.base import ImageSet, Split
from latentad.detectors.base import Detector
from latentad.errors import ConfigError, ModelFileError
from latentad.evaluation import Evaluation, evaluate, score_set
from latentad.metrics.thresholds import at_threshold
from latentad.registry import create

DEFAULT_TARGET_FPR = 0.01
MAX_DEFAULT_FPR = 0.1  # a default threshold flagging more than one good part in ten is no default
log = logging.getLogger("latentad")


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """`key=value` strings -> {key: text}. The text is typed later by its target's declared type
    (`latentad.config.coerce_options` for a method's options, the loader's signature for data
    options), never by how it looks: `-d normal=1` names a folder "1"."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"option '{pair}': expected key=value")
        key, raw = pair.split("=", 1)
        out[key.strip()] = raw
    return out


def open_split(data: str, fmt: str, options: dict[str, Any]) -> Split:
    from latentad.data.open import open_dataset

    return open_dataset(data, format=fmt, size=None, **options)


def holdout(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Split off a seeded share of the normal training images for calibration (None when too few)."""
    n_cal = int(round(len(train) * fraction))
    if fraction <= 0 or n_cal < 1 or len(train) - n_cal < 2:
        return train, None
    perm = np.random.default_rng(seed + 12_345).permutation(len(train))
    cal, fit = sorted(perm[:n_cal].tolist()), sorted(perm[n_cal:].tolist())
    return train.subset(fit), train.subset(cal)


def calibrate(detector: Detector, normal: ImageSet, target_fpr: float, source: str) -> Calibration:
    with torch.inference_mode():
        pred, *_ = score_set(detector, normal, progress=f"{detector.name} calibrate")
    return Calibration.from_normal(pred.image_scores, pred.anomaly_maps, target_fpr, source)


def default_target_fpr(n_normal: int) -> float:
    """The default target: DEFAULT_TARGET_FPR, or the smallest rate `n_normal` held-out images can back
    (1/n) when they are too few for it, so that a default run does not promise what it cannot; never
    above MAX_DEFAULT_FPR (fewer images than that needs get the calibration's warning instead)."""
    backed = 1.0 / max(n_normal, 1)
    target = min(max(DEFAULT_TARGET_FPR, backed), MAX_DEFAULT_FPR)
    if DEFAULT_TARGET_FPR < target and backed <= target:
        log.info(f"calibration: target FPR {target:.3g}, the smallest {n_normal} held-out normal images can back "
                 f"({DEFAULT_TARGET_FPR:g} needs {round(1 / DEFAULT_TARGET_FPR)}; set --target-fpr to choose)")
    return target


def calibrate_run(detector: Detector, fit_set: ImageSet, cal_set: ImageSet | None, target_fpr: float | None,
                  fraction: float) -> Calibration:
    """The run's threshold from its held-out normal images; without any, from the training images
    themselves, which the model has seen (said in a warning: the rate it promises is optimistic)."""
    normal = cal_set if cal_set is not None else fit_set
    if cal_set is None:
        warnings.warn(f"calibration: no normal image could be held out ({len(fit_set)} training images, "
                      f"--calibration-fraction {fraction:g}); the threshold falls back to the training images "
                      "themselves, so its false-positive rate is optimistic (recalibrate with `latentad calibrate` "
                      "on normal images the model has not seen)", stacklevel=2)
    target = default_target_fpr(len(normal)) if target_fpr is None else target_fpr
    source = (f"{len(cal_set)} held-out normal training images" if cal_set is not None
              else "the training images themselves (optimistic)")
    return calibrate(detector, normal, target, source)


def fit_run(run: Path, method: str, data: str, fmt: str, data_options: dict, preset: str | None,
            options: dict, seed: int, resume: bool, force: bool, calibration_fraction: float,
            target_fpr: float | None, device: str | None = None, precision: str | None = None,
            tune: dict | None = None, shots: int | None = None) -> dict:
    """Train `method` on `data` and write the run folder; returns the fit summary. `device` and
    `precision` are where it trains (recorded in config.json, not part of the saved model). `tune`
    (a `tuning.TuneSpec` table) first chooses among candidate options on a validation split of the
    normal training images with synthetic defects (`latentad.tuning`); the choice is recorded.
    `target_fpr` None: the default target the hold-out can back (`default_target_fpr`).

    With `force` over a fitted run, the new run is built in a temporary folder beside it and swapped
    in only when the fit succeeded: a crash leaves the old run whole."""
    holds = (run / "model" / "detector.json").exists()
    if holds and not (resume or force):
        raise ConfigError(f"{run}: already holds a fitted model (use --force to overwrite or another --out)")
    if method == "auto" and resume:
        raise ConfigError("--resume: an auto search is not resumed (run it again, with --force)")
    args = (method, data, fmt, data_options, preset, options, seed, resume, calibration_fraction, target_fpr,
            device, precision, tune, shots)
    if (not holds or resume) and method != "auto":  # auto is staged too: a refused search leaves nothing
        return _fit_into(run, *args)
    run.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{run.name}.fit-", dir=run.parent))
    try:
        summary = _fit_into(stage, *args)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    swap_in(stage, run)
    return summary


def _training_data(data: str | list[str], fmt: str, data_options: dict, shots: int | None, seed: int,
                   fraction: float) -> tuple[Split, ImageSet, ImageSet | None, list[str], dict[str, dict]]:
    """(split, images to fit on, held-out calibration images, the few-shot draw, categories): one data
    set, or several (`multiclass`): the union of their fitting images, each holding out its own."""
    paths = [data] if isinstance(data, str) else list(data)
    if len(paths) == 1:
        split = open_split(paths[0], fmt, data_options)
        train, drawn = few_shot(split.train, shots, seed, paths[0])
        return split, *holdout(train, fraction, seed), drawn, {}
    from latentad.multiclass import open_categories, union

    if shots is not None:
        raise ConfigError("--shots: applies to one --data (draw the few images of each product separately)")
    categories: dict[str, dict] = {}
    for cat in open_categories(paths, fmt, data_options):
        fit, cal = holdout(cat.split.train, fraction, seed)
        categories[cat.name] = {"path": cat.path, "fit": fit, "cal": cal, "n_fit": len(fit), "split": cat.split}
    fit_set = union([c["fit"] for c in categories.values()], "+".join(categories))
    cals = [c["cal"] for c in categories.values() if c["cal"] is not None]
    cal_set = union(cals, "calibration") if cals else None
    info = {"format": "multiclass", "categories": list(categories)}
    first = next(iter(categories.values()))["split"]
    return Split(fit_set, first.test, info), fit_set, cal_set, [], categories


def few_shot(train: ImageSet, shots: int | None, seed: int, data: str) -> tuple[ImageSet, list[str]]:
    """`shots` normal training images drawn by the seed (each seed its own draw), and their paths;
    all of them when `shots` is None."""
    if shots is None:
        return train, []
    if shots < 1:
        raise ConfigError(f"--shots {shots}: must be at least 1")
    if shots > len(train):
        raise ConfigError(f"--shots {shots}: {data} has only {len(train)} normal training images")
    idx = sorted(np.random.default_rng([seed, 424_242]).choice(len(train), shots, replace=False).tolist())
    picked = train.subset(idx)
    return picked, [r.path for r in picked.records]


def swap_in(stage: Path, run: Path) -> None:
    """Replace the folder `run` by `stage` with two renames (the old one removed afterwards)."""
    if not run.exists():
        stage.rename(run)
        io.sync_folder(run.parent)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{run.name}.old-", dir=run.parent))
    old.rmdir()
    run.rename(old)
    stage.rename(run)
    io.sync_folder(run.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fit_into(run: Path, method: str, data: str, fmt: str, data_options: dict, preset: str | None,
              options: dict, seed: int, resume: bool, calibration_fraction: float, target_fpr: float | None,
              device: str | None, precision: str | None, tune: dict | None, shots: int | None) -> dict:
    detector = create(method, preset, device=device, precision=precision, seed=seed, **options)  # refused early
    detector.set_checkpointing(run / "checkpoints", resume=resume)  # so is a resume with another schedule
    if target_fpr is not None and not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"--target-fpr {target_fpr}: must be in (0, 1)")
    if not 0.0 <= calibration_fraction < 1.0:
        raise ConfigError(f"--calibration-fraction {calibration_fraction}: must be in [0, 1)")
    split, fit_set, cal_set, drawn, categories = _training_data(data, fmt, data_options, shots, seed,
                                                                calibration_fraction)
    if method == "auto":
        detector.check(len(fit_set))  # too few images or too small a budget: refused before anything is written
    tuning = None
    if tune is not None:
        tuning, options = _tuned(run, method, preset, options, tune, fit_set, seed, resume, device)
        detector = create(method, preset, device=device, precision=precision, seed=seed, **options)
        detector.set_checkpointing(run / "checkpoints", resume=resume)
    config = {
        "method": method, "preset": preset or "default", "options": options, "seed": seed,
        "data": {**split.info, "path": data if isinstance(data, str) else list(data), "format_option": fmt,
                 "data_options": data_options},
        **({"categories": [{"name": n, "path": c["path"], "n_fit": c["n_fit"], "n_calibration": len(c["cal"] or [])}
                           for n, c in categories.items()]} if categories else {}),
        "calibration": {"fraction": calibration_fraction, "target_fpr": "auto" if target_fpr is None else target_fpr,
                        "n_fit": len(fit_set), "n_calibration": len(cal_set) if cal_set else 0},
        "detector_config": asdict(detector.config),
        **({"tuning": tuning} if tuning is not None else {}),
        **({"shots": {"k": shots, "seed": seed, "drawn": drawn}} if shots is not None else {}),
        "command": " ".join(["latentad", *sys.argv[1:]]),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {"latentad": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                    "device": str(detector.device), "precision": detector.compute_precision,
                    "gpu": torch.cuda.get_device_name(detector.device) if detector.device.type == "cuda" else None},
    }
    run.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in (run / "checkpoints").glob("*"):
            old.unlink()
    io.write_json(run / "config.json", config)
    t0 = time.perf_counter()
    detector.fit(fit_set)
    fit_seconds = time.perf_counter() - t0
    if method == "auto":
        detector = _became(run, detector, config)
    config["detector_config"] = asdict(detector.config)
    io.write_json(run / "config.json", config)
    detector.save(run / "model")
    cal = calibrate_run(detector, fit_set, cal_set, target_fpr, calibration_fraction)
    cal.save(run / "calibration.json")
    for name, c in categories.items():  # a threshold per product, from that product's good images
        calibrate_run(detector, c["fit"], c["cal"], target_fpr, calibration_fraction).save(
            run / "calibrations" / f"{name}.json")
    if categories:  # how an image without a product label is routed to its threshold
        from latentad.multiclass import fit_router

        io.write_tensors(run / "routing.safetensors", fit_router({n: c["fit"] for n, c in categories.items()}, seed))
    config["calibration"]["target_fpr"] = cal.target_fpr
    io.write_json(run / "config.json", config)
    summary = {"method": method, "fit_seconds": fit_seconds, "n_train": len(fit_set),
               "history": getattr(detector, "history", [])}
    io.write_json(run / "fit.json", summary)
    return summary


def _became(run: Path, auto: Detector, config: dict) -> Detector:
    """An auto run from here on is the candidate it chose: auto.json holds the search, config.json
    says what it became."""
    record = auto.record  # type: ignore[attr-defined]
    io.write_json(run / "auto.json", record)
    config["auto"] = {"became": record["chosen"], "seconds": record["seconds"], "record": "auto.json"}
    return auto.chosen  # type: ignore[attr-defined]


def _tuned(run: Path, method: str, preset: str | None, options: dict, tune: dict, fit_set: ImageSet, seed: int,
           resume: bool, device: str | None) -> tuple[dict, dict]:
    """(tuning record, options with the choice merged); a resumed run keeps the choice it made."""
    from latentad.tuning import TuneSpec
    from latentad.tuning import tune as choose

    spec = TuneSpec.parse(tune)
    saved = run / "tuning.json"
    if resume and saved.is_file():
        record = io.read_json(saved)
    else:
        record = choose(method, preset, options, spec, fit_set, seed, device)
        record["spec"] = tune
        run.mkdir(parents=True, exist_ok=True)
        io.write_json(saved, record)
    return record, {**options, **record["chosen"]}


def load_run(run: Path, device: str | None = None, precision: str | None = None) -> tuple[dict, Detector, Calibration]:
    """A run's config, its detector (on `device`, default the CPU) and its calibration."""
    if not (run / "config.json").is_file():
        raise ModelFileError(f"{run}: not a latentad run folder (no config.json)")
    if not (run / "model" / "detector.json").is_file():
        raise ModelFileError(f"{run}: the run has no fitted model (fit did not finish; try fit --resume)")
    config = io.read_json(run / "config.json")
    detector = registry.load(run / "model", device, precision)
    cal = Calibration.load(run / "calibration.json")
    return config, detector, cal


def write_scores_csv(path: Path, rows: list[dict]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["path", "score", "is_anomalous"])
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


def evaluate_run(run: Path, data: str | None, fmt: str | None, data_options: dict | None,
                 k_overlays: int = 6, eval_size: int | None = None, device: str | None = None,
                 precision: str | None = None, out: Path | None = None) -> Evaluation:
    """Evaluate a run on `data` (default: the data it was fitted on) and write metrics and report;
    pixel metrics at the detector's input size, or at `eval_size` (recorded in the metrics)."""
    from latentad.report.figures import auto_candidates, legend, roc_pro_curves, save_overlay, score_histogram
    from latentad.report.html import write_report

    config, detector, cal = load_run(run, device, precision)
    dest, category = run, None
    if config.get("categories"):  # multi-class: one category with its own threshold, or each in turn
        if data is None:
            return _evaluate_categories(run, config, k_overlays, eval_size, device, precision)
        from latentad.multiclass import find_category

        name = find_category(config, data)
        cal = Calibration.load(run / "calibrations" / f"{name}.json")
        dest = out or run
        category = name
    dconf = config.get("data", {})
    data = data or dconf.get("path")
    fmt = fmt or dconf.get("format_option", "auto")
    opts = dconf.get("data_options", {}) if data_options is None else data_options
    split = open_split(str(data), fmt, opts)
    result = evaluate(detector, split.test, eval_size)
    scores, maps = result.prediction.image_scores, result.prediction.anomaly_maps
    result.metrics["at_threshold"] = {**at_threshold(result.labels, scores, cal.image_threshold),
                                      "target_fpr": cal.target_fpr, "calibrated_on": cal.source}
    if category is not None:
        result.metrics["category"] = category  # its own threshold: calibrations/<category>.json
        result.metrics["routing_accuracy"] = routing_accuracy(run, config, category, split.test)
    result.metrics["conditions"]["f1_max"] = "oracle: the best F1 over thresholds chosen with the test labels"
    if config.get("method") == "auto":  # which candidate the run became, beside its own figures
        result.metrics["became"] = config.get("auto", {}).get("became", {}).get("name")
    metrics = {**result.metrics, "threshold": cal.image_threshold,
               "per_defect": result.per_defect, "data": str(data), "method": config.get("method")}
    io.write_json(dest / "metrics.json", metrics)
    flags = scores > cal.image_threshold
    pim = result.aupimo_per_image if result.aupimo_per_image is not None else np.full(len(scores), np.nan)
    write_scores_csv(dest / "scores.csv", [  # aupimo: the image's own AUPIMO (anomalous images with masks)
        {"path": p, "label": int(lab), "defect_type": d, "score": float(s), "is_anomalous": int(f),
         "aupimo": "" if not np.isfinite(a) else float(a)}
        for p, lab, d, s, f, a in zip(result.paths, result.labels, result.defect_types, scores, flags, pim,
                                      strict=True)
    ])
    order = np.argsort(-scores)
    chosen = sorted(set(order[:k_overlays].tolist()) | set(order[::-1][:k_overlays].tolist()))
    index = {p: i for i, p in enumerate(result.paths)}
    overlays = {}
    for i in chosen:
        rec = split.test.records[index[result.paths[i]]]
        image, _ = rec.load()
        amap = maps[i] if maps is not None else None
        overlays[i] = save_overlay(dest / "maps" / f"{i:05d}_{Path(rec.path).stem}.png", image, amap, cal)
    hist = score_histogram(dest / "maps" / "score_histogram.png", scores, result.labels, cal.image_threshold)
    scale = legend(dest / "maps" / "legend.png", cal) if maps is not None else None
    curves = roc_pro_curves(dest / "maps" / "roc_pro.png", result.labels, scores, result.masks, maps)
    auto = io.read_json(run / "auto.json") if (run / "auto.json").is_file() else None
    auto_fig = auto_candidates(dest / "maps" / "auto_candidates.png", auto) if auto else None
    write_report(dest, config, result.metrics, result.per_defect, cal, result.paths, result.defect_types,
                 scores, overlays, hist, curves, auto=auto, auto_figure=auto_fig, legend=scale)
    return result


def routing_accuracy(run: Path, config: dict, category: str, images: ImageSet) -> float:
    """The share of `images` (all of category `category`) that routing without a label sends there."""
    from latentad.multiclass import route

    router = io.read_tensors(run / "routing.safetensors")
    names = [c["name"] for c in config["categories"]]
    hits = [names[k] == category for b in images.with_size(64, 3).batches(32) for k in route(router, b.images)]
    return float(np.mean(hits))


def _evaluate_categories(run: Path, config: dict, k_overlays: int, eval_size, device: str | None,
                         precision: str | None) -> Evaluation:
    """Every category of a multi-class run, each with its own threshold (RUN/eval/<name>/), and
    RUN/metrics.json with each category's figures and their mean."""
    per, last = {}, None
    for c in config["categories"]:
        last = evaluate_run(run, c["path"], None, None, k_overlays, eval_size, device, precision,
                            out=run / "eval" / c["name"])
        per[c["name"]] = {k: last.metrics.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "aupimo",
                                                            "f1_max", "at_threshold", "n_images", "routing_accuracy")}
    mean = {k: float(np.mean([m[k] for m in per.values()])) if all(isinstance(m.get(k), float) for m in per.values())
            else None for k in ("image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max")}
    metrics = {**mean, "n_images": sum(m["n_images"] or 0 for m in per.values()), "per_category": per,
               "mean_over": "categories", "method": config.get("method")}
    io.write_json(run / "metrics.json", metrics)
    last.metrics = {**last.metrics, **metrics}
    return last
