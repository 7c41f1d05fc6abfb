#!/usr/bin/env bash
# kernels/lab/measure_cuda.sh - times every CUDA lab program at the sizes
# docs/kernels.md reports, ROUNDS times (default 1; each run already takes
# the median of many timed batches, lab_cuda.cuh), and appends the programs'
# CSV lines to OUT (which must not exist yet). kernels/lab/report.py keeps
# the fastest round of each version and writes the H200 tables and the GPU
# roofline plot. A program that is not built (an op whose CUDA lab does not
# exist in this tree) is skipped with a note; a version that mismatches its
# reference writes no CSV line, the others go on, and the exit status is 1.
#
#   make lab                                  (with CUDA)
#   kernels/lab/measure_cuda.sh build/release/lab /tmp/lab_gpu.csv [ROUNDS]
#   python3 kernels/lab/report.py /tmp/lab_gpu.csv --gpu-svg docs/kernels_roofline_h200.svg
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: kernels/lab/measure_cuda.sh LAB_DIR OUT.csv [ROUNDS]" >&2
  exit 2
fi
LAB=$1
OUT=$2
ROUNDS=${3:-1}
MIN_TIME=${MIN_TIME:-0.15}
if [ -e "$OUT" ]; then
  echo "measure_cuda.sh: $OUT already exists; give a new file name" >&2
  exit 1
fi
# The sum at 64 MiB for every version, then at 256 MiB for versions 2-5
# (version 1's float running sum stops growing at 2^24 there: it fails its
# check); LayerNorm on NaLaFormer-xt's four stages at batch 128; the
# depthwise conv on xt's first stage at batch 128.
RUNS=(
  "reduce_sum_cuda --size 16777216"
  "reduce_sum_cuda 2 --size 67108864"
  "reduce_sum_cuda 3 --size 67108864"
  "reduce_sum_cuda 4 --size 67108864"
  "reduce_sum_cuda 5 --size 67108864"
  "layernorm_cuda --size 401408 --channels 32"
  "layernorm_cuda --size 100352 --channels 64"
  "layernorm_cuda --size 25088 --channels 128"
  "layernorm_cuda --size 6272 --channels 384"
  "dwconv_cuda --size 56"
)
: > "$OUT"
status=0
for round in $(seq 1 "$ROUNDS"); do
  for r in "${RUNS[@]}"; do
    prog=${r%% *}
    args=${r#* }
    if [ ! -x "$LAB/$prog" ]; then
      echo "measure_cuda.sh: $LAB/$prog not built; skipped" >&2
      continue
    fi
    echo "== round $round: $prog $args" >&2
    # shellcheck disable=SC2086  # args is a list of words
    text=$("$LAB/$prog" $args --csv --min-time "$MIN_TIME") || { status=1; echo "measure_cuda.sh: $prog $args: a mismatch" >&2; }
    grep -v '^csv,' <<< "$text" >&2
    grep '^csv,' <<< "$text" >> "$OUT"
  done
done
echo "measure_cuda.sh: $(wc -l < "$OUT") rows in $OUT" >&2
exit $status
