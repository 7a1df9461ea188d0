"""predict's outputs off the scoring path: a fast PNG encoder, overlays drawn from the covered pixels
only (the same pixels as the colour map over the whole image), and writer threads that keep image
order, hold a bounded number of images and hand their errors back."""

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from latentad import predict
from latentad.calibration import Calibration
from latentad.io import png_bytes
from latentad.report.figures import heat_over, outline_of, overlay, overlay_pixels


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (6, 4, 3), (3, 9, 4), (1, 1, 3)])
def test_png_bytes_decode_to_the_same_pixels(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(png_bytes(a))))
    assert back.shape == (a.shape if len(shape) == 3 and shape[2] > 1 else shape[:2])
    assert np.array_equal(back, a.reshape(back.shape))


def test_png_bytes_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 2), np.uint8))


def reference_overlay(image, amap, cal, alpha=0.5):
    """The overlay as it was drawn before: the colour map over every pixel, a full-image erosion."""
    import matplotlib.pyplot as plt

    from latentad.report.figures import heat_scale

    base = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
    low, high, threshold = heat_scale(cal)
    lo = float(np.min(amap)) if low is None else low
    hi = float(np.max(amap)) if high is None else high
    full = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(base.size, Image.BILINEAR))
    norm = np.clip((full - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = plt.get_cmap("jet")(norm)[:, :, :3] * 255
    weight = np.full(full.shape, alpha) if threshold is None else np.where(full > lo, alpha, 0.0)
    out = np.asarray(base, dtype=np.float64) * (1 - weight[..., None]) + rgb * weight[..., None]
    if threshold is not None:
        mask = full > threshold
        out[mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(max(base.size) / 300)))] = 255.0
    return out.round().astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", ["calibrated", "no pixel threshold", "none"])
def test_overlays_have_the_pixels_of_the_colour_map_over_the_whole_image(channels, scale):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (610, 640, channels), dtype=np.uint8)  # > 300 px: a 2 px outline
    amap = ndimage.gaussian_filter(rng.random((40, 40)), 2).astype(np.float32) * 8
    amap[0:6, 30:40] = 9.0  # a region at the image's border: the outline's border case
    cal = None if scale == "none" else Calibration(
        1.0, 0.01, map_low=float(np.median(amap)), map_high=float(np.quantile(amap, 0.6)), n_images=10, source="test",
        pixel_threshold=float(np.quantile(amap, 0.9)) if scale == "calibrated" else None)
    got = np.asarray(overlay(image, amap, cal))
    assert np.array_equal(got, reference_overlay(image, amap, cal))
    assert (got == 255).all(axis=2).any() == (scale == "calibrated")
    full = np.asarray(Image.fromarray(amap).resize((640, 610), Image.BILINEAR))
    assert np.array_equal(overlay_pixels(image, full, cal, amap), got)  # predict's path: the map resized once


def test_the_colour_map_table_gives_nan_the_colour_maps_bad_colour():
    base = np.full((4, 4, 3), 100, np.uint8)
    full = np.full((4, 4), np.nan, np.float32)
    full[0, 0] = 1.0
    cal = Calibration(1.0, 0.01, map_low=0.0, map_high=1.0, n_images=1, source="test")  # no pixel threshold: opaque
    out = heat_over(base, full, cal)
    assert (out[1:, 1:] == 50).all()  # half-way to black, as matplotlib's 'bad' colour


def test_outline_on_the_bounding_box_equals_the_erosion_of_the_whole_image():
    rng = np.random.default_rng(2)
    for width in (1, 2, 3):
        for _ in range(10):
            mask = ndimage.binary_dilation(rng.random((50, 60)) > 0.995, iterations=int(rng.integers(1, 6)))
            want = mask & ~ndimage.binary_erosion(mask, iterations=width)
            assert np.array_equal(outline_of(mask, width), want)
    assert not outline_of(np.zeros((5, 5), bool), 2).any()


def job(i: int, tmp: Path) -> predict.Job:
    return predict.Job(f"img{i}.png", None, (4, 4), None, None, tmp / f"{i}.png", np.zeros((4, 4, 3), np.uint8))


def test_writers_work_beside_the_scoring_thread_and_hold_at_most_ahead_images(monkeypatch, tmp_path):
    release, seen = threading.Event(), []

    def slow(j, pixel_size):
        seen.append(threading.current_thread().name)
        release.wait(10)
        return [{"path": j.name}]

    monkeypatch.setattr(predict, "write_job", slow)
    with predict.Outputs(None, workers=1, ahead=2) as out:
        t0 = time.perf_counter()
        out.add(job(0, tmp_path))
        out.add(job(1, tmp_path))
        assert time.perf_counter() - t0 < 5  # queued, not written, by the scoring thread
        third = threading.Thread(target=out.add, args=(job(2, tmp_path),))
        third.start()
        third.join(0.3)
        assert third.is_alive()  # a third image waits for room: memory stays bounded
        release.set()
        third.join(10)
        assert [r["path"] for r in out.regions()] == ["img0.png", "img1.png", "img2.png"]
    assert seen and all(name.startswith("latentad-write") for name in seen)


def test_a_writers_error_reaches_the_scoring_thread(monkeypatch, tmp_path):
    def broken(j, pixel_size):
        raise OSError(f"{j.name}: disk full")

    monkeypatch.setattr(predict, "write_job", broken)
    with pytest.raises(OSError, match="img0.png: disk full"), predict.Outputs(None, workers=1) as out:
        out.add(job(0, tmp_path))
        out.regions()


@pytest.mark.parametrize("active, threads, inside", [(True, 2, 1), (True, 4, 3), (True, 1, 1), (False, 2, 2)])
def test_scoring_leaves_a_thread_to_the_writers_and_restores_the_count(active, threads, inside):
    import torch

    from latentad.predict import room_for_writers

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with room_for_writers(active):
            assert torch.get_num_threads() == inside
        assert torch.get_num_threads() == threads
        with pytest.raises(RuntimeError), room_for_writers(active):
            raise RuntimeError("a scoring error")
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
