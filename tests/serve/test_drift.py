"""The drift watch: a sign test of recent scores against the calibration median, quiet on a stream
like the calibration, raised on a shifted one; on /health and /metrics."""

import numpy as np

from latentad.serve.drift import Drift


def test_quiet_on_scores_like_the_calibration_and_raised_on_a_shift():
    rng = np.random.default_rng(0)
    d = Drift(window=200)
    d.add(rng.normal(size=200).tolist(), [False] * 200)
    calm = d.state(median=0.0)
    assert calm["window"] == 200 and abs(calm["z"]) < 4 and not calm["alarm"]
    d.add((rng.normal(size=150) + 1.0).tolist(), [False] * 150)  # the line shifts: most scores above
    shifted = d.state(median=0.0)
    assert shifted["z"] > 4 and shifted["alarm"] and shifted["window"] == 200
    d.clear()
    assert d.state(0.0)["window"] == 0 and not d.state(0.0)["alarm"]


def test_too_few_scores_never_alarm():
    d = Drift(min_images=30)
    d.add([5.0] * 20, [True] * 20)
    s = d.state(median=0.0)
    assert s["z"] > 4 and not s["alarm"] and s["anomaly_rate"] == 1.0


def test_against_the_calibration_scores_the_test_allows_for_few_of_them():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=33).tolist()
    zs = []
    for seed in range(200):  # windows of normal scores: z about N(0, 1) whatever the 33 calibration scores
        d = Drift(window=200)
        d.add(np.random.default_rng(seed + 10).normal(size=200).tolist(), [False] * 200)
        zs.append(d.state(None, reference)["z"])
    assert abs(np.mean(zs)) < 1.0 and np.mean(np.abs(zs) > 4) < 0.05
    d = Drift(window=200)
    d.add((rng.normal(size=200) + 1.5).tolist(), [False] * 200)
    assert d.state(None, reference)["alarm"]
