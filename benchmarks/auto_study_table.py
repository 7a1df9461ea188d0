"""The leave-one-task-out table of `fit --method auto`'s criterion, from `auto_study.py`'s JSON lines.

A procedure here is the criterion auto ranks candidates by: the image AUROC of held-out normal images
against the same images with synthetic defects, averaged over folds and over a subset of the defect
kinds. For each task, the subset is chosen on the other tasks only (lowest mean regret there; ties:
more kinds), then applied to the task: its regret (the best candidate's test image AUROC, known only
afterwards, minus the chosen one's) is what a new data set would see. Also printed: each task's
Spearman correlation between the all-kinds criterion and the test AUROC over candidates, and each
kind's mean Spearman over tasks.

    python benchmarks/auto_study_table.py benchmarks/results/auto_study.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from latentad.selection.portfolio import PORTFOLIO

ORDER = {c.name: i for i, c in enumerate(PORTFOLIO)}


def fold_aurocs(row: dict) -> dict[str, np.ndarray]:
    """Per kind: the AUROC of each fold (normal against that kind's defect images of the fold)."""
    groups, normal = np.array(row["groups"]), np.array(row["normal"])
    out = {}
    for kind, scores in row["defective"].items():
        scores = np.array(scores)
        out[kind] = np.array([roc_auc_score(np.r_[np.zeros((groups == f).sum()), np.ones((groups == f).sum())],
                                            np.r_[normal[groups == f], scores[groups == f]])
                              for f in range(groups.max() + 1)])
    return out


def criterion(per_kind: dict[str, np.ndarray], kinds: tuple[str, ...]) -> float:
    return float(np.mean([per_kind[k] for k in kinds]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.jsonl) if line.strip()]
    tasks: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        tasks[r["task"]][r["candidate"]] = {"test": r["test_image_auroc"], "folds": fold_aurocs(r)}
    names = sorted(tasks)
    kinds = tuple(next(iter(next(iter(tasks.values())).values()))["folds"])
    variants = [v for n in range(len(kinds), 0, -1) for v in itertools.combinations(kinds, n)]

    def choose(task: str, v: tuple[str, ...]) -> str:
        cands = tasks[task]
        return max(cands, key=lambda c: (criterion(cands[c]["folds"], v), -ORDER[c]))

    def regret(task: str, v: tuple[str, ...]) -> float:
        cands = tasks[task]
        return max(c["test"] for c in cands.values()) - cands[choose(task, v)]["test"]

    print("| task | chosen (LOO criterion) | its test | oracle | oracle test | regret | Spearman (all kinds) "
          "| kinds chosen on the other tasks |")
    print("|---|---|---|---|---|---|---|---|")
    regrets = []
    for t in names:
        others = [o for o in names if o != t]
        best_v = min(variants, key=lambda v: (np.mean([regret(o, v) for o in others]), -len(v)))
        cands = tasks[t]
        chosen, oracle = choose(t, best_v), max(cands, key=lambda c: cands[c]["test"])
        rho = spearmanr([criterion(cands[c]["folds"], kinds) for c in cands], [cands[c]["test"] for c in cands])[0]
        r = regret(t, best_v)
        regrets.append(r)
        print(f"| {t} | {chosen} | {cands[chosen]['test']:.4f} | {oracle} | {cands[oracle]['test']:.4f} | {r:.4f} "
              f"| {rho:.2f} | {'+'.join(best_v)} |")
    print(f"\nmean LOO regret {np.mean(regrets):.4f}, max {np.max(regrets):.4f} over {len(names)} tasks")
    all_regret = [regret(t, kinds) for t in names]
    print(f"all kinds, in-sample: mean regret {np.mean(all_regret):.4f}, max {np.max(all_regret):.4f}")
    for k in kinds:
        rhos = [spearmanr([tasks[t][c]["folds"][k].mean() for c in tasks[t]],
                          [tasks[t][c]["test"] for c in tasks[t]])[0] for t in names]
        alone = np.mean([regret(t, (k,)) for t in names])
        print(f"kind {k}: mean Spearman {np.nanmean(rhos):.2f}, mean regret alone {alone:.4f}")


if __name__ == "__main__":
    main()
