#!/usr/bin/env bash
# bench/scaling.sh - data-parallel scaling: images/s of `t` at 224 px, batch
# 128 per GPU, on 1, 2, 4 and 8 GPUs (as many as the machine has), and the
# scaling efficiency (N-GPU images/s over N times the 1-GPU figure). Also
# one GPU through a NCCL group of one: what the gradient buckets cost.
# PyTorch DistributedDataParallel runs the same step beside each row
# (bench/torch_ddp.py; skipped where python3 has no torch).
#
#   bench/scaling.sh [bench_scaling options, e.g. --model xt --iters 20]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build/release}
export NCCL_NVLS_ENABLE=0  # never NVLink multicast (shared machines)
n=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
date -u
one=""
printf "%-7s %-5s %-6s %10s %12s %10s\n" engine gpus comm img/s img/s/gpu efficiency
run() {  # run GPUS EXTRA...
  local g=$1; shift
  local line
  line=$($B/bench/bench_scaling --gpus "$g" "$@" | grep '^nala ')
  echo "$line" >&2
  local ips comm
  ips=$(echo "$line" | sed -E 's/.* img\/s=([0-9.]+).*/\1/')
  comm=$(echo "$line" | sed -E 's/.* comm=([a-z]+).*/\1/')
  [ -n "$one" ] || one=$ips
  awk -v g="$g" -v c="$comm" -v i="$ips" -v o="$one" \
    'BEGIN { printf "%-7s %-5d %-6s %10.1f %12.1f %9.1f%%\n", "nala", g, c, i, i / g, 100 * i / (g * o) }'
}
torch_one=""
torch_run() {  # torch_run GPUS: PyTorch DDP, the same step
  python3 -c 'import torch' 2>/dev/null || return 0
  local g=$1 line ips
  line=$(python3 bench/torch_ddp.py --gpus "$g" | grep '^torch ')
  echo "$line" >&2
  ips=$(echo "$line" | sed -E 's/.* img\/s=([0-9.]+).*/\1/')
  [ -n "$torch_one" ] || torch_one=$ips
  awk -v g="$g" -v i="$ips" -v o="$torch_one" \
    'BEGIN { printf "%-7s %-5d %-6s %10.1f %12.1f %9.1f%%\n", "pytorch", g, "nccl", i, i / g, 100 * i / (g * o) }'
}
run 1 "$@"
run 1 --nccl1 "$@"
torch_run 1
for g in 2 4 8; do
  [ "$g" -le "$n" ] || break
  run "$g" "$@"
  torch_run "$g"
done
