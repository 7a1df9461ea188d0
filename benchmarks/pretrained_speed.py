"""Throughput of the pretrained-feature detectors against the bare backbone, on the same images, in
one run.

    python benchmarks/pretrained_speed.py [--data ../shared/data/mvtec_ad/bottle] [--threads 1]
        [--backbone efficientnet_lite0] [--rounds 5] [--out benchmarks/results/pretrained_speed]

The test images are decoded and resized once (decoding is excluded here: it is the same for every
method). Each detector is fitted on the full train set with its default config. Then, in `rounds`
interleaved rounds (so that load from other jobs on the machine hits all candidates alike), it times:
  - network: the whole backbone classifier forward (stem to logits), batches of config.batch_size,
    with the extractor's optimisations (folded BatchNorm, channels_last, micro-batches);
  - extractor[levels]: the FeatureExtractor each method uses (forward stops after its last level);
  - each method's predict() on the same tensors (features + scoring + maps at input size).
The median over rounds is reported, as images/s, with ratio = method / backbone (both references).
Timings are noisy when other jobs share the cores: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from latentad.backbones import FeatureExtractor, build_model
from latentad.data.mvtec import load_mvtec
from latentad.registry import create

METHODS = ["gaussian", "padim", "patchcore", "simplenet"]


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)


def throughput(fn, x: torch.Tensor, bs: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(x), bs):
        fn(x[s : s + bs])
    return len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/pretrained_speed")
    args = ap.parse_args()
    set_threads(args.threads)

    dets = {m: create(m, None, backbone=args.backbone) for m in METHODS}
    size = dets["patchcore"].config.image_size
    bs = dets["patchcore"].config.batch_size
    assert all(d.config.image_size == size and d.config.batch_size == bs for d in dets.values())
    split = load_mvtec(args.data, size)
    fit_s = {}
    for m, det in dets.items():
        t = time.perf_counter()
        det.fit(split.train)
        fit_s[m] = time.perf_counter() - t
        print(f"fitted {m} in {fit_s[m]:.1f} s", flush=True)
    x = split.test.load_all().images
    print(f"{len(x)} test images at {size} px, batch {bs}, {args.threads} thread(s)", flush=True)

    network, _, normalize = build_model(args.backbone)
    # The whole classifier (to its last linear layer), run by a FeatureExtractor: same input scaling,
    # channels_last and micro-batching as the detectors' extractors.
    last_linear = [n for n, m in network.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    net_fx = FeatureExtractor(network, [last_linear], normalize, name=args.backbone)

    def net_forward(b: torch.Tensor) -> None:
        with torch.inference_mode():
            net_fx(b)

    extractors = {}
    for det in dets.values():
        extractors[f"extractor[{','.join(det.levels)}]"] = det.extractor

    candidates = {"network": net_forward}
    for name, fx in extractors.items():
        candidates[name] = lambda b, fx=fx: torch.inference_mode()(fx)(b)
    for m, det in dets.items():
        candidates[m] = det.predict
    for fn in candidates.values():  # warm-up
        fn(x[:bs])
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    for r in range(args.rounds):
        for k, fn in candidates.items():
            samples[k].append(throughput(fn, x, bs))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items()), flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}

    rows = []
    for m, det in dets.items():
        fx_name = f"extractor[{','.join(det.levels)}]"
        rows.append({
            "method": m,
            "predict_img_s": med[m],
            "extractor": fx_name,
            "extractor_img_s": med[fx_name],
            "ratio_vs_extractor": med[m] / med[fx_name],
            "ratio_vs_network": med[m] / med["network"],
            "fit_s": fit_s[m],
        })
    lines = [
        f"backbone {args.backbone}, {len(x)} bottle test images at {size} px, batch {bs}, "
        f"{args.threads} thread(s), {args.rounds} interleaved rounds (median), host {platform.node()}",
        f"network (full classifier forward): {med['network']:.1f} img/s",
    ]
    lines += [f"{k}: {med[k]:.1f} img/s" for k in extractors]
    lines.append(f"{'method':<10} {'predict img/s':>13} {'vs extractor':>12} {'vs network':>10} {'fit s':>6}")
    for r in rows:
        lines.append(f"{r['method']:<10} {r['predict_img_s']:>13.1f} {r['ratio_vs_extractor']:>12.2f} "
                     f"{r['ratio_vs_network']:>10.2f} {r['fit_s']:>6.1f}")
    lines.append("Noisy when other jobs share the cores; ratios are from interleaved rounds.")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"backbone": args.backbone, "threads": args.threads, "image_size": size, "batch_size": bs,
         "n_images": len(x), "rounds": args.rounds, "samples_img_s": samples, "median_img_s": med,
         "methods": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
