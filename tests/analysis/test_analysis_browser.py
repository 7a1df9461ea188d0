"""The analysis page as a reader sees it: rendered by headless chromium, no console error, every
embedded figure decodes. Skips, saying why, without chromium (CI installs it and requires it)."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE_HEAD = """<script>window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.target && e.target.src)), true);
const __ce = console.error; console.error = (...a) => { window.__errors.push(a.join(" ")); __ce(...a); };
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute("data-probe", JSON.stringify({title: document.title, imgs: imgs,
    errors: window.__errors, h2: [...document.querySelectorAll("h2")].map(h => h.textContent.trim())}));
});</script>"""


def test_analysis_page_renders_with_every_figure(analysed):
    if CHROMIUM is None:
        if os.environ.get("LATENTAD_REQUIRE_BROWSER"):
            pytest.fail("LATENTAD_REQUIRE_BROWSER is set but chromium is not installed")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    out, result = analysed
    page = (out / "analysis.html").read_text()
    assert "figures/" not in page  # self-contained: figures are embedded
    probe_page = out / "probe.html"
    probe_page.write_text(page.replace("<head>", "<head>" + PROBE_HEAD, 1))
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", probe_page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    found = re.search(r'data-probe="([^"]*)"', run.stdout)
    assert found, run.stdout[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == []
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", run.stderr), run.stderr[-2000:]
    assert probe["title"].startswith("latentad analysis: cat")
    assert len(probe["imgs"]) >= 15
    broken = [alt for alt, w, h in probe["imgs"] if not (w > 0 and h > 0)]
    assert not broken, f"figures that did not load: {broken}"
    sections = {"padim (padim, pretrained)", "vq (vqvae_ssim_am, reconstruction)", "Do the families agree?"}
    assert sections <= set(probe["h2"])
    assert len(result["findings"]) >= 12
