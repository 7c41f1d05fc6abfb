#!/bin/bash
O=${OUT:-/tmp/o}; mkdir -p $O
t0=$SECONDS
mkdir -p /tmp/b && tar xzf .gpu/bin.tgz -C /tmp/b; B=/tmp/b
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 90 $B/nala_tests "[cuda][bf16],[cuda][attention],[cuda][memory]" > $O/tests.log 2>&1; rc=$?
echo "cuda tests rc=$rc at $((SECONDS-t0)) s"; tail -2 $O/tests.log | head -1; grep -B3 -A30 FAILED $O/tests.log | head -60
timeout 40 $B/bench_nala_cuda 20 > $O/bench_nala.log 2>&1; echo "bench_nala rc=$? at $((SECONDS-t0)) s"; cat $O/bench_nala.log
timeout 40 $B/bench_long_seq --ops nala,nala-bf16 --seconds 0.3 --csv $O/nala_long_seq.csv > $O/long_seq.log 2>&1; echo "long_seq rc=$? at $((SECONDS-t0)) s"; cat $O/long_seq.log
timeout 40 python3 bench/torch_gpu.py --parts attn --attn-dtypes fp32,bf16 --no-compile > $O/torch_attn.log 2>&1; echo "torch rc=$? at $((SECONDS-t0)) s"; grep "^torch" $O/torch_attn.log
timeout 30 compute-sanitizer --tool memcheck $B/nala_tests "cuda: nala_attention on bf16 against the CPU's bf16 op" > $O/memcheck.log 2>&1; echo "memcheck rc=$? at $((SECONDS-t0)) s"; tail -2 $O/memcheck.log
echo "done at $((SECONDS-t0)) s"
