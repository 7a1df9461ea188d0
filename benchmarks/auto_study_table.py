"""The leave-one-task-out table of `fit --method auto`'s criterion, from `auto_study.py`'s JSON lines.

A procedure here is the criterion auto ranks candidates by: the image AUROC of held-out normal images
against the same images with synthetic defects, averaged over folds and over a subset of the defect
kinds. For each task, the subset is chosen on the other tasks only (lowest mean regret there; ties:
more kinds), as is the rule (the best mean, or the cheapest candidate within one standard error of
it), then applied to the task: its regret (the best candidate's test image AUROC, known only
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

from latentad.selection.folds import fold_figures
from latentad.selection.fusion import fuse
from latentad.selection.portfolio import PORTFOLIO

ORDER = {c.name: i for i, c in enumerate(PORTFOLIO)}
FAMILY = {c.name: c.family for c in PORTFOLIO}


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


def se(per_kind: dict[str, np.ndarray], kinds: tuple[str, ...]) -> float:
    folds = np.mean([per_kind[k] for k in kinds], axis=0)
    return float(folds.std(ddof=1) / np.sqrt(len(folds)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.jsonl) if line.strip()]
    tasks: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        tasks[r["task"]][r["candidate"]] = {"test": r["test_image_auroc"], "folds": fold_aurocs(r), "row": r}
    names = sorted(tasks)
    kinds = tuple(next(iter(next(iter(tasks.values())).values()))["folds"])
    subsets = [v for n in range(len(kinds), 0, -1) for v in itertools.combinations(kinds, n)]
    variants = [(v, rule) for v in subsets for rule in ("best", "one_se")]  # one_se: the cheapest within 1 s.e.

    def choose(task: str, variant: tuple) -> str:
        v, rule = variant
        cands = tasks[task]
        best = max(cands, key=lambda c: (criterion(cands[c]["folds"], v), -ORDER[c]))
        if rule == "best":
            return best
        floor = criterion(cands[best]["folds"], v) - se(cands[best]["folds"], v)
        return min((c for c in cands if criterion(cands[c]["folds"], v) >= floor), key=lambda c: ORDER[c])

    def regret(task: str, v: tuple) -> float:
        cands = tasks[task]
        return max(c["test"] for c in cands.values()) - cands[choose(task, v)]["test"]

    print("The shipped criterion (all kinds, the best mean; fixed before the study):\n")
    print("| task | chosen | its test | oracle | oracle test | regret | validation-test Spearman |")
    print("|---|---|---|---|---|---|---|")
    for t in names:
        cands = tasks[t]
        chosen, oracle = choose(t, (kinds, "best")), max(cands, key=lambda c: cands[c]["test"])
        rho = spearmanr([criterion(cands[c]["folds"], kinds) for c in cands], [cands[c]["test"] for c in cands])[0]
        print(f"| {t} | {chosen} | {cands[chosen]['test']:.4f} | {oracle} | {cands[oracle]['test']:.4f} | "
              f"{regret(t, (kinds, 'best')):.4f} | {rho:.2f} |")
    print("\nKinds and rule chosen on the other tasks (leave one task out):\n")
    print("| task | chosen (LOO criterion) | its test | oracle | oracle test | regret | Spearman (all kinds) "
          "| kinds chosen on the other tasks |")
    print("|---|---|---|---|---|---|---|---|")
    regrets = []
    for t in names:
        others = [o for o in names if o != t]
        best_v = min(variants, key=lambda v: (np.mean([regret(o, v) for o in others]), -len(v[0]), v[1]))
        cands = tasks[t]
        chosen, oracle = choose(t, best_v), max(cands, key=lambda c: cands[c]["test"])
        rho = spearmanr([criterion(cands[c]["folds"], kinds) for c in cands], [cands[c]["test"] for c in cands])[0]
        r = regret(t, best_v)
        regrets.append(r)
        print(f"| {t} | {chosen} | {cands[chosen]['test']:.4f} | {oracle} | {cands[oracle]['test']:.4f} | {r:.4f} "
              f"| {rho:.2f} | {'+'.join(best_v[0])}, {best_v[1]} |")
    print(f"\nmean LOO regret {np.mean(regrets):.4f}, max {np.max(regrets):.4f} over {len(names)} tasks")
    all_regret = [regret(t, (kinds, "best")) for t in names]
    print(f"all kinds, in-sample: mean regret {np.mean(all_regret):.4f}, max {np.max(all_regret):.4f}")
    for k in kinds:
        rhos = [spearmanr([tasks[t][c]["folds"][k].mean() for c in tasks[t]],
                          [tasks[t][c]["test"] for c in tasks[t]])[0] for t in names]
        alone = np.mean([regret(t, ((k,), "best")) for t in names])
        print(f"kind {k}: mean Spearman {np.nanmean(rhos):.2f}, mean regret alone {alone:.4f}")
    fusion_table(tasks, names, kinds, lambda t: choose(t, (kinds, "best")))
    procedures_table(tasks, names, kinds)


def fusion_table(tasks: dict, names: list[str], kinds: tuple[str, ...], choose) -> None:
    """What the shipped fusion rule (`selection.fusion.fuse`) would do on each task with test scores:
    the best candidate and the best of another family, fused when the validation gain exceeds the fold
    noise; the fusion's test AUROC from the stored test scores, standardised as the ensemble does."""
    print("\n| task | best single (val) | partner | fusion kept | test: single / fusion / oracle single |")
    print("|---|---|---|---|---|")
    deltas, policy = [], {}  # policy[task] = regret (oracle single minus what is used) never / rule / always
    for t in names:
        cands = tasks[t]
        best = choose(t)
        if "test_scores" not in cands[best]["row"]:
            continue
        fam = {c: FAMILY.get(c, "pretrained") for c in cands}
        others = sorted((c for c in cands if fam[c] != fam[best]),
                        key=lambda c: -criterion(cands[c]["folds"], kinds))
        if not others:
            continue
        ra, rb = cands[best]["row"], cands[others[0]]["row"]
        raw = [(np.array(r["normal"]), {k: np.array(v) for k, v in r["defective"].items()}) for r in (ra, rb)]
        single = fold_figures(*raw[0], np.array(ra["groups"]), kinds)
        out = fuse(raw[0], raw[1], np.array(ra["groups"]), kinds, single)
        w = out["weights"][0]
        za = (np.array(ra["test_scores"]) - raw[0][0].mean()) / (raw[0][0].std() + 1e-12)
        zb = (np.array(rb["test_scores"]) - raw[1][0].mean()) / (raw[1][0].std() + 1e-12)
        fused = roc_auc_score(ra["test_labels"], w * za + (1 - w) * zb)
        oracle = max(c["test"] for c in cands.values())
        used = fused if out["kept"] else cands[best]["test"]
        deltas.append(used - cands[best]["test"])
        policy[t] = {"never": oracle - cands[best]["test"], "rule": oracle - used, "always": oracle - fused}
        print(f"| {t} | {best} | {others[0]} | {'yes' if out['kept'] else 'no'} (w {w:.2f}) | "
              f"{cands[best]['test']:.4f} / {fused:.4f} / {oracle:.4f} |")
    if deltas:
        print(f"\nfusion rule: mean test change {np.mean(deltas):+.4f} over {len(deltas)} tasks")
        for name in ("never", "rule", "always"):
            r = [policy[t][name] for t in policy]
            print(f"fusion policy {name}: mean regret {np.mean(r):.4f}, max {np.max(r):.4f} over {len(r)} tasks")
        loo = [policy[t][min(("never", "rule", "always"),
                             key=lambda n: np.mean([policy[o][n] for o in policy if o != t]))] for t in policy]
        print(f"fusion policy chosen on the other tasks (leave one task out): mean regret {np.mean(loo):.4f}, "
              f"max {np.max(loo):.4f}")


def fused_test(cands: dict, members: list[str]) -> float:
    """Test image AUROC of the equal-weight fusion of `members`, each standardised by the mean and
    standard deviation of its held-out normal validation scores (as `ensemble` does)."""
    rows = [cands[m]["row"] for m in members]
    z = [(np.array(r["test_scores"]) - np.mean(r["normal"])) / (np.std(r["normal"]) + 1e-12) for r in rows]
    return float(roc_auc_score(rows[0]["test_labels"], np.mean(z, 0)))


def procedures_table(tasks: dict, names: list[str], kinds: tuple[str, ...]) -> None:
    """Selection procedures compared by regret (the best single candidate's test AUROC minus what the
    procedure gives), then the procedure chosen on the other tasks applied to each task (leave one
    task out): the figure a new data set would see. `fuse_all` is what `fit --method auto` ships."""
    def ranked(cands):
        return sorted(cands, key=lambda c: (-criterion(cands[c]["folds"], kinds), ORDER[c]))

    def families(cands):  # the best of each family by the criterion
        firsts: dict[str, str] = {}
        for c in ranked(cands):
            firsts.setdefault(FAMILY.get(c, "pretrained"), c)
        return list(firsts.values())

    procs = {"best_single": lambda c: ranked(c)[:1], "fuse_top2": lambda c: ranked(c)[:2],
             "fuse_top3": lambda c: ranked(c)[:3], "fuse_best_per_family": families,
             "fuse_all": lambda c: sorted(c)}
    gives = {t: {p: fused_test(tasks[t], f(tasks[t])) if len(f(tasks[t])) > 1 else tasks[t][f(tasks[t])[0]]["test"]
                 for p, f in procs.items()} for t in names}
    oracle = {t: max(c["test"] for c in tasks[t].values()) for t in names}
    regret = {t: {p: oracle[t] - g for p, g in gives[t].items()} for t in names}
    print("\nProcedures, in-sample regret (mean / max over tasks):\n")
    for p in procs:
        r = [regret[t][p] for t in names]
        print(f"- {p}: mean {np.mean(r):.4f}, max {np.max(r):.4f}")
    print("\nThe procedure chosen on the other tasks (lowest mean regret there), applied to each task:\n")
    print("| task | procedure (chosen without it) | its test | oracle single | oracle test | regret "
          "| validation-test Spearman |")
    print("|---|---|---|---|---|---|---|")
    loo = []
    for t in names:
        p = min(procs, key=lambda q: np.mean([regret[o][q] for o in names if o != t]))
        cands = tasks[t]
        best = max(cands, key=lambda c: cands[c]["test"])
        rho = spearmanr([criterion(cands[c]["folds"], kinds) for c in cands], [cands[c]["test"] for c in cands])[0]
        loo.append(regret[t][p])
        print(f"| {t} | {p} | {gives[t][p]:.4f} | {best} | {oracle[t]:.4f} | {regret[t][p]:.4f} | {rho:.2f} |")
    print(f"\nleave one task out: mean regret {np.mean(loo):.4f}, max {np.max(loo):.4f} over {len(names)} tasks "
          "(negative: the fusion beat every single candidate)")
    print("\nThe fusion of all with candidates missing (what a short budget leaves out):\n")
    everyone = sorted(next(iter(tasks.values())))
    for drop in [(c,) for c in everyone] + [("patchcore_dinov2", "ssl_gaussian")]:
        r = [oracle[t] - fused_test(tasks[t], [c for c in sorted(tasks[t]) if c not in drop]) for t in names]
        print(f"- without {' and '.join(drop)}: mean {np.mean(r):.4f}, max {np.max(r):.4f}")


if __name__ == "__main__":
    main()
