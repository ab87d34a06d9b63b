#!/usr/bin/env bash
# One all-reduce round between hosts that each have their own link: the
# driver and every worker in a network namespace of their own, joined
# through a bridge by veth links shaped with tc on both ends (each host's
# egress and the bridge's egress towards it). There the driver's link is what
# the star saturates and peer-to-peer averaging spreads over every worker's
# link. Needs root (ip netns, tc); removes its namespaces on exit. Measures
# only; it checks no target.
#
#   bench/bench_allreduce_netns.sh [--mb 1.7,60,240] [--workers 2,4,8] [--rounds N]
#       [--mode star,peer,direct,ring,mpi] [--rate 1gbit] [--delay 0.1ms] [--plot FILE.svg]
#
# Modes. star, peer, direct, ring (and peer+return etc.) are bench_allreduce's TCP modes
# (bench/bench_allreduce.c): gRPC workers (`--serve-peer`), one per worker
# namespace, driven from the driver's namespace. mpi is OpenMPI's
# MPI_Allreduce (bench/bench_allreduce_mpi.c, built with mpicc into a
# temporary folder) on K ranks, rank i alone in worker i's namespace, so its
# bytes cross the same shaped links as ours:
#   ip netns exec DRIVER mpirun --mca pml ob1 --mca btl tcp,self
#       --mca btl_tcp_if_include eth0 --bind-to none --mca mpi_yield_when_idle 1
#       -np 1 ip netns exec W0 mpi : -np 1 ip netns exec W1 mpi : ...
# pml ob1 because Debian's OpenMPI would otherwise pick UCX, which ignores
# the btl list (and would use shared memory); no vader, so no shared memory
# between ranks. PMIx 4 (Debian's) has no Unix-socket transport: its ranks
# reach mpirun's PMIx server over TCP, so mpirun runs in the driver's
# namespace and PMIx listens on its eth0 (PMIX_MCA_ptl_tcp_if_include);
# that is start-up traffic only. Ranks yield when idle and are not pinned:
# 2 cores hold up to 8 ranks, as they hold 8 gRPC workers. After each mpirun
# the script prints how many bytes left the workers' shaped egresses (tc's
# counters) beside the 2 (K-1) B per all-reduce that any all-reduce must send,
# the check that MPI's traffic did cross the links. MPIRUN_ARGS adds
# options (e.g. "--mca coll_tuned_use_dynamic_rules 1
# --mca coll_tuned_allreduce_algorithm 4" for the ring).
#
# Output: bench_allreduce's lines and one `mpi` line per (size, K) in the same
# columns: mode, bytes, K, rounds, median and best round ms, GB/s (2 K bytes
# per round / median), 0, and the alpha-beta model's prediction (alpha, beta
# measured first over one shaped link; runtime/dist/exchange.h). peer, direct
# and ring leave the average with the workers, as a training round does (the
# +return modes also send one copy to the driver, and their model includes
# it); so does an MPI_Allreduce, whose model is the ring's:
# 2 (K-1) (alpha + B/K beta). Then a summary per
# (size, K) with ring / MPI and the bandwidth bound of any all-reduce,
# 2 (K-1)/K B at the link rate: it grows 1x -> 1.75x from K=2 to K=8, so on
# bandwidth-bound links no all-reduce, MPI's included, is flat in K.
# --plot writes round time against K (one panel per size) as SVG
# (bench/plot_allreduce.py).
#
# Limits. Without sch_netem (this VM's kernel has none and no modules) tc tbf
# shapes the rate and no delay is added; --delay then has no effect. With 8
# gRPC workers and the bridge on 2 cores, CPU as well as the links limits a
# round at 1 Gbit/s; --rate 100mbit leaves the links the bottleneck.
# bench_allreduce's deadlines are fixed: a star round must end within 300 s
# (at 100mbit, 240 MB with K=8 does not: 307 s by the link arithmetic) and a
# peer exchange within 60 s (runtime/dist/peer_net.c's default). At 100mbit
# with K=8 and 60 MB the gRPC rounds used to fail (December 2026): keepalive
# PINGs queued behind megabytes on the driver's link shared eight ways, and
# runtime/rpc's 3 s keepalive timeout cut the connections. The timeout is now
# 20 s unless set short, and peer channels connect at Setup.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=1.7,60,240
WORKERS=2,4
ROUNDS=""
MODE=star,peer,direct,ring,mpi
RATE=1gbit
DELAY=0.1ms
PLOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) MB="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --delay) DELAY="$2"; shift 2 ;;
    --plot) PLOT="$2"; shift 2 ;;
    *) echo "usage: $0 [--mb LIST] [--workers LIST] [--rounds N] [--mode LIST] [--rate R]" \
            "[--delay D] [--plot FILE.svg]" >&2
       exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (ip netns, tc)" >&2; exit 2; }
# the link rate in bits/s, for the bandwidth bound (tc's units)
RATE_BPS=$(echo "$RATE" | awk '{ r = tolower($0); m = 1
  if (r ~ /gbit$/) m = 1e9; else if (r ~ /mbit$/) m = 1e6; else if (r ~ /kbit$/) m = 1e3
  else if (r !~ /bit$/) { print 0; exit }
  sub(/[a-z]+$/, "", r); print r * m }')

# the gRPC modes bench_allreduce runs, and whether MPI runs
GRPC_MODE=""
WANT_MPI=0
for m in ${MODE//,/ }; do
  case "$m" in
    mpi) WANT_MPI=1 ;;
    star | peer | direct | ring | peer+return | direct+return | ring+return)
      GRPC_MODE="$GRPC_MODE${GRPC_MODE:+,}$m" ;;
    *) echo "$0: unknown mode '$m' (star, peer, direct, ring, X+return, mpi)" >&2; exit 2 ;;
  esac
done

TMPD=$(mktemp -d /tmp/bench_netns.XXXXXX)
BAZEL=${BAZEL:-bazel}
if [ -n "$GRPC_MODE" ]; then
  $BAZEL build -c opt //bench:bench_allreduce >&2
  BIN="$($BAZEL info -c opt bazel-bin 2>/dev/null)/bench/bench_allreduce"
fi
if [ "$WANT_MPI" = 1 ]; then
  command -v mpicc >/dev/null && command -v mpirun >/dev/null ||
    { echo "$0: mode mpi needs mpicc and mpirun (scripts/setup.sh installs openmpi)" >&2; exit 2; }
  mpicc -O2 bench/bench_allreduce_mpi.c -o "$TMPD/mpi"
fi

KMAX=0
for k in ${WORKERS//,/ }; do [ "$k" -gt "$KMAX" ] && KMAX=$k; done
P="mb$$" # namespace and link prefix (names < 16 chars)
HOSTS=(d)
for ((i = 0; i < KMAX; i++)); do HOSTS+=("w$i"); done
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for h in "${HOSTS[@]}" sw; do ip netns del "$P$h" 2>/dev/null || true; done
  rm -rf "$TMPD"
}
trap cleanup EXIT

ip netns add "${P}sw"
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
# rate and delay both ways; kernels without sch_netem get tbf (rate only)
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

# bytes that left the shapers of worker namespaces 0..k-1 (their egress)
worker_tx() {
  local sum=0 b
  for ((i = 0; i < $1; i++)); do
    b=$(tc -s -n "${P}w$i" qdisc show dev eth0 | awk '/Sent/ { print $2; exit }')
    sum=$((sum + b))
  done
  echo "$sum"
}

echo "# $(nproc) CPUs; driver and $KMAX workers in their own namespaces; links $RATE, $DELAY per end" |
  tee "$TMPD/lines"
if [ -n "$GRPC_MODE" ]; then
  CAP=268435456 # room for the largest model (256 MiB)
  ADDRS=""
  for ((i = 0; i < KMAX; i++)); do
    a="10.77.0.$((i + 2)):7070"
    ip netns exec "${P}w$i" "$BIN" --serve-peer "$a" "$CAP" 2>>"/tmp/$P.workers.log" &
    PIDS+=($!)
    ADDRS="$ADDRS${ADDRS:+,}$a"
  done
  # One bench_allreduce per K, each calibrated afresh, and a second try when
  # one fails: bench_allreduce stops at its first failed round (see Limits
  # above), which would otherwise lose the other K's figures.
  for k in ${WORKERS//,/ }; do
    for try in 1 2; do
      if ip netns exec "${P}d" "$BIN" --mode "$GRPC_MODE" --mb "$MB" --workers "$k" \
        --addrs "$ADDRS" ${ROUNDS:+--rounds "$ROUNDS"} 2> >(grep -v "insecure\|plain TCP" >&2) |
        tee "$TMPD/k$k.txt"; then
        cat "$TMPD/k$k.txt" >>"$TMPD/lines"
        break
      fi
      echo "# K=$k: bench_allreduce failed (try $try of 2); the workers' log, /tmp/$P.workers.log:"
      grep -v "insecure\|plain TCP" "/tmp/$P.workers.log" | tail -n 5 | sed 's/^/#   /'
      rm -f "$TMPD/k$k.txt"
    done
  done
  # the workers are idle from here on; stop them so MPI has the CPUs
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
fi

if [ "$WANT_MPI" = 1 ]; then
  for k in ${WORKERS//,/ }; do
    APP=()
    for ((i = 0; i < k; i++)); do
      APP+=(${APP[0]+:} -np 1 ip netns exec "${P}w$i" "$TMPD/mpi" "$MB" $ROUNDS)
    done
    # alpha and beta from bench_allreduce's calibration for this K, if it ran
    read -r ALPHA BETA < <(cat "$TMPD/k$k.txt" 2>/dev/null | awk '/^# alpha-beta/ {
      a = $0; sub(/.*alpha /, "", a); sub(/ us.*/, "", a)
      b = $0; sub(/.*beta /, "", b); sub(/ ns.*/, "", b); print a * 1e-6, b * 1e-9; f = 1 }
      END { if (!f) print 0, 0 }')
    tx0=$(worker_tx "$k")
    if ! PMIX_MCA_ptl_tcp_if_include=eth0 ip netns exec "${P}d" \
      timeout --kill-after=10 3600 mpirun --allow-run-as-root --oversubscribe --bind-to none \
      --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include eth0 \
      --mca oob_tcp_if_include eth0 --mca mpi_yield_when_idle 1 ${MPIRUN_ARGS:-} "${APP[@]}" \
      >"$TMPD/mpi.out" 2>"$TMPD/mpi.err"; then
      echo "# K=$k: mpirun failed:"
      tail -n 5 "$TMPD/mpi.err" | sed 's/^/#   /'
      continue
    fi
    tx1=$(worker_tx "$k")
    # bench_allreduce_mpi prints: bytes K rounds median_ms best_ms
    awk -v a="$ALPHA" -v b="$BETA" '{ k = $2; B = $1
      model = a > 0 ? 2 * (k - 1) * (a + B / k * b) * 1e3 : 0
      printf "mpi %d %d %d %.3f %.3f %.3f %.3f %.3f\n", B, k, $3, $4, $5, 2 * k * B / ($4 * 1e-3) / 1e9,
             0, model }' "$TMPD/mpi.out" | tee -a "$TMPD/lines"
    # each size ran rounds + 2 warm-ups; any all-reduce sends 2 (K-1) B in all
    awk -v tx=$((tx1 - tx0)) '{ need += ($3 + 2) * 2 * ($2 - 1) * $1 }
      END { printf "# mpi K=%d: %.0f MB left the workers'"'"' shaped links, %.0f MB is the least" \
            " any all-reduce sends (%.2fx)\n", $2, tx / 1e6, need / 1e6, (need > 0 ? tx / need : 0) }' \
      "$TMPD/mpi.out"
  done
fi

# summary: one row per (size, K), the bound of any all-reduce beside them
awk -v bps="$RATE_BPS" '
  /^#/ { next }
  { key = $2 " " $3; keys[key] = 1; med[$1, key] = $5; model[$1, key] = $9 }
  function f(x) { return x > 0 ? sprintf("%.1f", x) : "-" }
  function ratio(x, y) { return x > 0 && y > 0 ? sprintf("%.2f", x / y) : "-" }
  END {
    printf "# summary, ms (median round): ring/mpi and peer/mpi are ratios; model_* the alpha-beta\n"
    printf "# prediction; bound = 2(K-1)/K bytes at the link rate, the least any all-reduce needs\n"
    printf "%-7s %2s %9s %9s %9s %9s %9s %8s %8s %9s %9s %9s %9s\n", "MB", "K", "star", "peer",
           "direct", "ring", "mpi", "ring/mpi", "peer/mpi", "model_st", "model_rg", "model_mp", "bound"
    n = 0
    for (key in keys) order[++n] = key
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) {  # by size, then K
      split(order[i], x); split(order[j], y)
      if (x[1] + 0 > y[1] + 0 || (x[1] == y[1] && x[2] + 0 > y[2] + 0)) { t = order[i]; order[i] = order[j]; order[j] = t }
    }
    for (i = 1; i <= n; i++) {
      key = order[i]; split(key, x); B = x[1]; k = x[2]
      bound = (bps > 0 ? 2 * (k - 1) / k * B * 8 / bps * 1e3 : 0)
      m = med["mpi", key]
      printf "%-7.1f %2d %9s %9s %9s %9s %9s %8s %8s %9s %9s %9s %9s\n", B / 1e6, k, f(med["star", key]),
             f(med["peer", key]), f(med["direct", key]), f(med["ring", key]), f(m),
             ratio(med["ring", key], m), ratio(med["peer", key], m),
             f(model["star", key]), f(model["ring", key]), f(model["mpi", key]), f(bound)
    }
  }' "$TMPD/lines"

# tbf drops a packet when its queue holds more than `latency` of traffic:
# drops would mean lost packets (and TCP timeouts) inside the figures
awk_drops='/dropped/ { gsub(/[(),]/, ""); for (i = 1; i <= NF; i++) if ($i == "dropped") d += $(i + 1) }
  END { print d + 0 }'
DROPS=$(for h in "${HOSTS[@]}"; do tc -s -n "$P$h" qdisc show dev eth0; done |
  awk "$awk_drops")
DROPS_SW=$(tc -s -n "${P}sw" qdisc show | awk "$awk_drops")
echo "# packets dropped by the shapers: $DROPS at the hosts' egress, $DROPS_SW at the bridge's"

if [ -n "$PLOT" ]; then
  python3 bench/plot_allreduce.py "$PLOT" \
    "one all-reduce round against K: links $RATE each, $(nproc) CPUs" <"$TMPD/lines" &&
    echo "# plot: $PLOT"
fi
