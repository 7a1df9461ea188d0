"""Which fusion of `fit --method auto`'s candidates generalises across data sources, and which
validation defect kinds rank candidates like the real test (issue 41), from `auto_study.py`'s lines.

Tasks: every task of the lines, and where the test images carry defect types (bottle, magnetic tile)
one task per type as well (test = the good test images and that type's). Sources: bottle, magnetic
tile, ELPV (mono and poly), MNIST (the ten digits): a source is what a new data set resembles, so
every hyperparameter (which kinds the validation averages, k, the trimming margin, the weighting's
temperature and shrinkage) is chosen LEAVE-ONE-SOURCE-OUT: on the other sources' tasks (lowest mean
regret, the sources weighted equally; ties: the earlier, simpler variant), then applied to the
source left out. Regret = the per-task oracle (the best single candidate's test image AUROC) minus
the procedure's test image AUROC (negative: the fusion beat every single candidate). A fusion's test
scores are each member's raw test scores standardised with its own held-out normal validation
scores (z-scores; or percentiles of them for the rank fusion), as `selection/fusion.py` does.

Intervals: a bootstrap over tasks of the regrets the leave-one-source-out choice gave (the choice is
not redone per resample), for the task mean and, resampling within each source, for the mean of the
per-source means.

    python benchmarks/auto_study_loso.py benchmarks/results/auto_study.jsonl \\
        --types benchmarks/results/auto_study_types.json [--pool a,b,c] [--kinds a,b] [--md out.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

from latentad.data.defects import ALL_KINDS
from latentad.selection.fusion import _input_size
from latentad.selection.portfolio import by_name

TYPED = {"bottle", "magnetic_tile"}  # sources whose test images carry defect types
SEED = 0
N_BOOT = 2000
SHIPPED = "fuse all (shipped: equal z, members at the common input size)"


def source(task: str) -> str:
    base = task.split("/")[0]
    return "elpv" if base.startswith("elpv") else "mnist" if base.startswith("mnist") else base


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC from ranks (ties counted half), fast enough for the many fusions tried here."""
    r = rankdata(scores)
    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class Member:
    normal: np.ndarray  # held-out normal validation scores
    kinds: dict[str, float]  # validation AUROC per defect kind
    test: np.ndarray  # raw test scores

    def z(self) -> np.ndarray:
        return (self.test - self.normal.mean()) / (self.normal.std() + 1e-12)

    def pct(self) -> np.ndarray:
        """Each test score's percentile among the normal validation scores (ties half, never 0 or 1)."""
        s = np.sort(self.normal)
        below = np.searchsorted(s, self.test, "left") + np.searchsorted(s, self.test, "right")
        return (below / 2 + 0.5) / (len(s) + 1)


@dataclass
class Task:
    name: str
    labels: np.ndarray
    members: dict[str, Member] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return source(self.name)

    def test_auroc(self, c: str) -> float:
        return auroc(self.labels, self.members[c].test)

    def oracle(self) -> float:
        return max(self.test_auroc(c) for c in self.members)

    def val(self, c: str, kinds: tuple[str, ...]) -> float:
        return float(np.mean([self.members[c].kinds[k] for k in kinds]))


def load(paths: list[str], types_path: str | None, pool: list[str] | None, kinds: list[str] | None
         ) -> tuple[list[Task], list[str], tuple[str, ...]]:
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    types = json.loads(Path(types_path).read_text()) if types_path else {}
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_task[r["task"]][r["candidate"]] = r
    names = pool or sorted(set.intersection(*(set(c) for c in by_task.values())), key=list(by_name()).index)
    complete = [t for t, cands in by_task.items() if all(c in cands for c in names)]
    have = set.intersection(*(set(by_task[t][c]["defective"]) for t in complete for c in names))
    use = tuple(k for k in (kinds or [*ALL_KINDS, *sorted(have - set(ALL_KINDS))]) if k in have)
    tasks = []
    for t in complete:
        first = by_task[t][names[0]]
        labels = np.array(first["test_labels"])
        ttypes = np.array(first.get("test_types") or [x[1] for x in types[t]])
        members = {}
        for c in names:
            r = by_task[t][c]
            if r["test_labels"] != first["test_labels"]:
                raise ValueError(f"{t}: {c}'s test images are not the others'")
            k_aurocs = {}
            for k in use:
                ref = np.array(r["refit_normal"] if k in r.get("refit_kinds", ()) else r["normal"])
                d = np.array(r["defective"][k])
                k_aurocs[k] = auroc(np.r_[np.zeros(len(ref)), np.ones(len(d))], np.r_[ref, d])
            members[c] = Member(np.array(r["normal"]), k_aurocs, np.array(r["test_scores"]))
        tasks.append(Task(t, labels, members))
        if source(t) in TYPED:
            for ty in sorted(set(ttypes) - {"good"}):
                keep = (ttypes == "good") | (ttypes == ty)
                sub = {c: Member(m.normal, m.kinds, m.test[keep]) for c, m in members.items()}
                tasks.append(Task(f"{t}/{ty}", labels[keep], sub))
    return tasks, names, use


# -- procedures --------------------------------------------------------------------------------------
Proc = Callable[[Task], float]


def fuse(task: Task, names: list[str], weights: list[float] | None = None, how: str = "z") -> float:
    w = np.full(len(names), 1 / len(names)) if weights is None else np.asarray(weights) / np.sum(weights)
    parts = [task.members[n].z() if how == "z" else task.members[n].pct() for n in names]
    return auroc(task.labels, np.tensordot(w, np.array(parts), 1))


def localises(name: str) -> bool:
    """Whether the candidate scores patches (has a map), not only a pooled image feature."""
    from latentad.registry import create

    c = by_name()[name]
    return bool(create(c.method, c.preset, **c.options).localizes)


def ranked(task: Task, kinds: tuple[str, ...]) -> list[str]:
    order = list(by_name())
    return sorted(task.members, key=lambda c: (-task.val(c, kinds), order.index(c)))


def variants(names: list[str], kinds: tuple[str, ...]) -> dict[str, dict[str, Proc]]:
    """Procedure -> {variant label: task -> test AUROC}; the first variant of each is the default."""
    extra = [k for k in kinds if k not in ALL_KINDS]
    base = tuple(k for k in ALL_KINDS if k in kinds)
    kind_sets = {"shipped": base, **({"every": kinds} if extra else {}), **{f"+{k}": (*base, k) for k in extra},
                 **{f"only {k}": (k,) for k in kinds}}
    sizes = {c: _input_size(by_name()[c]) for c in names}
    common = max(sizes.values(), key=list(sizes.values()).count)
    at_common = [c for c in names if sizes[c] == common]
    n = len(names)
    out: dict[str, dict[str, Proc]] = {}
    for c in names:
        out[f"always {c}"] = {"-": lambda t, c=c: t.test_auroc(c)}
    out[SHIPPED] = {"-": lambda t: fuse(t, at_common)}
    if len(at_common) < n:
        out["fuse all (equal z, every input size)"] = {"-": lambda t: fuse(t, names)}
    local = [c for c in at_common if localises(c)]
    if 1 < len(local) < len(at_common):  # a structural prior: pooled image features blur small defects
        out["fuse the members that localise (equal z)"] = {"-": lambda t: fuse(t, local)}
    out["rank fusion of all (mean percentile vs normal validation)"] = {"-": lambda t: fuse(t, names, how="pct")}

    def top_z(t: Task, m: int) -> float:  # per image, the mean of its m largest member z-scores
        z = np.sort(np.array([t.members[c].z() for c in names]), axis=0)[::-1]
        return auroc(t.labels, z[:m].mean(0))

    out["per-image top-m z of all (mean of each image's m largest z)"] = {
        f"m={m}": lambda t, m=m: top_z(t, m) for m in (n // 2, 3, 2, 1) if m >= 1}
    out["best single by validation"] = {ks: lambda t, K=K: t.test_auroc(ranked(t, K)[0]) for ks, K in kind_sets.items()}
    out["top-k by validation, equal z"] = {f"k={k}, {ks}": lambda t, K=K, k=k: fuse(t, ranked(t, K)[:k])
                                           for k in range(2, n) for ks, K in kind_sets.items()}
    out["top-k by validation, rank fusion"] = {f"k={k}, {ks}": lambda t, K=K, k=k: fuse(t, ranked(t, K)[:k], how="pct")
                                               for k in range(2, n) for ks, K in kind_sets.items()}

    def trimmed(t: Task, K: tuple[str, ...], d: float) -> float:
        v = {c: t.val(c, K) for c in t.members}
        top = max(v.values())
        return fuse(t, [c for c in names if v[c] >= top - d])

    out["trimmed: drop members below best validation - d"] = {
        f"d={d}, {ks}": lambda t, K=K, d=d: trimmed(t, K, d)
        for d in (0.2, 0.1, 0.05, 0.02, 0.01) for ks, K in kind_sets.items()}

    def weighted(t: Task, K: tuple[str, ...], tau: float, lam: float) -> float:
        v = np.array([t.val(c, K) for c in names])
        soft = np.exp((v - v.max()) / tau)
        w = lam / n + (1 - lam) * soft / soft.sum()
        return fuse(t, names, list(w))

    out["validation-weighted (softmax, shrunk to equal)"] = {
        f"tau={tau}, shrink={lam}, {ks}": lambda t, K=K, tau=tau, lam=lam: weighted(t, K, tau, lam)
        for lam in (0.75, 0.5, 0.25, 0.0) for tau in (0.05, 0.02, 0.01) for ks, K in kind_sets.items()}
    return out


# -- evaluation --------------------------------------------------------------------------------------
def source_mean(regrets: dict[str, float]) -> float:
    per: dict[str, list[float]] = defaultdict(list)
    for t, r in regrets.items():
        per[source(t)].append(r)
    return float(np.mean([np.mean(v) for v in per.values()]))


def loso(tasks: list[Task], procs: dict[str, Proc]) -> tuple[dict[str, float], dict[str, str], str]:
    """Per task, the regret of the variant chosen on the other sources; the choice per source; and
    the variant chosen on every source (in-sample)."""
    oracle = {t.name: t.oracle() for t in tasks}
    table = {v: {t.name: oracle[t.name] - f(t) for t in tasks} for v, f in procs.items()}
    sources = sorted({t.source for t in tasks})
    regrets, chosen = {}, {}
    for s in sources:
        train = {v: {t: r for t, r in reg.items() if source(t) != s} for v, reg in table.items()}
        best = min(procs, key=lambda v: (round(source_mean(train[v]), 6), list(procs).index(v)))
        chosen[s] = best
        regrets.update({t: r for t, r in table[best].items() if source(t) == s})
    in_sample = min(procs, key=lambda v: (round(source_mean(table[v]), 6), list(procs).index(v)))
    return regrets, chosen, in_sample


def boot(regrets: dict[str, float], rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    names = list(regrets)
    vals = np.array([regrets[t] for t in names])
    task_means = [vals[rng.integers(len(vals), size=len(vals))].mean() for _ in range(N_BOOT)]
    by_src: dict[str, np.ndarray] = defaultdict(list)
    for t in names:
        by_src[source(t)].append(regrets[t])
    by_src = {s: np.array(v) for s, v in by_src.items()}
    src_means = [np.mean([v[rng.integers(len(v), size=len(v))].mean() for v in by_src.values()])
                 for _ in range(N_BOOT)]
    q = lambda x: (float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975)))  # noqa: E731
    return q(task_means), q(src_means)


def agreement(tasks: list[Task], names: list[str], kinds: tuple[str, ...]) -> list[str]:
    """Spearman over candidates between a kind set's validation figure and the test AUROC, per source."""
    extra = [k for k in kinds if k not in ALL_KINDS]
    base = tuple(k for k in ALL_KINDS if k in kinds)
    sets = {"shipped (" + ",".join(base) + ")": base, **({"every kind": kinds} if extra else {}),
            **{f"shipped + {k}": (*base, k) for k in extra}, **{f"only {k}": (k,) for k in kinds}}
    sources = sorted({t.source for t in tasks})

    def rho(t: Task, K: tuple[str, ...]) -> float:
        val, test = [t.val(c, K) for c in names], [t.test_auroc(c) for c in names]
        if np.ptp(val) == 0 or np.ptp(test) == 0:  # every candidate tied (bottle's test): no ranking to agree with
            return 0.0
        return float(spearmanr(val, test).statistic)

    per = {label: {s: float(np.mean([rho(t, K) for t in tasks if t.source == s])) for s in sources}
           for label, K in sets.items()}
    lines = ["| kinds | " + " | ".join(sources) + " | mean over sources |", "|---" * (len(sources) + 2) + "|"]
    for label, v in per.items():
        cells = " | ".join(f"{v[s]:+.2f}" for s in sources)
        lines.append(f"| {label} | {cells} | {np.mean(list(v.values())):+.2f} |")
    # leave one source out: the kind set (any subset) with the best mean agreement on the other sources
    subsets = [K for n in range(len(kinds), 0, -1) for K in itertools.combinations(kinds, n)]
    cache = {K: {s: float(np.mean([rho(t, K) for t in tasks if t.source == s])) for s in sources} for K in subsets}
    lines.append("")
    lines.append("Leave one source out (any subset of kinds, chosen by mean Spearman on the other sources):")
    for s in sources:
        best = max(subsets, key=lambda K: (np.mean([cache[K][o] for o in sources if o != s]), len(K)))
        lines.append(f"- {s}: chosen {','.join(best)}; Spearman on {s} {cache[best][s]:+.2f} "
                     f"(shipped {cache[base][s]:+.2f})")
    return lines


def cost_lines(paths: list[str]) -> list[str]:
    fit: dict[str, list[float]] = defaultdict(list)
    score: dict[str, list[float]] = defaultdict(list)
    for r in (json.loads(line) for p in paths for line in open(p) if line.strip()):
        if "fit_seconds" not in r:
            continue
        fit[r["candidate"]].append(r["fit_seconds"] / r["n_fit"])
        n_val = r["n_held"] * (1 + len(r.get("refit_kinds", r["defective"])))
        n_test = len(r["test_scores"]) if "test_seconds" in r else 0
        score[r["candidate"]].append((r["val_seconds"] + r.get("test_seconds", 0.0)) / (n_val + n_test))
    return [f"| {c} | {len(fit[c])} | {np.median(fit[c]):.3f} | {np.median(score[c]):.3f} |" for c in fit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--types", default=None, help="auto_study.py --types-only output, for lines without types")
    ap.add_argument("--pool", default=None, help="candidates (default: those in every task)")
    ap.add_argument("--kinds", default=None, help="defect kinds (default: those every line has)")
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    tasks, names, kinds = load(args.jsonl, args.types, args.pool.split(",") if args.pool else None,
                               args.kinds.split(",") if args.kinds else None)
    sources = sorted({t.source for t in tasks})
    out = [f"Tasks: {len(tasks)} ({', '.join(f'{s} {sum(t.source == s for t in tasks)}' for s in sources)}); "
           f"pool: {', '.join(names)}; kinds: {', '.join(kinds)}.", ""]
    procs = variants(names, kinds)
    header = ("| procedure | LOSO mean regret [95% CI] | worst (task) | source-equal mean [95% CI] | "
              "minus shipped, paired [95% CI] | " + " | ".join(sources)
              + " | chosen per left-out source | in-sample best variant (mean) |")
    out += [header, "|---" * (7 + len(sources)) + "|"]
    oracle = {t.name: t.oracle() for t in tasks}
    per_task: dict[str, dict[str, float]] = {}
    shipped = loso(tasks, procs[SHIPPED])[0]
    for label, vs in procs.items():
        regrets, chosen, ins = loso(tasks, vs)
        per_task[label] = regrets
        rng = np.random.default_rng([SEED, zlib.crc32(label.encode())])  # a procedure's intervals: its own draws
        (lo, hi), (slo, shi) = boot(regrets, rng)
        diff = np.array([regrets[t] - shipped[t] for t in regrets])
        dq = np.quantile([diff[rng.integers(len(diff), size=len(diff))].mean() for _ in range(N_BOOT)], [0.025, 0.975])
        worst = max(regrets, key=regrets.get)
        per_src = [np.mean([r for t, r in regrets.items() if source(t) == s]) for s in sources]
        ins_mean = np.mean([oracle[t.name] - vs[ins](t) for t in tasks])
        ch = "; ".join(f"{s}: {v}" for s, v in chosen.items()) if len(vs) > 1 else "-"
        out.append(f"| {label} | {np.mean(list(regrets.values())):.4f} [{lo:.4f}, {hi:.4f}] | "
                   f"{regrets[worst]:.4f} ({worst}) | {source_mean(regrets):.4f} [{slo:.4f}, {shi:.4f}] | "
                   f"{diff.mean():+.4f} [{dq[0]:+.4f}, {dq[1]:+.4f}] | "
                   + " | ".join(f"{v:.4f}" for v in per_src) + f" | {ch} | "
                   + (f"{ins} ({ins_mean:.4f})" if len(vs) > 1 else "-") + " |")
    show = [p for p in procs if not p.startswith("always") or p in ("always gaussian", "always padim")]
    out += ["", "Per task, leave-one-source-out regret (oracle: the best single candidate's test AUROC):", "",
            "| task | oracle (candidate) | " + " | ".join(show) + " |", "|---" * (2 + len(show)) + "|"]
    for t in tasks:
        best = max(t.members, key=t.test_auroc)
        out.append(f"| {t.name} | {oracle[t.name]:.4f} ({best}) | "
                   + " | ".join(f"{per_task[p][t.name]:.4f}" for p in show) + " |")
    out += ["", "Validation-test rank agreement (Spearman over the pool's candidates, mean over a source's tasks):", ""]
    out += agreement(tasks, names, kinds)
    out += ["", "Cost on the study's machine (median over the lines; val = held-out normals and defect sets "
            "scored; refitted lines score only the kinds they lacked):", "",
            "| candidate | lines | fit s / image | scoring s / image |", "|---|---|---|---|"]
    out += cost_lines(args.jsonl)
    text = "\n".join(out)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")


if __name__ == "__main__":
    main()
