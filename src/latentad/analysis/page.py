"""`analysis.html`: one self-contained page (figures embedded as data URIs, so it can be mailed or
archived alone) with each question's summary, its key numbers and its figures."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from latentad import __version__, io
from latentad.report.html import cell

QUESTIONS = [
    ("gaussianity", "How Gaussian is normality?"),
    ("components", "Which directions carry the anomaly?"),
    ("intrinsic_dimension", "How many dimensions does normality use?"),
    ("levels", "Which level separates?"),
    ("codebook", "Is the codebook used?"),
    ("positions", "Where do normal images alarm?"),
    ("projection", "Where do defects sit in the latent space?"),
]
# the numbers shown beside each question's figure (the rest is in analysis.json)
TABLE_KEYS = {
    "gaussianity": ["dim", "ambient_dim", "d2_ratio", "ks_statistic", "ks_p", "per_dimension_rejected_share"],
    "components": ["dim", "k", "auroc_all", "auroc_top_k", "auroc_bottom_k", "auroc_npca", "variance_99_at"],
    "intrinsic_dimension": ["ambient_dim"],
    "codebook": ["codebook_size", "codes_used", "perplexity", "dead_codes", "am_auroc_latent", "am_image_auroc"],
    "positions": ["grid", "spread_ratio", "normal_max_in_top_share", "image_auroc_map_max", "image_auroc_standardised"],
    "projection": [],
    "levels": [],
}


def figures_of(answer: dict) -> list[str]:
    """Every figure file an answer names (nested answers included), in order."""
    out = []
    for k, v in answer.items():
        if k == "figure" and isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            out += figures_of(v)
    return out


def _table(key: str, answer: dict) -> list[tuple[str, str]]:
    rows = [(k, cell(answer[k])) for k in TABLE_KEYS.get(key, []) if answer.get(k) is not None]
    if key == "intrinsic_dimension":
        for part in ("normal", "anomalous"):
            rows += [(f"{part} {n}", cell(answer[part].get(n))) for n in ("TwoNN", "MLE", "lPCA")]
    if key == "levels":
        for level, row in answer["per_level"].items():
            rows.append((level, ", ".join(f"{k} {cell(v)}" for k, v in row.items())))
    if key == "codebook":
        for m, row in answer.get("maps", {}).items():
            rows.append(
                (f"map {m}", f"pixel AUROC {cell(row['pixel_auroc'])}, top-1 % inside {cell(row['top1_inside_share'])}")
            )
    if key == "components" and "before_finetune" in answer:
        rows.append(("before fine-tuning", f"AUROC {cell(answer['before_finetune']['auroc_all'])}"))
    return rows


def write_page(out: Path, result: dict, data_name: str) -> Path:
    figdir = out / "figures"
    names = [f for r in result["runs"].values() for k, _ in QUESTIONS if r.get(k) for f in figures_of(r[k])]
    if result.get("agreement"):
        names.append(result["agreement"]["figure"])
    images = {n: "data:image/png;base64," + base64.b64encode((figdir / n).read_bytes()).decode() for n in names}
    runs = {}
    for name, r in result["runs"].items():
        view = dict(r)
        for key, _ in QUESTIONS:
            if r.get(key):
                view[key] = {
                    "summary": r[key].get("summary", ""),
                    "table": _table(key, r[key]),
                    "figures": figures_of(r[key]),
                }
        runs[name] = view
    env = Environment(loader=PackageLoader("latentad", "analysis/templates"), autoescape=select_autoescape())
    html = env.get_template("analysis.html").render(
        data_name=data_name,
        n_runs=len(runs),
        created=result["created"],
        version=__version__,
        sizes=", ".join(f"{k} {v}" for k, v in result["images"].items()),
        findings=result["findings"],
        runs=runs,
        questions=QUESTIONS,
        agreement=result.get("agreement"),
        images=images,
        cell=cell,
    )
    path = out / "analysis.html"
    io.write_text(path, html)
    return path
