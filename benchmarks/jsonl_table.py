"""A markdown table of JSON-lines results (for docs/RESULTS.md, so figures are not copied by hand).

    python benchmarks/jsonl_table.py benchmarks/results/ssl_family.jsonl data label image_auroc pixel_auroc ...
"""

from __future__ import annotations

import json
import sys


def cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) <= 1 else f"{v:.1f}"
    return str(v)


def main() -> None:
    path, *keys = sys.argv[1:]
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(cell(r.get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
