#!/usr/bin/env bash
# The GPU check in one call, on a machine with a GPU, after
# tests/gpu/prepare.sh packed tests/gpu/pack/memdl-gpu-check.tar.gz (carry
# that folder). Under 8 minutes on one H100:
#   1. every GPU layer forward and backward against the CPU from the same
#      seeded inputs (gpu_test: rel. error <= 1e-4, 1e-3 for Convolution and
#      InnerProduct, Dropout exact), FP32 math (MDL_CUDA_EXACT=1);
#   2. 20 SGD iterations of LeNet and CIFAR-10-quick on --device cpu and
#      --device cuda: losses within 1e-3 relative (compare_losses.py);
#   3. training images/s of memdl (cuda) beside PyTorch on the same GPU and
#      batch for LeNet (64), CIFAR-10-quick (100), ResNet-50 (32).
# Without a usable GPU it runs what it can (the CPU halves, the skipped
# layer checks) and says so; exit 0 only when every check that ran passed.
#   tests/gpu/run_check.sh [WORKDIR]      (default /tmp/memdl-gpu-check)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$here/memdl" ]; then # in the repository: unpack, then run the packed copy
  tarball=$here/pack/memdl-gpu-check.tar.gz
  [ -f "$tarball" ] || { echo "run_check: $tarball missing: run tests/gpu/prepare.sh" >&2; exit 2; }
  work=${1:-/tmp/memdl-gpu-check}
  rm -rf "$work" && mkdir -p "$work" && tar -C "$work" -xzf "$tarball" || exit 2
  exec "$work"/memdl-gpu-check/run_check.sh
fi
cd "$here"
start=$(date +%s)
failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

# cuDNN, cuBLAS and the CUDA runtime from the pip wheels under nvidia/
nv=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
libs=$here/lib
if [ -n "$nv" ]; then
  for d in "$nv"/*/lib; do libs=$libs:$d; done
fi
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MDL_CUDA_PLUGIN=$here/libmemdl_cuda.so
threads=$(nproc)

echo "== machine"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
./memdl --version || fail "memdl does not start"
gpu=0
./memdl --version | grep -q 'GPUs\? usable' && gpu=1
[ $gpu = 1 ] || echo "NO USABLE GPU: the GPU halves below are skipped"

echo "== 1. layers: GPU against CPU (gpu_test, FP32)"
MDL_CUDA_EXACT=1 timeout 300 ./gpu_test --verbose 2>&1 | grep -v '^\[----\]' | tail -n 60
[ "${PIPESTATUS[0]}" = 0 ] || fail "gpu_test"

echo "== 2. 20 SGD iterations, cpu against cuda"
for job in lenet cifar10_quick; do
  common=(run "jobs/${job}_job.prototxt" --set max_iter=20 --set display=1 --set snapshot=0
    --set test_interval=1000 --threads "$threads")
  timeout 120 ./memdl "${common[@]}" --device cpu --output "out/$job.cpu" >"out.$job.cpu.log" 2>&1 ||
    { fail "$job on cpu: $(tail -n 2 "out.$job.cpu.log")"; continue; }
  if [ $gpu = 1 ]; then
    MDL_CUDA_EXACT=1 timeout 120 ./memdl "${common[@]}" --device cuda --output "out/$job.cuda" \
      >"out.$job.cuda.log" 2>&1 || { fail "$job on cuda: $(tail -n 3 "out.$job.cuda.log")"; continue; }
    grep -m1 '^device' "out.$job.cuda.log"
    echo "$job:"
    python3 compare_losses.py "out/$job.cpu/metrics.jsonl" "out/$job.cuda/metrics.jsonl" 1e-3 ||
      fail "$job losses"
  else
    echo "$job: cpu ran ($(grep -c '"train"' "out/$job.cpu/metrics.jsonl") loss lines); cuda skipped"
  fi
done

echo "== 3. training images/s"
dev=cpu
[ $gpu = 1 ] && dev=cuda
rows=()
for spec in "lenet jobs/lenet_job.prototxt 64" "cifar10_quick jobs/cifar10_quick_job.prototxt 100" \
  "resnet50 tests/nets/resnet50_b32.prototxt 32"; do
  read -r name file batch <<<"$spec"
  iters=50
  [ $dev = cpu ] && iters=2
  out=$(timeout 180 ./memdl time "$file" --device $dev --iterations $iters --threads "$threads" 2>&1)
  if [ $? = 0 ]; then
    m=$(echo "$out" | tail -n 1 | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["images_per_s"])')
  else
    m="not run: $(echo "$out" | tail -n 1 | cut -c1-150)"
  fi
  t="-"
  if [ $gpu = 1 ]; then
    t=$(timeout 180 python3 torch_bench.py "$name" "$batch" 2>&1 | tail -n 1 |
      python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["images_per_s"])' 2>/dev/null || echo "failed")
  fi
  rows+=("$(printf '| %-14s | %5s | %-14s | %s |' "$name" "$batch" "$t" "$m")")
done
echo "memdl on $dev$([ $dev = cuda ] && echo ' (default math: TF32 convolutions allowed)') beside PyTorch $(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '(absent)')"
echo "| net            | batch | PyTorch img/s  | memdl img/s |"
echo "|----------------|-------|----------------|-------------|"
printf '%s\n' "${rows[@]}"

echo "== $failed failed, $(($(date +%s) - start)) s"
[ $failed = 0 ]
