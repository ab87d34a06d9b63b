#!/usr/bin/env bash
# Training throughput of two bench_train binaries (say one built at main, one
# at a branch), alternated A B A B ... on the same machine, so that load from
# other processes falls on both alike; prints each pair and the medians per
# net, and the CPU time per iteration (bench_train's cpu_ms_per_iter, far
# steadier than images/s under other processes' load). The machine is shared:
# also prints the load average before and after.
#
#   bench/ab_train.sh BENCH_A BENCH_B [--threads T] [--pairs P] [--iterations N] [--rounds R]
#
# Build the binaries first, e.g. `bazel build //bench:bench_train` at each
# commit and copy bazel-bin/bench/bench_train somewhere. Runs LeNet (batch 64)
# and CIFAR-10-quick (batch 100) from bench/, as bench/run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: bench/ab_train.sh BENCH_A BENCH_B [--threads T] [--pairs P] [--iterations N] [--rounds R]" >&2
  exit 2
}
[ $# -ge 2 ] || usage
a=$1 b=$2
shift 2
threads=2 pairs=5 iters=20 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --iterations) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) usage ;;
  esac
done
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "bench/ab_train.sh: $bin is not an executable" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((p = 1; p <= pairs; p++)); do
  for side in A B; do
    bin=$a
    [ "$side" = B ] && bin=$b
    "$bin" --threads "$threads" --iterations "$iters" --rounds "$rounds" \
      bench/lenet.prototxt bench/cifar10_quick.prototxt | grep '^{' |
      sed "s/^{/{\"side\": \"$side\", \"pair\": $p, /" >>"$tmp/rows.jsonl"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$tmp/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
nets = sorted({r["net"] for r in rows})
for net in nets:
    pairs = sorted({r["pair"] for r in rows if r["net"] == net})
    a = {r["pair"]: r["images_per_s"] for r in rows if r["net"] == net and r["side"] == "A"}
    b = {r["pair"]: r["images_per_s"] for r in rows if r["net"] == net and r["side"] == "B"}
    print(f"{net}: images/s per pair (A / B / B-A): " +
          ", ".join(f"{a[p]:.0f}/{b[p]:.0f}/{100 * (b[p] / a[p] - 1):+.1f}%" for p in pairs))
    ca = [r.get("cpu_ms_per_iter", 0) for r in rows if r["net"] == net and r["side"] == "A"]
    cb = [r.get("cpu_ms_per_iter", 0) for r in rows if r["net"] == net and r["side"] == "B"]
    if all(ca + cb):  # 0 from bench_train builds that did not measure it
        mca, mcb = statistics.median(ca), statistics.median(cb)
        print(f"{net}: CPU ms per iteration (all threads), median A {mca:.2f}, median B "
              f"{mcb:.2f} ({100 * (mcb / mca - 1):+.1f}%)")
    ma, mb = statistics.median(a.values()), statistics.median(b.values())
    mr = statistics.median(100 * (b[p] / a[p] - 1) for p in pairs)
    print(f"{net}: median A {ma:.0f}, median B {mb:.0f} images/s, "
          f"B vs A {100 * (mb / ma - 1):+.1f}% (median of per-pair ratios {mr:+.1f}%)")
PY
