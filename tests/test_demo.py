"""The demo's path at small scale: one method of each family fitted on the same images, one page that
compares them, and an earlier demo never overwritten unless asked."""

import json

import pytest

from latentad.data.synthetic import make_synthetic
from latentad.demo import run_demo
from latentad.errors import ConfigError

TINY = {"ae_l2": {"image_size": 32, "augment_to": 16, "base_width": 8, "latent_dim": 8, "epochs": 1},
        "padim": {"image_size": 64},
        "ssl_gaussian": {"image_size": 64, "epochs": 1, "batch_size": 8, "objective": "contrastive"},
        "auto": {"budget": 300, "candidates": "gaussian,padim"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=40, n_test_good=4, n_test_defect=4, size=64)
    return root


def demo(out, data, force=False):
    return run_demo(out, force, methods=list(TINY), data=(str(data), "mvtec", {}), method_options=TINY)


def test_one_page_compares_the_three_families(data, tmp_path):
    out = tmp_path / "demo"
    result = demo(out, data)
    assert {m["family"] for m in result["methods"].values()} == {"reconstruction", "pretrained", "selfsupervised",
                                                                 "fusion (auto)"}
    page = (out / "comparison.html").read_text()
    assert "fused gaussian, padim with equal weights" in page  # the auto run's members and why, from auto.json
    heat = sorted((out / "compare").glob("*_heat.png"))
    assert heat and len(heat) == len([p for p in (out / "compare").glob("*.png") if p.name != "roc.png"]) // 2
    for name in TINY:
        assert name in page and (out / name / "report.html").is_file()
        assert 0.0 <= result["methods"][name]["image_auroc"] <= 1.0
    assert "compare/roc.png" in page and (out / "compare" / "roc.png").is_file()
    assert "F1-max (oracle)" in page and "FPR at threshold" in page
    assert json.loads((out / "demo.json").read_text())["page"].endswith("comparison.html")


def test_an_earlier_demo_is_kept_unless_forced(data, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")
    (out / "keep.txt").write_text("earlier")
    with pytest.raises(ConfigError, match="--force"):
        demo(out, data)
    assert (out / "keep.txt").is_file()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not a demo folder"):
        demo(other, data, force=True)
    assert (other / "thesis.tex").is_file()
