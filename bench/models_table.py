#!/usr/bin/env python3
"""bench/models_table.py LOG [--peak-tflops 790] - the README's whole-model GPU
table from one log of bench_pico (nala) and bench/torch_gpu.py (PyTorch)
lines, as bench/gpu_run.sh benchmodels writes it:

    nala xt train device=cuda ... img/s=1315.0 ... peak_MiB=9176
    torch cuda xt train-compile-bf16 batch=128 img=224 img/s=3090.0 ... max_mem_MiB=4198 gflop/img=14.2 ...

One row per model and mode: images/s, peak device memory and MFU of every
column (nala, then each PyTorch variant). MFU is the achieved floating-point
rate over the peak; the work per image comes from the PyTorch lines (the
same architecture: bench/torch_gpu.py counts it), so nala's MFU is its
images/s times that work. A column missing from the log is left out.
"""
import argparse
import collections
import re
import sys


def fields(line):
    return dict(m.groups() for m in re.finditer(r"(\S+?)=(\S+)", line))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    a = ap.parse_args()
    rows = collections.OrderedDict()  # (model, mode) -> {column: (img/s, MiB)}
    work = {}  # (model, mode) -> flop per image
    columns = []
    for line in open(a.log, errors="replace"):
        w = line.split()
        if len(w) < 4:
            continue
        if w[0] == "nala" and "device=cuda" in line:
            f = fields(line)
            model, mode, col = w[1], w[2], "nala " + f.get("precision", "fp32")
            mem = f.get("peak_MiB")
        elif w[0] == "torch" and w[1] == "cuda":
            model, tag, f = w[2], w[3], fields(line)
            mode, _, variant = tag.partition("-")
            col, mem = "PyTorch " + (variant or "eager-fp32"), f.get("max_mem_MiB")
            if "gflop/img" in f:
                work[(model, mode)] = float(f["gflop/img"]) * 1e9
        else:
            continue
        if "img/s" not in f or mode not in ("train", "infer"):
            continue
        rows.setdefault((model, mode), {})[col] = (float(f["img/s"]), mem)
        if col not in columns:
            columns.append(col)
    if not rows:
        sys.exit(f"{a.log}: no nala or torch model lines")
    print("| model, step | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for (model, mode), cols in rows.items():
        cells = []
        for c in columns:
            if c not in cols:
                cells.append("-")
                continue
            ips, mem = cols[c]
            cell = f"{ips:,.0f} img/s"
            if mem not in (None, "na"):
                cell += f", {float(mem) / 1024:.1f} GiB"
            if (model, mode) in work:
                cell += f", MFU {100 * ips * work[(model, mode)] / (a.peak_tflops * 1e12):.1f}%"
            cells.append(cell)
        print(f"| {model} {'training' if mode == 'train' else 'inference'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
