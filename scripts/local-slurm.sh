#!/usr/bin/env bash
# A single-node Slurm on this machine, for kvbench's Slurm tests (CI) and for trying
# `kvbench slurm --submit` without a cluster. Needs root (apt, daemons).
#
#   scripts/local-slurm.sh start [DIR]   install slurm-wlm, munge, slurmdbd and mariadb-server if
#                                        absent, write DIR/slurm.conf for this host (CPUs from
#                                        nproc), start munged, mariadbd + slurmdbd (so that `sacct`
#                                        answers), slurmctld and slurmd, wait until the node is
#                                        idle; prints the SLURM_CONF line to export
#   scripts/local-slurm.sh stop [DIR]    stop exactly the daemons `start` started (their pids in DIR)
#
# DIR defaults to /tmp/kvbench-slurm. Daemon logs: DIR/*.log.
set -euo pipefail

action="${1:-}"
dir="${2:-/tmp/kvbench-slurm}"

die() { echo "error: $*" >&2; exit 2; }

stop() {
  local status=0
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    local pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "warning: $name (pid $pid) ignored SIGTERM; killing it" >&2
        kill -9 "$pid" || status=1
      fi
    fi
    rm -f "$pidfile"
  done
  return $status
}

start() {
  [ "$(id -u)" -eq 0 ] || die "the local Slurm needs root (apt and the daemons)"
  local packages="slurm-wlm munge slurmdbd mariadb-server"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v slurmdbd >/dev/null ||
    ! command -v mariadbd >/dev/null; then
    command -v apt-get >/dev/null || die "$packages are not all installed and there is no apt-get"
    echo "installing $packages (apt)"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >"$dir.apt.log" 2>&1 ||
      { apt-get update -q >>"$dir.apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >>"$dir.apt.log" 2>&1; } ||
      die "apt-get install $packages failed (log: $dir.apt.log)"
  fi
  if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    die "a local Slurm already runs from $dir (stop it first: $0 stop $dir)"
  fi
  mkdir -p "$dir/ctld" "$dir/d" "$dir/munge" "$dir/mysql"
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

  # munge: a key of its own under DIR, on munge's default socket (slurmdbd's clients use no other).
  [ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 700 "$dir/munge"
  chmod 400 "$dir/munge/munge.key"
  local socket=/run/munge/munge.socket.2
  mkdir -p /run/munge
  [ ! -S "$socket" ] || die "a munged already listens on $socket"
  munged --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --force
  for _ in $(seq 50); do [ -s "$dir/munge/munged.pid" ] && break; sleep 0.1; done
  cp "$dir/munge/munged.pid" "$dir/munged.pid"

  # The accounting database behind `sacct`: a MariaDB of its own under DIR, reached by slurmdbd
  # through the default socket (the client library's), no network.
  [ -d "$dir/mysql/mysql" ] ||
    mariadb-install-db --datadir="$dir/mysql" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$dir/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (log: $dir/mariadb-install.log)"
  mkdir -p /run/mysqld
  [ ! -S /run/mysqld/mysqld.sock ] || die "a MariaDB already listens on /run/mysqld/mysqld.sock"
  mariadbd --user=root --datadir="$dir/mysql" --socket=/run/mysqld/mysqld.sock --skip-networking \
    --pid-file="$dir/mariadbd.pid" --log-error="$dir/mariadbd.log" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 100); do [ -S /run/mysqld/mysqld.sock ] && break; sleep 0.1; done
  [ -S /run/mysqld/mysqld.sock ] || { stop; die "mariadbd did not start (log: $dir/mariadbd.log)"; }

  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/local-slurm.sh for $host: one node, every CPU, accounting in slurmdbd.
ClusterName=kvbench-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MinJobAge=3600
KillWait=10
SchedulerType=sched/backfill
DefMemPerCPU=$((mem / cpus))
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd reads slurmdbd.conf beside SLURM_CONF; it must be private to SlurmUser.
  cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=kvbench_slurm_acct
EOF
  chmod 600 "$dir/slurmdbd.conf"
  export SLURM_CONF="$dir/slurm.conf"
  slurmdbd
  for _ in $(seq 50); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -i add cluster kvbench-local >/dev/null 2>&1 || true
  sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -q kvbench-local ||
    { stop; die "slurmdbd did not register the cluster (log: $dir/slurmdbd.log)"; }
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -o '%t' 2>/dev/null | head -1 || true)
    [ "$state" = "idle" ] && break
    sleep 0.5
  done
  if [ "$state" != "idle" ]; then
    echo "error: the node did not become idle (state '$state'); logs:" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    stop || true
    exit 1
  fi
  echo "local Slurm up: node $host, $cpus CPUs, ${mem} MB; daemons' pids in $dir"
  echo "export SLURM_CONF=$SLURM_CONF"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
