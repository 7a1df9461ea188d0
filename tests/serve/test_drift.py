"""The drift watch: each block of scores tested once against the calibration scores, quiet on a stream
like the calibration, raised on a shifted one, at the false-alarm rate it states; kept across a
restart when its reference is the same."""

import numpy as np
from scipy.stats import norm

from latentad.serve.drift import Drift


def test_each_block_is_tested_once_quiet_when_calm_raised_on_a_shift():
    rng = np.random.default_rng(0)
    d = Drift(window=200, median=0.0)
    assert d.add(rng.normal(size=200).tolist(), [False] * 200)  # a block completed
    calm = d.state()
    assert calm["window"] == 0 and calm["blocks"] == 1 and abs(calm["last_block"]["z"]) < 4 and not calm["alarm"]
    assert not d.add((rng.normal(size=150) + 1.0).tolist(), [False] * 150)  # the line shifts
    partial = d.state()
    assert partial["z"] > 4 and not partial["alarm"]  # the incomplete block is shown, never alarms
    d.add((rng.normal(size=50) + 1.0).tolist(), [False] * 50)
    shifted = d.state()
    assert shifted["alarm"] and shifted["last_block"]["z"] > 4 and shifted["alarms"] == 1 and shifted["blocks"] == 2
    d.clear()
    assert d.state()["window"] == 0 and not d.state()["alarm"]


def test_the_false_alarm_rate_per_block_is_the_stated_one_over_references():
    """Blocks of normal scores against few calibration scores: the share of blocks alarming is the
    two-sided normal rate of the level (here level 2: 4.6 %), averaged over the reference's draw;
    each block counts once, whatever the blocks share."""
    alarms, blocks = 0, 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        d = Drift(window=100, level=2.0, reference=rng.normal(size=33).tolist())
        d.add(rng.normal(size=400).tolist(), [False] * 400)
        alarms, blocks = alarms + d.state()["alarms"], blocks + d.state()["blocks"]
    assert blocks == 1200 and abs(alarms / blocks - 2 * norm.sf(2.0)) < 0.02


def test_a_sliding_window_alarms_in_runs_where_blocks_alarm_once():
    """What the old watch did: tested after every image on a window sharing 199 scores with the
    previous test, one excursion raised the alarm for many images in a row."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=33).tolist()
    stream = np.r_[rng.normal(size=400), rng.normal(size=60) + 1.5, rng.normal(size=340)]
    sliding = Drift(window=10**9, reference=reference)
    raised = 0
    for i in range(200, len(stream)):
        sliding.clear()
        sliding.add(stream[i - 200:i].tolist(), [False] * 200)
        raised += abs(sliding.state()["z"]) > 2.5
    blocks = Drift(window=200, level=2.5, reference=reference)
    blocks.add(stream.tolist(), [False] * len(stream))
    assert raised > 20 and blocks.state()["alarms"] <= 2


def test_a_watch_is_restored_only_against_the_same_reference():
    d = Drift(window=10, level=2.0, reference=[0.0, 1.0, 2.0])
    d.add([5.0] * 13, [True] * 13)
    saved = d.to_dict()
    same = Drift(window=10, level=2.0, reference=[0.0, 1.0, 2.0])
    assert same.restore(saved) and same.state()["window"] == 3 and same.state()["alarm"]
    other = Drift(window=10, reference=[0.0, 1.0, 3.0])
    assert not other.restore(saved) and other.state()["window"] == 0


def test_the_service_keeps_its_watch_across_a_restart_until_the_reference_changes(run, images, data):
    from fastapi.testclient import TestClient

    from latentad.serve.app import create_app

    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    api = create_app(run)
    with TestClient(api, base_url="http://127.0.0.1") as c:
        c.post("/predict", files=files)
        assert c.get("/health").json()["drift"]["window"] == len(images)
    api.state.service.close()
    api = create_app(run)  # a restart takes the watch up where it was
    normals = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(data.glob("train/good/*.png"))]
    with TestClient(api, base_url="http://127.0.0.1") as c:
        assert c.get("/health").json()["drift"]["window"] == len(images)
        c.post("/calibrate", files=normals, data={"target_fpr": "0.2"})
        assert c.get("/health").json()["drift"]["window"] == 0  # new reference scores: a new watch
    api.state.service.close()
