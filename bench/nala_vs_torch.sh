#!/usr/bin/env bash
# bench/nala_vs_torch.sh - on a GPU machine: the NaLa op's table of
# bench/bench_nala_cuda with PyTorch eager and torch.compile beside, in one
# run (bench/torch_gpu.py --parts attn first, its lines handed over).
#   bench/nala_vs_torch.sh [reps]       (build first: make CUDA=1 build/release/bench/bench_nala_cuda)
#   TORCH_ARGS="--compile-shapes 1"     extra arguments of bench/torch_gpu.py
set -euo pipefail
cd "$(dirname "$0")/.."
t=$(mktemp)
trap 'rm -f "$t"' EXIT
python3 bench/torch_gpu.py --parts attn --attn-dtypes fp32,bf16 ${TORCH_ARGS:-} >"$t"
build/release/bench/bench_nala_cuda "${1:-20}" --torch "$t"
