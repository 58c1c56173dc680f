#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the tests and for trying `--cmd slurm` by hand.
#
#   tools/slurm_local.sh start    install Debian's slurm/munge packages if missing (root), write the
#                                 config, start munged, slurmctld and slurmd, wait until the node is idle
#   tools/slurm_local.sh stop     stop the three daemons started by `start` (packages stay installed)
#   tools/slurm_local.sh status   say whether it runs (exit 0 when it does, 3 when it does not)
#
# Everything the daemons write (state, spool, logs, pid files, the munge key and socket) lives in one
# state dir: $SPK_SLURM_DIR, default /tmp/spk-slurm. The config is written to /etc/slurm/slurm.conf,
# the path Debian's Slurm commands read by default, so `sbatch`, `squeue`, `scontrol` work from any
# process without SLURM_CONF in its environment (a copy is kept in the state dir). An existing
# slurm.conf that this script did not write is never overwritten.
#
# Environment: SPK_SLURM_DIR (state dir), SPK_SLURM_PORT (slurmctld port, default 6817; slurmd uses the
# next one), SPK_SLURM_WAIT (seconds to wait for the node, default 60).
#
# Exit codes: 0 ok, 1 failure (message says which daemon/log), 2 not root where root is needed,
# 3 (status only) not running.
set -euo pipefail

dir=${SPK_SLURM_DIR:-/tmp/spk-slurm}
conf=/etc/slurm/slurm.conf
marker="# written by spk tools/slurm_local.sh"
packages=(slurmctld slurmd slurm-client munge)
wait_s=${SPK_SLURM_WAIT:-60}
host=$(hostname -s)
munge_socket="$dir/munge/munge.socket.2"

log() { echo "[slurm_local] $*" >&2; }
die() { local code=$1; shift; log "error: $*"; exit "$code"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# shellcheck source=tools/apt_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh"

# A daemon runs when its pid file names a live process (/proc, not kill -0: that fails for a user
# asking about root's daemons).
pid_alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ]; }

running() {
  pid_alive "$dir/munge/munged.pid" && pid_alive "$dir/run/slurmctld.pid" \
    && pid_alive "$dir/run/slurmd.pid" && scontrol ping >/dev/null 2>&1
}

slurm_installed() {
  command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v munged >/dev/null
}

install_packages() {
  # --no-install-recommends: 8 packages instead of ~40 (the recommends are HDF5/IPMI/ROCm plugins).
  install_debian_packages "Slurm and munge are" start slurm_installed "${packages[@]}"
}

# Memory for Slurm: MemTotal minus a margin for the system and the daemons (10 %, at least 512 MiB).
real_memory_mb() {
  local total_mb margin
  total_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  margin=$(( total_mb / 10 > 512 ? total_mb / 10 : 512 ))
  echo $(( total_mb - margin > 256 ? total_mb - margin : 256 ))
}

write_config() {
  if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
    die 1 "$conf exists and was not written by this script: it looks like a real Slurm configuration;" \
      "move it away to use the local test cluster, or use the Slurm it configures"
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(real_memory_mb)
  mkdir -p "$dir"/{state,spool,log,run} /etc/slurm
  # SlurmctldHost/NodeAddr are 127.0.0.1: the short hostname need not resolve. SlurmUser=root: the
  # daemons run as root (this script needs root to start them), so no slurm user and no chown.
  # sched/builtin: its main scheduler starts as many queued array tasks as there are free CPUs about
  # once a second (on submit and on each completion); sched/backfill started only one task of an array
  # per backfill cycle (one a second at bf_interval=1) and its main scheduler hardly any.
  # Memory is consumable (CR_Core_Memory) with a per-CPU default, so jobs without --mem do not each take
  # the whole node.
  # MinJobAge=4 for `sbatch --wait`: it polls the job every 2 s and stretches the pause to 8 and then
  # 32 s only while the pause is below MinJobAge/2, so a value of 4 or less keeps the 2 s polls (with
  # the default 300 the polls come at 2, 10, 42, 74 s...: a 12 s job returns after 42 s instead of 14).
  # The price: finished array tasks are purged after ~4 s, and `sbatch --wait` exits with the highest
  # exit code among the tasks it still sees, so a task that fails early while others run on can go
  # unseen (exit 0). Slurm 22.05 refuses MinJobAge=0 (no purge); with the default a long array loses
  # it the same way. Callers must check each task's own result (a marker its script writes).
  cat > "$dir/slurm.conf" <<EOF
$marker for the one-node test cluster
# (state dir $dir); rewritten by each start. Do not edit: edit the script.
ClusterName=spk-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=${SPK_SLURM_PORT:-6817}
SlurmdPort=$(( ${SPK_SLURM_PORT:-6817} + 1 ))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( mem / cpus ))
MinJobAge=4
KillWait=2
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
MaxArraySize=100001
MaxJobCount=200000
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cp "$dir/slurm.conf" "$conf"
}

start_munge() {
  mkdir -p "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    log "creating the munge key $dir/munge/munge.key"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0755 "$dir/munge"  # users other than root reach the socket (the key stays 0600)
  chmod 0600 "$dir/munge/munge.key"
  pid_alive "$dir/munge/munged.pid" && return 0
  # A munged of our own (own key, socket and pid file in the state dir): a munged the system runs for
  # another cluster is left alone. Slurm finds the socket through AuthInfo in slurm.conf.
  munged 9>&- --force --key-file="$dir/munge/munge.key" --socket="$munge_socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" \
    || die 1 "munged did not start; see $dir/log/munged.log"
}

# Start a daemon unless its pid file names a live one, and wait (5 s at most) for its pid file: a daemon
# that exits at once (its port taken, a config error) is reported here, with its log.
start_daemon() {  # name pidfile command...
  local name=$1 pidfile=$2; shift 2
  pid_alive "$pidfile" && return 0
  rm -f "$pidfile"
  "$@" 9>&- || { stop 2>/dev/null; die 1 "$name did not start; see $dir/log/$name.log"; }
  for _ in $(seq 50); do pid_alive "$pidfile" && return 0; sleep 0.1; done
  stop 2>/dev/null
  die 1 "$name exited at once; see $dir/log/$name.log (is another Slurm using its port?)"
}

start() {
  local t0; t0=$(now)
  if [ "$(id -u)" != 0 ]; then
    if command -v scontrol >/dev/null && running; then
      log "already running (state dir $dir)"
      return 0
    fi
    install_packages  # says that installing needs root (exit 2) when Slurm is missing
    die 2 "starting the local Slurm needs root (its daemons run as root and it writes $conf):" \
      "run this as root (sudo $0 start)"
  fi
  mkdir -p "$dir"
  # One start at a time (two test sessions may ask at once).
  exec 9>"$dir/lock"
  flock 9
  if command -v scontrol >/dev/null && running; then
    log "already running (state dir $dir)"
    return 0
  fi
  install_packages
  if pid_alive "$dir/munge/munged.pid" || pid_alive "$dir/run/slurmctld.pid" || pid_alive "$dir/run/slurmd.pid"
  then
    log "some of the daemons run but the cluster does not answer: stopping them to start afresh"
    stop
  fi
  write_config
  # A fresh cluster at each start: no jobs queued by an earlier run start again, job ids from 1.
  rm -rf "${dir:?}/state" "${dir:?}/spool"
  mkdir -p "$dir/state" "$dir/spool"
  start_munge
  start_daemon slurmctld "$dir/run/slurmctld.pid" slurmctld
  start_daemon slurmd "$dir/run/slurmd.pid" slurmd -N "$host"

  local state=""
  for _ in $(seq $(( wait_s * 5 ))); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case "$state" in
      idle|mixed|allocated) break ;;
      # a node left down/drained by an earlier run (ReturnToService covers most cases)
      down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  case "$state" in
    idle|mixed|allocated) ;;
    *) stop 2>/dev/null
       die 1 "the node $host is not up after ${wait_s} s (state '${state:-no answer}');" \
         "see $dir/log/slurmctld.log and $dir/log/slurmd.log (the daemons were stopped again)" ;;
  esac
  echo "[slurm_local] Slurm is running: node $host ($(nproc) CPUs), partition debug," \
    "state dir $dir, started in $(since "$t0") s"
}

# SIGTERM to the three daemons at once (each takes 1-2 s to exit), then wait for them, 10 s at most
# before SIGKILL.
stop() {
  local name pidfile pid pids=() names=()
  [ "$(id -u)" = 0 ] || die 2 "stopping the local Slurm needs root: sudo $0 stop"
  for name in slurmd slurmctld munged; do
    pidfile="$dir/run/$name.pid"
    [ "$name" = munged ] && pidfile="$dir/munge/munged.pid"
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid" && pids+=("$pid") && names+=("$name")
    fi
    rm -f "$pidfile"
  done
  [ ${#pids[@]} -gt 0 ] || { log "not running (state dir $dir)"; return 0; }
  local i
  for _ in $(seq 100); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "${names[$i]} (pid ${pids[$i]}) did not stop in 10 s: killing it"
      kill -9 "${pids[$i]}" 2>/dev/null || true
    fi
  done
  log "stopped ${names[*]}"
}

status() {
  if command -v scontrol >/dev/null && running; then
    echo "running: $(sinfo -h -o '%P %D nodes %T' 2>/dev/null | head -1) (state dir $dir)"
  else
    echo "not running (state dir $dir)"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 1 ;;
esac
