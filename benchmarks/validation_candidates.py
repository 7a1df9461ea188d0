"""Score PaDiM option sets on a data set's validation split (the split of `latentad fit --tune`: seed 0,
20 % of the normal training images, each once as it is and once with a synthetic defect of the kinds
below), one at a time, printing each as it finishes; no test image is read. For quick rounds where a
`--tune` run would only report at the end (and a candidate that is killed would take the others with it).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/validation_candidates.py ../shared/data/magnetic_tile \
        '{"npca": 0.99, "backbone": "efficientnet_lite2", "image_size": 384}'
"""

from __future__ import annotations

import json
import sys

from latentad.data.open import open_dataset
from latentad.tuning import _score, validation_split

KINDS = ("cutpaste", "scar", "blend", "band", "graft")


def main(path: str, candidates: list[str]) -> None:
    split = open_dataset(path, size=None)
    fit, val = validation_split(split.train, 0.2, 0, KINDS)
    for raw in candidates:
        print(raw, _score("padim", None, json.loads(raw), fit, val, 0, None), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
