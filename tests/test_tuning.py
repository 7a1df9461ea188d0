"""Choices made on a validation split of the normal training images with synthetic defects: the
split, the choice and its record, and proof that no test image is read."""

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError
from latentad.experiments.spec import parse_spec
from latentad.runs import fit_run
from latentad.tuning import TuneSpec, tune, validation_split

CANDIDATES = [{"levels": ["stage4"]}, {"levels": ["stage3", "stage4"]}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=12, n_test_good=3, n_test_defect=3, size=48)
    return root


def test_validation_split_holds_out_normal_images_with_and_without_a_defect():
    train = make_synthetic(n_train=10, size=32).train
    fit, val = validation_split(train, 0.3, seed=0)
    assert len(fit) == 7 and len(val) == 6
    assert list(val.labels) == [0, 1, 0, 1, 0, 1]
    fit_paths = {r.path for r in fit.records}
    held = [r.path for r in val.records if r.label == 0]
    assert not fit_paths & set(held) and fit_paths | set(held) == {r.path for r in train.records}
    batch = val.load_all()
    masks = batch.masks.numpy() > 0.5
    assert not masks[0::2].any() and all(m.any() for m in masks[1::2])
    again = validation_split(train, 0.3, seed=0)[1].load_all()
    assert np.array_equal(batch.images.numpy(), again.images.numpy())  # same seed, same defects
    other = validation_split(train, 0.3, seed=1)[1]
    assert [r.path for r in other.records] != [r.path for r in val.records]


def test_too_few_images_and_bad_tables_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="too few"):
        validation_split(make_synthetic(n_train=3, size=32).train, 0.2, seed=0)
    with pytest.raises(ConfigError, match="at least two"):
        TuneSpec.parse({"candidates": [{"levels": ["stage4"]}]})
    with pytest.raises(ConfigError, match="criterion"):
        TuneSpec.parse({"candidates": CANDIDATES, "criterion": "f1"})
    with pytest.raises(ConfigError, match="unknown key 'fractio'"):
        TuneSpec.parse({"candidates": CANDIDATES, "fractio": 0.2})


def test_tune_keeps_the_best_candidate_by_its_criterion():
    train = make_synthetic(n_train=12, size=48).train
    record = tune("padim", None, {"image_size": 48}, TuneSpec.parse({"candidates": CANDIDATES}), train, seed=0)
    assert record["criterion"] == "pixel_auroc"
    values = [c["pixel_auroc"] for c in record["candidates"]]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert record["chosen"] == CANDIDATES[int(np.argmax(values))]
    assert "no test image read" in record["data"]
    with pytest.raises(ConfigError, match="gives no maps"):
        tune("gaussian", None, {"image_size": 48}, TuneSpec.parse({"candidates": CANDIDATES,
                                                                  "criterion": "pixel_auroc"}), train, 0)


def test_fit_run_records_the_choice_and_never_reads_a_test_image(data, tmp_path, no_test_images):
    out = tmp_path / "run"
    fit_run(out, "padim", str(data), "auto", {}, None, {"image_size": 48}, 0, False, False, 0.1, 0.01,
                 tune={"candidates": CANDIDATES})
    config = json.loads((out / "config.json").read_text())
    chosen = config["tuning"]["chosen"]
    assert chosen in CANDIDATES and list(config["detector_config"]["levels"]) == chosen["levels"]
    assert json.loads((out / "tuning.json").read_text())["chosen"] == chosen


def test_cli_fit_tune_file_and_its_errors(data, tmp_path):
    runner = CliRunner()
    f = tmp_path / "tune.toml"
    f.write_text('[tune]\ncriterion = "mean"\ncandidates = [{sigma = 2.0}, {sigma = 4.0}]\n')
    out = tmp_path / "run"
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(out), "-o",
                              "image_size=48", "--tune", str(f)])
    assert res.exit_code == 0, res.output
    assert "tuned: {\"sigma\"" in res.output
    lines = [ln for ln in res.output.splitlines() if '{"sigma": ' in ln and ": image " in ln]
    assert len(lines) == 2 and sum(ln.startswith("*") for ln in lines) == 1 and "mean 0." in lines[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[tune]\ncandidates = [{sigma = 2.0}]\n")
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(tmp_path / "r2"),
                              "--tune", str(bad)])
    assert res.exit_code == 2 and "at least two" in res.output and "Traceback" not in res.output
    bad.write_text("[tune]\ncandidates = [{sigma = 2.0}, {sigma = -1.0}]\n")
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(tmp_path / "r3"),
                              "--tune", str(bad)])
    assert res.exit_code == 2 and "tune candidate 2 (padim)" in res.output and "Traceback" not in res.output


def test_spec_tune_table_is_checked_before_any_cell_runs(data):
    base = f'[[data]]\npath = "{data}"\n[[method]]\nname = "padim"\n'
    spec = parse_spec(base + 'tune = {candidates = [{sigma = 2.0}, {sigma = 4.0}]}\n')
    assert spec.cells()[0]["method"]["tune"]["candidates"][1] == {"sigma": 4.0}
    assert "tune" not in parse_spec(base).cells()[0]["method"]  # older finished cells keep matching
    with pytest.raises(ConfigError, match=r"\[\[method\]\] 1 tune candidate 2 \(padim\).*sigma"):
        parse_spec(base + 'tune = {candidates = [{sigma = 2.0}, {sigma = -1.0}]}\n')
    with pytest.raises(ConfigError, match=r"\[\[method\]\] 1 tune: candidates"):
        parse_spec(base + "tune = {candidates = []}\n")


def test_folds_and_the_one_standard_error_rule(monkeypatch):
    import latentad.tuning as tuning
    from latentad.tuning import _choose

    with pytest.raises(ConfigError, match="folds = 0 must be an integer"):
        TuneSpec.parse({"candidates": CANDIDATES, "folds": 0})
    with pytest.raises(ConfigError, match="one_se needs folds >= 2"):
        TuneSpec.parse({"candidates": CANDIDATES, "rule": "one_se"})
    with pytest.raises(ConfigError, match="rule = 'worst'"):
        TuneSpec.parse({"candidates": CANDIDATES, "folds": 2, "rule": "worst"})
    rows = [{"value": 0.90, "se": 0.01}, {"value": 0.93, "se": 0.02}, {"value": 0.95, "se": 0.03}]
    assert _choose(rows, "best") == 2
    assert _choose(rows, "one_se") == 1  # 0.93 >= 0.95 - 0.03: the simpler candidate within the noise
    rows[2]["se"] = 0.001
    assert _choose(rows, "one_se") == 2  # a lead beyond the noise is kept
    train = make_synthetic(n_train=12, size=48).train
    spec = TuneSpec.parse({"candidates": CANDIDATES, "folds": 2, "rule": "one_se"})
    seeds = []
    real_split = tuning.validation_split
    monkeypatch.setattr(tuning, "validation_split", lambda *a: seeds.append(a[2]) or real_split(*a))
    record = tune("padim", None, {"image_size": 48}, spec, train, seed=0)
    for row in record["candidates"]:
        assert len(row["folds"]) == 2 and row["se"] >= 0
        assert row["pixel_auroc"] == pytest.approx(np.mean([f["pixel_auroc"] for f in row["folds"]]))
        assert row["value"] == pytest.approx(row["pixel_auroc"])
    assert seeds == [0, 1]  # two different splits, each drawn once for all candidates
    assert "2 splits (seeds 0..1), rule one_se" in record["data"]
    assert record["chosen"] == CANDIDATES[_choose(record["candidates"], "one_se")]


def test_a_near_chance_validation_split_is_flagged(monkeypatch):
    import latentad.tuning as tuning

    train = make_synthetic(n_train=12, size=48).train
    spec = TuneSpec.parse({"candidates": CANDIDATES})
    figures = iter([0.55, 0.60])  # both candidates barely above chance: the split cannot rank them
    monkeypatch.setattr(tuning, "_score", lambda *a: {"image_auroc": 0.7, "pixel_auroc": next(figures)})
    with pytest.warns(UserWarning, match=r"scores 0.600 \(pixel_auroc\).*near chance.*cutpaste, scar, blend"):
        record = tune("padim", None, {"image_size": 48}, spec, train, seed=0)
    assert "near chance" in record["warning"] and record["chosen"] == CANDIDATES[1]
    figures = iter([0.55, 0.90])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an informative split: no warning
        assert tune("padim", None, {"image_size": 48}, spec, train, seed=0)["warning"] is None


def test_data_tune_settings_merge_over_each_methods_tune_table(data, tmp_path, monkeypatch):
    import latentad.experiments.cells as cells

    method = '[[method]]\nname = "padim"\ntune = {candidates = [{sigma = 2.0}, {sigma = 4.0}], folds = 2}\n'
    entry = f'[[data]]\npath = "{data}"\n'
    spec = parse_spec(entry + 'tune = {kinds = ["scar"]}\n' + method)
    cell = spec.cells()[0]
    assert cell["data"]["tune"] == {"kinds": ["scar"]}
    assert "tune" not in parse_spec(entry + method).cells()[0]["data"]  # older finished cells keep matching
    seen = {}

    def fit_run(*a, tune=None, **k):  # records what the cell hands over, then stops the cell
        seen.update(tune)
        raise ValueError("stop")

    monkeypatch.setattr("latentad.runs.fit_run", fit_run)
    cells._fit_and_evaluate(cell, tmp_path / "run", False, None)
    assert seen == {"candidates": [{"sigma": 2.0}, {"sigma": 4.0}], "folds": 2, "kinds": ["scar"]}
    with pytest.raises(ConfigError, match=r"\[\[data\]\] 1 tune: unknown key 'candidates'"):
        parse_spec(entry + 'tune = {candidates = [{}, {}]}\n' + method)
    with pytest.raises(ConfigError, match=r"\[\[data\]\] 1 tune: kinds = \['nope'\]"):
        parse_spec(entry + 'tune = {kinds = ["nope"]}\n' + method)
    with pytest.raises(ConfigError, match="has tune settings, but no \\[\\[method\\]\\] has a tune table"):
        parse_spec(entry + 'tune = {kinds = ["scar"]}\n[[method]]\nname = "padim"\n')
