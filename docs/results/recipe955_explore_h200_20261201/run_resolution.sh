#!/bin/bash
O=${OUT:-/tmp/o}; mkdir -p $O
t0=$SECONDS
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b; B=/tmp/b
nvidia-cuda-mps-control -d; sleep 1
R="--device cuda --model pico --data fashion-mnist --data-dir third_party_headers/fashion-mnist --epochs 300 --batch-size 256 --lr 2e-3 --min-lr 1e-5 --warmup-epochs 3 --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0.1 --hflip --erase 0.35 --ema 0.999 --tta-flip --val 5000 --threads 5 --workers 4 --log-every 1000 --seed 0 --time-budget 470"
for px in 28 42 56; do
  timeout 560 $B/nala train $R --img-size $px --crop-pad $((px / 14)) --out /tmp/v$px > $O/v$px.log 2>&1 &
done; wait
echo quit | nvidia-cuda-mps-control
echo "runs done at $((SECONDS-t0)) s"
for px in 28 42 56; do cp /tmp/v$px/metrics.csv $O/v$px.metrics.csv; grep -i "budget\|best\|chosen\|done in" $O/v$px.log | tail -5 | cut -c1-250; done
