#!/usr/bin/env python3
# kernels/lab/report.py - turns kernels/lab/measure.sh's CSV into the tables
# of docs/kernels.md (Markdown, on stdout) and a roofline plot (SVG text,
# written with the standard library only).
#
#   python3 kernels/lab/report.py /tmp/lab.csv [more.csv ...] [--svg docs/kernels_roofline.svg]
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
            for k in ("size", "version", "threads"):
                r[k] = int(r[k])
            for k in ("seconds", "gflops", "gbs", "ai", "peak_gflops", "peak_gbs", "max_err"):
                r[k] = float(r[k])
            g, b = peaks.get(r["threads"], (0.0, 0.0))
            peaks[r["threads"]] = (max(g, r["peak_gflops"]), max(b, r["peak_gbs"]))
            key = (r["op"], r["size"], r["version"], r["task"], r["threads"])
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r


def tables(best, pk):
    groups = {}
    for (op, size, version, task, threads), r in best.items():
        groups.setdefault((op, size), {}).setdefault(version, {})[threads] = r
    out = []
    for (op, size) in sorted(groups, key=lambda k: (k[0], k[1])):
        vs = groups[(op, size)]
        tmax = max(t for v in vs.values() for t in v)
        out.append(f"#### {op} --size {size}\n")
        out.append(f"| # | version | task | 1 thread: ms | GFLOP/s (% peak) | GB/s (% bw) | {tmax} threads: ms "
                   f"| GFLOP/s (% peak) | GB/s (% bw) | max err | H200 |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
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

            line = [str(v), any_r["name"].replace(";", ","), any_r["task"]] + cells(r1) + cells(rt) + [f"{any_r['max_err']:.1e}",
                                                                                   "not measured yet"]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    out.append("Measured peaks (best over the runs): " + "; ".join(
        f"{t} thread{'s' if t > 1 else ''}: FP32 FMA {g:.1f} GFLOP/s, memory {b:.1f} GB/s"
        for t, (g, b) in sorted(pk.items())) + ".")
    return "\n".join(out)


# ---- the roofline, as SVG text ------------------------------------------------

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def roofline_svg(best, pk):
    W, H, L, R, T, B = 960, 640, 80, 250, 40, 60
    x0, x1, y0, y1 = -2.0, 3.0, -1.0, 3.0  # log10 ranges: FLOP/byte and GFLOP/s
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

    rows = list(best.values())
    tmax = max(pk)
    for threads, dash in ((tmax, ""), (1, ' stroke-dasharray="6,4"')):
        if threads == 1 and tmax == 1 and dash:
            continue
        P, Bw = pk[threads]
        ridge = P / Bw
        pts = [(10 ** x0, Bw * 10 ** x0), (ridge, P), (10 ** x1, P)]
        d = " ".join(f"{px(a):.1f},{py(g):.1f}" for a, g in pts)
        s.append(f'<polyline points="{d}" fill="none" stroke="black" stroke-width="2"{dash}/>')
        who = f"{threads} thread" + ("s" if threads > 1 else "")
        s.append(f'<text x="{px(10 ** x1) - 4:.1f}" y="{py(P) - 6:.1f}" text-anchor="end">FP32 FMA peak, {who}: '
                 f'{P:.0f} GFLOP/s</text>')
        ax = 10 ** (x0 + 0.12)  # left of every point
        ang = math.degrees(math.atan2(py(Bw * ax * 10) - py(Bw * ax), px(ax * 10) - px(ax)))
        s.append(f'<text x="{px(ax):.1f}" y="{py(Bw * ax) - 6:.1f}" transform="rotate({ang:.1f} {px(ax):.1f} '
                 f'{py(Bw * ax) - 6:.1f})">memory, {who}: {Bw:.0f} GB/s</text>')

    # one series per (op, size); a point per (task, version) at its own thread count
    series = {}
    for r in rows:
        series.setdefault((r["op"], r["size"]), {}).setdefault((r["task"], r["version"]), []).append(r)
    legend_y = T + 10
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
        s.append(f'<circle cx="{W - R + 20}" cy="{legend_y}" r="4.5" fill="{col}"/>')
        s.append(f'<text x="{W - R + 30}" y="{legend_y + 4}">{label}</text>')
        legend_y += 20
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 10}">circle: forward, square:</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 26}">backward; the number is</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 42}">the version; threaded</text>')
    s.append(f'<text x="{W - R + 14}" y="{legend_y + 58}">versions on {tmax} threads</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--svg", help="write the roofline plot here (a new file)")
    a = ap.parse_args()
    best, pk = load(a.csv)
    print(tables(best, pk))
    if a.svg:
        if os.path.exists(a.svg):
            sys.exit(f"report.py: {a.svg} already exists; give a new file name")
        with open(a.svg, "w") as f:
            f.write(roofline_svg(best, pk))
        print(f"report.py: wrote {a.svg}", file=sys.stderr)


if __name__ == "__main__":
    main()
