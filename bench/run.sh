#!/usr/bin/env bash
# Training throughput of memdl's CPU engine beside PyTorch's CPU build on the
# same LeNet (batch 64) and CIFAR-10-quick (batch 100) definitions, same
# thread count, synthetic data; then (with --full) the peak memory and final
# accuracy of the whole Fashion-MNIST LeNet job.
#
#   bench/run.sh [--threads T] [--iterations N] [--rounds R] [--full]
#
# Installs Debian's python3-torch when it is missing (run as root). Medians
# over R rounds of N iterations each; this machine is shared, so rerun when
# the numbers look noisy.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc)
iters=20
rounds=5
full=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --iterations) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --full) full=1; shift ;;
    *) echo "usage: bench/run.sh [--threads T] [--iterations N] [--rounds R] [--full]" >&2; exit 2 ;;
  esac
done

bazel build //bench:bench_train >/dev/null
[ "$full" = 1 ] && bazel build //:memdl >/dev/null
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "installing python3-torch (Debian) for the reference numbers..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bazel-bin/bench/bench_train --threads "$threads" --iterations "$iters" --rounds "$rounds" \
  bench/lenet.prototxt bench/cifar10_quick.prototxt | tee "$tmp/memdl.txt"
echo
/usr/bin/python3 bench/torch_bench.py --threads "$threads" --iterations "$iters" \
  --rounds "$rounds" | tee "$tmp/torch.txt"
echo
python3 - "$tmp/memdl.txt" "$tmp/torch.txt" <<'PY'
import json, sys
def rows(path):
    return {r["net"]: r for r in (json.loads(l) for l in open(path) if l.startswith("{"))}
m, t = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'net':<14} {'batch':>5} {'threads':>7} {'memdl img/s':>12} {'torch img/s':>12} {'ratio':>6}")
for name in m:
    a, b = m[name], t.get(name)
    if b:
        print(f"{name:<14} {a['batch']:>5} {a['threads']:>7} {a['images_per_s']:>12.0f} "
              f"{b['images_per_s']:>12.0f} {a['images_per_s'] / b['images_per_s']:>5.2f}x")
PY

if [ "$full" = 1 ]; then
  echo
  echo "full LeNet job (10000 iterations):"
  /usr/bin/time -v bazel-bin/memdl run jobs/fashion_mnist/job.prototxt --threads "$threads" \
    --output "$tmp/out" 2>"$tmp/run.err" || true
  grep -E "^done|acceptance" "$tmp/run.err" || true
  grep -E "Maximum resident set size" "$tmp/run.err" |
    awk '{printf "peak memory (RSS): %.1f MiB\n", $6 / 1024}'
fi
