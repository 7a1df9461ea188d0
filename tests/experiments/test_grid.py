"""The grid: the same metrics on a Dask LocalCluster as with the local executor, a killed grid
resumed without rerunning finished cells, failing cells recorded, results and tables written."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentad.data.synthetic import make_synthetic
from latentad.experiments.benchmark import run_grid
from latentad.experiments.paper import paper_layout, paper_spec
from latentad.experiments.spec import parse_spec

TINY_AE = "{image_size = 32, augment_to = 16, base_width = 8, latent_dim = 8, epochs = 1}"


def write_spec(tmp_path, seeds="[0]", extra=""):
    make_synthetic(tmp_path / "data" / "syn", n_train=12, n_test_good=4, n_test_defect=4, size=32)
    text = f"""[benchmark]
seeds = {seeds}
[[data]]
root = "{tmp_path / "data"}"
categories = "*"
[[method]]
name = "padim"
options = {{image_size = 32}}
[[method]]
name = "ae_l2"
options = {TINY_AE}
{extra}"""
    (tmp_path / "spec.toml").write_text(text)
    return parse_spec(text)


def rows(out):
    return {(r["data"], r["label"], r["seed"]): r for r in csv.DictReader(open(out / "results.csv"))}


def test_dask_local_cluster_gives_the_local_results(tmp_path):
    pytest.importorskip("distributed")
    spec = write_spec(tmp_path)
    local = run_grid(spec, tmp_path / "local", say=lambda _: None)
    dask = run_grid(spec, tmp_path / "dask", executor="dask", scheduler="local:2", say=lambda _: None)
    assert [r["status"] for r in local] == ["done", "done"] == [r["status"] for r in dask]
    for a, b in zip(local, dask, strict=True):
        for m in ("image_auroc", "pixel_auroc", "aupro"):
            assert abs(a[m] - b[m]) < 1e-6, (a["label"], m)
    pool = run_grid(spec, tmp_path / "pool", workers=2, say=lambda _: None)  # two local processes
    assert [r["threads"] for r in pool] == [max(1, (os.cpu_count() or 1) // 2)] * 2
    for a, b in zip(local, pool, strict=True):
        assert abs(a["image_auroc"] - b["image_auroc"]) < 1e-6 and abs(a["pixel_auroc"] - b["pixel_auroc"]) < 1e-6
    r = rows(tmp_path / "dask")
    assert set(r) == {("syn", "padim", "0"), ("syn", "ae_l2", "0")}
    assert (tmp_path / "dask" / "runs" / "syn" / "padim" / "seed0" / "metrics.json").is_file()
    table = (tmp_path / "dask" / "tables.md").read_text()
    assert "| syn | padim | 1 |" in table and "| syn | ae_l2 | 1 |" in table and "Wilcoxon" in table


def test_a_killed_grid_resumes_without_rerunning_finished_cells(tmp_path):
    write_spec(tmp_path, seeds="[0, 1]")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "latentad.cli", "benchmark", str(tmp_path / "spec.toml"),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "runs" / "syn" / "padim" / "seed0" / "cell.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (first.is_file() and '"done"' in first.read_text()):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(first.read_text())["status"] == "done"
    stamp = first.stat().st_mtime_ns
    seen = []
    result = run_grid(parse_spec((tmp_path / "spec.toml").read_text()), out, say=seen.append)
    assert first.stat().st_mtime_ns == stamp  # not run again
    assert any("skipped 1" in line or "skipped 2" in line for line in seen)
    assert [r["status"] for r in result] == ["done"] * 4


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path):
    bad = '[[method]]\nname = "padim"\nlabel = "padim-bad"\noptions = {image_size = 32, levels = ["stage9"]}'
    try:
        spec = write_spec(tmp_path, extra=bad)
    except Exception as exc:  # refused up front is fine too, as long as it names the option
        assert "stage9" in str(exc)
        return
    result = run_grid(spec, tmp_path / "out", say=lambda _: None)
    status = {r["label"]: r for r in result}
    assert status["padim"]["status"] == "done" and status["padim-bad"]["status"] == "failed"
    assert "stage9" in status["padim-bad"]["error"] and "\n" not in status["padim-bad"]["error"]
    assert "padim-bad" in (tmp_path / "out" / "tables.md").read_text()


def _cifar_writer():
    path = Path(__file__).parents[1] / "data" / "test_data_cifar.py"
    spec = importlib.util.spec_from_file_location("cifar_files", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._write_batches


def test_paper_table3_on_the_published_cifar_layout(tmp_path):
    _cifar_writer()(tmp_path / "cifar", per_batch=20, n_test=30)
    spec = paper_spec("table3", tmp_path / "cifar", only=["airplane"])
    assert [m.name for m in spec.methods] == ["ae_l2", "dsvdd", "vqvae_ssim", "vqvae_ssim_am"]
    assert [d.options for d in spec.data] == [{"normal_class": 0}]
    full = paper_spec("table3", tmp_path / "cifar")
    assert len(full.data) == 10 and full.data[9].name == "truck"
    fast = {"ae_l2": {"epochs": 1}, "dsvdd": {"epochs": 1, "pretrain_epochs": 1},
            "vqvae_ssim": {"epochs": 1}, "vqvae_ssim_am": {"epochs": 1}}
    spec.methods = [type(m)(m.name, m.label, m.preset, {**m.options, **fast[m.name]}) for m in spec.methods]
    result = run_grid(spec, tmp_path / "out", paper="table3", say=lambda _: None)
    assert all(r["status"] == "done" for r in result), [r["error"] for r in result]
    text = (tmp_path / "out" / "paper_table.md").read_text()
    assert "Table 3" in text and "| airplane |" in text and "/ 0.62" in text  # published DSVDD beside ours
    assert paper_layout("table3", result) == text


def test_paper_table1_finds_the_categories(tmp_path):
    for c in ("bottle", "screw", "notmvtec"):
        make_synthetic(tmp_path / c, n_train=4, n_test_good=2, n_test_defect=2, size=32)
    spec = paper_spec("table1", tmp_path)
    assert [d.name for d in spec.data] == ["bottle", "screw"]
    assert [m.label for m in spec.methods] == ["ae_ssim-paper", "vae_l2-paper_mvtec", "vqvae_ssim-paper_mvtec",
                                               "vqvae_ssim_am-paper_mvtec"]
    assert [m.preset for m in paper_spec("table1", tmp_path, recipe="cpu").methods] == [None] * 4


def test_paper_table1_shows_vevae_as_published_only_and_vae_l2_under_its_own_name():
    rows = [{"data": "bottle", "status": "done", "method": m, "pixel_auroc": v}
            for m, v in [("ae_ssim", 0.8), ("vae_l2", 0.7), ("vqvae_ssim", 0.85), ("vqvae_ssim_am", 0.9)]]
    text = paper_layout("table1", rows)
    head = next(line for line in text.splitlines() if line.startswith("| category"))
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert "VEVAE (published only)" in cols and "FCDD (published only)" in cols
    assert "VAE L2 (ours, no published figure)" in cols
    assert cols.index("VAE L2 (ours, no published figure)") == cols.index("VEVAE (published only)") + 1
    assert not any(c.startswith("VEVAE (ours") for c in cols)
    row = next(ln for ln in text.splitlines() if ln.startswith("| bottle"))
    bottle = [c.strip() for c in row.strip("|").split("|")]
    assert bottle[cols.index("VEVAE (published only)")] == "0.87"  # the published figure alone
    assert bottle[cols.index("VAE L2 (ours, no published figure)")] == "0.700"  # ours alone
    assert bottle[cols.index("AE SSIM (ours / published)")] == "0.800 / 0.93"


def test_a_few_shot_grid_draws_k_images_per_seed_and_draws_the_curve(tmp_path):
    make_synthetic(tmp_path / "data" / "syn", n_train=12, n_test_good=4, n_test_defect=4, size=32)
    text = f"""[benchmark]
seeds = [0, 1]
shots = [2, 4]
[[data]]
root = "{tmp_path / "data"}"
categories = "*"
[[method]]
name = "padim"
options = {{image_size = 32}}
"""
    out = tmp_path / "out"
    got = run_grid(parse_spec(text), out, say=lambda _: None)
    assert [(r["label"], r["shots"], r["seed"]) for r in got] == [
        ("padim-k2", 2, 0), ("padim-k2", 2, 1), ("padim-k4", 4, 0), ("padim-k4", 4, 1)]
    assert all(r["status"] == "done" for r in got)
    config = json.loads((out / "runs" / "syn" / "padim-k2" / "seed1" / "config.json").read_text())
    assert config["shots"]["k"] == 2 and config["shots"]["seed"] == 1
    assert (out / "shots_curve.png").is_file() and "shots_curve.png" in (out / "tables.md").read_text()
    with pytest.raises(Exception, match="shots = \\[0\\] must be a list of distinct integers >= 1"):
        parse_spec(text.replace("shots = [2, 4]", "shots = [0]"))
