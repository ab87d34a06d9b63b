#!/usr/bin/env bash
# Builds the text-format fuzz target with clang's libFuzzer, ASan and UBSan
# (protoc-c into a work directory; no Bazel) and runs it.
#   tests/fuzz/run_textformat_fuzz.sh [seconds]      default 60
# FUZZ_WORKDIR keeps the corpus between runs (default /tmp/memdl_textformat_fuzz);
# crashes land in $FUZZ_WORKDIR/crashes. Extra libFuzzer flags: FUZZ_FLAGS.
# If linking -fsanitize=fuzzer fails: apt-get install -y libclang-rt-14-dev
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${FUZZ_WORKDIR:-/tmp/memdl_textformat_fuzz}
cc=${CC:-clang}
mkdir -p "$work/gen" "$work/corpus" "$work/crashes"

protoc-c --c_out="$work/gen" -I"$root/tests" "$root/tests/tf_test.proto"
"$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" -I"$work/gen" \
  "$root/tests/fuzz/textformat_fuzz.c" "$root/compiler/textformat.c" \
  "$root/common/suggest.c" "$root/common/error.c" "$work/gen/tf_test.pb-c.c" \
  -lprotobuf-c -o "$work/textformat_fuzz"

# shellcheck disable=SC2086
exec "$work/textformat_fuzz" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -dict="$root/tests/fuzz/textformat.dict" -artifact_prefix="$work/crashes/" \
  -print_final_stats=1 ${FUZZ_FLAGS:-} \
  "$work/corpus" "$root/tests/fuzz/seeds"
