#!/usr/bin/env bash
# One prepared run for a GPU machine lent for a few minutes (issue 6: the GPU figures).
#
#   bash bench/gpu_check.sh            # from the repository root; results under $OUT (default bench/out/gpu)
#
# Why a script: such a machine is lent for 15 minutes in all, starting takes one or two, and it
# may have no network. So everything runs in one call, in order of value, each step under its
# own time limit, and every result is written as soon as it exists:
#   1. the machine: GPU, driver, Python and torch versions (env.txt);
#   2. the CUDA tests that CI skips (tests/models/test_cuda.py; cuda-tests.txt);
#   3. the benchmarks on CUDA, quick: Langevin throughput against the reference loop (with the
#      CUDA-graph and float32 variants; issue 6's GPU target), scaling, then time to quality, the
#      section whose length is hardest to foresee (bench.log; the JSON is rewritten after each
#      section, straight into $OUT, so a step cut off by its limit keeps the sections before it;
#      `python -m bench.report <json>` renders its tables anywhere).
# It uses the machine's own python3 and torch (the project is not installed there): models/ and
# bench/ need torch, numpy, Pillow, scikit-image and safetensors, the tests pytest; what is
# missing is named in env.txt first. Exit status: 2 without a CUDA device,
# 1 if a step failed or was cut off (a bench section's traceback is kept in its JSON), else 0.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
PY=${PYTHON:-python3}
TEST_LIMIT=${TEST_LIMIT:-150}
BENCH_LIMIT=${BENCH_LIMIT:-330}
mkdir -p -- "$OUT" && OUT=$(CDPATH= cd -- "$OUT" && pwd) || { echo "gpu_check: cannot write to $OUT" >&2; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 GCN_BENCH_OUT=$OUT
status=0

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "nvidia-smi failed"
  "$PY" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/env.txt"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device here; nothing to measure" | tee -a "$OUT/env.txt"
  exit 2
fi

"$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" \
  || echo "gpu_check: the project pins torch 2.13.0; these figures come from the torch named above" | tee -a "$OUT/env.txt"
for module in numpy PIL skimage pytest safetensors; do
  "$PY" -c "import $module" 2>/dev/null || echo "gpu_check: python module '$module' is missing here" | tee -a "$OUT/env.txt"
done

echo "== CUDA tests (limit ${TEST_LIMIT} s)"
timeout -k 10 "$TEST_LIMIT" "$PY" -m pytest -q -p no:cacheprovider tests/models/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench --device cuda --quick (limit ${BENCH_LIMIT} s)"
timeout -k 10 "$BENCH_LIMIT" "$PY" -m bench --device cuda --quick --only langevin,scaling,quality --no-docs 2>&1 \
  | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1  # bench exits 1 when a section failed, 124 when cut off
ls -l "$OUT"
exit "$status"
