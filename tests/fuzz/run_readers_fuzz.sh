#!/usr/bin/env bash
# Builds the binary-reader fuzz targets (readers_fuzz.c: weights = .caffemodel
# and .solverstate, idx = IDX files through the data set API, datum = Datum
# and PNG/JPEG decoding) with clang's libFuzzer, ASan and UBSan (protoc-c into
# a work directory; no Bazel) and runs each for the given time, in parallel.
#   tests/fuzz/run_readers_fuzz.sh [seconds] [target...]   default 60, all
# FUZZ_WORKDIR keeps corpora between runs (default /tmp/memdl_readers_fuzz);
# crashes land in $FUZZ_WORKDIR/crashes/<target>-*, logs in $FUZZ_WORKDIR/<target>.log.
# Extra libFuzzer flags: FUZZ_FLAGS.
# If linking -fsanitize=fuzzer fails: apt-get install -y libclang-rt-14-dev
set -euo pipefail

seconds=${1:-60}
shift || true
targets=${*:-weights idx datum}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${FUZZ_WORKDIR:-/tmp/memdl_readers_fuzz}
cc=${CC:-clang}
mkdir -p "$work/gen" "$work/crashes" "$work/seeds"

protoc-c --c_out="$work/gen" -I"$root/proto" "$root"/proto/{caffe,data}.proto
flags=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -I"$root" -I"$work/gen"
  -I/usr/include/hdf5/serial)
san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

# Seeds: small valid files of each kind.
"$cc" "${flags[@]}" "$root/tests/fuzz/readers_seeds.c" "$work/gen/caffe.pb-c.c" \
  -lprotobuf-c -ljpeg -lpng -o "$work/readers_seeds"
"$work/readers_seeds" "$work/seeds"

common=("$root/common/error.c" "$work/gen/caffe.pb-c.c")
for t in $targets; do
  case $t in
    weights)
      srcs=("$root"/runtime/solver/{caffemodel,solver}.c "$root"/runtime/engine/{tensor,backend}.c
        "$root/common/fileio.c")
      libs=(-lm) ;;
    idx)
      srcs=("$root"/runtime/data/{batch,dataset,dataset_layer,stages,transform}.c
        "$root"/runtime/data/sources/*.c "$root"/common/rng.c
        "$root"/common/{fileio,pb}.c "$work/gen/data.pb-c.c")
      libs=(-llmdb -ljpeg -lpng -lhdf5_serial -lz -lm) ;;
    datum)
      srcs=("$root"/runtime/data/sources/{datum,datum_image}.c)
      libs=(-ljpeg -lpng -lz) ;;
    *) echo "unknown target $t (weights, idx, datum)" >&2; exit 2 ;;
  esac
  T=$(echo "$t" | tr a-z A-Z)
  "$cc" "${flags[@]}" "${san[@]}" -DTARGET_"$T" "$root/tests/fuzz/readers_fuzz.c" \
    "${srcs[@]}" "${common[@]}" -lprotobuf-c "${libs[@]}" -o "$work/${t}_fuzz"
done

pids=()
for t in $targets; do
  mkdir -p "$work/corpus/$t"
  # shellcheck disable=SC2086
  "$work/${t}_fuzz" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
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
