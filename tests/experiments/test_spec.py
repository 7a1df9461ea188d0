"""The spec is refused before anything runs, in one line naming the key."""

import pytest

from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError
from latentad.experiments.spec import parse_spec


@pytest.fixture
def root(tmp_path):
    for name in ("a", "b"):
        make_synthetic(tmp_path / "data" / name, n_train=4, n_test_good=2, n_test_defect=2, size=32)
    return tmp_path


def spec(root, extra_method="", data=None):
    data = data or f'root = "{root / "data"}"\ncategories = "*"'
    return f"""
[benchmark]
seeds = [0, 1]
[[data]]
{data}
[[method]]
name = "padim"
options = {{image_size = 32}}
{extra_method}
"""


def test_root_with_every_category_and_labels(root):
    s = parse_spec(spec(root, '[[method]]\nname = "padim"\npreset = "paper_recipe"\nlabel = "padim-paper"'))
    assert [d.name for d in s.data] == ["a", "b"]
    assert [m.label for m in s.methods] == ["padim", "padim-paper"]
    assert len(s.cells()) == 2 * 2 * 2


def test_relative_paths_are_taken_from_the_spec_folder(root):
    s = parse_spec(spec(root, data='path = "data/a"\nname = "first"'), base=root)
    assert s.data[0].path == str(root / "data" / "a") and s.data[0].name == "first"


@pytest.mark.parametrize("text, message", [
    ('[benchmark]\nseeds = "0"', "seeds"),
    ('[benchmark]\nseed = [0]', "unknown key 'seed'"),
    ('[benchmark]\neval_size = 4', "eval_size"),
])
def test_benchmark_table_errors(root, text, message):
    body = spec(root).replace("[benchmark]\nseeds = [0, 1]", text)
    with pytest.raises(ConfigError, match=message):
        parse_spec(body)


@pytest.mark.parametrize("method, message", [
    ('[[method]]\nname = "padimm"', "name = 'padimm' is not a method"),
    ('[[method]]\nname = "padim"\npreset = "fastest"', "preset = 'fastest' is not a preset of padim"),
    ('[[method]]\nname = "padim"\noptions = {image_sise = 3}', "image_sise"),
    ('[[method]]\nname = "padim"\noptions = {image_size = 32}', "'padim' appears twice"),
    ('[[method]]\nlabel = "x"', "name is missing"),
    ('[[method]]\nname = "padim"\nlabel = "p"\nlr = 1', "unknown key 'lr'"),
])
def test_method_errors_name_the_entry(root, method, message):
    with pytest.raises(ConfigError, match="method") as err:
        parse_spec(spec(root, method))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_data_errors(root):
    with pytest.raises(ConfigError, match=r"\[\[data\]\] 1: path 'nowhere' does not exist"):
        parse_spec(spec(root, data='path = "nowhere"'), base=root)
    with pytest.raises(ConfigError, match="category 'c' not found"):
        parse_spec(spec(root, data=f'root = "{root / "data"}"\ncategories = ["a", "c"]'))
    with pytest.raises(ConfigError, match="either path or root"):
        parse_spec(spec(root, data='name = "x"'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_spec("[[data]\n")


def test_benchmark_command_line_errors(tmp_path):
    from typer.testing import CliRunner

    from latentad.cli import app

    runner = CliRunner()
    cases = [
        (["benchmark", "--out", str(tmp_path / "o")], "give a SPEC file or --paper"),
        (["benchmark", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")], "spec file not found"),
        (["benchmark", "--paper", "table9", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")],
         "--paper table9"),
        (["benchmark", "--paper", "table1", "--out", str(tmp_path / "o")], "--paper needs --data-root"),
        (["benchmark", "--paper", "table1", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")],
         "none of the 15 MVTec AD categories"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output


def test_options_that_would_be_ignored_are_refused(tmp_path):
    from typer.testing import CliRunner

    from latentad.cli import app

    spec = tmp_path / "s.toml"
    spec.write_text('[[data]]\npath = "elpv"\n[[method]]\nname = "padim"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["benchmark", str(spec), "--recipe", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--recipe go with --paper" in res.output
    res = runner.invoke(app, ["benchmark", str(spec), "--executor", "dask", "--scheduler", "local:2", "--workers",
                              "3", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--workers goes with" in res.output


def test_a_p_value_that_underflows_is_not_printed_as_zero():
    from latentad.experiments.tables import format_p

    assert format_p(0.0) == "< 1e-300" and format_p(0.0123) == "0.0123"


def test_paired_tests_give_detection_and_aupimo_tests(tmp_path):
    import numpy as np

    from latentad.experiments.cells import cell_dir
    from latentad.experiments.tables import paired_tests

    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(size=20), rng.normal(size=12)  # the same images for both methods
    cells, rows = [], []
    for label, shift in (("a", 0.0), ("b", 1.0)):
        cell = {"data": {"name": "d"}, "method": {"label": label}, "seed": 0}
        folder = cell_dir(tmp_path, cell)
        folder.mkdir(parents=True)
        lines = ["path,label,score,aupimo"]
        lines += [f"n{i},0,{v:.6f}," for i, v in enumerate(normal)]
        lines += [f"x{i},1,{v + shift:.6f},0.0" for i, v in enumerate(anomalous)]  # AUPIMO all 0
        (folder / "scores.csv").write_text("\n".join(lines) + "\n")
        cells.append(cell)
        rows.append({"data": "d", "label": label, "seed": 0, "status": "done"})
    tests = {t["values"]: t for t in paired_tests(tmp_path, cells, rows)}
    assert set(tests) == {"per-image AUROC term", "per-image AUPIMO"}
    assert tests["per-image AUPIMO"]["p_value"] is None  # identical values: no test
    det = tests["per-image AUROC term"]
    assert det["n_images"] == 12 and det["mean_b"] > det["mean_a"] and det["p_value"] < 0.05
