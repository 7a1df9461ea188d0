#!/usr/bin/env bash
# The runs behind docs/ANALYSIS.md: one detector of each family per data set, then `latentad analyze`
# over the three. Reuses runs made elsewhere: benchmarks/ssl_family.py (padim and ssl_gaussian on ELPV
# and magnetic tile, ssl_gaussian on bottle) and the seed-0 cells of benchmarks/specs/families_bottle.toml
# (padim and the VQ-VAE on bottle); fits the others here.
# `foundation`: the two foundation-model methods (dino_knn, dinomaly) beside padim on bottle (issue 32).
#   OMP_NUM_THREADS=1 bash benchmarks/analysis_runs.sh [bottle|magnetic_tile|elpv|mnist|foundation ...]
set -eu
L=./.venv/bin/latentad
S=runs/ssl_family
A=runs/analysis
DATA=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
VQ_EPOCHS=${VQ_EPOCHS:-10}   # the CPU default is 30; 10 keeps the four data sets within the session
fit() { [ -f "$3/model/detector.json" ] || "$L" fit --method "$1" --data "$2" --out "$3" "${@:4}"; }
for d in "${@:-bottle magnetic_tile elpv mnist}"; do
  for name in $d; do
    case $name in
      bottle)
        p=$DATA/mvtec_ad/bottle
        B=runs/bench/families_bottle/runs/bottle
        runs=(--run $B/padim/seed0 --run $B/vqvae_ssim_am-10ep/seed0 --run $S/bottle/ssl_gaussian-both);;
      magnetic_tile)
        p=$DATA/magnetic_tile
        fit vqvae_ssim_am "$p" $A/magnetic_tile/vqvae --epochs "$VQ_EPOCHS"
        runs=(--run $S/magnetic_tile/padim --run $A/magnetic_tile/vqvae --run $S/magnetic_tile/ssl_gaussian-contrastive);;
      elpv)
        p=elpv
        [ -f $A/elpv/vqvae/model/detector.json ] || ./.venv/bin/python -c "
from pathlib import Path; from latentad.runs import fit_run
fit_run(Path('$A/elpv/vqvae'), 'vqvae_ssim_am', 'elpv', 'elpv', {'cell_type': 'mono', 'limit': {'train': 300, 'test': 100}},
        None, {'epochs': $VQ_EPOCHS, 'channels': 1}, 0, False, True, 0.1, 0.01)"
        runs=(--run $S/elpv_mono/padim --run $A/elpv/vqvae --run $S/elpv_mono/ssl_gaussian-both);;
      foundation)  # bottle: the DINOv2 memory bank and the DINOv2 reconstruction beside ImageNet PaDiM
        p=$DATA/mvtec_ad/bottle
        for m in padim dino_knn dinomaly; do fit $m "$p" $A/foundation/$m --seed 0; done
        runs=(--run $A/foundation/padim --run $A/foundation/dino_knn --run $A/foundation/dinomaly);;
      mnist)  # digit 3 as the normal class, the foundation's protocol (t10k file, seed 0, 80 % to train)
        p=$DATA/mnist
        for m in padim vqvae_ssim_am ssl_gaussian; do
          pre=(); [ $m = padim ] || pre=(--preset mnist)
          fit $m "$p" $A/mnist/$m --format mnist -d normal_class=3 "${pre[@]}"
        done
        runs=(--run $A/mnist/padim --run $A/mnist/vqvae_ssim_am --run $A/mnist/ssl_gaussian);;
    esac
    [ -f $A/$name/analysis/analysis.json ] || "$L" analyze "${runs[@]}" --data "$p" --out $A/$name/analysis --limit 2000
  done
done
