#!/usr/bin/env python3
"""Compares the training losses (and final test outputs) of two memdl runs'
metrics.jsonl, iteration by iteration: relative error at most TOL.
  compare_losses.py CPU.jsonl GPU.jsonl [TOL]     exit 1 when over."""
import json
import sys


def events(path):
    train, test = {}, {}
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event") == "train" and "loss" in e:
                train[e["iter"]] = e["loss"]
            elif e.get("event") == "test":
                test[e["iter"]] = {k: v for k, v in e.items() if isinstance(v, float)}
    return train, test


def main():
    a, b = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
    ta, sa = events(a)
    tb, sb = events(b)
    worst, bad = 0.0, []
    if not ta or sorted(ta) != sorted(tb):
        print(f"  iterations differ: {sorted(ta)[:5]}... vs {sorted(tb)[:5]}...")
        return 1
    for it in sorted(ta):
        x, y = ta[it], tb[it]
        rel = abs(y - x) / max(abs(x), 1e-12)
        worst = max(worst, rel)
        if rel > tol:
            bad.append(f"iter {it}: cpu {x} gpu {y} rel {rel:.2e}")
    for it in sorted(set(sa) & set(sb)):
        for k in sa[it]:
            if k in sb[it] and k != "samples":
                x, y = sa[it][k], sb[it][k]
                rel = abs(y - x) / max(abs(x), 1e-12)
                worst = max(worst, rel)
                if rel > tol:
                    bad.append(f"test iter {it} {k}: cpu {x} gpu {y} rel {rel:.2e}")
    first, last = min(ta), max(ta)
    print(f"  {len(ta)} iterations, loss {ta[first]:.5f} -> {ta[last]:.5f} (cpu) / "
          f"{tb[last]:.5f} (gpu); worst relative difference {worst:.2e} (tol {tol:g})")
    for line in bad[:10]:
        print("  OVER: " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
