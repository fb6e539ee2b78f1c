#!/usr/bin/env bash
# A one-node Slurm on this machine (munged, slurmctld and slurmd on 127.0.0.1), for tests and for
# trying `train.launcher: slurm` without a cluster. Not for production: everything runs as root, there
# is no accounting database, and no cgroups (it has to work inside a container without systemd).
#
#   infra/slurm/local-cluster.sh up       # install slurm-wlm/munge if missing (root, apt), start, wait for an idle node
#   infra/slurm/local-cluster.sh status   # exit 0 when the node answers, and the line to use it
#   infra/slurm/local-cluster.sh down     # stop the daemons (the folder is kept: logs, job state)
#   eval "$(infra/slurm/local-cluster.sh env)"   # SLURM_CONF for sbatch, squeue, scontrol, scancel in this shell
#
# Everything lives in one private folder, $TOKENMILL_SLURM_DIR (default /tmp/tokenmill-slurm):
# slurm.conf, a munge key and socket of its own (a munged the machine may already run is left alone),
# state, spool, pid and log files. Slurm's client commands find this cluster through SLURM_CONF only.
#
# What works without slurmdbd: sbatch, squeue, scontrol show job (the end state and exit code stay
# there for MinJobAge seconds after a job ends, set to an hour below), scancel. `sacct` does not:
# with AccountingStorageType=accounting_storage/none it answers that accounting is disabled; a real
# cluster's slurmdbd gives it the job's history. tokenmill.training.slurm follows jobs with
# squeue/scontrol and only asks sacct once a job has left scontrol's memory.
set -euo pipefail

DIR=${TOKENMILL_SLURM_DIR:-/tmp/tokenmill-slurm}
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
# A node name Slurm resolves on this machine; slurmd is told it explicitly (-N), so it need not be in DNS.
NODE=$(hostname -s)

LOG_NAME=local-cluster
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"  # log, fail, running, apt_install

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return
    apt_install "$DIR/apt.log" "${missing[@]}"
}

write_config() {
    # slurmd -C prints this machine's NodeName line (CPUs, sockets, cores, RealMemory) as slurmd sees it,
    # so the node registers without a mismatch that would drain it.
    local node_line
    node_line=$(slurmd -C | head -n1 | sed "s/^NodeName=[^ ]*/NodeName=$NODE/")
    cat >"$CONF" <<EOF
# Written by infra/slurm/local-cluster.sh; rewritten on every 'up'.
ClusterName=tokenmill-local
SlurmctldHost=$NODE(127.0.0.1)
# Root runs everything: the daemons and (since the tests submit as root) the jobs.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups in a container: track a job's processes by their parent links, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct has no data (see the top of this file).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Keep an ended job's state and exit code in scontrol for an hour: it is how a job's end is read here.
MinJobAge=3600
# A job's processes get 30 s after SIGTERM (scancel) before SIGKILL: time to write a checkpoint.
KillWait=30
ReturnToService=2
SchedulerType=sched/backfill
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    running "$DIR/munge/munged.pid" && return
    mkdir -p "$DIR/munge"
    chmod 700 "$DIR/munge"
    if [[ ! -f $DIR/munge/munge.key ]]; then
        mungekey --create --keyfile="$DIR/munge/munge.key"
    fi
    chmod 400 "$DIR/munge/munge.key"
    # --force: munged refuses to run as root otherwise.
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
}

start_slurm() {
    mkdir -p "$DIR/state" "$DIR/spool"
    if ! running "$DIR/slurmctld.pid"; then
        slurmctld -f "$CONF"
    fi
    if ! running "$DIR/slurmd.pid"; then
        slurmd -f "$CONF" -N "$NODE"
    fi
}

node_state() {
    SLURM_CONF=$CONF sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated) return 0 ;;
            # ReturnToService=2 brings a node back by itself, but not one drained by hand or by an old run.
            drain* | down*) SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    fail "node $NODE is '${state:-not answering}' after 60 s; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

up() {
    mkdir -p "$DIR"
    install_packages
    [[ $(id -u) -eq 0 ]] || fail "run this as root: slurmd starts jobs as their user, which needs root"
    # A config rewritten under running daemons would not be what they read: rewrite only when stopped.
    if ! running "$DIR/slurmctld.pid" && ! running "$DIR/slurmd.pid"; then
        write_config
    fi
    start_munge
    start_slurm
    wait_idle
    log "up: node $NODE idle; use it with: export SLURM_CONF=$CONF"
}

down() {
    local pidfile pid
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        running "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
        rm -f "$pidfile"
    done
    log "down"
}

status() {
    local ok=0
    running "$DIR/munge/munged.pid" || { log "munged is not running"; ok=1; }
    running "$DIR/slurmctld.pid" || { log "slurmctld is not running"; ok=1; }
    running "$DIR/slurmd.pid" || { log "slurmd is not running"; ok=1; }
    if [[ $ok -eq 0 ]]; then
        log "node $NODE: $(node_state || echo 'not answering'); export SLURM_CONF=$CONF"
    fi
    return $ok
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) fail "usage: $0 up|down|status|env" ;;
esac
