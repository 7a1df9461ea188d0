"""The operator page as an operator uses it: headless Debian chromium (Playwright, executable_path)
against a real server on loopback; upload two images, see two verdicts and two overlays, recalibrate,
no console error. Skips, saying why, without chromium or Playwright (CI installs both and requires it)."""

import os
import shutil

import pytest

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


def upload_two(p, base: str, images, errors: list[str]):
    """A browser page on the operator page, logged in, after uploading two images (both cards shown);
    console errors go to `errors`."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.fill("#token", "s3cret")
    page.dispatch_event("#token", "change")
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
