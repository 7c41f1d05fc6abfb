#!/usr/bin/env python3
"""Training-loss curves of several `nala train` runs, read from their logs,
side by side: one CSV and one SVG chart (Python standard library only).

nala train prints a progress line every --log-every steps,
    [####....] 120/468 epoch 1/1 loss 1.0853 acc 0.756 lr 9.21e-04 2228 img/s | ...
whose loss is the mean training loss of the epoch so far (of the logged
batches on the GPU). This script reads those lines, numbers the steps across
epochs, and writes

    OUT.csv   step, then one loss column per run
    OUT.svg   the curves, one colour per run

    bench/loss_curves.py --out docs/xt_bf16_loss \\
        fp32=docs/results/bf16_h200_20261130b/xt300_fp32.log \\
        bf16=docs/results/bf16_h200_20261130b/xt300_bf16.log
"""
import argparse
import math
import re
import sys

LINE = re.compile(r"^\[[#.]*\]\s+(\d+)/(\d+) epoch (\d+)/\d+ loss ([0-9.eE+-]+|nan|inf)")
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def read_log(path):
    """[(global step, loss)] from one log's progress lines."""
    points = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = LINE.match(line)
            if not m:
                continue
            step, per_epoch, epoch, loss = int(m[1]), int(m[2]), int(m[3]), float(m[4])
            points.append(((epoch - 1) * per_epoch + step, loss))
    if not points:
        sys.exit(f"{path}: no progress lines ('[###...] STEP/N epoch E/E loss X ...')")
    return points


def nice_ticks(lo, hi, n=5):
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    first = (lo // step) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * span:
        if t >= lo - 1e-9 * span:
            ticks.append(round(t, 10))
        t += step
    return ticks


def svg_chart(runs, title):
    W, H, L, R, T, B = 760, 440, 70, 150, 50, 55
    xs = [s for _, pts in runs for s, _ in pts]
    ys = [v for _, pts in runs for _, v in pts]
    x0, x1 = 0, max(xs)
    y0, y1 = min(ys), max(ys)
    pad = 0.05 * (y1 - y0 or 1)
    y0, y1 = y0 - pad, y1 + pad
    px = lambda x: L + (x - x0) / (x1 - x0 or 1) * (W - L - R)
    py = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{(L + W - R) / 2}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{title}</text>']
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{L}" y1="{py(t):.1f}" x2="{W - R}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in nice_ticks(x0, x1):
        out.append(f'<line x1="{px(t):.1f}" y1="{T}" x2="{px(t):.1f}" y2="{H - B}" stroke="#ddd"/>')
        out.append(f'<text x="{px(t):.1f}" y="{H - B + 18}" text-anchor="middle">{t:g}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">step</text>')
    out.append(f'<text transform="translate(18 {(T + H - B) / 2}) rotate(-90)" text-anchor="middle">'
               'training loss (mean of the epoch so far)</text>')
    for i, (name, pts) in enumerate(runs):
        c = COLOURS[i % len(COLOURS)]
        d = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        ly = T + 20 + 22 * i
        out.append(f'<line x1="{W - R + 14}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{W - R + 46}" y="{ly + 4}">{name} ({pts[-1][1]:.4f})</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output path without extension (.csv and .svg are written)")
    ap.add_argument("--title", default="training loss")
    ap.add_argument("runs", nargs="+", help="NAME=LOG")
    a = ap.parse_args()
    runs = []
    for r in a.runs:
        if "=" not in r:
            sys.exit(f"{r}: expected NAME=LOG")
        name, path = r.split("=", 1)
        runs.append((name, read_log(path)))
    steps = sorted({s for _, pts in runs for s, _ in pts})
    by = [dict(pts) for _, pts in runs]
    with open(a.out + ".csv", "x") as f:  # never replaces an earlier file
        f.write("step," + ",".join(n for n, _ in runs) + "\n")
        for s in steps:
            f.write(f"{s}," + ",".join(f"{d[s]:.4f}" if s in d else "" for d in by) + "\n")
    with open(a.out + ".svg", "x") as f:
        f.write(svg_chart(runs, a.title))
    print(a.out + ".csv")
    print(a.out + ".svg")


if __name__ == "__main__":
    main()
