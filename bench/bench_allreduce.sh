#!/usr/bin/env bash
# The averaging step beside OpenMPI: per round, broadcast + gather + average
# of the weights with K local workers (bench_allreduce: gRPC messages and the
# shared-memory path of `--workers local:K`), the TCP star of remote workers
# and their peer-to-peer averaging (issue 13: peer = the cost model's
# schedule, direct, ring), against MPI_Allreduce (float sum) of the same
# bytes on K ranks. Installs openmpi-bin/libopenmpi-dev when mpicc is
# missing and builds the MPI side with mpicc outside Bazel.
#
#   bench/bench_allreduce.sh [--mb 1.7,60,240] [--workers 2,4] [--rounds N]
#                            [--mode grpc,shm,star,peer,direct,ring]
#
# Prints one line per transport, size and K: round time (median of N), GB/s
# (2 K bytes per round), MPI_Allreduce's median, the ratio (ours / MPI) and,
# for the TCP modes, the alpha-beta model's prediction (alpha and beta
# measured first on TCP loopback; see runtime/dist/exchange.h).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=1.7,60,240
WORKERS=2,4
ROUNDS=""
MODE=grpc,shm,star,peer,direct,ring
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) MB="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    *) echo "usage: $0 [--mb 1.7,60,240] [--workers 2,4] [--rounds N] [--mode LIST]" >&2; exit 2 ;;
  esac
done

if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bench_allreduce: installing openmpi-bin libopenmpi-dev" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    openmpi-bin libopenmpi-dev >&2
fi

BAZEL=${BAZEL:-bazel}
$BAZEL build -c opt //bench:bench_allreduce >&2
BIN="$($BAZEL info -c opt bazel-bin 2>/dev/null)/bench/bench_allreduce"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mpicc -O2 bench/bench_allreduce_mpi.c -o "$tmp/mpi"
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
for k in ${WORKERS//,/ }; do
  "${MPIRUN[@]}" -np "$k" "$tmp/mpi" "$MB" $ROUNDS >>"$tmp/mpi.txt"
done
"$BIN" --mb "$MB" --workers "$WORKERS" --mode "$MODE" ${ROUNDS:+--rounds "$ROUNDS"} >"$tmp/ours.txt"
grep '^# alpha' "$tmp/ours.txt" || true

echo "# $(nproc) CPUs; medians; GB/s counts 2*K*bytes per round; ratio = ours / MPI_Allreduce"
printf "%-6s %10s %3s %12s %8s %14s %7s %10s\n" mode MB K round_ms GB/s mpi_allreduce_ms ratio \
  model_ms
awk 'NR == FNR { mpi[$1 " " $2] = $4; next }
     /^#/ { next }
     { key = $2 " " $3; m = mpi[key];
       printf "%-6s %10.1f %3d %12.2f %8.2f %14.2f %7.2f %10s\n", $1, $2 / 1e6, $3, $5, $7, m,
              (m > 0 ? $5 / m : 0), (NF >= 9 ? sprintf("%.2f", $9) : "-") }' \
  "$tmp/mpi.txt" "$tmp/ours.txt"
