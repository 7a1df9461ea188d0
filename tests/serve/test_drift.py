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
