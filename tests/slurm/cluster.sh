#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for testing the SLURM workflow profile.
#
#   tests/slurm/cluster.sh start STATE_DIR   install Slurm and MUNGE (Debian packages) when missing,
#                                            start munged, slurmctld and slurmd, wait for the node
#   tests/slurm/cluster.sh stop STATE_DIR    stop exactly the daemons that `start` started
#
# Needs root and apt-get. Everything the cluster writes (slurm.conf, gres.conf, state, spool, logs,
# the PIDs of the daemons it started) lives in STATE_DIR; MUNGE's socket and pid file live in
# /run/munge under a name unique to STATE_DIR, because munged refuses directories that the munge
# user cannot own. Clients find the cluster at /etc/slurm/slurm.conf, a link to STATE_DIR/slurm.conf
# for as long as the cluster runs: srun inside a job must find it there, because the SLURM executor
# plugin strips every SLURM_* variable (SLURM_CONF too) before it calls srun. So one test cluster at a
# time: `start` refuses while another one (or a Slurm configured by hand) owns /etc/slurm/slurm.conf.
# The controller and node ports are the first free pair from 6817 on, so a slurmd left over from
# elsewhere does not clash.
#
# The node has the CPUs and memory that `slurmd -C` reports and one fake GPU of model "fake"
# (File=/dev/null): a job submitted with --gpus=1 or --gpus=fake:1 runs with CUDA_VISIBLE_DEVICES=0.
# No accounting: status comes from squeue, and finished jobs stay visible to it for MinJobAge=3600 s (a slow CI run of the tiny study takes over 600 s).
set -euo pipefail

die() { echo "slurm-cluster: $*" >&2; exit 1; }

usage() { die "usage: $0 start|stop STATE_DIR"; }

[[ $# -eq 2 ]] || usage
command=$1
state=$2

install_packages() {
    local missing=0 bin
    for bin in slurmctld slurmd sinfo sbatch squeue munged; do
        command -v "$bin" >/dev/null || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache policy slurmd 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -q >&2
    fi
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >&2
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A process that exists and is not a zombie waiting to be reaped.
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1")" != Z* ]]; }

# Start a daemon in the foreground of its own session, output to its log; prints its PID.
spawn() {
    local log=$1
    shift
    setsid "$@" </dev/null >>"$log" 2>&1 &
    echo $!
}

CONF_LINK=/etc/slurm/slurm.conf

# /etc/slurm/slurm.conf: ours as a link to STATE_DIR/slurm.conf; refuse another live cluster's or a
# real config, replace a link left by a cluster that is gone.
claim_config() {
    if [[ -L "$CONF_LINK" ]]; then
        local other pid
        other=$(dirname "$(readlink "$CONF_LINK")")
        if [[ "$other" != "$state" && -f "$other/pids" ]]; then
            for pid in $(cut -d' ' -f2 "$other/pids"); do
                alive "$pid" && die "another test cluster is running (state $other, PID $pid): stop it first with '$0 stop $other'"
            done
        fi
    elif [[ -e "$CONF_LINK" ]]; then
        die "$CONF_LINK exists and is not a test cluster's: this machine has a Slurm of its own, refusing to replace it"
    fi
    mkdir -p "$(dirname "$CONF_LINK")"
    ln -sfn "$state/slurm.conf" "$CONF_LINK"
}

start() {
    [[ $EUID -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
    mkdir -p "$state"
    state=$(cd "$state" && pwd -P)
    if [[ -f "$state/pids" ]]; then
        local pid
        for pid in $(cut -d' ' -f2 "$state/pids"); do
            alive "$pid" && die "a cluster started from $state is still running (PID $pid): stop it first"
        done
    fi
    install_packages
    claim_config

    # MUNGE: the key Debian's munge package uses, and a munged of our own on its own socket.
    [[ -d /run/munge ]] || install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    local id
    id=$(printf '%s' "$state" | md5sum | cut -c1-12)
    local munge_socket=/run/munge/calmix-$id.socket
    rm -f "$munge_socket" "$munge_socket.lock" /run/munge/calmix-"$id".pid

    # Ports: the first free pair from 6817 on.
    local ctld_port=6817
    while ! port_free "$ctld_port" || ! port_free $((ctld_port + 1)); do
        ctld_port=$((ctld_port + 2))
        ((ctld_port < 7000)) || die "no free port pair in 6817-6999"
    done

    # The node: what slurmd detects, and never more.
    local detected cpus memory
    detected=$(slurmd -C | head -1)
    cpus=$(grep -o 'CPUs=[0-9]*' <<<"$detected" | cut -d= -f2)
    memory=$(grep -o 'RealMemory=[0-9]*' <<<"$detected" | cut -d= -f2)
    [[ -n "$cpus" && -n "$memory" ]] || die "cannot read CPUs and RealMemory from 'slurmd -C': $detected"

    mkdir -p "$state/ctld" "$state/spool"
    cat >"$state/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a one-node test cluster, no accounting.
ClusterName=calmixtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
AuthType=auth/munge
AuthInfo=socket=$munge_socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=1000
GresTypes=gpu
NodeName=localhost CPUs=$cpus RealMemory=$memory Gres=gpu:fake:1 State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    echo "NodeName=localhost Name=gpu Type=fake File=/dev/null" >"$state/gres.conf"
    export SLURM_CONF=$state/slurm.conf  # the same file as /etc/slurm/slurm.conf

    : >"$state/pids"
    local pid
    pid=$(spawn "$state/munged.out" setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --socket="$munge_socket" --pid-file=/run/munge/calmix-"$id".pid \
        --log-file=/var/log/munge/calmix-"$id".log --seed-file=/var/lib/munge/calmix-"$id".seed)
    echo "munged $pid" >>"$state/pids"
    echo "munge_socket $munge_socket" >"$state/files"
    local i
    for i in $(seq 100); do
        [[ -S "$munge_socket" ]] && break
        alive "$pid" || { cat "$state/munged.out" >&2; stop; die "munged did not start"; }
        sleep 0.1
    done
    pid=$(spawn "$state/slurmctld.out" slurmctld -D -f "$state/slurm.conf")
    echo "slurmctld $pid" >>"$state/pids"
    pid=$(spawn "$state/slurmd.out" slurmd -D -N localhost -f "$state/slurm.conf")
    echo "slurmd $pid" >>"$state/pids"

    local node=""
    for i in $(seq 120); do
        node=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
        [[ "$node" == idle ]] && break
        sleep 0.5
    done
    if [[ "$node" != idle ]]; then
        tail -n 20 "$state"/*.log "$state"/*.out >&2 || true
        stop
        die "the node did not become idle (state: '${node:-no answer}')"
    fi
    echo "SLURM_CONF=$state/slurm.conf"
}

stop() {
    [[ -f "$state/pids" ]] || return 0
    local name pid i
    # Reverse order: slurmd, slurmctld, then munged.
    while read -r name pid; do
        alive "$pid" && kill "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            kill -9 "$pid" 2>/dev/null || true
            echo "slurm-cluster: $name (PID $pid) did not stop on SIGTERM, killed" >&2
        fi
    done < <(tac "$state/pids")
    if [[ -f "$state/files" ]]; then
        local socket
        socket=$(sed -n 's/^munge_socket //p' "$state/files")
        rm -f "$socket" "$socket.lock" "${socket%.socket}.pid"
        rm -f "$state/files"
    fi
    if [[ "$(readlink "$CONF_LINK" 2>/dev/null)" == "$state/slurm.conf" ]]; then
        rm -f "$CONF_LINK"
    fi
    mv "$state/pids" "$state/pids.stopped"
}

case "$command" in
    start) start ;;
    stop)
        [[ -d "$state" ]] || die "no such state directory: $state"
        state=$(cd "$state" && pwd -P)
        stop
        ;;
    *) usage ;;
esac
