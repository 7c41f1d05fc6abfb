#!/usr/bin/env bash
# bench/pico_cpu_vs_torch.sh - pico on the CPU, nala and PyTorch side by side
# in one run, alternating so that both see the same machine state, then the
# README's table (medians over the rounds, and their ratio).
#   bench/pico_cpu_vs_torch.sh [threads=2] [rounds=3]
# The raw lines are kept in a new file under /tmp, named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
R=${2:-3}
make -s CUDA=0 build/release-nocuda/bench/bench_pico >/dev/null
log=$(mktemp /tmp/pico_cpu_vs_torch.XXXXXX)
{
  date -u; lscpu | grep "Model name"; python3 -c "import torch; print('torch', torch.__version__)"
  for r in $(seq "$R"); do
    build/release-nocuda/bench/bench_pico --threads "$T" --batch 128 --warmup 3 --iters 10
    python3 bench/torch_pico_cpu.py --threads "$T" --batch 128 --warmup 3 --iters 10
  done
} | tee "$log"
bench/summary.sh "$log" "pico, batch 128, $T threads" img/s
echo "(raw lines: $log)"
