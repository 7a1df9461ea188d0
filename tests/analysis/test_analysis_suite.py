"""`analyze` end to end on one run per family: every question answered where it applies, the json
shape scripts read, figures on disk, agreement across runs, and its errors."""

import json

import pytest
from typer.testing import CliRunner

from latentad.analysis import analyze
from latentad.cli import app
from latentad.errors import ConfigError


def test_every_question_is_answered_for_each_family(analysed):
    out, result = analysed
    saved = json.loads((out / "analysis.json").read_text())
    assert set(saved["runs"]) == {"padim", "vq", "ssl"}
    families = {name: r["family"] for name, r in saved["runs"].items()}
    assert families == {"padim": "pretrained", "vq": "reconstruction", "ssl": "selfsupervised"}
    for name, r in saved["runs"].items():
        for key in ("gaussianity", "components", "intrinsic_dimension", "projection"):
            assert r[key] and r[key]["summary"], (name, key)
        assert (r["levels"] is not None) == (name == "padim")
        assert (r["codebook"] is not None) == (name == "vq")
        pos = r["positions"]  # every family's run has maps here
        assert pos["spread_ratio"] >= 1 and 0 <= pos["normal_max_in_top_share"] <= 1 and pos["normal_images"] == 8
    assert len(saved["runs"]["padim"]["levels"]["per_level"]) >= 2  # each of padim's levels alone
    cb = saved["runs"]["vq"]["codebook"]
    assert cb["codebook_size"] == 32 and 0 < cb["codes_used"] <= 32 and cb["dead_codes"] == 32 - cb["codes_used"]
    assert set(cb["maps"]) == {"am", "ssim", "ssim_x_am"}
    assert "before_finetune" in saved["runs"]["ssl"]["components"]
    assert saved["runs"]["ssl"]["projection"]["umap"] == {"skipped": "turned off (--no-umap)"}


def test_figures_named_in_the_json_exist(analysed):
    out, result = analysed
    names = []

    def walk(d):
        for k, v in d.items():
            if k == "figure":
                names.append(v)
            elif isinstance(v, dict):
                walk(v)

    walk(result)
    assert len(names) >= 15
    for n in names:
        assert (out / "figures" / n).stat().st_size > 1000, n
    assert result["agreement"]["figure"] in names


def test_agreement_compares_the_runs_on_the_same_images(analysed):
    _, result = analysed
    a = result["agreement"]
    assert a["runs"] == ["padim", "vq", "ssl"]
    assert len(a["spearman"]) == 3 and all(a["spearman"][i][i] == 1.0 for i in range(3))
    assert 0.0 <= a["fusion_rank_average_auroc"] <= 1.0
    assert a["n_anomalous"] == 8 and a["n_normal"] == 8
    assert set(a["missed_by_all"]) <= set(a["missed"]["padim"])


def test_limit_bounds_the_images_and_keeps_both_labels(fitted, tmp_path):
    data, runs = fitted
    result = analyze([runs["padim"]], tmp_path, str(data), limit=6, use_umap=False, progress=False,
                     say=lambda _: None)
    assert result["images"]["test"] <= 7 and result["images"]["train"] <= 6
    assert result["agreement"] is None  # one run: nothing to compare
    assert result["runs"]["padim"]["components"]["auroc_all"] is not None  # both labels kept


def test_bad_input_is_one_line(fitted, tmp_path):
    data, runs = fitted
    with pytest.raises(ConfigError, match="--limit 1"):
        analyze([runs["padim"]], tmp_path, str(data), limit=1)
    res = CliRunner().invoke(app, ["analyze", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "not a latentad run folder" in res.output and "Traceback" not in res.output
