#!/usr/bin/env bash
# Memory of training: peak resident set of memdl training ResNet-50 (tests/nets/resnet50.prototxt
# made a training net: a label input, batch-statistics BatchNorm, SoftmaxWithLoss) at batch 16
# for a few iterations, beside PyTorch's on the same net in the same run (bench/torch_memory.py,
# Debian's python3-torch), both under /usr/bin/time -v; then the memory plan's naive and planned
# bytes of the GoogLeNet and ResNet-50 training nets (memdl compile).
#
#   bench/memory.sh [--threads T] [--iterations N] [--batch B]
#
# Peak RSS includes each program's libraries (oneDNN, libtorch). Installs python3-torch when it
# is missing (as root); without it, prints memdl's figures alone and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
iters=2
batch=16
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --iterations) iters=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    *) echo "usage: bench/memory.sh [--threads T] [--iterations N] [--batch B]" >&2; exit 2 ;;
  esac
done

bazel build -c opt //bench:bench_train //:memdl >/dev/null 2>&1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The deploy net as a training net: inputs data + label, BatchNorm on batch statistics (as
# PyTorch's train mode), SoftmaxWithLoss in place of Softmax.
sed -e "s/type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } }/type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: $batch dim: 3 dim: 224 dim: 224 } shape { dim: $batch } }/" \
    -e 's/ batch_norm_param { use_global_stats: true }//' \
    -e 's/layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }/layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1000" bottom: "label" top: "loss" }/' \
    tests/nets/resnet50.prototxt >"$tmp/resnet50_train.prototxt"
grep -q SoftmaxWithLoss "$tmp/resnet50_train.prototxt" || { echo "memory.sh: could not make the training net" >&2; exit 1; }
# GoogLeNet's TRAIN net (a label input and its three losses already) at the same batch: at the
# file's batch of 1 its parameters, gradients and solver history, which no plan can share, are
# most of the bytes, and the ratio says little about the planner
sed -e "s/shape { dim: 1 dim: 3 dim: 224 dim: 224 }/shape { dim: $batch dim: 3 dim: 224 dim: 224 }/" \
    -e "s/input_param { shape { dim: 1 } }/input_param { shape { dim: $batch } }/" \
    tests/nets/googlenet.prototxt >"$tmp/googlenet_train.prototxt"
grep -q "dim: $batch dim: 3" "$tmp/googlenet_train.prototxt" || { echo "memory.sh: could not batch GoogLeNet" >&2; exit 1; }

peak_kb() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }

# bench_train runs one warm-up round plus the timed rounds: iterations x 2 in all.
/usr/bin/time -v bazel-bin/bench/bench_train --threads "$threads" --iterations "$iters" \
  --rounds 1 "$tmp/resnet50_train.prototxt" >"$tmp/memdl.txt" 2>"$tmp/memdl.time"
memdl_kb=$(peak_kb "$tmp/memdl.time")
echo "memdl   ResNet-50 batch $batch, $((2 * iters)) iterations, $threads threads: peak RSS $((memdl_kb / 1024)) MiB"

if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch >/dev/null 2>&1 || true
fi
torch_kb=""
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/time -v /usr/bin/python3 bench/torch_memory.py --threads "$threads" \
    --iterations "$((2 * iters))" --batch "$batch" >"$tmp/torch.txt" 2>"$tmp/torch.time"
  torch_kb=$(peak_kb "$tmp/torch.time")
  echo "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') same net and batch, $((2 * iters)) iterations: peak RSS $((torch_kb / 1024)) MiB"
  awk -v m="$memdl_kb" -v t="$torch_kb" 'BEGIN { printf "ratio memdl / PyTorch: %.2f\n", m / t }'
else
  echo "PyTorch: python3-torch is not installable here; no reference figure"
fi

echo
echo "memory plan (memdl compile, TRAIN nets at batch $batch; MiB, naive -> planned):"
for net in "$tmp/googlenet_train.prototxt" "$tmp/resnet50_train.prototxt"; do
  line=$(bazel-bin/memdl compile "$net" --phase train | grep "memory MiB")
  echo "$(basename "$net" .prototxt):$line"
  echo "$line" | awk '{ n = $(NF - 2); p = $NF; printf "  planned / naive: %.2f (target at most 0.50)\n", p / n }'
done
echo "{\"memdl_peak_rss_kb\": $memdl_kb, \"torch_peak_rss_kb\": ${torch_kb:-null}}"
