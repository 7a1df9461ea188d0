"""The operator page as an operator uses it: headless Debian chromium (Playwright, executable_path)
against a real server on loopback; upload two images, see two verdicts and two overlays, recalibrate,
no console error; on a multi-class run, a product selector for the writes. Skips, saying why,
without chromium or Playwright (CI installs both and requires it)."""

import os
import shutil

import pytest
from typer.testing import CliRunner

from latentad.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_or_skip():
    missing = None
    if CHROMIUM is None:
        missing = "no chromium on this machine (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "Playwright for Python is not installed"
    if missing:
        if os.environ.get("LATENTAD_REQUIRE_BROWSER"):
            pytest.fail(f"LATENTAD_REQUIRE_BROWSER is set but {missing}")
        pytest.skip(missing)


def logged_in(p, base: str, errors: list[str]):
    """A browser on the operator page, the token entered; console errors go to `errors`."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.fill("#token", "s3cret")
    page.dispatch_event("#token", "change")
    return browser, page


def upload_two(p, base: str, images, errors: list[str]):
    """`logged_in`, after uploading two images (both cards shown)."""
    browser, page = logged_in(p, base, errors)
    page.set_input_files("#files", [str(images[0]), str(images[-1])])
    page.wait_for_selector(".card:nth-child(2)", timeout=60_000)
    return browser, page


def test_operator_page_scores_two_uploads_and_recalibrates(server, images, data):
    browser_or_skip()
    from playwright.sync_api import sync_playwright

    base, api = server
    errors: list[str] = []
    with sync_playwright() as p:
        browser, page = upload_two(p, base, images, errors)
        cards = page.locator(".card")
        assert cards.count() == 2
        verdicts = page.locator(".card .verdict").all_inner_texts()
        assert sorted(verdicts) == sorted(v for v in verdicts if v in ("normal", "anomalous")) and len(verdicts) == 2
        sizes = page.eval_on_selector_all(".card img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(sizes) == 2 and all(done and w > 0 for done, w in sizes), sizes
        page.wait_for_function("document.getElementById('scored').textContent === '2'", timeout=10_000)
        before = api.state.service.calibration.image_threshold
        page.set_input_files("#good", [str(f) for f in sorted(data.glob("train/good/*.png"))])
        page.fill("#fpr", "0.3")
        page.click("#recalibrate")
        page.wait_for_function("document.getElementById('calstatus').textContent.startsWith('new threshold')",
                               timeout=60_000)
        assert api.state.service.calibration.image_threshold != before
        page.set_input_files("#files", [str(images[1])])  # the new threshold is shown on the next verdict
        page.wait_for_selector(".card:nth-child(3)", timeout=60_000)
        assert f"{api.state.service.calibration.image_threshold:.5g}"[:4] in page.locator(".card").first.inner_text()
        browser.close()
    assert errors == []


def test_operator_page_shows_regions_scale_drift_and_takes_a_false_alarm(server, images):
    browser_or_skip()
    from dataclasses import replace

    from playwright.sync_api import sync_playwright

    base, api = server
    service = api.state.service
    service.calibrations.current[None] = replace(service.calibration, image_threshold=-1e30)  # every part flagged
    errors: list[str] = []
    with sync_playwright() as p:
        browser, page = upload_two(p, base, images, errors)
        assert all(t.endswith("px") or t.startswith("no region") or "region" in t
                   for t in page.locator(".card .regions").all_inner_texts())
        page.wait_for_function("document.getElementById('pixthr').textContent !== '?'", timeout=10_000)
        assert float(page.inner_text("#pixthr")) == pytest.approx(service.calibration.pixel_threshold, rel=1e-3)
        page.wait_for_function("document.querySelector('#trend polyline') !== null", timeout=10_000)
        assert page.inner_text("#drift").startswith("z ")
        page.locator(".markgood").first.click()
        page.wait_for_function("document.getElementById('nfeedback').textContent === '1'", timeout=20_000)
        assert len(service.feedback.entries()) == 1
        page.click("#usefeedback")
        page.wait_for_function("document.getElementById('calstatus').textContent.includes('parts marked good')",
                               timeout=20_000)
        browser.close()
    assert errors == []


@pytest.fixture
def multi(two, tmp_path):
    """A multi-class run (padim on two synthetic products)."""
    out = tmp_path / "multi"
    res = CliRunner().invoke(app, ["fit", "--method", "padim", "-o", "image_size=32", "--data", str(two / "alpha"),
                                   "--data", str(two / "beta"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_operator_page_on_a_multi_class_run_recalibrates_the_product_chosen(server_factory, multi, two, tmp_path):
    browser_or_skip()
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    base, api, _ = server_factory(multi)
    service = api.state.service
    alpha, beta = (service.calibrations.get(p).image_threshold for p in ("alpha", "beta"))
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(noise)
    errors: list[str] = []
    with sync_playwright() as p:
        browser, page = logged_in(p, base, errors)
        page.wait_for_selector("#productrow:not([hidden])", timeout=10_000)
        assert page.eval_on_selector_all("#product option", "els => els.map(e => e.value)") == ["alpha", "beta"]
        page.select_option("#product", "beta")
        page.set_input_files("#good", [str(f) for f in sorted((two / "beta").glob("train/good/*.png"))])
        page.fill("#fpr", "0.3")
        page.click("#recalibrate")
        page.wait_for_function("document.getElementById('calstatus').textContent.startsWith('new threshold')",
                               timeout=60_000)
        assert service.calibrations.get("beta").image_threshold != beta
        assert service.calibrations.get("alpha").image_threshold == alpha
        page.set_input_files("#files", [str(noise)])
        page.wait_for_selector(".card", timeout=60_000)
        assert "routed unknown" in page.locator(".card").first.inner_text()
        browser.close()
    assert errors == []
