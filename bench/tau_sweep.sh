#!/usr/bin/env bash
# Time to a test accuracy for LeNet on Fashion-MNIST with K local workers at
# fixed tau and at memdl's own choice (issue 11): the automatic tau should
# be within 10% of the best fixed one.
#
#   bench/tau_sweep.sh [--workers "2 4"] [--taus "1 2 5 10 20 50 auto"]
#                      [--target 0.88] [--max-iter 4000] [--test-interval 100]
#                      [--repeat 3]
#
# Each run trains the example job until a TEST pass reaches the target (or
# max_iter) and reports the wall time from the run's start record to that
# TEST record of metrics.jsonl (TEST passes included: the same for every
# tau), the iteration it happened at, and the waiting share (the run is
# stopped there: what comes after is not measured). With
# --repeat N every tau runs N times, the taus taking turns (so a machine
# that slows down for a while slows all of them alike), and the median
# decides; on 2 cores single runs scatter by about 25%.
set -euo pipefail
cd "$(dirname "$0")/.."

workers="2 4"
taus="1 2 5 10 20 50 auto"
target=0.88
max_iter=4000
interval=100
repeat=1
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --taus) taus=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --max-iter) max_iter=$2; shift 2 ;;
    --test-interval) interval=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "usage: bench/tau_sweep.sh [--workers \"2 4\"] [--taus \"1 2 5 auto\"] [--target A] [--max-iter N] [--test-interval N] [--repeat N]" >&2; exit 2 ;;
  esac
done

bazel build //:memdl >/dev/null 2>&1 || { echo "bench/tau_sweep.sh: bazel build //:memdl failed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# prints "seconds iter" of the first TEST record at or above the target
# (or "- -"), then the waiting share of the rounds before it: the workers'
# waiting over their compute, communication and waiting, summed
time_to_target() {
  awk -v target="$target" '
    function num(key,   m) {
      if (match($0, "\"" key "\": [-0-9.e+]+")) {
        m = substr($0, RSTART, RLENGTH); sub(/.*: /, "", m); return m + 0
      }
      return -1
    }
    # the sum of every "key": value on the line
    function sum(key,   rest, m, t) {
      rest = $0; t = 0
      while (match(rest, "\"" key "\": [-0-9.e+]+")) {
        m = substr(rest, RSTART, RLENGTH); sub(/.*: /, "", m); t += m
        rest = substr(rest, RSTART + RLENGTH)
      }
      return t
    }
    /"event": "start"/ && !t0 { t0 = num("time") }
    /"event": "round"/ && !hit {
      w = sum("wait_s"); wait += w; busy += w + sum("compute_s") + sum("comm_s")
    }
    /"event": "test"/ && /"net": 0/ && !hit && num("accuracy") >= target {
      hit = 1; printf "%.1f %d", num("time") - t0, num("iter")
    }
    END { if (!hit) printf "- -"; printf " %.3f\n", (busy > 0 ? wait / busy : 0) }' "$1"
}

# the median of the numbers on stdin ("-" when there are none)
median() {
  sort -g | awk '
    { v[NR] = $1 }
    END {
      if (!NR) print "-"
      else if (NR % 2) print v[(NR + 1) / 2]
      else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

printf "%-8s %-3s %-8s %10s %8s %8s\n" workers run tau seconds iter wait
for k in $workers; do
  for r in $(seq 1 "$repeat"); do
    for tau in $taus; do
      out="$tmp/k$k-tau$tau-$r"
      set_tau=()
      [ "$tau" != auto ] && set_tau=(--set "sync.tau=$tau")
      bazel-bin/memdl run jobs/fashion_mnist/job.prototxt --workers "local:$k" "${set_tau[@]}" \
        --set "max_iter=$max_iter" --set "test_interval=$interval" --set snapshot=0 \
        --set "accept.at_least=$target" --output "$out" >"$out.log" 2>&1 &
      pid=$!
      # what comes after the target is not measured: stop the run there
      # (SIGTERM: memdl stops cleanly and writes its done record)
      while kill -0 "$pid" 2>/dev/null; do
        if [ -f "$out/metrics.jsonl" ] && [ "$(time_to_target "$out/metrics.jsonl" | cut -d' ' -f1)" != - ]; then
          kill -TERM "$pid" 2>/dev/null || true
          break
        fi
        sleep 0.5
      done
      wait "$pid" || true
      read -r secs iter wait < <(time_to_target "$out/metrics.jsonl")
      label=$tau
      if [ "$tau" = auto ]; then
        # the calibrated tau, then the one the run ended with
        first=$(grep -o 'memdl driver: tau [0-9]* (calibrated' "$out.log" | head -n 1 | awk '{ print $4 }')
        last=$(grep -o 'memdl driver: tau [0-9]* -> [0-9]*' "$out.log" | tail -n 1 | awk '{ print $6 }')
        label="auto(${first:-?}${last:+->$last})"
      fi
      printf "%-8s %-3s %-8s %10s %8s %8s\n" "$k" "$r" "$label" "$secs" "$iter" "$wait"
      [ "$secs" != - ] && echo "$secs" >>"$tmp/k$k-tau$tau.secs"
    done
  done
  best=""
  best_tau=""
  line="K=$k medians:"
  for tau in $taus; do
    m=$( (cat "$tmp/k$k-tau$tau.secs" 2>/dev/null || true) | median)
    line="$line tau $tau $m s,"
    [ "$m" = - ] && continue
    if [ "$tau" = auto ]; then
      auto=$m
    elif [ -z "$best" ] || awk -v a="$m" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$m
      best_tau=$tau
    fi
  done
  echo "${line%,}"
  if [ -n "$best" ] && [ -n "${auto:-}" ]; then
    awk -v a="$auto" -v b="$best" -v t="$best_tau" -v k="$k" -v n="$repeat" \
      'BEGIN { printf "K=%d: automatic tau %.1f s, best fixed (tau %s) %.1f s: %.2fx (target <= 1.10x; medians of %d)\n", k, a, t, b, a / b, n }'
  fi
  auto=""
done
