#!/usr/bin/env python3
"""One training step's kernels from an Nsight Compute CSV (tools/gpu/kernel_profile.sh).

    ncu_summary.py NCU.csv LAYERS

The step is cut at the first flash-attention forward of two consecutive steps (LAYERS of them per step),
so the window holds every kernel of one step exactly once. Prints the time per category, the heaviest
kernels by name and grid, and the window's kernels in launch order.
"""
import csv
import re
import sys
from collections import defaultdict


def rows(path):
    with open(path, newline="") as f:
        lines = [l for l in f if not l.startswith("==")]
    out = []
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        out.append((r["Kernel Name"], r.get("Grid Size", ""), float(r["Metric Value"].replace(",", "")) / 1e3))
    return out


def short(name):
    n = re.sub(r"\(.*", "", name)
    n = re.sub(r"<.*", "", n)
    return n.split("::")[-1][:60] or name[:60]


def category(name):
    n = name.lower()
    if "flash" in n:
        return "attention (flash)"
    if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "gemv", "splitk", "cublas")):
        return "GEMM"
    if any(k in n for k in ("rms_norm", "rope", "mask_bits", "pack_mask", "dropout_replay")):
        return "zlora kernels"
    if "dropout" in n:
        return "dropout"
    if "reduce" in n:
        return "reductions"
    if "elementwise" in n or "vectorized" in n or "unrolled" in n:
        return "elementwise"
    return "other"


def main():
    path, layers = sys.argv[1], int(sys.argv[2])
    ks = rows(path)
    flash = [i for i, k in enumerate(ks) if "flash_fwd" in k[0]]
    starts = flash[::layers]
    if len(starts) >= 3:
        lo, hi = starts[-2], starts[-1]  # the last complete step (the first steps warm the allocator)
    else:
        lo, hi = 0, len(ks)
    win = ks[lo:hi]
    total = sum(k[2] for k in win)
    print(f"{len(ks)} kernels profiled; one step: {len(win)} kernels, {total / 1e3:.3f} ms of kernel time "
          f"({layers} layers)")
    cat = defaultdict(lambda: [0, 0.0])
    for n, _, us in win:
        c = cat[category(n)]
        c[0] += 1
        c[1] += us
    print("\n| category | kernels | ms | share |")
    print("| --- | --- | --- | --- |")
    for c, (cnt, us) in sorted(cat.items(), key=lambda x: -x[1][1]):
        print(f"| {c} | {cnt} | {us / 1e3:.3f} | {us / total:.1%} |")
    grp = defaultdict(lambda: [0, 0.0])
    for n, g, us in win:
        e = grp[(short(n), g)]
        e[0] += 1
        e[1] += us
    print("\n| kernel | grid | calls | ms | us/call |")
    print("| --- | --- | --- | --- | --- |")
    for (n, g), (cnt, us) in sorted(grp.items(), key=lambda x: -x[1][1])[:60]:
        print(f"| {n} | {g} | {cnt} | {us / 1e3:.3f} | {us / cnt:.1f} |")
    print("\nlaunch order (us, grid, kernel):")
    for n, g, us in win:
        print(f"{us:9.1f}  {g:>18}  {short(n)}")


if __name__ == "__main__":
    main()
