#!/bin/bash
O=${OUT:-/tmp/o}; mkdir -p $O
t0=$SECONDS
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b; B=/tmp/b
nvidia-cuda-mps-control -d; sleep 1
R="--device cuda --model pico --data fashion-mnist --data-dir third_party_headers/fashion-mnist --epochs 300 --min-lr 1e-5 --weight-decay 0.05 --label-smoothing 0.1 --hflip --ema 0.999 --tta-flip --val 5000 --threads 5 --workers 4 --log-every 1000 --seed 0 --time-budget 450 --drop-path 0.15 --erase 0.5"
timeout 560 $B/nala train $R --img-size 56 --crop-pad 4 --batch-size 256 --lr 2e-3 --warmup-epochs 3 --out /tmp/a > $O/a.log 2>&1 &
timeout 560 $B/nala train $R --img-size 42 --crop-pad 3 --batch-size 256 --lr 2e-3 --warmup-epochs 3 --out /tmp/b42 > $O/b.log 2>&1 &
timeout 560 $B/nala train $R --img-size 56 --crop-pad 4 --batch-size 512 --lr 3e-3 --warmup-epochs 5 --out /tmp/c > $O/c.log 2>&1 &
wait
echo quit | nvidia-cuda-mps-control
echo "runs done at $((SECONDS-t0)) s"
for v in a b c; do grep -i "chosen\|done in" $O/$v.log | tail -1 | cut -c1-250; done
cp /tmp/a/metrics.csv $O/a.metrics.csv; cp /tmp/b42/metrics.csv $O/b.metrics.csv; cp /tmp/c/metrics.csv $O/c.metrics.csv
timeout 100 python3 bench/torch_gpu.py --parts attn --attn-dtypes fp32,bf16 > $O/torch_attn.txt 2>$O/torch_attn.err; echo "torch rc=$? at $((SECONDS-t0)) s"
timeout 30 $B/tp_bench_nala_cuda 20 --torch $O/torch_attn.txt > $O/bench_nala.log 2>&1; echo "bench rc=$? at $((SECONDS-t0)) s"; cat $O/bench_nala.log
