"""The drift watch measured (`serve.drift`): its false-alarm rate on a stream of normal images, and its
delay on a stream that shifts (the same normal images darkened, or made noisy, step by step).

A run is fitted on half of a data set's normal training images (`--fit-fraction`); the other half,
never seen by the model nor its calibration, is the stream, replayed `--repeats` times in seeded random
orders. Normal stream: the share of positions (after the window has filled) at which the alarm is up,
and the number of alarm episodes. Shifted stream: from position `--shift-at`, each image is changed a
further `--step` per image (`--shift darken`: multiplied by 1 - s; `noise`: seeded Gaussian noise of
standard deviation s added, as a worn sensor or a gain change would; s = step x (i - shift_at)); the
delay is the number of images from the start of the shift to the first alarm, and the mean score
before and after shows how much the shift moved the scores. One JSON line to `--out`.

    python benchmarks/drift_eval.py --data ../shared/data/magnetic_tile --out benchmarks/results/drift.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from latentad.calibration import Calibration
from latentad.registry import create
from latentad.runs import holdout, open_split
from latentad.serve.drift import Drift


def scores_of(det, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return det.predict(images).image_scores


def shift(images: torch.Tensor, strength: np.ndarray, kind: str, seed: int) -> torch.Tensor:
    """`images` (in [0, 1]) changed by `strength` each: darkened by that share, or given noise of that
    standard deviation (seeded by the position, so every replay sees the same noise)."""
    s = torch.tensor(strength, dtype=torch.float32)[:, None, None, None]
    if kind == "darken":
        return images * (1 - s).clamp(min=0)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + s * noise).clamp(0, 1)


def watch(scores: np.ndarray, median: float, reference: list[float]) -> list[bool]:
    d, alarms = Drift(), []
    for s in scores:
        d.add([float(s)], [False])
        alarms.append(d.state(median, reference)["alarm"])
    return alarms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", default="patchcore")
    ap.add_argument("--fit-fraction", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shift-at", type=int, default=250)
    ap.add_argument("--step", type=float, default=0.002)
    ap.add_argument("--shift", choices=("darken", "noise"), default="darken")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    train = open_split(args.data, "auto", {}).train
    rest, stream_set = holdout(train, 1 - args.fit_fraction, 0)
    fit, cal_set = holdout(rest, 0.1, 0)
    det = create(args.method, seed=0).fit(fit)
    cal_scores = scores_of(det, cal_set)
    cal = Calibration.from_normal(cal_scores, None, 0.01, "drift_eval")
    images = stream_set.with_size(det.input_shape, det.config.channels).load_all().images
    normal = scores_of(det, images)
    rng = np.random.default_rng(0)
    rates, episodes, delays, moved = [], 0, [], []
    for _ in range(args.repeats):
        order = rng.permutation(len(normal))
        stream = np.concatenate([normal[order]] * max(1, (args.shift_at * 2) // len(normal) + 1))[: args.shift_at * 2]
        alarms = watch(stream, cal.score_median, cal.normal_scores)[Drift().min_images:]
        rates.append(float(np.mean(alarms)))
        episodes += int(np.sum(np.diff(np.r_[0, np.array(alarms, int)]) == 1))
        n = args.shift_at * 2
        idx = np.resize(order, n)
        strength = args.step * np.maximum(0, np.arange(n) - args.shift_at)
        shifted = np.concatenate([scores_of(det, shift(images[idx[i:i + 64]], strength[i:i + 64], args.shift, i))
                                  for i in range(0, n, 64)])
        moved.append([float(shifted[:args.shift_at].mean()), float(shifted[-50:].mean())])
        alarms = watch(shifted, cal.score_median, cal.normal_scores)
        first = next((i for i in range(args.shift_at, n) if alarms[i]), None)
        delays.append(None if first is None else first - args.shift_at)
    line = {"data": args.data, "method": args.method, "stream_images": int(len(normal)), "repeats": args.repeats,
            "false_alarm_share": float(np.mean(rates)), "alarm_episodes": episodes, "shift_at": args.shift_at,
            "shift": args.shift, "step": args.step, "delays": delays,
            "mean_score_before_and_last_50": moved, "seconds": round(time.perf_counter() - t0, 1)}
    with open(args.out, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
