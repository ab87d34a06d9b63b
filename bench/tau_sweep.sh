#!/usr/bin/env bash
# Time to a test accuracy for LeNet on Fashion-MNIST with K local workers at
# fixed tau and at memdl's own choice (issue 11): the automatic tau should
# be within 10% of the best fixed one.
#
#   bench/tau_sweep.sh [--workers "2 4"] [--taus "1 2 5 10 20 50 auto"]
#                      [--target 0.88] [--max-iter 4000] [--test-interval 50]
#                      [--repeat 1] [--seeds "1701 1702 1703 1704 1705"]
#                      [--keep DIR]
#
# "auto" is memdl's choice at the job's sync.max_comm_fraction, "auto:F"
# at a bound of F. --keep DIR keeps every run's output folder and log.
#
# Each run trains the example job until a TEST pass reaches the target (or
# max_iter) and reports the wall time from the run's start record to that
# TEST record of metrics.jsonl, with the TEST passes ("seconds" of the test
# records: the same work for every tau, which only dilutes the comparison)
# and without them ("train s", calibration included), the iteration it
# happened at, and the waiting share (the run is stopped there: what comes
# after is not measured). Each seed of --seeds trains its own weights and
# batch order, so which TEST pass first clears the target changes with it:
# one seed measures that seed's luck as much as tau. With --repeat N every
# tau runs N times per seed, the taus taking turns (so a machine that slows
# down for a while slows all of them alike); the median over all of a
# tau's runs decides (on 2 cores single runs scatter by about 25%).
set -euo pipefail
cd "$(dirname "$0")/.."

workers="2 4"
taus="1 2 5 10 20 50 auto"
target=0.88
max_iter=4000
interval=50
repeat=1
seeds="1701 1702 1703 1704 1705"
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --taus) taus=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --max-iter) max_iter=$2; shift 2 ;;
    --test-interval) interval=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "usage: bench/tau_sweep.sh [--workers \"2 4\"] [--taus \"1 2 5 auto\"] [--target A] [--max-iter N] [--test-interval N] [--repeat N] [--seeds \"S ...\"] [--keep DIR]" >&2; exit 2 ;;
  esac
done

bazel build //:memdl >/dev/null 2>&1 || { echo "bench/tau_sweep.sh: bazel build //:memdl failed" >&2; exit 1; }
if [ -n "$keep" ]; then
  mkdir -p "$keep"
  tmp=$keep
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
fi

# prints "seconds train_seconds iter" of the first TEST record at or above
# the target (or "- - -"), then the waiting share of the rounds before it: the workers'
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
    /"event": "test"/ && !hit { tested += num("seconds") }
    /"event": "round"/ && !hit {
      w = sum("wait_s"); wait += w; busy += w + sum("compute_s") + sum("comm_s")
    }
    /"event": "test"/ && /"net": 0/ && !hit && num("accuracy") >= target {
      hit = 1; printf "%.1f %.1f %d", num("time") - t0, num("time") - t0 - tested, num("iter")
    }
    END { if (!hit) printf "- - -"; printf " %.3f\n", (busy > 0 ? wait / busy : 0) }' "$1"
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

# the medians of measure $2 ("secs" or "train") for K=$1, and the automatic
# tau's against the best fixed one's
summary() {
  local k=$1 what=$2 name=$3 best="" best_tau="" auto="" line m
  line="K=$k medians, $name:"
  for tau in $taus; do
    m=$( (cat "$tmp/k$k-tau$tau.$what" 2>/dev/null || true) | median)
    line="$line tau $tau $m s,"
    [ "$m" = - ] && continue
    if [ "$tau" = auto ]; then
      auto=$m
    elif [ "${tau%%:*}" = auto ]; then
      continue
    elif [ -z "$best" ] || awk -v a="$m" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$m
      best_tau=$tau
    fi
  done
  echo "${line%,}"
  if [ -n "$best" ] && [ -n "$auto" ]; then
    awk -v a="$auto" -v b="$best" -v t="$best_tau" -v k="$k" -v w="$name" -v n="$runs" \
      'BEGIN { printf "K=%d, %s: automatic tau %.1f s, best fixed (tau %s) %.1f s: %.2fx (target <= 1.10x; medians of %d runs)\n", k, w, a, t, b, a / b, n }'
  fi
}

runs=$((repeat * $(echo "$seeds" | wc -w)))
printf "%-7s %-5s %-3s %-16s %8s %8s %6s %6s\n" workers seed run tau seconds "train s" iter wait
for k in $workers; do
  for seed in $seeds; do
    for r in $(seq 1 "$repeat"); do
      for tau in $taus; do
        out="$tmp/k$k-tau$tau-$seed-$r"
        case $tau in
          auto) set_tau=() ;;
          auto:*) set_tau=(--set "sync.max_comm_fraction=${tau#auto:}") ;;
          *) set_tau=(--set "sync.tau=$tau") ;;
        esac
        bazel-bin/memdl run jobs/fashion_mnist/job.prototxt --workers "local:$k" "${set_tau[@]}" \
          --set "random_seed=$seed" --set "max_iter=$max_iter" --set "test_interval=$interval" \
          --set snapshot=0 --set "accept.at_least=$target" --output "$out" >"$out.log" 2>&1 &
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
        read -r secs train iter wait < <(time_to_target "$out/metrics.jsonl")
        label=$tau
        if [ "${tau%%:*}" = auto ]; then
          # the calibrated tau, then the one the run ended with
          first=$(grep -o 'memdl driver: tau [0-9]* (calibrated' "$out.log" | head -n 1 | awk '{ print $4 }')
          last=$(grep -o 'memdl driver: tau [0-9]* -> [0-9]*' "$out.log" | tail -n 1 | awk '{ print $6 }')
          label="$tau(${first:-?}${last:+->$last})"
        fi
        printf "%-7s %-5s %-3s %-16s %8s %8s %6s %6s\n" "$k" "$seed" "$r" "$label" "$secs" "$train" "$iter" "$wait"
        if [ "$secs" != - ]; then
          echo "$secs" >>"$tmp/k$k-tau$tau.secs"
          echo "$train" >>"$tmp/k$k-tau$tau.train"
          echo "$iter" >>"$tmp/k$k-tau$tau.iter"
        fi
      done
    done
  done
  summary "$k" train "training (TEST passes left out)"
  summary "$k" secs "wall (TEST passes in)"
  line="K=$k median iterations to $target:"
  for tau in $taus; do line="$line tau $tau $( (cat "$tmp/k$k-tau$tau.iter" 2>/dev/null || true) | median),"; done
  echo "${line%,}"
done
