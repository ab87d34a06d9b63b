#!/usr/bin/env bash
# Mutation check: breaks the product on purpose, one change at a time, and
# runs the tests meant to catch each break. Prints a markdown table of what
# was caught. Not part of scripts/test.sh (it rebuilds once per break).
#
#   scripts/mutate.sh            every break
#   scripts/mutate.sh NAME...    only the breaks whose names contain NAME
#   MUTATE_KEEP=1 ...            keep the scratch tree (path printed)
#
# The breaks are applied to a scratch copy of this working tree (tracked and
# untracked-but-not-ignored files, so uncommitted edits count) with its own
# Bazel output base; this tree's files are never touched. The copy, its
# Bazel server and its outputs are removed on exit, Ctrl-C included. Each
# break names its code by a pattern (perl, multi-line), never a line
# number; one that no longer matches reports "not applied" and fails the
# script, so a refactor cannot make a break silently vanish.
#
# Exit status: 0 when the unbroken copy passes and every break is caught.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# ---- the breaks --------------------------------------------------------------
# add NAME PATH LOCATOR PERL TESTS: PATH is the file (or a directory to
# search for the file holding LOCATOR, a fixed string), PERL a substitution
# run with perl -0pi, TESTS space-separated targets, each optionally with
# @GLOB: a Criterion --filter ("suite/test" glob) for that target.

# A layer's backward followed by a scaling of every gradient it wrote:
# the bottom diffs it propagates and its parameter diffs.
scale_backward() { # FUNCTION FACTOR
  local f=$1 k=$2
  printf '%s' "s{^static void ($f)\\(}{static void \${1}_mut_orig(mdl_layer *, mdl_tensor *const *, const bool *, mdl_tensor *const *);
static void \$1(mdl_layer *l_, mdl_tensor *const *t_, const bool *pd_, mdl_tensor *const *b_) {
  \${1}_mut_orig(l_, t_, pd_, b_);
  for (int i_ = 0; i_ < l_->n_bottom; i_++)
    if (pd_[i_] && b_[i_]->diff)
      for (int64_t j_ = 0; j_ < b_[i_]->count; j_++) b_[i_]->diff[j_] *= $k;
  for (int p_ = 0; p_ < l_->n_param; p_++)
    if (l_->param[p_].diff)
      for (int64_t j_ = 0; j_ < l_->param[p_].count; j_++) l_->param[p_].diff[j_] *= $k;
}
static void \${1}_mut_orig(}m"
}

B_NAME=() B_PATH=() B_LOC=() B_EXPR=() B_TESTS=()
add() { B_NAME+=("$1") B_PATH+=("$2") B_LOC+=("$3") B_EXPR+=("$4") B_TESTS+=("$5"); }

CPU=runtime/cpu
add "Convolution backward x1.1" $CPU/layers_conv.c "conv_backward(" "$(scale_backward conv_backward 1.1f)" "//tests:layers_vision_test"
add "InnerProduct backward x1.1" $CPU/layers_conv.c "ip_backward(" "$(scale_backward ip_backward 1.1f)" "//tests:layers_vision_test"
add "oneDNN convolution weight gradient x1.1" $CPU/layers_conv_dnnl.c "mdl_dnnl_conv_backward(" \
  's/(for \(int64_t j = 0; j < wcount; j\+\+\) dw\[j\] \+=) p\[j\];/$1 1.1f * p[j];/' "//tests:layers_vision_test //tests:net_test"
add "Pooling backward x1.1" $CPU/layers_pool.c "pool_backward(" "$(scale_backward pool_backward 1.1f)" "//tests:layers_vision_test"
add "ReLU backward x1.1" $CPU/layers_neuron.c "relu_backward(" "$(scale_backward relu_backward 1.1f)" "//tests:layers_neuron_test"
add "Sigmoid backward x1.1" $CPU/layers_neuron.c "sigmoid_backward(" "$(scale_backward sigmoid_backward 1.1f)" "//tests:layers_neuron_test"
add "BatchNorm backward x1.1" $CPU/layers_norm.c "bn_backward(" "$(scale_backward bn_backward 1.1f)" "//tests:layers_norm_test"
add "LRN backward x1.1" $CPU/layers_norm.c "lrn_backward(" "$(scale_backward lrn_backward 1.1f)" "//tests:layers_norm_test"
add "Softmax backward x1.1" $CPU/layers_norm.c "softmax_backward(" "$(scale_backward softmax_backward 1.1f)" "//tests:layers_norm_test"
add "Eltwise backward x1.1" $CPU/layers_struct.c "eltwise_backward(" "$(scale_backward eltwise_backward 1.1f)" "//tests:layers_shape_test"
add "Concat backward x1.1" $CPU/layers_struct.c "concat_backward(" "$(scale_backward concat_backward 1.1f)" "//tests:layers_shape_test"
add "SoftmaxWithLoss backward x1.1" $CPU/layers_loss.c "swl_backward(" "$(scale_backward swl_backward 1.1f)" "//tests:layers_loss_test"
add "SoftmaxWithLoss backward /1.5" $CPU/layers_loss.c "swl_backward(" "$(scale_backward swl_backward '(1.0f / 1.5f)')" "//tests:layers_loss_test"
add "HingeLoss backward x1.1" $CPU/layers_loss.c "hinge_backward(" "$(scale_backward hinge_backward 1.1f)" "//tests:layers_loss_test"
add "HingeLoss backward /2" $CPU/layers_loss.c "hinge_backward(" "$(scale_backward hinge_backward 0.5f)" "//tests:layers_loss_test"
add "EuclideanLoss backward x1.1" $CPU/layers_loss.c "euclid_backward(" "$(scale_backward euclid_backward 1.1f)" "//tests:layers_loss_test"
add "SigmoidCrossEntropyLoss backward x1.1" $CPU/layers_loss.c "sce_backward(" "$(scale_backward sce_backward 1.1f)" "//tests:layers_loss_test"
add "ContrastiveLoss backward x1.1" $CPU/layers_loss.c "contrastive_backward(" "$(scale_backward contrastive_backward 1.1f)" "//tests:layers_loss_test"
add "restore (mdl_train_restore) a no-op" runtime/train/train.c "mdl_status mdl_train_restore(" \
  's/(mdl_status mdl_train_restore\(mdl_train \*t, const char \*path, mdl_error \*err\) \{\n)/$1  if (t) return MDL_OK;\n/' \
  "//tests:train_test@train/resume*"
add "restore drops the solver history" runtime/solver/caffemodel.c "mdl_blob_proto_values(ss->history[k * nb + i]" \
  's/(\n\s*)(mdl_blob_proto_values\(ss->history\[k \* nb \+ i\],)/$1if (0) $2/' "//tests:train_test@train/resume*"
add "averaging weights off by one sample" runtime/dist "void mdl_driver_average(" \
  's/c\[m\] = \(float\)\(\(double\)samples\[i\] \/ total\);/c[m] = (float)((double)(samples[i] + (m == 0)) \/ (total + 1));/' \
  "//tests:driver_test //tests:driver_net_test@driver_net/k_workers*"
add "peer exchange weighs its own chunk off by one sample" runtime/dist/exchange.c "static void average_own(" \
  's/x->samples\[r->rank\] = r->samples;/x->samples[r->rank] = r->samples + 1;/' "//tests:exchange_test"
add "peer exchange takes duplicate pieces" runtime/dist/exchange.c "static mdl_status deliver_locked(" \
  's/if \(\*seen\) return mdl_errorf\(err, MDL_ERR_INVALID, "duplicate piece"\);/if (0) return MDL_OK;/g' \
  "//tests:exchange_test"
add "peer exchange never probes a silent member" runtime/dist/exchange.c "static mdl_status wait_phase(" \
  's/if \(now >= next_probe && c->t->iface->alive\)/if (0)/' "//tests:exchange_test"
add "SGD momentum term dropped" $CPU/solver_cpu.c "static void update_sgd(" \
  's/float hv = lr \* g \+ mom \* h\[j\];/float hv = lr * g;/' "//tests:solver_test"
add "Nesterov momentum term dropped" $CPU/solver_cpu.c "static void update_nesterov(" \
  's/float hv = lr \* g \+ mom \* prev;/float hv = lr * g;/' "//tests:solver_test"
add "sample stage's seed ignored" runtime/data/stages.c "add_filter(plan, n, \"sample\"" \
  's/(add_filter\(plan, n, "sample", st->sample->fraction,) st->sample->seed,/$1 0,/' "//tests:dataset_test@stages/*"
add "split stage's seed ignored" runtime/data/stages.c "add_filter(plan, n, \"split\"" \
  's/(add_filter\(plan, n, "split", st->split->fraction,) st->split->seed,/$1 0,/' "//tests:dataset_test@stages/*"
add "worker accepts a wrong session" runtime/dist "static mdl_status check_session(" \
  's/if \(session != w->session\)/if (session != w->session \&\& 0)/' "//tests:driver_test@driver/worker_validates*"

# ---- the scratch copy and its Bazel ---------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/memdl-mutate.XXXXXX")
SRC=$SCRATCH/src
OUTBASE=$SCRATCH/bazel
LOG=$SCRATCH/log
mkdir -p "$SRC" "$LOG"
# Bazel runs in the background and is waited for, so that a signal to this
# script is handled at once (bash defers traps until a foreground child
# ends), and the trap can stop it.
BZPID=""
bz() {
  (cd "$SRC" && exec bazel --output_base="$OUTBASE" "$@") &
  BZPID=$!
  wait $BZPID
  local r=$?
  BZPID=""
  return $r
}
cleanup() {
  trap - EXIT
  trap "" INT TERM # a second signal must not cut the cleanup short
  if [ -n "$BZPID" ]; then
    kill -INT "$BZPID" 2>/dev/null
    wait "$BZPID" 2>/dev/null
  fi
  if [ -d "$OUTBASE" ]; then (cd "$SRC" && bazel --output_base="$OUTBASE" shutdown >/dev/null 2>&1); fi
  if [ -n "${MUTATE_KEEP:-}" ]; then
    echo "scratch tree kept: $SCRATCH" >&2
  else
    chmod -R u+w "$SCRATCH" 2>/dev/null
    rm -rf "$SCRATCH"
  fi
}
trap cleanup EXIT
trap 'echo "mutate.sh: interrupted" >&2; exit 130' INT TERM

git ls-files -z -co --exclude-standard | (cd "$ROOT" && xargs -0 cp -a --parents -t "$SRC")
git -C "$ROOT" rev-parse --short HEAD >"$SCRATCH/head"

# The file a break edits: the file given, or the one under the directory
# given that holds the locator (files move when modules are split).
locate() { # PATH LOCATOR
  if [ -f "$SRC/$1" ]; then
    grep -qF -- "$2" "$SRC/$1" && echo "$1"
  else
    (cd "$SRC" && grep -rlF --include='*.c' -- "$2" "$1" | head -n 1)
  fi
}

# Runs TESTS (see add) into LOG: 0 all passed, 3 some failed, else what
# bazel said (1: the build failed).
run_tests() { # LOG TESTS
  local log=$1 r t target filter failed=0 other=0
  local -a ts args
  read -ra ts <<<"$2" # no globbing of the filters
  : >"$log"
  for t in "${ts[@]}"; do
    target=${t%%@*} filter=""
    [[ "$t" == *@* ]] && filter=${t#*@}
    args=()
    [ -n "$filter" ] && args=(--test_arg=--filter="$filter")
    bz test --color=no --curses=no --noshow_progress "${args[@]}" "$target" >>"$log" 2>&1
    r=$?
    if [ $r -eq 3 ]; then failed=1; elif [ $r -ne 0 ]; then other=$r; fi
  done
  [ $failed -eq 1 ] && return 3
  return $other
}

PATTERNS=("$@")
selected() { # NAME
  [ ${#PATTERNS[@]} -eq 0 ] && return 0
  local p
  for p in "${PATTERNS[@]}"; do [[ "$1" == *"$p"* ]] && return 0; done
  return 1
}

echo "mutate.sh: scratch copy of $(cat "$SCRATCH/head") (+ working tree) in $SRC" >&2
all=""
for i in "${!B_NAME[@]}"; do
  selected "${B_NAME[$i]}" || continue
  read -ra ts <<<"${B_TESTS[$i]}"
  for t in "${ts[@]}"; do [[ " $all " == *" $t "* ]] || all="$all $t"; done
done
echo "mutate.sh: building and running the unbroken copy:$all" >&2
if ! run_tests "$LOG/baseline.log" "$all"; then
  echo "mutate.sh: the unbroken copy fails its tests; see below" >&2
  tail -n 40 "$LOG/baseline.log" >&2
  exit 2
fi

rows=()
caught=0 missed=0 broken=0 total=0
for i in "${!B_NAME[@]}"; do
  name=${B_NAME[$i]} path=${B_PATH[$i]} loc=${B_LOC[$i]} expr=${B_EXPR[$i]} tg=${B_TESTS[$i]}
  selected "$name" || continue
  total=$((total + 1))
  t0=$(date +%s)
  file=$(locate "$path" "$loc")
  result="" detail=""
  if [ -z "$file" ]; then
    result="not applied" detail="no file under $path holds '$loc'"
  else
    cp -a "$SRC/$file" "$SCRATCH/orig"
    perl -0pi -e "$expr" "$SRC/$file"
    if cmp -s "$SRC/$file" "$SCRATCH/orig"; then
      result="not applied" detail="the pattern no longer matches $file"
    else
      log="$LOG/$total.log"
      run_tests "$log" "$tg"
      rc=$?
      case $rc in
        0) result="**missed**" ;;
        3) result="caught"
           detail=$(grep -aoE '^\[FAIL\] [A-Za-z0-9_]+::[A-Za-z0-9_]+' "$log" | sed 's/^\[FAIL\] //' | sort -u | head -n 4 | paste -sd',' - | sed 's/,/, /g') ;;
        *) result="error (bazel exit $rc)" detail=$(grep -aE 'error:|ERROR:' "$log" | head -n 1 | cut -c1-120) ;;
      esac
    fi
    cp -a "$SCRATCH/orig" "$SRC/$file" # restored before the next break
  fi
  case $result in
    caught) caught=$((caught + 1)) ;;
    "**missed**") missed=$((missed + 1)) ;;
    *) broken=$((broken + 1)) ;;
  esac
  secs=$(($(date +%s) - t0))
  echo "mutate.sh: $name: $result ($secs s)" >&2
  rows+=("| $name | \`${file:-$path}\` | $(echo "$tg" | sed 's|//tests:||g; s|@| |g') | $result | ${detail:-} |")
done

echo
echo "| break | file | tests | result | failing tests |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "$caught of $total breaks caught, $missed missed, $broken not run (scratch copy of $(cat "$SCRATCH/head") plus the working tree's edits)"
[ $missed -eq 0 ] && [ $broken -eq 0 ]
