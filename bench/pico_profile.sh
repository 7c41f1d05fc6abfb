#!/usr/bin/env bash
# bench/pico_profile.sh - where a pico training step's time goes on the CPU:
# bench_pico's training loop under NALA_PROFILE=1 (autograd/profile.h: each
# kernel timed), as the README's per-op table: milliseconds per step, share,
# calls per step, largest first. The warm-up steps are profiled too, so the
# figures are per step over warm-up + timed steps.
#   bench/pico_profile.sh [threads=2] [steps=10] [batch=128]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
S=${2:-10}
BATCH=${3:-128}
make -s CUDA=0 build/release-nocuda/bench/bench_pico >/dev/null
out=$(mktemp /tmp/pico_profile.XXXXXX)
NALA_PROFILE=1 build/release-nocuda/bench/bench_pico --threads "$T" --batch "$BATCH" --warmup 1 --iters "$((S - 1))" \
  --modes train 2>"$out"
echo "$(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p'), $T threads, batch $BATCH, $S steps"
awk -v steps="$S" '
  / \(cpu\) / {
    name = $1; ms = $(NF - 2); calls = $(NF - 1); share = $NF
    printf "| %s | %.2f | %s | %.0f |\n", name, ms / steps, share, calls / steps
    total += ms
  }
  BEGIN { print "| kernel | ms per step | share | calls per step |"; print "|---|---|---|---|" }
  END { printf "| **all kernels** | **%.1f** | 100%% | |\n", total / steps }' "$out"
rm -f "$out"
