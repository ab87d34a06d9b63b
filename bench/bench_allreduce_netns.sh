#!/usr/bin/env bash
# The TCP modes of bench_allreduce (star, peer, direct, ring) between hosts
# that each have their own link: the driver and every worker in a network
# namespace of their own, joined through a bridge by veth links shaped with
# tc netem (default 1 Gbit/s and 0.1 ms each way on both ends of a link:
# 0.2 ms one way between two hosts). There the driver's link is what the
# star saturates and peer-to-peer averaging spreads over every worker's
# link. Needs root (ip netns, tc); removes its namespaces on exit. Without
# sch_netem (this VM's kernel) tc tbf shapes the rate and adds no delay.
#
#   bench/bench_allreduce_netns.sh [--mb 1.7,60,240] [--workers 2,4] [--rounds N]
#                                  [--mode star,peer,direct,ring] [--rate 1gbit] [--delay 0.1ms]
#
# Prints bench_allreduce's lines: mode, bytes, K, rounds, median and best
# round ms, GB/s (2 K bytes per round / median), 0, and the alpha-beta
# model's prediction (alpha and beta measured first over one shaped link).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=1.7,60,240
WORKERS=2,4
ROUNDS=""
MODE=star,peer,direct,ring
RATE=1gbit
DELAY=0.1ms
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) MB="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --delay) DELAY="$2"; shift 2 ;;
    *) echo "usage: $0 [--mb LIST] [--workers LIST] [--rounds N] [--mode LIST] [--rate R] [--delay D]" >&2
       exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (ip netns, tc)" >&2; exit 2; }

BAZEL=${BAZEL:-bazel}
$BAZEL build -c opt //bench:bench_allreduce >&2
BIN="$($BAZEL info -c opt bazel-bin 2>/dev/null)/bench/bench_allreduce"

KMAX=0
for k in ${WORKERS//,/ }; do [ "$k" -gt "$KMAX" ] && KMAX=$k; done
P="mb$$"                                  # namespace and link prefix (names < 16 chars)
HOSTS=(d)
for ((i = 0; i < KMAX; i++)); do HOSTS+=("w$i"); done
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for h in "${HOSTS[@]}" sw; do ip netns del "$P$h" 2>/dev/null || true; done
}
trap cleanup EXIT

ip netns add "${P}sw"
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
# each host's egress and the bridge's egress towards it: rate and delay both
# ways; kernels without sch_netem get tbf (rate only, no added delay)
SHAPE=(root netem delay "$DELAY" rate "$RATE" limit 100000)
if ! tc -n "${P}sw" qdisc add dev br0 "${SHAPE[@]}" 2>/dev/null; then
  SHAPE=(root tbf rate "$RATE" burst 256kb latency 100ms)
  DELAY="0 (no sch_netem in this kernel: tbf shapes the rate only)"
else
  tc -n "${P}sw" qdisc del dev br0 root
fi
for i in "${!HOSTS[@]}"; do
  h=${HOSTS[$i]}
  ip netns add "$P$h"
  ip link add "$P$h-a" type veth peer name "$P$h-b"
  ip link set "$P$h-a" netns "$P$h"
  ip link set "$P$h-b" netns "${P}sw"
  ip -n "$P$h" link set "$P$h-a" name eth0
  ip -n "$P$h" addr add "10.77.0.$((i + 1))/24" dev eth0
  ip -n "$P$h" link set eth0 up
  ip -n "$P$h" link set lo up
  tc -n "$P$h" qdisc add dev eth0 "${SHAPE[@]}"
  ip -n "${P}sw" link set "$P$h-b" master br0
  ip -n "${P}sw" link set "$P$h-b" up
  tc -n "${P}sw" qdisc add dev "$P$h-b" "${SHAPE[@]}"
done

CAP=268435456 # room for the largest model (256 MiB)
ADDRS=""
for ((i = 0; i < KMAX; i++)); do
  a="10.77.0.$((i + 2)):7070"
  ip netns exec "${P}w$i" "$BIN" --serve-peer "$a" "$CAP" 2>>"/tmp/$P.workers.log" &
  PIDS+=($!)
  ADDRS="$ADDRS${ADDRS:+,}$a"
done
echo "# $(nproc) CPUs; driver and $KMAX workers in their own namespaces; links $RATE, $DELAY per end"
ip netns exec "${P}d" "$BIN" --mode "$MODE" --mb "$MB" --workers "$WORKERS" --addrs "$ADDRS" \
  ${ROUNDS:+--rounds "$ROUNDS"} 2> >(grep -v "insecure\|plain TCP" >&2)
