#!/usr/bin/env bash
# Builds the RPC decoder fuzz targets (rpc_fuzz.c: setup, round, chunks over
# runtime/rpc/rpc_wire.c, which needs no gRPC) with clang's libFuzzer, ASan
# and UBSan (protoc-c into a work directory; no Bazel) and runs each for the
# given time, in parallel.
#   tests/fuzz/run_rpc_fuzz.sh [seconds] [target...]   default 60, all
# FUZZ_WORKDIR keeps corpora between runs (default /tmp/memdl_rpc_fuzz);
# crashes land in $FUZZ_WORKDIR/crashes/<target>-*, logs in $FUZZ_WORKDIR/<target>.log.
# Extra libFuzzer flags: FUZZ_FLAGS.
# If linking -fsanitize=fuzzer fails: apt-get install -y libclang-rt-14-dev
set -euo pipefail

seconds=${1:-60}
shift || true
targets=${*:-setup round chunks}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${FUZZ_WORKDIR:-/tmp/memdl_rpc_fuzz}
cc=${CC:-clang}
mkdir -p "$work/gen" "$work/crashes"

protoc-c --c_out="$work/gen" -I"$root/proto" "$root"/proto/{caffe,data,job,plan,rpc}.proto
flags=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -I"$root" -I"$work/gen")
san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
srcs=("$root/runtime/rpc/rpc_wire.c" "$root/common/error.c" "$root/common/log.c"
  "$work"/gen/{caffe,data,job,plan,rpc}.pb-c.c)

for t in $targets; do
  case $t in setup | round | chunks) ;; *) echo "unknown target $t (setup, round, chunks)" >&2; exit 2 ;; esac
  T=$(echo "$t" | tr a-z A-Z)
  "$cc" "${flags[@]}" "${san[@]}" -DTARGET_"$T" "$root/tests/fuzz/rpc_fuzz.c" "${srcs[@]}" \
    -lprotobuf-c -o "$work/${t}_fuzz"
done

# Seeds: one valid message of each kind.
mkdir -p "$work/seeds"/{setup,round,chunks}
printf '\x0a\x02\x0a\x00\x10\x01\x18\x02\x39\x01\x00\x00\x00\x00\x00\x00\x00\x42\x03net' \
  >"$work/seeds/setup/plan"
{ printf '\x00\x09\x01\x00\x00\x00\x00\x00\x00\x00\x10\x01\x18\x00\x20\x05\x2a\x80\x02'
  head -c 256 /dev/zero; } >"$work/seeds/round/weights"
printf '\x00\x0a\x00\x08\x00\x10\x08\x1a\x04AAAA\x0a\x00\x08\x04\x10\x08\x1a\x04BBBB' \
  >"$work/seeds/chunks/two"

pids=()
for t in $targets; do
  mkdir -p "$work/corpus/$t"
  # shellcheck disable=SC2086
  "$work/${t}_fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$work/crashes/$t-" -print_final_stats=1 \
    ${FUZZ_FLAGS:-} "$work/corpus/$t" "$work/seeds/$t" >"$work/$t.log" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
for t in $targets; do
  echo "== $t: $(grep -E 'stat::number_of_executed_units|^(==[0-9]+==ERROR|SUMMARY)' "$work/$t.log" | tr '\n' ' ')"
done
exit $rc
