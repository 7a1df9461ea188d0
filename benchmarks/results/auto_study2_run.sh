#!/bin/bash
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=benchmarks/results/auto_study2.jsonl
REUSE=benchmarks/results/auto_study.jsonl
ALL=bottle,mnist_0,magnetic_tile,elpv_mono,mnist_1,mnist_2,elpv_poly,mnist_3,mnist_4,mnist_5,mnist_6,mnist_7,mnist_8,mnist_9
echo "phase 1 $(date)"
$PY benchmarks/auto_study.py --out $OUT --reuse $REUSE --tasks $ALL --candidates gaussian,padim,padim_npca,patchcore,patchcore_whiten,simplenet,padim_lite2 --deadline 2000
echo "phase 2 $(date)"
$PY benchmarks/auto_study.py --out $OUT --reuse $REUSE --tasks bottle,mnist_0,magnetic_tile,elpv_mono,mnist_1,elpv_poly --candidates patchcore_448 --deadline 900
echo "phase 3 $(date)"
$PY benchmarks/auto_study.py --out $OUT --reuse $REUSE --tasks $ALL --candidates patchcore_dinov2,ssl_gaussian --deadline 1000
echo "done $(date)"
# phase 4 (added after phase 3 ended early, the machine less loaded): more MNIST digits with the whole pool
echo "phase 4 $(date)"
$PY benchmarks/auto_study.py --out $OUT --reuse $REUSE --tasks mnist_2,mnist_3,mnist_4,mnist_5,mnist_6 --candidates gaussian,padim,padim_npca,patchcore,patchcore_whiten,simplenet,padim_lite2,patchcore_448,patchcore_dinov2,ssl_gaussian --deadline 600
echo "done $(date)"
