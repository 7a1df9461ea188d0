"""`fit --method auto` when things go wrong: a candidate that raises, a budget too small for the pool,
a --config file with a numeric budget, a deadline per candidate, a member without spread, the device."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.selection import fusion
from latentad.selection.auto import AutoDetector
from latentad.selection.folds import make_validation
from latentad.selection.portfolio import PORTFOLIO, Candidate, parse_candidates
from latentad.selection.search import DEADLINE_FACTOR, DEADLINE_FLOOR, FAILPOINT, Clock, Search

CHEAP = "gaussian,padim"


def test_a_candidate_that_raises_is_pruned_with_its_error_and_the_fit_goes_on(data, tmp_path, monkeypatch):
    monkeypatch.setenv(FAILPOINT, "padim")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["fit", "--method", "auto", "--candidates", "gaussian,padim,patchcore",
                                   "--budget", "5m", "--data", str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "auto.json").read_text())
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["padim"]["status"] == "pruned" and "failpoint" in rows["padim"]["pruned"]["why"]
    assert rows["padim"]["pruned"]["why"].startswith("failed: RuntimeError")
    assert record["chosen"]["name"] == "ensemble(gaussian+patchcore)" and record["budget_limited"] is False


def test_every_candidate_failing_is_one_line_naming_the_errors(data, tmp_path, monkeypatch):
    monkeypatch.setenv(FAILPOINT, "gaussian")
    res = CliRunner().invoke(app, ["fit", "--method", "auto", "--candidates", "gaussian", "--budget", "5m",
                                   "--data", str(data), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "every candidate run failed" in res.output and "Traceback" not in res.output


def test_a_budget_too_small_for_the_pool_says_budget_limited(data, tmp_path):
    pool = [Candidate("gaussian", "gaussian"), Candidate("padim", "padim"),
            Candidate("costly", "padim", cost=10_000.0)]  # its prior alone exceeds the budget
    det = AutoDetector(budget=300, candidates=pool)
    from latentad.data.open import open_dataset

    det.fit(open_dataset(str(data), size=None).train)
    rows = {r["name"]: r for r in det.record["candidates"]}
    assert rows["costly"]["pruned"]["why"].startswith("budget") and det.record["budget_limited"] is True
    assert det.record["chosen"]["name"] == "ensemble(gaussian+padim)"


def test_the_cli_prints_one_line_when_the_budget_left_candidates_out(data, tmp_path, monkeypatch):
    import latentad.selection.portfolio as portfolio

    costly = tuple(Candidate(c.name, c.method, c.options, c.preset, 10_000.0 if c.name == "padim" else c.cost)
                   for c in portfolio.PORTFOLIO)
    monkeypatch.setattr(portfolio, "PORTFOLIO", costly)
    res = CliRunner().invoke(app, ["fit", "--method", "auto", "--candidates", CHEAP + ",patchcore", "--budget",
                                   "5m", "--data", str(data), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert sum("budget_limited" in line for line in res.output.splitlines()) == 1


def test_a_config_file_takes_a_numeric_budget_and_a_list_of_candidates(data, tmp_path):
    cfg = tmp_path / "auto.toml"
    out = tmp_path / "run"
    cfg.write_text(f'method = "auto"\nbudget = 300\ncandidates = ["gaussian", "padim"]\ndata = "{data}"\n'
                   f'out = "{out}"\n')
    res = CliRunner().invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "auto.json").read_text())
    assert record["budget_seconds"] == 300 and {r["name"] for r in record["candidates"]} == {"gaussian", "padim"}
    cfg.write_text(f'method = "auto"\nbudget = -3\ndata = "{data}"\nout = "{tmp_path / "r2"}"\n')
    res = CliRunner().invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 2 and "--budget" in res.output
    assert [c.name for c in parse_candidates(["padim", "gaussian"])] == ["gaussian", "padim"]


def test_a_candidates_deadline_is_a_multiple_of_its_estimate_not_the_whole_budget():
    val = make_validation(make_synthetic(n_train=60, size=16).train, seed=0)
    s = Search([Candidate("gaussian", "gaussian")], val, ("scar",), Clock(3600), 0)
    estimate = s.estimate(s.candidates[0], 20)
    allowed = s.deadline(s.candidates[0], 20, 3000.0)
    assert allowed == pytest.approx(max(DEADLINE_FLOOR, DEADLINE_FACTOR * estimate)) and allowed < 3000.0
    assert s.deadline(s.candidates[0], 20, 5.0) == 5.0  # never past what the budget leaves


def test_a_member_without_spread_is_left_out_of_the_fusion_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    assert fusion.flat(np.full(10, 3.25)) and fusion.flat(np.full(10, 1e6) + rng.normal(0, 1e-3, 10))
    assert not fusion.flat(rng.normal(5.0, 0.1, 10))
    val = make_validation(make_synthetic(n_train=40, size=32).train, seed=0)
    pool = parse_candidates("gaussian,padim,patchcore")
    s = Search(pool, val, ("scar",), Clock(3600), 0, keep_models=True)
    for c in pool:
        s.run_one(c, 0, val.fit)
    normal, defective = s.raw["patchcore"]
    s.raw["patchcore"] = (np.full_like(normal, 2.0), defective)  # as if every normal image scored the same
    with caplog.at_level("WARNING", logger="latentad"):
        det, spec, record = fusion.fuse_all(s, pool[0], 0)
    assert record["members"] == ["gaussian", "padim"] and "without spread" in record["why"]
    assert any("patchcore" in m and "fusion" in m for m in caplog.messages)


def test_the_default_pool_does_not_train_what_the_fusion_would_leave_out():
    auto = AutoDetector()
    assert all(c.fused for c in auto.pool()) and len(auto.pool()) < len(PORTFOLIO)
    assert {c.name for c in AutoDetector(fusion="best").pool()} == {c.name for c in PORTFOLIO}
    named = AutoDetector(candidates="gaussian,vqvae_ssim_am")  # named by the user: trained
    assert [c.name for c in named.pool()] == ["gaussian", "vqvae_ssim_am"]
