"""Every spec shipped in benchmarks/specs parses (its methods, options and tune candidates are valid)
and opens with a header that says what was chosen on which data.

Why: the specs are what the acceptance checks and docs/RESULTS.md's commands run; a typo in an option
would only show after minutes of fitting, and a figure is only as honest as the record of how its
settings were chosen. The data folders are stood in for by empty ones at the same relative places,
so the test needs no data set.
"""

import tomllib
from pathlib import Path

import pytest

from latentad.experiments.spec import parse_spec

SPECS = sorted((Path(__file__).parents[2] / "benchmarks" / "specs").glob("*.toml"))


def stand_in_data(raw: dict, base: Path) -> None:
    for entry in raw.get("data", []):
        if "path" in entry:
            (base / entry["path"]).mkdir(parents=True, exist_ok=True)
            continue
        cats = entry.get("categories", "*")
        for cat in ["stand_in"] if cats == "*" else ([cats] if isinstance(cats, str) else cats):
            (base / entry["root"] / cat / "train").mkdir(parents=True, exist_ok=True)


def test_specs_are_found():
    assert any(p.name == "best.toml" for p in SPECS)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_parses(path, tmp_path):
    text = path.read_text()
    base = tmp_path / "a" / "b" / "c"  # deep enough for the specs' ../../../shared/data paths
    base.mkdir(parents=True)
    stand_in_data(tomllib.loads(text), base)
    spec = parse_spec(text, path.name, base)
    assert spec.data and spec.methods


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_header_states_its_choices(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert "latentad benchmark benchmarks/specs/" + path.name in text, "the header shows the command"
    assert "# Choices:" in text, "the header says what was chosen on which data (a '# Choices:' line)"
