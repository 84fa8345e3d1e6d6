#!/usr/bin/env bash
# A real one-machine Slurm cluster for the tests: this machine is controller and $SLURM_NODES
# (default 2) compute nodes, <host>-1, <host>-2, ..., one slurmd each (Debian builds slurmd with
# MULTIPLE_SLURMD: `slurmd -N <node>`, each on its own port), each with this machine's real CPU
# count and memory, so that a job can span two nodes (trainer.num_nodes=2). Installs slurmctld/slurmd/slurm-client and munge from the
# distribution when missing (apt-get, as root), writes the configuration under $SLURM_HOME, starts
# munged, slurmctld and slurmd without systemd and waits until `sinfo` shows the node idle.
#
#   tests/cluster/start_slurm.sh            # start (idempotent); prints `export SLURM_CONF=...`
#   tests/cluster/stop_slurm.sh             # stop the daemons it started
#
# Clients find the cluster through SLURM_CONF=$SLURM_HOME/slurm.conf (nothing under /etc/slurm is
# written). Exits non-zero with one line saying why when the cluster cannot start.
set -euo pipefail
SLURM_HOME=${SLURM_HOME:-/tmp/bayesgen-slurm}
SLURM_NODES=${SLURM_NODES:-2}
conf=$SLURM_HOME/slurm.conf

die() { echo "start_slurm: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (munged, slurmd and the job's users); run as root"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm and munge are missing and there is no apt-get"
  echo "start_slurm: installing slurmctld slurmd slurm-client munge" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
           slurmctld slurmd slurm-client munge >/dev/null; } \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

host=$(hostname -s)
cpus=$(nproc --all)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$SLURM_HOME"/{ctld,spool,log}

# munge: one key per machine (the package makes one; make it if absent)
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! munge -n >/dev/null 2>&1; then
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force || die "munged did not start"
  else
    /usr/sbin/munged --force || die "munged did not start"
  fi
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n >/dev/null 2>&1 || die "munged does not answer (munge -n fails)"
fi

cat > "$conf" <<CONF
# written by tests/cluster/start_slurm.sh
ClusterName=bayesgen
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_HOME/ctld
SlurmdSpoolDir=$SLURM_HOME/spool/%n
SlurmctldPidFile=$SLURM_HOME/slurmctld.pid
SlurmdPidFile=$SLURM_HOME/slurmd.%n.pid
SlurmctldLogFile=$SLURM_HOME/log/slurmctld.log
SlurmdLogFile=$SLURM_HOME/log/slurmd.%n.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
nodes=()
for i in $(seq "$SLURM_NODES"); do
  nodes+=("$host-$i")
  mkdir -p "$SLURM_HOME/spool/$host-$i"
  echo "NodeName=$host-$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$(( ${SLURMD_PORT:-6818} + i - 1 )) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN" >> "$conf"
done
export SLURM_CONF=$conf

if ! scontrol ping 2>/dev/null | grep -q UP; then
  slurmctld -f "$conf" || die "slurmctld did not start (see $SLURM_HOME/log/slurmctld.log)"
fi
for node in "${nodes[@]}"; do
  if ! pgrep -F "$SLURM_HOME/slurmd.$node.pid" >/dev/null 2>&1; then
    slurmd -f "$conf" -N "$node" || die "slurmd -N $node did not start (see $SLURM_HOME/log/)"
  fi
done
for _ in $(seq 60); do  # every node idle (or running jobs)
  states=$(sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ' || true)
  busy=$(sinfo -h -N -o %T 2>/dev/null | grep -c -v -E '^(idle|mix|alloc)' || true)
  [ -n "$states" ] && [ "$busy" = 0 ] && break
  sleep 0.5
done
[ -n "${states:-}" ] && [ "${busy:-1}" = 0 ] \
  || die "nodes ${nodes[*]} are '${states:-unknown}', not idle, after 30 s (see $SLURM_HOME/log/)"
echo "start_slurm: nodes ${nodes[*]} ($cpus CPUs, $mem_mb MB each) are ${states% }" >&2
echo "export SLURM_CONF=$conf"
