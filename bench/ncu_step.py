#!/usr/bin/env python3
"""bench/ncu_step.py - one training step's kernels from an Nsight Compute CSV.

Run on the GPU machine (warm caches, one metric, a step without graphs so
that every kernel is its own launch):

    ncu --cache-control none --metrics gpu__time_duration.sum --csv \
        build/release/bench/bench_pico --device cuda --batch 256 --warmup 2 --iters 1 \
        --graphs 0 --modes train > ncu_pico.csv
    bench/ncu_step.py ncu_pico.csv [--csv-out kernels.csv]

The step is the span between the last two launches of the optimiser kernel
(adamw). With --infer (a profile of bench_pico --modes infer, two passes or
more) the step is the last forward pass: the longest run of kernels at the
end that repeats the run just before it. Prints the time by kind of kernel
and the 20 slowest kernels.
"""
import argparse
import collections
import csv
import gzip
import signal
import sys

KINDS = [  # (name, substrings of the kernel name), first match wins
    ("GEMMs (FP32 FFMA or bf16 tensor cores), split-K sums", ["gemm", "splitk"]),
    ("depthwise convolutions (forward, dx, dw)", ["dw_", "dwconv"]),
    ("stem/merge convolution unfolding", ["im2col", "col2im", "colsum"]),
    ("gradient accumulation, copies, fills", ["Axpy", "copy_", "fill"]),
    ("attention (NaLa, softmax)", ["nala", "softmax", "flash_", "rope_bf16", "go_bf16_dl"]),
    ("LayerNorm, BatchNorm", ["layernorm", "bn_", "Bn", "chan_partials"]),
    ("bias gradients, sums", ["col_sums", "chunk_sums", "sum_cols", "sum_rows"]),
    ("AdamW", ["adamw"]),
]


def kind_of(name):
    for k, keys in KINDS:
        if any(s in name for s in keys):
            return k
    return "elementwise (GELU, SiLU, mul, add, ...)"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--csv-out")
    ap.add_argument("--infer", action="store_true", help="forward passes only: the last one")
    a = ap.parse_args()
    opener = gzip.open if a.csv.endswith(".gz") else open
    with opener(a.csv, "rt") as f:
        rows = [r for r in csv.reader(f)]
    head = next((r for r in rows if r and r[0] == "ID"), None)
    if head is None:
        sys.exit(f"{a.csv}: no ncu CSV header (ID, ..., Metric Value)")
    col = {n: i for i, n in enumerate(head)}
    # one row per kernel and metric: keep the duration (other metrics may ride along)
    data = [r for r in rows if len(r) == len(head) and r[0] != "ID"
            and r[col["Metric Name"]] == "gpu__time_duration.sum"]
    if a.infer:
        names = [r[col["Kernel Name"]] for r in data]
        n = len(names)
        L = next((L for L in range(n // 2, 0, -1) if names[n - L:] == names[n - 2 * L:n - L]), 0)
        if L == 0:
            sys.exit(f"{a.csv}: no repeated forward pass at the end")
        step = data[n - L:]
    else:
        opt = [i for i, r in enumerate(data) if "adamw" in r[col["Kernel Name"]]]
        if len(opt) < 2:
            sys.exit(f"{a.csv}: fewer than two optimiser launches: no whole step to read")
        # the optimiser may take several launches a step: the step ends at the last one
        ends = [i for j, i in enumerate(opt) if j + 1 == len(opt) or opt[j + 1] != i + 1]
        step = data[ends[-2] + 1 : ends[-1] + 1]
    unit = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}
    per = collections.defaultdict(lambda: [0, 0.0])
    kinds = collections.defaultdict(lambda: [0, 0.0])
    total = 0.0
    for r in step:
        us = float(r[col["Metric Value"]].replace(",", "")) * unit[r[col["Metric Unit"]]]
        name = r[col["Kernel Name"]]
        total += us
        per[name][0] += 1
        per[name][1] += us
        kinds[kind_of(name)][0] += 1
        kinds[kind_of(name)][1] += us
    what = "one forward pass" if a.infer else "one step"
    print(f"{what}: {len(step)} kernels, {total / 1000:.2f} ms of kernel time\n")
    print("| kernels | launches | ms | share |\n|---|---|---|---|")
    for k, (n, t) in sorted(kinds.items(), key=lambda x: -x[1][1]):
        print(f"| {k} | {n} | {t / 1000:.2f} | {100 * t / total:.0f}% |")
    print("\n| kernel | launches | us each | ms |\n|---|---|---|---|")
    for k, (n, t) in sorted(per.items(), key=lambda x: -x[1][1])[:20]:
        print(f"| {k[:70]} | {n} | {t / n:.1f} | {t / 1000:.2f} |")
    if a.csv_out:
        with open(a.csv_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["kernel", "kind", "launches", "total_us"])
            for k, (n, t) in sorted(per.items(), key=lambda x: -x[1][1]):
                w.writerow([k, kind_of(k), n, f"{t:.1f}"])


if __name__ == "__main__":
    main()
