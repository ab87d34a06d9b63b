#!/usr/bin/env bash
# Two workers of unequal speed (issue 11): worker 1 is held to a fraction of
# one core by a cgroup (v1 cpu controller, as root), worker 0 has a whole
# one. The example job runs once with equal blocks and once with blocks by
# measured speed (--calibrate); the waiting share of round time (metrics.jsonl's
# done record; the star, so that a fast worker waits in the open rather than
# inside the peer exchange) is printed for both, with the final TEST accuracy.
# With --slow-after S, worker 1 runs at full speed for its first S seconds
# and is throttled only then (another process taking its cores mid-run):
# blocks by measured speed must then follow it during the run, which the
# driver's "blocks ... were ..." and "partitions follow the shares" lines
# show; --partitions P splits the data finer so partitions can follow.
#
#   bench/hetero.sh [--quota 0.5] [--iterations 600] [--tau 5] [--slow-after S] [--partitions P]
#
# Needs root and /sys/fs/cgroup/cpu (cgroup v1); says so and exits 2 without.
set -euo pipefail
cd "$(dirname "$0")/.."

quota=0.5
iters=600
tau=5
slow_after=0
parts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quota) quota=$2; shift 2 ;;
    --iterations) iters=$2; shift 2 ;;
    --tau) tau=$2; shift 2 ;;
    --slow-after) slow_after=$2; shift 2 ;;
    --partitions) parts=(--set "data.partitions=$2"); shift 2 ;;
    *) echo "usage: bench/hetero.sh [--quota FRACTION] [--iterations N] [--tau T]" \
         "[--slow-after S] [--partitions P]" >&2; exit 2 ;;
  esac
done

cg=/sys/fs/cgroup/cpu
if [ "$(id -u)" != 0 ] || [ ! -w "$cg" ]; then
  echo "bench/hetero.sh: needs root and a writable cgroup v1 cpu controller at $cg" >&2
  exit 2
fi
bazel build //:memdl >/dev/null 2>&1 || { echo "bench/hetero.sh: bazel build //:memdl failed" >&2; exit 1; }

tmp=$(mktemp -d)
slow="$cg/memdl-hetero-$$"
mkdir "$slow"
# a short period: throttled in 10 ms slices, the slow worker's pace stays
# even within one round (the default 100 ms would stall whole rounds)
period=10000
echo "$period" >"$slow/cpu.cfs_period_us"
awk -v q="$quota" -v p="$period" 'BEGIN { printf "%d\n", q * p }' >"$slow/cpu.cfs_quota_us"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rmdir "$slow" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/token")

# starts a worker; prints its address and pid once it listens
start_worker() {
  local log=$1
  bazel-bin/memdl worker --listen 127.0.0.1:0 --threads 1 --token-file "$tmp/token" \
    --driver-timeout-ms 600000 >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    addr=$(grep -o '(port [0-9]*)' "$log" | head -n 1 | tr -dc '0-9' || true)
    [ -n "$addr" ] && addr="127.0.0.1:$addr"
    [ -n "$addr" ] && { echo "$addr $pid"; return; }
    sleep 0.1
  done
  echo "bench/hetero.sh: a worker did not come up: $(cat "$log")" >&2
  exit 1
}

run() {
  local name=$1
  shift
  read -r a0 p0 < <(start_worker "$tmp/$name-w0.log")
  read -r a1 p1 < <(start_worker "$tmp/$name-w1.log")
  pids+=("$p0" "$p1")
  # its threads too (gRPC's and the pool's start later; cgroup v1 tasks are per thread)
  ( sleep "$slow_after"
    echo "$p1" >"$slow/tasks" 2>/dev/null || true
    while kill -0 "$p1" 2>/dev/null; do
      for t in /proc/"$p1"/task/*; do echo "${t##*/}" >"$slow/tasks" 2>/dev/null || true; done
      sleep 0.2
    done ) &
  pids+=($!)
  bazel-bin/memdl run jobs/fashion_mnist/job.prototxt --workers "$a0,$a1" --token-file "$tmp/token" \
    --set "max_iter=$iters" --set "sync.tau=$tau" --set "test_interval=0" --set snapshot=0 \
    --set cluster.averaging=STAR \
    "${parts[@]}" --threads 1 --output "$tmp/$name" "$@" >"$tmp/$name.log" 2>&1 || true
  local done_line
  done_line=$(grep '"event": "done"' "$tmp/$name/metrics.jsonl" 2>/dev/null | tail -n 1 || true)
  [ -n "$done_line" ] || { echo "bench/hetero.sh: $name did not finish:" >&2; tail -n 5 "$tmp/$name.log" >&2; }
  local wait acc secs
  wait=$(echo "$done_line" | grep -o '"wait_share": [0-9.e-]*' | cut -d' ' -f2 || true)
  acc=$(echo "$done_line" | grep -o '"accuracy": [0-9.e-]*' | cut -d' ' -f2 || true)
  secs=$(echo "$done_line" | grep -o '"seconds": [0-9.e-]*' | cut -d' ' -f2 || true)
  printf "%-28s %10s %10s %10s\n" "$name" "${wait:--}" "${acc:--}" "${secs:--}"
  grep -o 'memdl driver: \(blocks\|partitions follow\).*' "$tmp/$name.log" |
    sed -e 's/^memdl driver: /  /' -e 's/; predicted round.*//' || true
}

when=""
[ "$slow_after" != 0 ] && when=" after its first $slow_after s"
echo "worker 1 held to $quota of a core$when, worker 0 a whole one; $iters iterations, tau $tau"
printf "%-28s %10s %10s %10s\n" blocks wait_share accuracy seconds
run "equal blocks"
run "blocks by measured speed" --calibrate
