#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests/test_slurm.py.
#
# Installs Debian's slurm-wlm and munge if absent (apt-get, as root), writes a minimal
# slurm.conf (no cgroups, no accounting), starts munged, slurmctld and slurmd directly (no
# systemd) and waits until `sinfo` shows the node up.  Idempotent: running it again on a
# working cluster changes nothing.  Needs root.
#
# Facts this relies on (Slurm 22.05): proctrack/linuxproc + task/none need no cgroups;
# CommunicationParameters=NoCtldInAddrAny,NoInAddrAny binds the daemons to the address the
# host name resolves to (loopback here); MinJobAge stays at its default 300 (lower values
# make Parsl lose track of a cancelled block).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "tests/services/slurm.sh: must run as root" >&2
  exit 1
fi

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
HOST=$(hostname -s)

log() { echo "slurm.sh: $*" >&2; }

# --- packages --------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v munged >/dev/null || ! command -v sinfo >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# --- the host name must resolve (to loopback on a single host) ---------------------------------
if ! getent hosts "$HOST" >/dev/null; then
  log "adding $HOST to /etc/hosts (127.0.0.1)"
  echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# --- munge ---------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null
fi

# --- slurm.conf ------------------------------------------------------------------------------
# The node line from `slurmd -C`, with RealMemory a little below what it reports.
node_line=$(slurmd -C | head -1)
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
mem=$(( mem > 1024 ? mem - 512 : mem / 2 ))
node_line=$(sed "s/RealMemory=[0-9]*/RealMemory=$mem/" <<<"$node_line")
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
conf=$(cat <<CONF
# Written by tests/services/slurm.sh: a single-node test cluster (no cgroups, no accounting).
ClusterName=tams-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/backfill
$node_line State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$conf" ]; then
  log "writing $CONF"
  printf '%s\n' "$conf" > "$CONF"
  changed=1
else
  changed=0
fi

# --- daemons ---------------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$changed" = 1 ] && running /run/slurmctld.pid; then
  log "configuration changed: restarting the daemons"
  kill "$(cat /run/slurmd.pid 2>/dev/null)" "$(cat /run/slurmctld.pid)" 2>/dev/null || true
  for _ in $(seq 50); do running /run/slurmctld.pid || running /run/slurmd.pid || break; sleep 0.1; done
fi
if ! running /run/slurmctld.pid; then
  log "starting slurmctld"
  slurmctld
fi
if ! running /run/slurmd.pid; then
  log "starting slurmd"
  slurmd
fi

# --- wait until the node is up -----------------------------------------------------------------
for i in $(seq 300); do
  state=$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc|comp) log "node $HOST is $state"; exit 0 ;;
    down*|drain*|drng*|fail*)
      [ $((i % 20)) = 1 ] && scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.1
done
log "the node did not come up (state: ${state:-none}); see $LOG_DIR/slurmctld.log and slurmd.log"
sinfo >&2 || true
exit 1
