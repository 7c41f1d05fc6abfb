"""PyTorch beside bench/bench_long_seq: attention over long sequences on the GPU.

One image, one head, d = 64, N = 4,096 to 262,144 tokens (square grids). A
training step of the op alone, counted as bench_long_seq counts it: q, k, v and
the output gradient uploaded, the 2-D RoPE tables built, forward, backward.
torch.cuda.max_memory_allocated after a reset, less what was held before the
step, is the step's peak. Rows:
  torch_nala    fp32  the composed NaLa attention of tests/reference/nalaformer_ref.py (docs/SPEC.md §2)
  torch_nala    bf16  the same with bf16 q, k, v, output gradient and tables
  sdpa          fp32  softmax attention with 2-D RoPE: F.scaled_dot_product_attention(rope(q), rope(k), v)
  sdpa          bf16  the same with bf16 q, k, v, output gradient and tables
Times are CUDA-event medians (forward alone under no_grad, and forward +
backward). With --nala-csv (the --csv file of bench_long_seq) and --plot
PREFIX, draws time and peak memory against tokens for every row, nala's and
PyTorch's, to PREFIX.svg and PREFIX.png (matplotlib; existing files are not
replaced).

    build/release/bench/bench_long_seq --csv /tmp/nala_long_seq.csv
    python3 bench/torch_long_seq.py --nala-csv /tmp/nala_long_seq.csv --plot docs/long_seq

Output, one line per measurement:
    torch long_seq sdpa bf16 N=65536 d=64 fwd_ms=... fwd_bwd_ms=... peak_MiB=... floor_MiB=64.0
"""
import argparse
import csv
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import nalaformer_ref as ref  # noqa: E402
from torch_gpu import Timer  # noqa: E402  (bench/torch_gpu.py, beside this file)


def sdpa_rope(q, k, v, sin, cos):
    return F.scaled_dot_product_attention(ref.apply_rope(q, sin, cos), ref.apply_rope(k, sin, cos), v)


IMPLS = [("torch_nala", torch.float32, ref.nala_attention), ("torch_nala", torch.bfloat16, ref.nala_attention),
         ("sdpa", torch.float32, sdpa_rope), ("sdpa", torch.bfloat16, sdpa_rope)]
DTYPE_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16"}


median_ms = Timer(torch.device("cuda"))  # median ms of fn() over reps after warmup


def measure(name, dtype, attn, side, D, seconds, dev, quiet=False):
    N = side * side
    g = torch.Generator().manual_seed(7)
    host = [torch.randn(1, 1, N, D, generator=g) * s for s in (0.5, 0.8, 1.0, 1.0)]
    rope = ref.RoPE(D).to(dev)

    def step(q, k, v, go):
        sin, cos = rope.tables(side, side)
        sin, cos = sin.to(dtype), cos.to(dtype)
        o = attn(q, k, v, sin, cos)
        torch.autograd.backward(o, go, inputs=[q, k, v])
        return o

    # Peak of one whole step: uploads included.
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    q, k, v, go = (t.to(dev, dtype) for t in host)
    for t in (q, k, v):
        t.requires_grad_(True)
    o = step(q, k, v, go)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    once = (time.perf_counter() - t0) * 1e3  # sizes the repetitions
    del o

    sin, cos = rope.tables(side, side)
    sin, cos = sin.to(dtype), cos.to(dtype)

    def fwd():
        with torch.no_grad():
            attn(q, k, v, sin, cos)

    def fwd_bwd():
        for t in (q, k, v):
            t.grad = None
        step(q, k, v, go)

    reps = int(max(1, min(20, seconds * 1e3 / max(once, 1e-3))))
    warm = 0 if once > 1e3 else 1
    t_fwd = median_ms(fwd, 1, reps)
    t_all = median_ms(fwd_bwd, warm, reps)
    floor = 8 * N * D * (4 if dtype == torch.float32 else 2) / 2**20
    if not quiet:
        print(f"torch long_seq {name} {DTYPE_NAME[dtype]} N={N} d={D} fwd_ms={t_fwd:.3f} fwd_bwd_ms={t_all:.3f} "
              f"peak_MiB={peak:.2f} floor_MiB={floor:.1f} reps={reps}", flush=True)
    del q, k, v, go
    torch.cuda.empty_cache()
    return {"impl": name, "dtype": DTYPE_NAME[dtype], "N": N, "fwd_ms": t_fwd, "fwd_bwd_ms": t_all, "peak_MiB": peak}


def plot(rows, prefix, D):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"nala_nala": "nala NaLa", "nala_softmax": "nala softmax (flash)", "torch_nala": "PyTorch NaLa (composed)",
             "sdpa": "PyTorch SDPA"}
    series = {}
    for r in rows:
        series.setdefault(f"{names.get(r['impl'], r['impl'])} {r['dtype']}", []).append(r)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, rs in sorted(series.items()):
        rs.sort(key=lambda r: r["N"])
        style = "-" if label.startswith("nala") else "--"
        ax_t.plot([r["N"] for r in rs], [r["fwd_bwd_ms"] for r in rs], style, marker="o", label=label)
        ax_m.plot([r["N"] for r in rs], [r["peak_MiB"] for r in rs], style, marker="o", label=label)
    ns = sorted({r["N"] for r in rows})
    for b, name in ((4, "8 N d fp32 (q, k, v, o, grads)"), (2, "8 N d bf16")):
        ax_m.plot(ns, [8 * n * D * b / 2**20 for n in ns], ":", color="gray" if b == 4 else "silver", label=name)
    for ax, yl, title in ((ax_t, "forward + backward (ms)", "time"), (ax_m, "peak device memory (MiB)", "memory")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens N (1 image, 1 head, d = %d)" % D)
        ax.set_ylabel(yl)
        ax.set_title(f"attention over long sequences: {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("svg", "png"):
        path = f"{prefix}.{ext}"
        if os.path.exists(path):
            raise SystemExit(f"torch_long_seq: {path} exists; not replaced")
        fig.savefig(path, dpi=110)
        print(f"# wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-n", type=int, default=262144)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed work per measurement (at least one run)")
    ap.add_argument("--nala-csv", help="bench_long_seq's --csv file, for the plot")
    ap.add_argument("--plot", help="write PREFIX.svg and PREFIX.png")
    ap.add_argument("--csv", help="also write this run's rows here")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    D = 64
    print(f"# {torch.cuda.get_device_name(dev)} torch {torch.__version__} tf32=False", flush=True)
    for name, dtype, attn in IMPLS:  # lazy initialisation (kernels, handles) out of the measured steps
        measure(name, dtype, attn, 16, D, 0.0, dev, quiet=True)
    rows = []
    for side in (64, 128, 256, 512):
        if side * side > args.max_n:
            break
        for name, dtype, attn in IMPLS:
            rows.append(measure(name, dtype, attn, side, D, args.seconds, dev))
    if args.csv:
        with open(args.csv, "x", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["impl", "dtype", "N", "fwd_ms", "fwd_bwd_ms", "peak_MiB"])
            w.writeheader()
            w.writerows(rows)
    if args.plot:
        all_rows = list(rows)
        if args.nala_csv:
            with open(args.nala_csv) as f:
                for r in csv.DictReader(f):
                    all_rows.append({"impl": r["impl"], "dtype": r["dtype"], "N": int(r["N"]),
                                     "fwd_ms": float(r["fwd_ms"]), "fwd_bwd_ms": float(r["fwd_bwd_ms"]),
                                     "peak_MiB": float(r["peak_MiB"])})
        plot(all_rows, args.plot, D)


if __name__ == "__main__":
    main()
