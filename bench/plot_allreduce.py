#!/usr/bin/env python3
"""Round time against K, one panel per model size, as SVG: the lines that
bench/bench_allreduce_netns.sh prints (mode bytes K rounds median_ms best_ms
GB/s average_ms model_ms), measured modes solid, the alpha-beta model's
prediction dashed. Standard library only (no matplotlib on the build hosts).
Draws what it is given; it does not run or check the benchmark.

  bench/plot_allreduce.py OUT.svg [TITLE] < table.txt

The script's header line ("... links 1gbit ...") gives the link rate, from
which it draws the bound of any all-reduce: 2(K-1)/K of the model per worker
at that rate. Outputs of several runs at one rate may be concatenated.
"""
import re
import sys
from collections import defaultdict

# mode -> (colour, legend); the model of "peer" is the ring's or direct's,
# whichever the cost model picks, so it is drawn for peer only when there
# is no ring line
COLOURS = {
    "star": ("#d62728", "driver star (gRPC)"),
    "peer": ("#2ca02c", "peer, schedule by cost model (gRPC)"),
    "direct": ("#9467bd", "direct exchange (gRPC)"),
    "ring": ("#1f77b4", "ring (gRPC)"),
    "mpi": ("#ff7f0e", "OpenMPI MPI_Allreduce (TCP)"),
    "bound": ("#555555", "bound: 2(K-1)/K of the model per worker at the link rate"),
}
ORDER = ["star", "peer", "direct", "ring", "mpi", "bound"]
PW, PH = 300, 240  # one panel's plotting area, pixels
ML, MR, MT, MB = 62, 16, 46, 44  # margins around each panel


def read(stream):
    """{bytes: {mode: {K: (median_ms, model_ms or None)}}} from the table,
    and the link rate in bits/s (0: none given)."""
    data = defaultdict(lambda: defaultdict(dict))
    rate = 0.0
    units = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
    for line in stream:
        r = re.search(r"links (\d+(?:\.\d+)?)([kmg]?)bit", line, re.I)
        if line.startswith("#") and r:
            rate = float(r.group(1)) * units[r.group(2).lower()]
        f = line.split()
        if not f or f[0] not in COLOURS or f[0] == "bound" or len(f) < 6:
            continue
        try:
            nbytes, k, med = int(f[1]), int(f[2]), float(f[4])
            model = float(f[8]) if len(f) >= 9 else None
        except ValueError:
            continue
        data[nbytes][f[0]][k] = (med, model)
    for nbytes, modes in data.items():
        ks = {k for series in modes.values() for k in series}
        if rate > 0:
            modes["bound"] = {k: (2 * (k - 1) / k * nbytes * 8 / rate * 1e3, None) for k in ks}
    return data, rate


def nice_max(v):
    """A round axis top at or above v: 1 to 8 (in steps that divide by 5
    into round ticks) times a power of ten."""
    p = 1.0
    while p * 10 <= v:
        p *= 10
    while p > v and p > 1e-9:
        p /= 10
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def unit(top_ms):
    return ("s", 1e-3) if top_ms >= 2000 else ("ms", 1.0)


def panel(out, x0, y0, nbytes, modes, ks):
    top_ms = 0.0
    for series in modes.values():
        for med, model in series.values():
            top_ms = max(top_ms, med, model or 0.0)
    name, scale = unit(top_ms)
    top = nice_max(top_ms * scale * 1.05) if top_ms > 0 else 1.0

    def px(k):
        i = ks.index(k)
        return x0 + (PW * (i + 0.5) / len(ks))

    def py(ms):
        return y0 + PH - PH * (ms * scale) / top

    out.append(f'<rect x="{x0}" y="{y0}" width="{PW}" height="{PH}" fill="none" stroke="#888"/>')
    out.append(
        f'<text x="{x0 + PW / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">'
        f"{nbytes / 1e6:g} MB model</text>"
    )
    for t in range(6):
        v = top * t / 5
        y = y0 + PH - PH * t / 5
        out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + PW}" y2="{y}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{v:g}</text>')
    out.append(
        f'<text x="{x0 - 46}" y="{y0 + PH / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 46} {y0 + PH / 2})">round time ({name})</text>'
    )
    for k in ks:
        out.append(f'<text x="{px(k)}" y="{y0 + PH + 16}" text-anchor="middle">{k}</text>')
    out.append(f'<text x="{x0 + PW / 2}" y="{y0 + PH + 34}" text-anchor="middle">workers K</text>')
    for mode in ORDER:
        if mode not in modes:
            continue
        colour = COLOURS[mode][0]
        pts = sorted(modes[mode].items())
        line = " ".join(f"{px(k):.1f},{py(med):.1f}" for k, (med, _) in pts)
        if mode == "bound":  # not a measurement: dotted, no markers
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5" stroke-dasharray="1,3"/>')
            continue
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for k, (med, _) in pts:
            out.append(f'<circle cx="{px(k):.1f}" cy="{py(med):.1f}" r="3" fill="{colour}"/>')
        if mode == "peer" and "ring" in modes:
            continue  # the same prediction as the ring's (or direct's)
        model = [(k, m) for k, (_, m) in pts if m is not None and m > 0]
        if model:
            line = " ".join(f"{px(k):.1f},{py(m):.1f}" for k, m in model)
            out.append(
                f'<polyline points="{line}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5" stroke-dasharray="5,4"/>'
            )


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: plot_allreduce.py OUT.svg [TITLE] < table\n")
        return 2
    data, _ = read(sys.stdin)
    if not data:
        sys.stderr.write("plot_allreduce.py: no table lines on stdin\n")
        return 1
    title = sys.argv[2] if len(sys.argv) > 2 else "all-reduce round time"
    sizes = sorted(data)
    ks = sorted({k for s in sizes for m in data[s].values() for k in m})
    present = [m for m in ORDER if any(m in data[s] for s in sizes)]
    width = max(len(sizes) * (PW + ML + MR), 640)  # room for the title and legend
    legend_h = 18 * (len(present) + 1) + 10
    height = MT + PH + MB + legend_h + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for i, nbytes in enumerate(sizes):
        panel(out, ML + i * (PW + ML + MR), MT, nbytes, data[nbytes], ks)
    y = MT + PH + MB + 16
    for mode in present:
        colour, label = COLOURS[mode]
        dash = ' stroke-dasharray="1,3"' if mode == "bound" else ""
        out.append(f'<line x1="{ML}" y1="{y - 4}" x2="{ML + 30}" y2="{y - 4}" '
                   f'stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{ML + 38}" y="{y}">{label}</text>')
        y += 18
    out.append(f'<line x1="{ML}" y1="{y - 4}" x2="{ML + 30}" y2="{y - 4}" stroke="#444" '
               f'stroke-width="1.5" stroke-dasharray="5,4"/>')
    out.append(f'<text x="{ML + 38}" y="{y}">alpha-beta model of the same colour\'s mode '
               f"(runtime/dist/exchange.h)</text>")
    out.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
