#!/usr/bin/env bash
# Stops what tests/cluster/start_slurm.sh started: each node's slurmd, slurmctld (by their PID files) and
# munged (by its own --stop), after cancelling the jobs left.
set -uo pipefail
SLURM_HOME=${SLURM_HOME:-/tmp/bayesgen-slurm}
export SLURM_CONF=$SLURM_HOME/slurm.conf
[ -f "$SLURM_CONF" ] && scancel --full --quiet --state=RUNNING,PENDING --user=root 2>/dev/null
for pidfile in "$SLURM_HOME"/slurmd.*pid "$SLURM_HOME/slurmctld.pid"; do
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
done
if [ "${STOP_MUNGE:-1}" = 1 ] && [ -S /run/munge/munge.socket.2 ]; then
  runuser -u munge -- /usr/sbin/munged --stop 2>/dev/null || /usr/sbin/munged --stop 2>/dev/null
fi
echo "stop_slurm: stopped" >&2
