#!/usr/bin/env bash
# A private single-node Slurm cluster for one command: starts munged,
# slurmctld and slurmd (as root, in the foreground as this script's
# children, config, keys, state and logs in a temp folder, ports of their
# own), waits for the node, runs COMMAND (srun or sbatch --wait, with
# SLURM_CONF pointing at it) and stops them all, also when this script is
# stopped (trap) or killed (a watchdog).
#   tests/launch_slurm.sh srun -n 3 -O ./memdl run JOB
# Exit: COMMAND's; 77 and a "SKIP: reason" line when it cannot run here.
set -u

skip() {
  echo "SKIP: $*"
  exit 77
}
for t in srun sinfo slurmctld slurmd munged; do
  command -v "$t" >/dev/null 2>&1 ||
    skip "$t is not installed (scripts/setup.sh installs slurm-wlm and munge)"
done
[ "$(id -u)" -eq 0 ] || skip "a private Slurm cluster runs its daemons as root"

# one private cluster at a time on this machine: the ports are fixed
exec 9>/tmp/memdl-slurm-test.lock
flock -w 300 9 || skip "another private Slurm cluster held /tmp/memdl-slurm-test.lock for 5 min"

# Under the lock every other cluster folder is a dead run's (its script
# and watchdog killed together, as a test runner may): stop what its pid
# files name, and remove it.
for old in /tmp/memdl-slurm.*; do
  [ -d "$old" ] || continue
  for f in "$old"/slurmd.pid "$old"/slurmctld.pid "$old"/munged.pid; do
    p=$(cat "$f" 2>/dev/null)
    # only if that pid is still the daemon of that folder (pids get reused)
    [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$old/" && kill -9 "$p"
  done
  rm -rf "$old"
done

T=$(mktemp -d /tmp/memdl-slurm.XXXXXX)
pids=""
# Jobs first (their steps run under slurmstepd, which slurmd detached),
# while slurmctld still answers; then the daemons, waited for; then
# anything still carrying this cluster's SLURM_CONF (a step or task the
# cancel missed), never this shell or the watchdog.
stop_all() {
  [ -n "$pids" ] || return 0
  timeout 10 scancel --quiet --full --signal=KILL --user="$(id -un)" 2>/dev/null
  for _ in $(seq 20); do
    [ -z "$(timeout 5 squeue -h 2>/dev/null)" ] && break
    sleep 0.5
  done
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null
  for _ in $(seq 50); do
    # shellcheck disable=SC2086
    kill -0 $pids 2>/dev/null || break
    sleep 0.1
  done
  local me=$$ self=$BASHPID p
  for p in $(grep -lzx "SLURM_CONF=$T/slurm.conf" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [ "$p" != "$me" ] && [ "$p" != "$self" ] && [ "$p" != "${wpid:-}" ] && kill -9 "$p" 2>/dev/null
  done
}
cleanup() {
  trap - EXIT INT TERM HUP
  stop_all
  # shellcheck disable=SC2086
  [ -n "$pids" ] && wait $pids 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 143' INT TERM HUP

H=$(hostname -s)
CPUS=$(nproc)
mkdir -p "$T/state" "$T/spool"
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge.key"
cat >"$T/slurm.conf" <<EOF
ClusterName=memdltest
SlurmctldHost=$H
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$H CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
export SLURM_CONF=$T/slurm.conf

# Each daemon in a session of its own: a signal to this script's process
# group (a test runner's timeout) must leave them to cleanup or the
# watchdog, which cancel the jobs through slurmctld before stopping it.
setsid munged -F --force --socket="$T/munge.sock" --key-file="$T/munge.key" --pid-file="$T/munged.pid" \
  --log-file="$T/munged.log" --seed-file="$T/munge.seed" >/dev/null 2>&1 &
pids="$!"
for _ in $(seq 50); do [ -S "$T/munge.sock" ] && break; sleep 0.1; done
setsid slurmctld -D -i -f "$T/slurm.conf" >"$T/slurmctld.out" 2>&1 &
pids="$pids $!"
setsid slurmd -D -f "$T/slurm.conf" >"$T/slurmd.out" 2>&1 &
pids="$pids $!"
# SIGKILL runs no trap: the watchdog stops the jobs and the daemons when
# this shell is gone
export T pids
setsid bash -c "$(declare -f stop_all); while kill -0 $$ 2>/dev/null; do sleep 1; done; [ -d '$T' ] && { stop_all; rm -rf '$T'; }" \
  </dev/null >/dev/null 2>&1 &
wpid=$!

up=""
for _ in $(seq 60); do
  state=$(sinfo -h -o %t 2>/dev/null | head -n 1)
  case "$state" in idle* | mix* | alloc*) up=1 && break ;; esac
  sleep 0.5
done
if [ -z "$up" ]; then
  echo "launch_slurm.sh: the node did not come up (sinfo: ${state:-nothing}); logs:" >&2
  tail -n 20 "$T"/slurmctld.log "$T"/slurmd.log "$T"/munged.log "$T"/*.out >&2 2>/dev/null
  exit 1
fi
echo "launch_slurm.sh: node $H is up" >&2
"$@" &
spid=$!
pids="$spid $pids"
wait "$spid"
