#!/usr/bin/env bash
# Retrains the example job the way CI does (github-retrain.yml and
# gitlab-ci.yml beside this file call it): skips when a run with the same
# fingerprint is in the registry (exiting with that run's code), stops
# cleanly at a time budget, blesses only when asked.
#
#   jobs/fashion_mnist/ci/retrain.sh [more `memdl run` flags...]
#
# Environment: MEMDL (default bazel-bin/memdl), BLESS=1 to bless a model
# that passes every gate (the default branch only), OUT (default
# out/fashion_mnist), MAX_SECONDS (default 3000, under the CI job's limit).
# Exit codes are memdl run's: 0 passed, 1 failure, 2 invalid input, 3 a gate
# failed, 4 a data check failed, 5 the budget ran out (model saved).
set -uo pipefail
cd "$(dirname "$0")/../../.."
memdl=${MEMDL:-bazel-bin/memdl}
flags=(--if-changed --max-seconds "${MAX_SECONDS:-3000}" --output "${OUT:-out/fashion_mnist}")
[ "${BLESS:-0}" = 1 ] && flags+=(--bless)
exec "$memdl" run jobs/fashion_mnist/job.prototxt "${flags[@]}" "$@"
