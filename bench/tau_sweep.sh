#!/usr/bin/env bash
# Time to a test accuracy for LeNet on Fashion-MNIST with K local workers at
# fixed tau and at memdl's own choice (issue 11): the automatic tau should
# be within 10% of the best fixed one.
#
#   bench/tau_sweep.sh [--workers "2 4"] [--taus "1 2 5 10 20 50 auto"]
#                      [--target 0.88] [--max-iter 4000] [--test-interval 100]
#
# Each run trains the example job until a TEST pass reaches the target (or
# max_iter) and reports the wall time from the run's start record to that
# TEST record of metrics.jsonl (TEST passes included: the same for every
# tau), the iteration it happened at, and the waiting share. The machine
# is shared: rerun when the figures look noisy.
set -euo pipefail
cd "$(dirname "$0")/.."

workers="2 4"
taus="1 2 5 10 20 50 auto"
target=0.88
max_iter=4000
interval=100
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --taus) taus=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --max-iter) max_iter=$2; shift 2 ;;
    --test-interval) interval=$2; shift 2 ;;
    *) echo "usage: bench/tau_sweep.sh [--workers \"2 4\"] [--taus \"1 2 5 auto\"] [--target A] [--max-iter N] [--test-interval N]" >&2; exit 2 ;;
  esac
done

bazel build //:memdl >/dev/null 2>&1 || { echo "bench/tau_sweep.sh: bazel build //:memdl failed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# prints "seconds iter" of the first TEST record at or above the target
# (or "- -"), then the done record's wait_share
time_to_target() {
  awk -v target="$target" '
    function num(key,   m) {
      if (match($0, "\"" key "\": [-0-9.e+]+")) {
        m = substr($0, RSTART, RLENGTH); sub(/.*: /, "", m); return m + 0
      }
      return -1
    }
    /"event": "start"/ && !t0 { t0 = num("time") }
    /"event": "test"/ && /"net": 0/ && !hit && num("accuracy") >= target {
      hit = 1; printf "%.1f %d", num("time") - t0, num("iter")
    }
    /"event": "done"/ { wait = num("wait_share") }
    END { if (!hit) printf "- -"; printf " %.3f\n", wait }' "$1"
}

printf "%-8s %-6s %10s %8s %8s\n" workers tau seconds iter wait
for k in $workers; do
  best=""
  auto=""
  for tau in $taus; do
    out="$tmp/k$k-tau$tau"
    set_tau=()
    [ "$tau" != auto ] && set_tau=(--set "sync.tau=$tau")
    bazel-bin/memdl run jobs/fashion_mnist/job.prototxt --workers "local:$k" "${set_tau[@]}" \
      --set "max_iter=$max_iter" --set "test_interval=$interval" --set snapshot=0 \
      --set "accept.at_least=$target" --output "$out" >"$out.log" 2>&1 || true
    chosen=$(grep -o 'tau [0-9]*' "$out.log" | head -n 1 | cut -d' ' -f2)
    read -r secs iter wait < <(time_to_target "$out/metrics.jsonl")
    label=$tau
    [ "$tau" = auto ] && label="auto($chosen)"
    printf "%-8s %-6s %10s %8s %8s\n" "$k" "$label" "$secs" "$iter" "$wait"
    if [ "$secs" != - ]; then
      if [ "$tau" = auto ]; then
        auto=$secs
      elif [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then
        best=$secs
      fi
    fi
  done
  if [ -n "$best" ] && [ -n "$auto" ]; then
    awk -v a="$auto" -v b="$best" -v k="$k" \
      'BEGIN { printf "K=%d: automatic tau %.1f s, best fixed %.1f s: %.2fx (target <= 1.10x)\n", k, a, b, a / b }'
  fi
done
