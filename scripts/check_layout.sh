#!/usr/bin/env bash
# The house rules a reader relies on, checked: which folder may include
# which, which folder alone talks to each vendor library, no include
# circles between modules, and no test scaffolding in the memdl binary.
# Prints each offence as `file: includes "x" (rule)` and exits 1 if any.
#   scripts/check_layout.sh [path/to/memdl]
set -uo pipefail
cd "$(dirname "$0")/.."

# folder prefix | include prefix it may not use | why
RULES='
common/|compiler/|common/ is below everything
common/|runtime/|common/ is below everything
common/|cli/|common/ is below everything
compiler/|runtime/|the compiler describes and plans; it never executes
compiler/|cli/|the compiler does not know the command line
runtime/|cli/|the runtime does not know the command line
runtime/engine/|runtime/cpu/|the engine reaches backends only through backend.h
runtime/engine/|gpu/|the engine reaches backends only through backend.h
runtime/engine/|runtime/data/|the engine knows no data sets
runtime/engine/|runtime/solver/|the engine knows no solvers
runtime/engine/|runtime/train/|the engine is below training
runtime/engine/|runtime/rpc/|the engine knows no transport
runtime/engine/|runtime/dist/|the engine knows no transport
runtime/cpu/|runtime/data/|a backend runs kernels only
runtime/cpu/|runtime/solver/|a backend runs kernels only
runtime/cpu/|runtime/train/|a backend runs kernels only
runtime/cpu/|runtime/rpc/|a backend runs kernels only
runtime/cpu/|runtime/dist/|a backend runs kernels only
runtime/cpu/|gpu/|backends do not know each other
gpu/|runtime/cpu/|backends do not know each other
gpu/|runtime/data/|a backend runs kernels only
gpu/|runtime/solver/|a backend runs kernels only
gpu/|runtime/train/|a backend runs kernels only
gpu/|runtime/rpc/|a backend runs kernels only
gpu/|runtime/dist/|a backend runs kernels only
runtime/data/|runtime/engine/|data sets know no net
runtime/data/|runtime/cpu/|data sets know no backend
runtime/data/|runtime/solver/|data sets know no solver
runtime/data/|runtime/train/|data sets are below training
runtime/data/|runtime/rpc/|data sets know no transport
runtime/data/|runtime/dist/|data sets know no transport
runtime/solver/|runtime/cpu/|solvers step through the backend seam
runtime/solver/|gpu/|solvers step through the backend seam
runtime/solver/|runtime/train/|solvers are below training
runtime/solver/|runtime/rpc/|solvers know no transport
runtime/solver/|runtime/dist/|solvers know no transport
runtime/train/|runtime/rpc/|training knows no transport
runtime/train/|runtime/dist/|training is below distribution
runtime/rpc/|runtime/engine/|the transport carries bytes, not nets
runtime/rpc/|runtime/cpu/|the transport carries bytes, not nets
runtime/rpc/|runtime/data/|the transport carries bytes, not nets
runtime/rpc/|runtime/solver/|the transport carries bytes, not nets
runtime/rpc/|runtime/train/|the transport carries bytes, not nets
runtime/rpc/|runtime/dist/|the transport is below distribution
runtime/dist/|runtime/cpu/|distribution reaches devices through training
runtime/dist/|gpu/|distribution reaches devices through training
runtime/ci/|runtime/cpu/|CI mode trains through runtime/train/
runtime/ci/|gpu/|CI mode trains through runtime/train/
runtime/ci/|runtime/rpc/|CI mode trains through runtime/train/ or the driver (runtime/dist/)
runtime/engine/|runtime/ci/|the engine is below CI retraining
runtime/data/|runtime/ci/|data sets are below CI retraining
runtime/solver/|runtime/ci/|solvers are below CI retraining
runtime/train/|runtime/ci/|training is below CI retraining
runtime/dist/|runtime/ci/|distribution is below CI retraining
cli/|runtime/cpu/|commands name devices through runtime/train/device.h
cli/|gpu/|commands name devices through runtime/train/device.h
'
# Files allowed to break one rule, each with its reason.
#   runtime/train/device.c: the one place device names become backends.
EXCEPT='
runtime/train/device.c|runtime/cpu/
runtime/train/device.c|gpu/
'

# <vendor header prefix> | the only folder that may include it
VENDORS='
grpc/|runtime/rpc/
openssl/|runtime/rpc/
dnnl|runtime/cpu/
cblas|runtime/cpu/
openblas|runtime/cpu/
cuda|gpu/
cudnn|gpu/
cublas|gpu/
'

bad=0
say() {
  echo "$1"
  bad=1
}

files=$(git ls-files 'common/*.[ch]' 'compiler/*.[ch]' 'runtime/*.[ch]' 'gpu/*.[ch]' \
  'gpu/*.cu' 'gpu/*.cuh' 'cli/*.[ch]' 2>/dev/null)
[ -n "$files" ] || files=$(find common compiler runtime cli gpu -name '*.[ch]' 2>/dev/null)

for f in $files; do
  while IFS= read -r inc; do
    [ -n "$inc" ] || continue
    while IFS='|' read -r dir forbidden why; do
      [ -n "$dir" ] || continue
      case $f in "$dir"*) ;; *) continue ;; esac
      case $inc in "$forbidden"*) ;; *) continue ;; esac
      echo "$EXCEPT" | grep -qx "$f|$forbidden" && continue
      say "$f: includes \"$inc\" ($why)"
    done <<<"$RULES"
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
  while IFS= read -r inc; do
    [ -n "$inc" ] || continue
    while IFS='|' read -r vendor owner; do
      [ -n "$vendor" ] || continue
      case $inc in "$vendor"*) ;; *) continue ;; esac
      case $f in "$owner"*) ;; *) say "$f: includes <$inc> (only $owner may)" ;; esac
    done <<<"$VENDORS"
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*<\([^>]*\)>.*/\1/p' "$f")
done

# Include circles between modules (a module is foo.c with foo.h): an edge
# A -> B when A.c or A.h includes B.h; any cycle is reported once. A
# folder's private headers (*_internal.h, *_impl.h) belong to the modules
# that include them, so edges to them do not count.
cycles=$(for f in $files; do
  from=${f%.*}
  sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)\.h".*/\1/p' "$f" |
    while read -r to; do
      case $to in *_internal | *_impl) continue ;; esac
      [ "$to" != "$from" ] && echo "$from $to"
    done
done | sort -u | awk '
  { adj[$1] = adj[$1] " " $2; nodes[$1]; nodes[$2] }
  function dfs(n,   i, k, parts, m) {
    state[n] = 1; stack[++depth] = n
    k = split(adj[n], parts, " ")
    for (i = 1; i <= k; i++) {
      m = parts[i]
      if (state[m] == 1) {
        line = m; for (j = depth; j >= 1 && stack[j] != m; j--) line = stack[j] " -> " line
        print m " -> " line
      } else if (!state[m]) dfs(m)
    }
    depth--; state[n] = 2
  }
  END { for (n in nodes) if (!state[n]) dfs(n) }')
if [ -n "$cycles" ]; then
  while IFS= read -r c; do say "include circle: $c"; done <<<"$cycles"
fi

# The product offers only its own trainers: test scaffolding stays in tests/.
exe=${1:-bazel-bin/memdl}
if [ -x "$exe" ]; then
  # every trainer a test file defines (const mdl_trainer_i NAME = ...)
  for t in $(sed -n 's/^const mdl_trainer_i \(mdl_trainer_[a-z_0-9]*\).*/\1/p' tests/*.c); do
    if nm "$exe" 2>/dev/null | grep -qw "$t"; then
      say "$exe: contains the test trainer $t (tests/)"
    fi
  done
else
  say "$exe: not built (bazel build //:memdl)"
fi

[ $bad -eq 0 ] && echo "layout: ok ($(echo "$files" | wc -w) files, include rules, no circles, no test trainer in memdl)"
exit $bad
