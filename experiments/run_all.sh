#!/usr/bin/env bash
# The CPU scale of every figure, and the project's fast recipes, one after the other on one torch
# thread (GCN_TORCH_THREADS, default 1). 22-31 minutes (1293-1875 s) on one core of a 2.6 GHz AMD EPYC, by load.
# Outputs: experiments/out/<fig>/<data>-<scale>/ (PNGs, metrics.json); a log in experiments/out/run_all.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export GCN_TORCH_THREADS=${GCN_TORCH_THREADS:-1}
# float32, as the recorded runs (docs/experiments.md): on CPUs with bfloat16 hardware the
# library would otherwise autocast the net (models.precision)
export GCN_AMP=${GCN_AMP:-off}
mkdir -p experiments/out
log=experiments/out/run_all.log
: > "$log"
run() {
    echo "== $*" | tee -a "$log"
    local t0=$SECONDS
    "$PY" "$@" 2>&1 | tee -a "$log"
    echo "== $((SECONDS - t0)) s: $*" | tee -a "$log"
}
run experiments/fast_recipes.py --data brick
run experiments/fast_recipes.py --data grass
run experiments/fast_recipes.py --data faces
run experiments/fig1_texture.py --scale cpu --data brick
run experiments/fig1_texture.py --scale cpu --data grass
run experiments/fig2_codebook.py --scale cpu --data grass
run experiments/fig3_object.py --scale cpu --data faces
run experiments/fig4_cd.py --scale cpu --data faces
echo "all done in $SECONDS s" | tee -a "$log"
