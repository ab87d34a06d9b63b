#!/usr/bin/env bash
# Installs every Debian package memdl needs to build, test and run its
# example job. Idempotent: does nothing when all are present.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap            # the build (Bazel 4.2, offline)
  gcc g++ clang              # compilers (clang for the fuzzer)
  protobuf-c-compiler libprotobuf-c-dev
  libgrpc-dev                # RPC between driver and workers
  libcriterion-dev           # tests
  libopenblas-dev libdnnl-dev  # CPU math
  zlib1g-dev liblmdb-dev libjpeg-dev libpng-dev libhdf5-dev  # data sources
  dataset-fashion-mnist      # the example job's data
  openssl iproute2           # TLS test certificates, network-namespace tests
  libxml2-utils librsvg2-bin # CI reports: xmllint checks junit.xml, rsvg-convert draws curves.svg
  openmpi-bin libopenmpi-dev # launch_mpi_test: a real mpirun (and bench_allreduce)
  slurmctld slurmd slurm-client munge  # launch_slurm_test: a private one-node Slurm (slurm-wlm's parts)
  graphviz python3           # tests render `memdl compile --dot` and parse its --json
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "memdl setup: installing ${missing[*]}" >&2
# apt's progress goes to stderr too: stdout belongs to the command that
# called setup (scripts/memdl passes memdl's own output through).
$SUDO apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
