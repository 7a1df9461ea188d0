"""Image shapes and tiling, measured through the CLI's own code (`fit_run` + `evaluate_run`): for
`patchcore` and `padim`, `resize=squash` (the old behaviour), `resize=fit` (aspect kept) and
`tile=224` (full-resolution tiles) on non-square data:

- magnetic_tile (real, grey JPEGs of varying size and aspect);
- bottle cropped to its top half (each image and mask: 450 high, 900 wide), written once to --work;
- the synthetic generator at 128 x 512 (H x W).

    python benchmarks/shapes_bench.py --out benchmarks/results/shapes.jsonl [--work runs/shapes] [--only NAME]

One JSON line per run: data, method, mode, options, image / pixel AUROC, AUPRO, fit and evaluate
seconds. Defaults only: nothing here is tuned on these test sets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

from latentad.data.synthetic import make_synthetic
from latentad.runs import evaluate_run, fit_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def half_bottle(dst: Path) -> Path:
    if (dst / "train" / "good").is_dir():
        return dst
    src = SHARED / "mvtec_ad" / "bottle"
    for f in src.rglob("*.png"):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im.crop((0, 0, im.width, im.height // 2)).save(out)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/shapes.jsonl")
    ap.add_argument("--work", default="runs/shapes")
    ap.add_argument("--only", default=None, help="one data set: magnetic_tile, bottle_half, synthetic_strip")
    args = ap.parse_args()
    work = Path(args.work)
    data = {
        "bottle_half": (half_bottle(work / "bottle_half_data"), {"fit": {"image_size": [224, 448], "resize": "fit"}}),
        "synthetic_strip": (work / "synthetic_strip_data", {"fit": {"image_size": [112, 448], "resize": "fit"}}),
        "magnetic_tile": (SHARED / "magnetic_tile", {"fit": {"image_size": 224, "resize": "fit"}}),
    }
    if not (work / "synthetic_strip_data").is_dir():
        make_synthetic(work / "synthetic_strip_data", n_train=80, n_test_good=20, n_test_defect=20, size=(128, 512))
    for name, (path, special) in data.items():
        if args.only and name != args.only:
            continue
        for method in ("patchcore", "padim"):
            for mode, options in (("squash", {}), ("fit", special["fit"]), ("tile", {"tile": 224})):
                run = work / name / f"{method}-{mode}"
                t0 = time.perf_counter()
                fit_run(run, method, str(path), "auto", {}, None, dict(options), 0, False, True, 0.1, 0.01)
                fit_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                m = evaluate_run(run, None, None, None).metrics
                row = {"data": name, "method": method, "mode": mode, "options": options,
                       "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"],
                       "pixel_metrics_size": m["conditions"]["pixel_metrics_size"], "n_images": m["n_images"],
                       "fit_seconds": round(fit_s, 1), "evaluate_seconds": round(time.perf_counter() - t1, 1)}
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
