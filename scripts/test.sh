#!/usr/bin/env bash
# Runs every test: installs what is missing, `bazel test //...`, the layout
# check (scripts/check_layout.sh), then sums the Criterion results of all
# test binaries into one closing line.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1

bazel test //... "$@"
status=$?

passed=0 failed=0 skipped=0
while IFS= read -r log; do
  target=${log#bazel-testlogs/}
  target=${target%/test.log}
  line=$(grep -a 'Synthesis: Tested:' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    echo "//$target: ${line#*Synthesis: }"
    nums=$(echo "$line" | sed -E 's/.*Passing: *([0-9]+).*Failing: *([0-9]+).*Crashing: *([0-9]+).*/\1 \2 \3/')
    read -r p f c <<<"$nums"
    # Criterion leaves skipped tests out of its Synthesis line; under
    # --verbose (tests/defs.bzl) it prints one [SKIP] line for each.
    s=$(grep -ac '^\[SKIP\]' "$log")
    [ "$s" -gt 0 ] && echo "//$target: $s skipped: $(grep -a '^\[SKIP\]' "$log" | sed -E 's/^\[SKIP\] //' | paste -sd';' -)"
    passed=$((passed + p))
    failed=$((failed + f + c))
    skipped=$((skipped + s))
  else
    echo "//$target: no Criterion summary (crashed or timed out?)"
    failed=$((failed + 1))
  fi
done < <(bazel query 'tests(//...) except attr(tags, manual, //...)' 2>/dev/null | sed -E 's|^//([^:]*):(.*)$|bazel-testlogs/\1/\2/test.log|' | sort)

# The house rules (include rules, no circles, no test trainer in memdl)
# count as one more test.
if scripts/check_layout.sh; then
  passed=$((passed + 1))
else
  echo "//scripts:check_layout: FAILED"
  failed=$((failed + 1))
fi

[ $status -ne 0 ] && [ $failed -eq 0 ] && failed=1
echo "$passed passed, $failed failed, $skipped skipped"
[ $status -eq 0 ] && [ $failed -eq 0 ]
