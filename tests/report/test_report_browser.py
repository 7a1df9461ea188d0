"""The run report as a reader sees it: rendered by a real browser (Debian's chromium, headless), every
figure loads, the title names the data, counts read as integers. Skips, saying why, without chromium."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute("data-probe", JSON.stringify({title: document.title, imgs: imgs,
    cells: [...document.querySelectorAll("td")].map(td => td.textContent.trim())}));
});</script>"""


def test_report_renders_with_every_figure_in_a_browser(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("LATENTAD_REQUIRE_BROWSER"):  # CI installs chromium: there, a skip would hide a failure
            pytest.fail("LATENTAD_REQUIRE_BROWSER is set but chromium is not installed")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    data = tmp_path / "cat"
    make_synthetic(data, n_train=10, n_test_good=3, n_test_defect=3, size=48)
    run = tmp_path / "run"
    runner = CliRunner()
    tiny = ["-o", "image_size=32", "-o", "augment_to=16", "-o", "base_width=8", "-o", "latent_dim=8", "--epochs", "1"]
    fit = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(run), *tiny])
    assert fit.exit_code == 0, fit.output
    assert runner.invoke(app, ["evaluate", "--run", str(run)]).exit_code == 0
    page = (run / "report.html").read_text()
    (run / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))  # the same page, plus a probe
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", (run / "probe.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["title"] == "latentad report: ae_l2 on cat (MVTec layout)"
    srcs = {src for src, _, _ in probe["imgs"]}
    assert {"maps/score_histogram.png", "maps/roc_pro.png"} <= srcs and len(probe["imgs"]) >= 8
    broken = [src for src, w, h in probe["imgs"] if not (w > 0 and h > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert "6" in probe["cells"] and not any(c.endswith(".0000") and c[:-5].isdigit() and int(c[:-5]) > 1
                                             for c in probe["cells"])
