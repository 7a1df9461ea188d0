"""Markdown tables of the key numbers of `latentad analyze` outputs, for docs/ANALYSIS.md (read from
the analysis.json files, so nothing is copied by hand).

    python benchmarks/analysis_summary.py runs/analysis/bottle/analysis [more analysis folders ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def f(x, nd=3):
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def summary(folder: Path) -> str:
    a = json.loads((folder / "analysis.json").read_text())
    out = [f"Data: `{a['data']['path']}` ({a['data'].get('format')}); images {a['images']}; "
           f"limit {a['limit']}; {a['seconds']} s.", ""]
    out += ["| run | method | embedding (dim) | KS vs chi2 (k) | d2 / k | Mardia b2 / expected | dims rejected |"
            " AUROC all | top-k | bottom-k | NPCA | low-variance holds | TwoNN normal / anomalous |",
            "|" + "---|" * 13]
    for name, r in a["runs"].items():
        g, c, d = r["gaussianity"], r["components"], r["intrinsic_dimension"]
        mar = g.get("mardia") or {}
        out.append(
            f"| {name} | {r['method']} | {r['embedding']} ({r['embedding_dim']}) | "
            f"{f(g['ks_statistic'], 2)} ({g['dim']})"
            f" | {f(g['d2_ratio'], 2)} | {f(mar.get('kurtosis_b2'), 0)} / {f(mar.get('kurtosis_expected'), 0)} | "
            f"{f(g['per_dimension_rejected_share'], 2)} | {f(c.get('auroc_all'))} | {f(c.get('auroc_top_k'))} | "
            f"{f(c.get('auroc_bottom_k'))} | {f(c.get('auroc_npca'))} | {c.get('holds')} | "
            f"{f(d['normal'].get('TwoNN'), 1)} / {f(d['anomalous'].get('TwoNN'), 1)} |")
    for name, r in a["runs"].items():
        if r.get("components", {}).get("before_finetune"):
            b = r["components"]["before_finetune"]
            out += ["", f"{name}: Mahalanobis AUROC before fine-tuning {f(b['auroc_all'])}, after "
                    f"{f(r['components']['auroc_all'])} (top-k {f(b['auroc_top_k'])} -> "
                    f"{f(r['components']['auroc_top_k'])}, bottom-k {f(b['auroc_bottom_k'])} -> "
                    f"{f(r['components']['auroc_bottom_k'])})."]
        if r.get("levels"):
            lv = r["levels"]["per_level"]
            out += ["", f"{name} levels: " + "; ".join(
                f"{k}: image {f(v.get('image_auroc_mahalanobis'))} (Mahalanobis) / "
                f"{f(v.get('image_auroc_knn'))} (kNN), "
                f"pixel {f(v.get('pixel_auroc_knn'))}" for k, v in lv.items())]
        if r.get("codebook"):
            cb = r["codebook"]
            maps = ", ".join(f"{k} {f(v['pixel_auroc'])} (top 1 % inside {f(v['top1_inside_share'], 2)})"
                             for k, v in cb.get("maps", {}).items())
            out += ["", f"{name} codebook: {cb['codes_used']}/{cb['codebook_size']} codes used, perplexity "
                    f"{f(cb['perplexity'], 1)}, {len(cb['codes_only_anomalous'])} codes only at anomalous positions; "
                    f"AM AUROC at latent resolution {f(cb.get('am_auroc_latent'))}, image AUROC of max AM "
                    f"{f(cb.get('am_image_auroc'))}" + (f"; pixel AUROC {maps}" if maps else "") + "."]
        p = r.get("projection", {})
        ps = p.get("patch_scores")
        pos = p.get("positions")
        out += ["", f"{name} projection: PCA 2-D AUROC {f(p['pca']['auroc_2d'])}, UMAP "
                f"{f(p.get('umap', {}).get('auroc_2d'))}" +
                (f"; defect pixels above the normal 99th percentile {f(ps['defect_pixels_above_normal_p99'], 2)}, "
                 f"pixel-score AUROC {f(ps['auroc'])}" if ps else "") +
                (f"; positions ({pos['embedding']}): nearest-training-position distance AUROC inside vs outside "
                 f"defects {f(pos['auroc_nn_distance'])}" if pos else "") + "."]
    ag = a.get("agreement")
    if ag:
        names = ag["runs"]
        rho = "; ".join(f"{names[i]}-{names[j]} {ag['spearman'][i][j]:.2f}" for i in range(len(names))
                        for j in range(i + 1, len(names)))
        out += ["", f"Agreement: Spearman {rho}; image AUROC " +
                ", ".join(f"{k} {f(v)}" for k, v in ag["image_auroc"].items()) +
                f"; rank-average fusion {f(ag['fusion_rank_average_auroc'])}; missed at each run's threshold "
                + ", ".join(f"{k} {len(v)}" for k, v in ag["missed"].items()) +
                f" of {ag['n_anomalous']}; missed by all {len(ag['missed_by_all'])}; false alarms "
                + ", ".join(f"{k} {len(v)}" for k, v in ag["false_alarms"].items()) + f" of {ag['n_normal']}."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"### {arg}\n")
        print(summary(Path(arg)))
