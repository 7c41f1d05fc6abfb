#!/usr/bin/env bash
# bench/xt_cpu_vs_torch.sh - the latency of xt (6.1M parameters) classifying
# one 224 px image on the CPU, nala and PyTorch side by side in one run,
# alternating, then the README's table: the median latency over the rounds
# (each round's figure the median of its calls) and how many times faster
# nala is.
#   bench/xt_cpu_vs_torch.sh [threads=2] [rounds=3] [calls=30]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-3}
N=${3:-30}
make -s CUDA=0 build/release-nocuda/bench/bench_pico >/dev/null
log=$(mktemp /tmp/xt_cpu_vs_torch.XXXXXX)
{
  date -u; lscpu | grep "Model name"; python3 -c "import torch; print('torch', torch.__version__)"
  for r in $(seq "$R"); do
    build/release-nocuda/bench/bench_pico --model xt --img 224 --threads "$T" --batch 1 --warmup 5 --iters "$N" \
      --modes infer
    python3 bench/torch_pico_cpu.py --model xt --img 224 --threads "$T" --batch 1 --warmup 5 --iters "$N" \
      --modes infer
  done
} | tee "$log"
bench/summary.sh "$log" "xt, one 224 px image, $T threads" ms_median
echo "(raw lines: $log)"
