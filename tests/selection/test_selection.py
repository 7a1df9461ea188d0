"""`fit --method auto`: validation folds from normal images only, successive halving inside a budget,
the record it leaves, and the one-line refusals."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import latentad
from latentad.cli import app
from latentad.cli_support import parse_duration
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError
from latentad.runs import fit_run
from latentad.selection.folds import fold_figures, make_validation, min_images
from latentad.selection.portfolio import PORTFOLIO, Candidate, parse_candidates
from latentad.selection.search import Clock, Search, run_search, rung_sizes

CHEAP = "gaussian,padim"


def test_candidates_and_durations_are_parsed_or_refused_in_one_line():
    assert [c.name for c in parse_candidates("padim, gaussian")] == ["gaussian", "padim"]  # portfolio order
    assert len(parse_candidates(None)) == len(PORTFOLIO)
    with pytest.raises(ConfigError, match="unknown candidate 'padimm'.*known: gaussian"):
        parse_candidates("padim,padimm")
    assert parse_duration("10m", "--budget") == 600 and parse_duration("90s", "--budget") == 90
    assert parse_duration("1.5h", "--budget") == 5400 and parse_duration("45", "--budget") == 45
    for bad in ("ten", "-3m", "0"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_duration(bad, "--budget")


def test_every_portfolio_candidate_builds_and_all_three_families_are_there():
    for c in PORTFOLIO:
        latentad.create(c.method, c.preset, **c.options)
    assert {c.family for c in PORTFOLIO} == {"reconstruction", "pretrained", "selfsupervised"}


def test_validation_folds_hold_out_normal_images_and_show_each_with_every_defect_kind():
    train = make_synthetic(n_train=40, size=32).train
    val = make_validation(train, seed=0)
    held = {r.path for r in val.normal.records}
    assert held.isdisjoint(r.path for r in val.fit.records) and len(held) + len(val.fit) == 40
    assert np.bincount(val.groups).min() >= 2
    for kind, images in val.defective.items():
        assert [r.path.split("#")[0] for r in images.records] == [r.path for r in val.normal.records]
        a, b = val.normal.records[0].load()[0], images.records[0].load()[0]
        assert a.shape[:2] == b.shape[:2] and not np.array_equal(a, b), kind
    again = make_validation(train, seed=0)  # the same draw for the same seed
    assert np.array_equal(again.defective["scar"].records[1].load()[0], val.defective["scar"].records[1].load()[0])
    with pytest.raises(ConfigError, match=f"at least {min_images()} are needed"):
        make_validation(make_synthetic(n_train=min_images() - 1, size=32).train, seed=0)


def test_the_extra_kinds_leave_the_shipped_kinds_defects_as_they_were():
    from latentad.data.defects import ALL_KINDS, EVERY_KIND

    train = make_synthetic(n_train=40, size=32).train
    shipped, every = make_validation(train, seed=0), make_validation(train, seed=0, kinds=EVERY_KIND)
    assert tuple(shipped.defective) == ALL_KINDS and tuple(every.defective) == EVERY_KIND
    for kind in ALL_KINDS:  # a study scoring more kinds sees the same defects as `fit --method auto`
        assert np.array_equal(shipped.defective[kind].records[2].load()[0], every.defective[kind].records[2].load()[0])
    for kind in ("faint", "perlin", "view"):
        a, b = every.normal.records[2].load()[0], every.defective[kind].records[2].load()[0]
        assert a.shape == b.shape and not np.array_equal(a, b), kind


def test_fold_figures_average_kinds_per_fold_with_a_standard_error():
    groups = np.array([0, 0, 1, 1])
    normal = np.array([0.0, 0.1, 0.2, 0.3])
    fig = fold_figures(normal, {"a": np.array([1.0, 1.0, 1.0, 1.0]), "b": np.array([0.05, 0.0, 0.25, 0.0])},
                       groups, ("a", "b"))
    assert fig["per_kind"] == {"a": 1.0, "b": 0.3125}  # ties count one half
    assert fig["folds"] == [0.6875, 0.625] and fig["value"] == pytest.approx(0.65625)
    assert fig["se"] == pytest.approx(np.std([0.6875, 0.625], ddof=1) / np.sqrt(2))


class FakeSearch(Search):
    """Candidates scored by a table instead of being fitted, each taking `seconds` of budget."""

    truth: dict = {}
    spent: list = []

    def run_one(self, c, rung, fit_set):
        value, seconds = self.truth[c.name]
        self.clock.start -= seconds  # the budget is spent as if the candidate had run
        self.spent.append((c.name, rung, len(fit_set)))
        self.rows[c.name]["rungs"].append({"rung": rung, "images": len(fit_set), "value": value, "se": 0.01,
                                           "folds": [], "per_kind": {}, "fit_seconds": seconds * 0.8,
                                           "score_seconds": seconds * 0.2, "seconds": seconds})


def fake(budget, truth, names, costs=None):
    train = make_synthetic(n_train=200, size=16).train  # 60 held out (the cap), 140 to fit: three rungs
    val = make_validation(train, seed=0)
    costs = costs or [1.0 + i for i in range(len(names))]
    cands = [Candidate(n, "gaussian", cost=cost) for n, cost in zip(names, costs, strict=True)]
    s = FakeSearch(cands, val, ("cutpaste",), Clock(budget), len(train))
    s.truth, s.spent = truth, []
    return s


def test_successive_halving_keeps_the_better_half_and_records_what_was_pruned():
    assert rung_sizes(160) == [40, 80, 160] and rung_sizes(40) == [20, 40] and rung_sizes(20) == [20]
    truth = {"a": (0.80, 1), "b": (0.95, 1), "c": (0.90, 1), "d": (0.70, 1), "e": (0.60, 1)}
    s = fake(10_000, truth, list(truth))
    chosen = run_search(s)
    assert chosen.name == "b"
    assert {n for n, r, _ in s.spent if r == 0} == set(truth)
    assert {n for n, r, _ in s.spent if r == 1} == {"a", "b", "c"}
    assert {n for n, r, _ in s.spent if r == 2} == {"b", "c"}
    assert s.rows["d"]["status"] == "pruned" and s.rows["d"]["pruned"]["rung"] == 0
    assert "halving" in s.rows["d"]["pruned"]["why"] and s.rows["a"]["pruned"]["rung"] == 1


def test_a_candidate_the_budget_cannot_hold_is_skipped_and_said_so():
    truth = {"a": (0.8, 30), "b": (0.99, 5000)}
    s = fake(400, truth, ["a", "b"], costs=[1.0, 100.0])  # b's prior: a's seconds per image x 100
    chosen = run_search(s)
    assert chosen.name == "a" and s.rows["b"]["status"] == "pruned"
    assert s.rows["b"]["pruned"]["why"].startswith("budget")


def test_fit_auto_records_its_choice_never_reads_a_test_image_and_becomes_that_detector(data, tmp_path,
                                                                                       no_test_images):
    out = tmp_path / "run"
    fit_run(out, "auto", str(data), "auto", {}, None, {"budget": 600, "candidates": CHEAP}, 0, False, False,
                 0.1, None)
    record = json.loads((out / "auto.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert record["chosen"]["name"] == "ensemble(gaussian+padim)" and config["method"] == "auto"
    assert record["fusion_mode"] == "all" and record["ensemble"]["weights"] == [0.5, 0.5]
    assert config["auto"]["became"]["name"] == record["chosen"]["name"]
    assert json.loads((out / "model" / "detector.json").read_text())["method"] == record["chosen"]["method"]
    assert {r["name"] for r in record["candidates"]} == {"gaussian", "padim"}
    assert all(r["rungs"] and "se" in r["rungs"][0] for r in record["candidates"])
    assert record["traits"]["n_images"] == config["calibration"]["n_fit"] and "no test image" in record["validation"]


def test_cli_auto_fit_evaluate_predict_and_the_report(data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["fit", "--method", "auto", "--budget", "5m", "--candidates", CHEAP, "--data",
                              str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "auto chose" in res.output and sum(ln.startswith("*") for ln in res.output.splitlines()) == 1
    res = runner.invoke(app, ["evaluate", "--run", str(out), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output.strip().splitlines()[-1])
    assert shown["became"] == "ensemble(gaussian+padim)" and 0 <= shown["image_auroc"] <= 1
    html = (out / "report.html").read_text()
    assert "How auto chose" in html and (out / "maps" / "auto_candidates.png").is_file()
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "pred"), str(data / "test")])
    assert res.exit_code == 0, res.output
    best = tmp_path / "best"
    res = runner.invoke(app, ["fit", "--method", "auto", "--fusion", "best", "--budget", "5m", "--candidates", CHEAP,
                              "--data", str(data), "--out", str(best)])
    assert res.exit_code == 0, res.output
    assert json.loads((best / "auto.json").read_text())["chosen"]["name"] in ("gaussian", "padim")


@pytest.mark.parametrize("args, message", [
    (["--candidates", "gaussian,nope"], "--candidates: unknown candidate 'nope'"),
    (["--budget", "1s"], "--budget 1s: too small for even the cheapest candidate"),
    (["--budget", "soon"], "--budget soon: expected a positive duration"),
    (["-o", "sigma=2"], "--option: does not apply to --method auto"),
    (["--fusion", "some"], "--fusion 'some': expected one of all, best"),
])
def test_cli_auto_bad_input_is_one_line_exit_2_and_writes_nothing(data, tmp_path, args, message):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["fit", "--method", "auto", "--data", str(data), "--out", str(out), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_too_few_normal_images_say_how_many_are_needed(tmp_path):
    root = tmp_path / "few"
    make_synthetic(root, n_train=12, n_test_good=2, n_test_defect=2, size=32)
    res = CliRunner().invoke(app, ["fit", "--method", "auto", "--data", str(root), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and f"at least {min_images()} are needed" in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_budget_and_candidates_belong_to_auto_only(data, tmp_path):
    res = CliRunner().invoke(app, ["fit", "--method", "padim", "--budget", "5m", "--data", str(data), "--out",
                                   str(tmp_path / "r")])
    assert res.exit_code == 2 and "--budget: applies only to --method auto" in res.output


def test_create_auto_is_one_detector_that_saves_as_its_choice(tmp_path):
    split = make_synthetic(n_train=40, n_test_good=3, n_test_defect=3, size=32)
    det = latentad.create("auto", budget=600, candidates="gaussian,padim")
    det.fit(split.train)
    pred = det.predict(split.test)
    assert pred.image_scores.shape == (len(split.test),)
    loaded = latentad.load(det.save(tmp_path / "m"))
    assert loaded.name == det.record["chosen"]["method"]
    assert np.allclose(loaded.predict(split.test).image_scores, pred.image_scores)


def test_fuse_all_takes_every_fitted_candidate_at_its_own_size_with_equal_weights():
    from latentad.selection.fusion import fuse_all

    train = make_synthetic(n_train=60, size=32).train
    val = make_validation(train, seed=0)
    cands = [Candidate("gaussian", "gaussian", {"image_size": 64}), Candidate("padim", "padim", {"image_size": 48})]
    s = Search(cands, val, tuple(val.defective), Clock(1e6), 0, keep_models=True)
    for c in cands:
        s.run_one(c, 0, val.fit)
    det, spec, record = fuse_all(s, cands[0], 0)
    assert record["members"] == ["gaussian", "padim"] and record["weights"] == [0.5, 0.5]
    assert spec["method"] == "ensemble" and det.config.image_size == 64 == record["image_size"]
    assert [m["config"]["image_size"] for m in spec["options"]["specs"]] == [64, 48]  # each member as fitted
    fused = det.predict(val.normal).image_scores  # standardised on these held-out normals: mean 0 (+ offset)
    assert float(det.offset) > 1 and abs(float(fused.mean()) - float(det.offset)) < 1e-4 and 0.5 <= record["value"] <= 1


def test_a_fusion_is_kept_only_when_it_beats_the_best_single_candidate_by_more_than_the_fold_noise():
    from latentad.selection.fusion import consider

    train = make_synthetic(n_train=120, size=16).train
    val = make_validation(train, seed=0)
    kinds = tuple(val.defective)
    cands = [Candidate("a", "gaussian"), Candidate("b", "ssl_gaussian", {"epochs": 1})]
    s = Search(cands, val, kinds, Clock(1e6), len(train))
    rng = np.random.default_rng(0)
    n = len(val.normal)

    def scores(sees):  # a candidate that separates only the kinds it `sees`
        normal = rng.normal(size=n)
        return normal, {k: rng.normal(size=n) + (4.0 if k in sees else 0.0) for k in kinds}

    for c, sees in zip(cands, (kinds[:3], kinds[3:]), strict=True):
        s.raw[c.name] = scores(sees)
        s.rows[c.name]["rungs"].append({"images": 10, **fold_figures(*s.raw[c.name], val.groups, kinds)})
    best = max(cands, key=lambda c: s.rows[c.name]["rungs"][-1]["value"])
    fusion = consider(s, best)
    assert fusion["kept"] and set(fusion["members"]) == {"a", "b"} and fusion["value"] > 0.9
    s.raw["b"] = (s.raw["b"][0], {k: rng.normal(size=n) for k in kinds})  # b adds nothing: no fusion
    s.rows["b"]["rungs"][-1] = {"images": 10, **fold_figures(*s.raw["b"], val.groups, kinds)}
    fusion = consider(s, cands[0])
    assert not fusion["kept"] and "no gain" in fusion["why"]
