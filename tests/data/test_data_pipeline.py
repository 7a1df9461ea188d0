"""Decoding ahead of the model: same batches in the same order with any number of threads, errors
still name the file, memory bounded by the look-ahead; predict decodes each file once and draws
overlays only where asked."""

import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.open import open_dataset
from latentad.data.pipeline import decode_workers, prefetched, set_decode_workers
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError, DataError


def test_prefetched_keeps_order_and_bounds_the_look_ahead():
    started, lock = [], threading.Lock()

    def load(i):
        with lock:
            started.append(i)
        time.sleep(0.001 * (i % 3))
        return i * i

    out = []
    for k, v in enumerate(prefetched(range(50), load, workers=3, ahead=4)):
        out.append(v)
        with lock:
            assert max(started) <= k + 5  # never more than `ahead` (+ the one just handed out) in flight
    assert out == [i * i for i in range(50)]
    assert list(prefetched(range(5), load, workers=0)) == [0, 1, 4, 9, 16]


def test_prefetched_raises_the_loader_error():
    def load(i):
        if i == 7:
            raise DataError("img7.png: cannot open image (truncated)")
        return i

    with pytest.raises(DataError, match="img7.png"):
        list(prefetched(range(20), load, workers=2, ahead=3))


def test_batches_are_identical_with_and_without_threads(tmp_path):
    make_synthetic(tmp_path / "c", n_train=9, n_test_good=2, n_test_defect=3, size=40)
    test = open_dataset(str(tmp_path / "c")).test.with_size(32)
    a = list(test.batches(2, workers=0))
    b = list(test.batches(2, workers=3))
    assert [x.paths for x in a] == [x.paths for x in b]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.images, y.images) and torch.equal(x.masks, y.masks)


def test_decode_workers_setting(monkeypatch):
    set_decode_workers(2)
    assert decode_workers() == 2
    set_decode_workers(None)
    monkeypatch.setenv("LATENTAD_DECODE_WORKERS", "0")
    assert decode_workers() == 0
    monkeypatch.setenv("LATENTAD_DECODE_WORKERS", "many")
    with pytest.raises(ConfigError, match="LATENTAD_DECODE_WORKERS"):
        decode_workers()
    with pytest.raises(ConfigError, match="--workers -1"):
        set_decode_workers(-1)


def test_predict_overlays_option_and_one_decode_per_file(tmp_path, monkeypatch):
    import latentad.data.base as base

    data = tmp_path / "cat"
    make_synthetic(data, n_train=10, n_test_good=3, n_test_defect=3, size=48)
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(run),
                               "-o", "image_size=32"]).exit_code == 0
    calls = []
    real = base.read_image_file
    monkeypatch.setattr(base, "read_image_file",
                        lambda p, mode=None, at_least=None: calls.append(str(p)) or real(p, mode, at_least))
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "all"), str(data / "test")])
    assert res.exit_code == 0, res.output
    assert len(calls) == len(set(calls)) == 6  # scoring and overlays share one decode
    assert len(list((tmp_path / "all" / "overlays").glob("*.png"))) == 6
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "none"), "--overlays", "none",
                              str(data / "test")])
    assert res.exit_code == 0 and not (tmp_path / "none" / "overlays").exists()
    assert (tmp_path / "none" / "scores.csv").read_text() == (tmp_path / "all" / "scores.csv").read_text()
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "an"), "--overlays",
                              "anomalous", str(data / "test")])
    flagged = sum(line.endswith(",1") for line in (tmp_path / "an" / "scores.csv").read_text().splitlines())
    assert res.exit_code == 0 and len(list((tmp_path / "an" / "overlays").glob("*.png"))) == flagged
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "x"), "--overlays", "some",
                              str(data / "test")])
    assert res.exit_code == 2 and "--overlays some" in res.output


def test_large_jpegs_are_decoded_at_a_reduced_size_that_still_covers_the_input(tmp_path):
    import numpy as np
    from PIL import Image

    from latentad.data.base import ImageSet, file_record, read_image_file

    rng = np.random.default_rng(0)
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 255, (512, 640, 3), dtype=np.uint8)).save(big, quality=90)
    assert read_image_file(big).shape == (512, 640, 3)
    assert read_image_file(big, at_least=(64, 64)).shape == (64, 80, 3)  # 1/8, still >= 64 on both sides
    assert read_image_file(big, at_least=(200, 200)).shape == (256, 320, 3)  # 1/2: 1/4 would not cover 200
    png = tmp_path / "big.png"
    Image.open(big).save(png)
    assert read_image_file(png, at_least=(64, 64)).shape == (512, 640, 3)  # PNG: no reduced decoding
    images = ImageSet([file_record(big, 0, "good", "RGB", None, False)], 64, 3, False, "x")
    sample = images[0]
    assert tuple(sample.image.shape) == (3, 64, 64) and sample.orig_size == (64, 80)
