#!/usr/bin/env bash
# bench/gemm_vs_openblas.sh - nala's GEMM against OpenBLAS at 1 and 2
# threads (bench_gemm, each shape interleaved), then the README's table: the
# CPU, both kernels, the date and command, every shape's GFLOP/s and ratio,
# and the median and lowest ratio per thread count.
#   bench/gemm_vs_openblas.sh [reps=7] [bench_gemm options: --kernel avx2 --coretype Haswell]
# The AVX2 comparison on an AVX-512 machine: bench/gemm_vs_openblas.sh 7 --kernel avx2 --coretype Haswell
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-7}
shift || true
make -s CUDA=0 build/release-nocuda/bench/bench_gemm >/dev/null
B=build/release-nocuda/bench/bench_gemm
one=$(mktemp /tmp/gemm1.XXXXXX) two=$(mktemp /tmp/gemm2.XXXXXX)
OMP_NUM_THREADS=1 $B "$reps" "$@" | tee "$one"
OMP_NUM_THREADS=2 $B "$reps" "$@" | tee "$two"
echo
echo "$(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p'), $(grep -m1 '^OpenBLAS kernel' "$one" || echo 'no OpenBLAS'), nala kernel $(sed -n 's/^nala kernel: //p' "$one"); command: bench/gemm_vs_openblas.sh $reps $*"
awk '
  function row(line, f,   rest) { rest = substr(line, 26); gsub(/[()]/, " ", rest); return split(rest, f, " ") }
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function lowest(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
  FNR == 1 { file++ }
  /^(square|qkv|[0-9]|dW|odd)/ && row($0, f) == 6 {
    name = substr($0, 1, 24); sub(/ +$/, "", name)
    if (file == 1) { names[++n] = name; a1[name] = f[1]; b1[name] = f[3]; r1[name] = f[5]; all1 = all1 " " f[5] }
    else { a2[name] = f[1]; b2[name] = f[3]; r2[name] = f[5]; all2 = all2 " " f[5] }
  }
  END {
    print "| shape (M x N x K) | nala, 1 thread | OpenBLAS, 1 thread | ratio | nala, 2 threads | OpenBLAS, 2 threads | ratio |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= n; i++) { s = names[i]; printf "| %s | %s | %s | %s | %s | %s | %s |\n", s, a1[s], b1[s], r1[s], a2[s], b2[s], r2[s] }
    if (n) printf "\nMedian ratio: 1 thread %.2f (lowest %.2f), 2 threads %.2f (lowest %.2f).\n", median(all1), lowest(all1), median(all2), lowest(all2)
  }' "$one" "$two"
