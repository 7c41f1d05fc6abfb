#!/bin/bash
O=${OUT:-/tmp/o}; mkdir -p $O
t0=$SECONDS
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b; B=/tmp/b
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 260 $B/tp_nala_tests "[cuda]" > $O/tests.log 2>&1; rc=$?
echo "cuda tests rc=$rc at $((SECONDS-t0)) s"; tail -2 $O/tests.log | head -1; grep -B3 -A30 FAILED $O/tests.log | head -40
timeout 30 $B/tp_bench_nala_cuda 20 > $O/bench_nala.log 2>&1; echo "bench_nala rc=$? at $((SECONDS-t0)) s"; grep "tensor cores\|floor\|bf16" $O/bench_nala.log | head -20
timeout 20 $B/tp_bench_long_seq --ops nala,nala-bf16 --seconds 0.3 --csv $O/nala_long_seq.csv > $O/long_seq.log 2>&1; echo "long_seq rc=$? at $((SECONDS-t0)) s"; cut -c1-140 $O/long_seq.log | tail -8
timeout 20 $B/tp_nala_attention_cuda --check > $O/lab_check.log 2>&1; echo "lab check rc=$? at $((SECONDS-t0)) s"; grep -ci "fail\|mismatch" $O/lab_check.log; tail -3 $O/lab_check.log
timeout 30 $B/tp_nala_attention_cuda --size 56 > $O/lab_size56.log 2>&1; echo "lab size56 rc=$? at $((SECONDS-t0)) s"; tail -14 $O/lab_size56.log
timeout 20 compute-sanitizer --tool racecheck $B/tp_nala_tests "cuda: nala_attention on bf16 against the CPU's bf16 op" > $O/racecheck.log 2>&1; echo "racecheck rc=$?"; tail -1 $O/racecheck.log
# throughput probe: pico at 28, 42, 56 px, 3 at once under MPS, recipe options
nvidia-cuda-mps-control -d; sleep 1
R="--device cuda --model pico --data fashion-mnist --data-dir third_party_headers/fashion-mnist --epochs 80 --batch-size 256 --lr 2e-3 --min-lr 1e-5 --warmup-epochs 3 --weight-decay 0.05 --label-smoothing 0.1 --drop-path 0.1 --hflip --erase 0.35 --ema 0.999 --tta-flip --val 5000 --threads 5 --workers 4 --log-every 50 --max-steps 200"
for px in 28 42 56; do
  cp=$((px / 14))
  for s in 0 1 2; do timeout 120 $B/nala train $R --img-size $px --crop-pad $cp --seed $s --out /tmp/p$px-$s > $O/probe$px-$s.log 2>&1 & done; wait
  echo "px $px at $((SECONDS-t0)) s"; grep -h "img/s" $O/probe$px-*.log | tail -3 | cut -c1-200
done
echo quit | nvidia-cuda-mps-control
echo "done at $((SECONDS-t0)) s"
