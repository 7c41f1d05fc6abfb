#!/usr/bin/env python3
# kernels/lab/report.py - turns kernels/lab/measure.sh's CSV (CPU) and
# measure_cuda.sh's (GPU) into the tables of docs/kernels.md (Markdown, on
# stdout) and roofline plots (SVG text, written with the standard library
# only): one for the CPU, one for the GPU.
#
#   python3 kernels/lab/report.py /tmp/lab.csv [more.csv ...] [--svg docs/kernels_roofline.svg]
#       [--gpu-svg docs/kernels_roofline_h200.svg]
#
# A GPU row has "gpu-fp32", "gpu-tf32" or "gpu-bf16" where a CPU row has its
# thread count (kernels/lab/lab_cuda.cuh): the unit whose peak its "peak
# GFLOP/s" is. GPU rows are kept under thread count 0.
#
# Each (op, size, version, task, threads) was measured once per round (and
# per file); the fastest is kept. Fractions of peak use the best peaks
# measured in any run (a run's own peak measurement can come out low when
# other work shares the cores). In the plot every version sits at its op's
# arithmetic intensity (useful FLOPs per compulsory byte: the same for all
# versions of an op, which are nudged sideways a little to stay legible), at
# the GFLOP/s it reached on its own thread count, under the compute roof (the
# measured FP32 FMA peak) and the memory roof (measured bandwidth x
# intensity), for all cores (solid) and for one core (dashed).
import argparse
import csv
import math
import os
import sys

FIELDS = ["tag", "op", "size", "version", "name", "task", "threads", "seconds", "gflops", "gbs", "ai",
          "peak_gflops", "peak_gbs", "max_err"]


def load(paths):
    """The fastest row per (op, size, version, task, threads), and the best
    (GFLOP/s, GB/s) peaks measured per thread count in any run."""
    best, peaks = {}, {}
    for path in paths:
        load_one(path, best, peaks)
    if not best:
        sys.exit(f"report.py: no csv rows in {' '.join(paths)}")
    return best, peaks


def load_one(path, best, peaks):
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0] != "csv":
                continue
            if len(row) != len(FIELDS):
                sys.exit(f"report.py: {path}: a row with {len(row)} fields, expected {len(FIELDS)}: {row}")
            r = dict(zip(FIELDS, row))
            r["unit"] = None
            if r["threads"].startswith("gpu-"):
                r["unit"], r["threads"] = r["threads"][4:], "0"
            for k in ("size", "version", "threads"):
                r[k] = int(r[k])
            for k in ("seconds", "gflops", "gbs", "ai", "peak_gflops", "peak_gbs", "max_err"):
                r[k] = float(r[k])
            if r["unit"]:  # the GPU: a compute peak per unit, one bandwidth
                gp = peaks.setdefault("gpu", {"bw": 0.0})
                gp[r["unit"]] = max(gp.get(r["unit"], 0.0), r["peak_gflops"])
                gp["bw"] = max(gp["bw"], r["peak_gbs"])
            else:
                g, b = peaks.get(r["threads"], (0.0, 0.0))
                peaks[r["threads"]] = (max(g, r["peak_gflops"]), max(b, r["peak_gbs"]))
            key = (r["op"], r["size"], r["version"], r["task"], r["threads"])
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r


def cpu_peaks(pk):
    return {t: v for t, v in pk.items() if t != "gpu"}


def tables(best, pk):
    groups = {}
    for (op, size, version, task, threads), r in best.items():
        groups.setdefault((op, size, threads == 0), {}).setdefault(version, {})[threads] = r
    out = []
    for (op, size, gpu) in sorted(groups, key=lambda k: (k[2], k[0], k[1])):
        vs = groups[(op, size, gpu)]
        if gpu:
            out += gpu_table(op, size, vs, pk["gpu"])
            continue
        tmax = max(t for v in vs.values() for t in v)
        out.append(f"#### {op} --size {size}\n")
        out.append(f"| # | version | task | 1 thread: ms | GFLOP/s (% peak) | GB/s (% bw) | {tmax} threads: ms "
                   f"| GFLOP/s (% peak) | GB/s (% bw) | max err |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for v in sorted(vs):
            rows = vs[v]
            r1 = rows.get(1)
            rt = rows.get(tmax) if tmax > 1 else None
            any_r = r1 or rt

            def cells(r):
                if r is None:
                    return ["-", "-", "-"]
                g, b = pk[r["threads"]]
                return [f"{r['seconds'] * 1e3:.4g}", f"{r['gflops']:.2f} ({100 * r['gflops'] / g:.1f}%)",
                        f"{r['gbs']:.2f} ({100 * r['gbs'] / b:.1f}%)"]

            line = [str(v), any_r["name"].replace(";", ","), any_r["task"]] + cells(r1) + cells(rt) + [
                f"{any_r['max_err']:.1e}"]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    cp = cpu_peaks(pk)
    if cp:
        out.append("Measured CPU peaks (best over the runs): " + "; ".join(
            f"{t} thread{'s' if t > 1 else ''}: FP32 FMA {g:.1f} GFLOP/s, memory {b:.1f} GB/s"
            for t, (g, b) in sorted(cp.items())) + ".")
    if "gpu" in pk:
        gp = pk["gpu"]
        units = ", ".join(f"{u} {gp[u]:.0f} GFLOP/s" for u in ("fp32", "tf32", "bf16") if u in gp)
        out.append(f"GPU peaks (from the device's attributes, lab_cuda.cuh): {units}; memory {gp['bw']:.0f} GB/s.")
    return "\n".join(out)


def gpu_table(op, size, vs, gp):
    out = [f"#### {op} (CUDA) --size {size}\n",
           "| # | version | task | unit | ms | GFLOP/s (% peak) | GB/s (% bw) | max err |",
           "|---|---|---|---|---|---|---|---|"]
    for v in sorted(vs):
        r = vs[v][0]
        peak = gp.get(r["unit"], 0.0)
        pct = f"{100 * r['gflops'] / peak:.1f}%" if peak > 0 else "n/a"
        out.append("| " + " | ".join([
            str(v), r["name"].replace(";", ","), r["task"], r["unit"], f"{r['seconds'] * 1e3:.4g}",
            f"{r['gflops']:.1f} ({pct})", f"{r['gbs']:.1f} ({100 * r['gbs'] / gp['bw']:.1f}%)",
            f"{r['max_err']:.1e}"]) + " |")
    out.append("")
    return out


# ---- the roofline, as SVG text ------------------------------------------------

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#000080", "#ff1493"]


def frame(W, H, L, R, T, B, x0, x1, y0, y1):
    """The SVG's start, grid, ticks and axis titles; px and py map FLOP/byte and GFLOP/s to pixels."""
    pw, ph = W - L - R, H - T - B

    def px(ai):
        return L + (math.log10(ai) - x0) / (x1 - x0) * pw

    def py(g):
        return T + (1 - (math.log10(max(g, 10 ** y0)) - y0) / (y1 - y0)) * ph

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>']
    for e in range(int(x0), int(x1) + 1):  # grid and ticks
        x = px(10 ** e)
        s.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#ddd"/>')
        s.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{10 ** e:g}</text>')
    for e in range(int(y0), int(y1) + 1):
        y = py(10 ** e)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    s.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    s.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">arithmetic intensity (FLOP per byte of '
             f'compulsory traffic)</text>')
    s.append(f'<text x="20" y="{T + ph / 2}" text-anchor="middle" transform="rotate(-90 20 {T + ph / 2})">'
             f'GFLOP/s</text>')
    return s, px, py


def roof(s, px, py, x0, x1, P, Bw, dash, peak_label, mem_label):
    """A roof: memory bandwidth x intensity up to the ridge, then the compute peak P."""
    ridge = P / Bw
    pts = [(10 ** x0, Bw * 10 ** x0), (ridge, P), (10 ** x1, P)]
    d = " ".join(f"{px(a):.1f},{py(g):.1f}" for a, g in pts)
    s.append(f'<polyline points="{d}" fill="none" stroke="black" stroke-width="2"{dash}/>')
    s.append(f'<text x="{px(10 ** x1) - 4:.1f}" y="{py(P) - 6:.1f}" text-anchor="end">{peak_label}</text>')
    if mem_label:
        ax = 10 ** (x0 + 0.12)  # left of every point
        ang = math.degrees(math.atan2(py(Bw * ax * 10) - py(Bw * ax), px(ax * 10) - px(ax)))
        s.append(f'<text x="{px(ax):.1f}" y="{py(Bw * ax) - 6:.1f}" transform="rotate({ang:.1f} {px(ax):.1f} '
                 f'{py(Bw * ax) - 6:.1f})">{mem_label}</text>')


def points(s, rows, px, py, lx, ly):
    """One colour per (op, size), a point per (task, version) at its intensity
    (nudged sideways by version) and speed; the legend from (lx, ly). Returns
    the legend's next line."""
    series = {}
    for r in rows:
        series.setdefault((r["op"], r["size"]), {}).setdefault((r["task"], r["version"]), []).append(r)
    for i, key in enumerate(sorted(series)):
        col = COLOURS[i % len(COLOURS)]
        versions = series[key]
        nv = max(v for _, v in versions)
        for (task, v), rs in sorted(versions.items()):
            r = max(rs, key=lambda q: q["threads"])  # a threaded version at its thread count
            x = px(r["ai"] * 1.07 ** (v - (nv + 1) / 2))
            y = py(r["gflops"])
            if task == "backward":
                s.append(f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{col}"/>')
            else:
                s.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{col}"/>')
            s.append(f'<text x="{x + 6:.1f}" y="{y + 4:.1f}" font-size="10" fill="{col}">{v}</text>')
        op, size = key
        label = f"{op} (--size {size})" if size else f"{op} (default size)"
        s.append(f'<circle cx="{lx + 6}" cy="{ly}" r="4.5" fill="{col}"/>')
        s.append(f'<text x="{lx + 16}" y="{ly + 4}">{label}</text>')
        ly += 20
    return ly


def roofline_svg(best, pk):
    W, H, L, R, T, B = 960, 640, 80, 250, 40, 60
    x0, x1, y0, y1 = -2.0, 3.0, -1.0, 3.0  # log10 ranges: FLOP/byte and GFLOP/s
    s, px, py = frame(W, H, L, R, T, B, x0, x1, y0, y1)
    rows = [r for r in best.values() if r["threads"] > 0]
    pk = cpu_peaks(pk)
    tmax = max(pk)
    for threads, dash in ((tmax, ""), (1, ' stroke-dasharray="6,4"')):
        if threads == 1 and tmax == 1 and dash:
            continue
        P, Bw = pk[threads]
        who = f"{threads} thread" + ("s" if threads > 1 else "")
        roof(s, px, py, x0, x1, P, Bw, dash, f"FP32 FMA peak, {who}: {P:.0f} GFLOP/s", f"memory, {who}: {Bw:.0f} GB/s")
    legend_y = points(s, rows, px, py, W - R + 14, T + 10)
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 10}">circle: forward, square:</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 26}">backward; the number is</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 42}">the version; threaded</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 58}">versions on {tmax} threads</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def gpu_roofline_svg(best, pk):
    """The GPU's versions under its roofs: memory bandwidth, the FP32 FMA peak
    (solid) and, where known, the bf16 tensor-core peak (dashed)."""
    W, H, L, R, T, B = 960, 640, 80, 250, 40, 60
    x0, x1, y0, y1 = -2.0, 3.0, -1.0, 6.0
    s, px, py = frame(W, H, L, R, T, B, x0, x1, y0, y1)
    rows = [r for r in best.values() if r["threads"] == 0]
    gp = pk["gpu"]
    Bw = gp["bw"]
    fp32 = gp.get("fp32", 0.0)
    if fp32 > 0:
        roof(s, px, py, x0, x1, fp32, Bw, "", f"FP32 FMA peak: {fp32 / 1e3:.1f} TFLOP/s", f"memory: {Bw:.0f} GB/s")
    bf16 = gp.get("bf16", 0.0)
    if bf16 > 0:
        roof(s, px, py, x0, x1, bf16, Bw, ' stroke-dasharray="6,4"', f"bf16 tensor peak: {bf16 / 1e3:.0f} TFLOP/s",
             None if fp32 > 0 else f"memory: {Bw:.0f} GB/s")
    legend_y = points(s, rows, px, py, W - R + 14, T + 10)
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 10}">circle: forward, square:</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 26}">backward; the number is</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 42}">the version. Peaks from</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 58}">the device attributes</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def write_new(path, text):
    if os.path.exists(path):
        sys.exit(f"report.py: {path} already exists; give a new file name")
    with open(path, "w") as f:
        f.write(text)
    print(f"report.py: wrote {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--svg", help="write the CPU roofline plot here (a new file)")
    ap.add_argument("--gpu-svg", help="write the GPU roofline plot here (a new file)")
    a = ap.parse_args()
    best, pk = load(a.csv)
    print(tables(best, pk))
    if a.svg:
        if not cpu_peaks(pk):
            sys.exit("report.py: --svg: no CPU rows in the input")
        write_new(a.svg, roofline_svg(best, pk))
    if a.gpu_svg:
        if "gpu" not in pk:
            sys.exit("report.py: --gpu-svg: no GPU rows in the input")
        write_new(a.gpu_svg, gpu_roofline_svg(best, pk))


if __name__ == "__main__":
    main()
