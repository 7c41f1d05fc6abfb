#!/usr/bin/env bash
# bench/gpu_run.sh - on a GPU machine: build with CUDA, run the CUDA tests and
# the GPU benchmarks side by side with PyTorch, writing logs to $OUT.
#   OUT=dir bench/gpu_run.sh [tests] [sanitize] [bench] [benchmodels] [longseq] [dist] [train]
# train: the README's GPU recipe (EPOCHS, default 60; PRECISION fp32 or bf16).
# Catch2, stb, zlib and Fashion-MNIST may come in third_party_headers/ when
# the machine has no package manager.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nala-gpu}
mkdir -p "$OUT"
what=${*:-tests bench}
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
make -j"$(nproc)" CUDA=1 CUDA_ARCH=90 2>&1 | tail -3 | tee "$OUT/build.log"
B=build/release
FM=${FM:-third_party_headers/fashion-mnist}
for w in $what; do
  case $w in
    tests)
      $B/nala_tests "[cuda]" 2>&1 | tee "$OUT/cuda_tests.log" | tail -60
      ;;
    sanitize)
      compute-sanitizer --tool memcheck $B/nala_tests "[cuda]~[model]" >"$OUT/memcheck.log" 2>&1
      tail -3 "$OUT/memcheck.log"
      timeout "${RACECHECK_S:-900}" compute-sanitizer --tool racecheck $B/nala_tests "[cuda]~[model]" >"$OUT/racecheck.log" 2>&1
      tail -3 "$OUT/racecheck.log"
      ;;
    longseq)  # attention at 4K-262K tokens (nala, PyTorch, the plot in $OUT), xt inference at 1024 and 2048 px
      {
        rm -f "$OUT/nala_long_seq.csv"
        $B/bench/bench_long_seq --csv "$OUT/nala_long_seq.csv"
        python3 bench/torch_long_seq.py --nala-csv "$OUT/nala_long_seq.csv" --plot "$OUT/long_seq_$(date -u +%Y%m%d%H%M%S)"
        for img in 1024 2048; do
          $B/bench/bench_pico --device cuda --model xt --img $img --batch 1 --modes infer --warmup 2 --iters 5
          python3 bench/torch_gpu.py --parts xt --img $img --batch 1 --modes infer --softmax-core sdpa --warmup 2 --iters 5 --peak-after-warmup
        done
      } 2>&1 | tee "$OUT/long_seq.log"
      ;;
    benchmodels)  # xt and t at 224 px: nala fp32 and bf16 beside PyTorch eager and torch.compile, fp32 and bf16
      {
        for p in fp32 bf16; do
          $B/bench/bench_pico --device cuda --model xt --img 224 --batch 128 --warmup 2 --iters 5 --precision $p
          $B/bench/bench_pico --device cuda --model t --img 224 --batch 128 --warmup 2 --iters 5 --precision $p
        done
        python3 bench/torch_gpu.py --parts xt,t --variants eager-fp32,eager-bf16,compile-fp32,compile-bf16
      } 2>&1 | tee "$OUT/bench_models.log"
      python3 bench/models_table.py "$OUT/bench_models.log" | tee "$OUT/bench_models.md"
      ;;
    bench)
      {
        bench/nala_vs_torch.sh
        $B/bench/bench_pico --device cuda --batch 256 --warmup 5 --iters 30
        python3 bench/torch_gpu.py --parts pico
        $B/bench/bench_pico --device cuda --model xt --img 224 --batch 128 --warmup 2 --iters 5
        $B/bench/bench_pico --device cuda --model t --img 224 --batch 128 --warmup 2 --iters 5
        python3 bench/torch_gpu.py --parts xt,t
        [ -x $B/bench/bench_gemm_cuda ] && $B/bench/bench_gemm_cuda
      } 2>&1 | tee "$OUT/bench.log"
      ;;
    dist)  # data-parallel: the NCCL path (a group of one when there is one GPU) and the scaling table
      {
        $B/nala_tests "[distributed]~[mpi]"
        rm -rf /tmp/nala-dp1 /tmp/nala-dpn
        common="--device cuda --model pico --data fashion-mnist --data-dir $FM --subset 2048 --eval-subset 512 \
          --batch-size 128 --epochs 2 --optimizer sgd --lr 0.05 --warmup-epochs 0 --drop-path 0 --seed 2 --log-every 8"
        $B/nala train $common --out /tmp/nala-dp1 | grep -E "^epoch|data-parallel"
        dir=$(mktemp -d)
        NALA_WORLD_SIZE=1 NALA_RANK=0 NALA_RENDEZVOUS=$dir $B/nala train $common --sync-bn --out /tmp/nala-dpn \
          | grep -E "^epoch|data-parallel"
        python3 - <<'PY'
import json, struct
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k != '__metadata__' and v['dtype'] == 'F32':
            s, e = v['data_offsets']; out[k] = b[8 + n + s:8 + n + e]
    return out
import array
a, b = load('/tmp/nala-dp1/checkpoint.safetensors'), load('/tmp/nala-dpn/checkpoint.safetensors')
worst = max(max(abs(x - y) for x, y in zip(array.array('f', a[k]), array.array('f', b[k]))) for k in a)
print(f"NCCL group of one vs no group, 32 steps: max |w - w'| = {worst:.3g}")
PY
        $B/nala train $common --gpus "$(nvidia-smi -L | wc -l | awk '{print $1 + 1}')" --out /tmp/nala-dpx; echo "exit code $?"
        bench/scaling.sh
      } 2>&1 | tee "$OUT/dist.log"
      ;;
    train)
      $B/nala train --device cuda --model pico --data fashion-mnist --data-dir "$FM" \
        --epochs "${EPOCHS:-60}" --batch-size 256 --lr 2e-3 --min-lr 1e-5 --warmup-epochs 3 \
        --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0.05 --crop-pad 2 --hflip --erase 0.25 \
        --workers 8 --threads 8 --log-every 100 --precision "${PRECISION:-fp32}" --out "/tmp/nala-run-$$" 2>&1 \
        | tee "$OUT/train.log" | grep -E "^epoch|done|precision"
      cp "/tmp/nala-run-$$/metrics.csv" "/tmp/nala-run-$$/best.safetensors" "$OUT/" 2>/dev/null
      ;;
  esac
done
