#!/usr/bin/env bash
# kernels/lab/measure.sh - times every CPU lab program at the sizes
# docs/kernels.md reports: every version on 1 thread, and the threaded
# versions again on THREADS threads (default 2); all of it ROUNDS times
# (default 2), round after round, so that a busy spell on a shared machine
# hurts one round, not one version. Appends the programs' CSV lines to OUT
# (which must not exist yet); kernels/lab/report.py keeps the best round of
# each and writes the tables and the roofline plot. OMP_WAIT_POLICY defaults
# to passive here (below).
#
#   make CUDA=0 lab
#   kernels/lab/measure.sh build/release-nocuda/lab /tmp/lab.csv [ROUNDS]
#   python3 kernels/lab/report.py /tmp/lab.csv [more.csv ...] --svg docs/kernels_roofline.svg
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: kernels/lab/measure.sh LAB_DIR OUT.csv [ROUNDS]" >&2
  exit 2
fi
LAB=$1
OUT=$2
ROUNDS=${3:-2}
THREADS=${THREADS:-2}
# Threads that sleep at a barrier instead of spinning: when other work holds
# a core, a spinning OpenMP team stalls a whole scheduler time slice per
# parallel region (the NaLa forward at 2 threads: 17 ms instead of 0.55 ms).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ -e "$OUT" ]; then
  echo "measure.sh: $OUT already exists; give a new file name" >&2
  exit 1
fi
RUNS=(
  "gemm --size 1024"
  "reduce_sum --size 65536"
  "reduce_sum --size 16777216"
  "layernorm --size 32768"
  "nala_attention --size 28"
  "softmax_attention --size 28"
  "dwconv --size 56"
)
for r in "${RUNS[@]}"; do
  prog=${r%% *}
  if [ ! -x "$LAB/$prog" ]; then
    echo "measure.sh: $LAB/$prog not found; run make lab first" >&2
    exit 1
  fi
done
: > "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for r in "${RUNS[@]}"; do
    prog=${r%% *}
    args=${r#* }
    echo "== round $round: $prog $args (1 thread, then the threaded versions on $THREADS)" >&2
    for t in 1 "$THREADS"; do
      only=""
      [ "$t" = 1 ] || only=--threaded
      # shellcheck disable=SC2086  # args and only are lists of words
      text=$(OMP_NUM_THREADS=$t "$LAB/$prog" $args --csv $only)  # a mismatch (exit 1) stops here
      grep -v '^csv,' <<< "$text" >&2
      grep '^csv,' <<< "$text" >> "$OUT"
    done
  done
done
echo "measure.sh: $(wc -l < "$OUT") rows in $OUT" >&2
