#!/usr/bin/env bash
# Two ssh "nodes" on this machine, for tests and for trying `train.launcher: deepspeed` without a cluster:
# an sshd of its own on 127.0.0.1, reached under the names local-node-0 and local-node-1, which is what
# DeepSpeed's launcher needs to start one process group per node over pdsh and ssh.
#
#   infra/deepspeed/local-ssh.sh up       # install openssh-server/pdsh if missing (root, apt), start sshd, check a login
#   infra/deepspeed/local-ssh.sh status   # exit 0 when sshd runs and a login works
#   infra/deepspeed/local-ssh.sh down     # stop sshd (the folder is kept: keys, configs, log)
#   eval "$(infra/deepspeed/local-ssh.sh env)"   # put its ssh first on PATH in this shell
#   # then: tokenmill train ... --set train.launcher=deepspeed --set train.hostfile=$TOKENMILL_SSH_DIR/hostfile
#
# Everything lives in one private folder, $TOKENMILL_SSH_DIR (default /tmp/tokenmill-ssh): a throwaway host key
# and client key, sshd_config (port $TOKENMILL_SSH_PORT, default the first free one from 2222, on 127.0.0.1 only,
# public-key logins of the current user with the client key only), ssh_config, known_hosts, sshd's pid and log,
# and a two-line hostfile. The machine's sshd and its config, and the user's ~/.ssh, are left alone.
#
# How the launcher finds this sshd: DeepSpeed runs plain `ssh <host> ...` (its login check, `hostname -I` on
# the first host) and pdsh runs `ssh` too, both from PATH. `env` puts $TOKENMILL_SSH_DIR/bin first on PATH, where
# an `ssh` runs the real one with `-F $TOKENMILL_SSH_DIR/ssh_config`. That config maps local-node-0 and
# local-node-1 to 127.0.0.1 and this port and key, then includes the system's and the user's own ssh config, so
# other hosts are reached as before.
set -euo pipefail

DIR=${TOKENMILL_SSH_DIR:-/tmp/tokenmill-ssh}
NODES=(local-node-0 local-node-1)
USER_NAME=$(id -un)

LOG_NAME=local-ssh
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"  # log, fail, running, apt_install

sshd_path() {
    command -v sshd 2>/dev/null || { [[ -x /usr/sbin/sshd ]] && echo /usr/sbin/sshd; } || true
}

install_packages() {
    local missing=()
    [[ -n $(sshd_path) ]] || missing+=(openssh-server)
    { command -v ssh && command -v ssh-keygen; } >/dev/null || missing+=(openssh-client)
    command -v pdsh >/dev/null || missing+=(pdsh)
    [[ ${#missing[@]} -eq 0 ]] && return
    # The package's own sshd is not started in a container without systemd, and is not needed: ours runs below.
    apt_install "$DIR/apt.log" "${missing[@]}"
}

port_free() { # port -> whether nothing listens on 127.0.0.1:port
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

choose_port() {
    if [[ -f $DIR/port ]]; then
        cat "$DIR/port"
        return
    fi
    local port=${TOKENMILL_SSH_PORT:-}
    if [[ -z $port ]]; then
        for port in $(seq 2222 2299); do
            port_free "$port" && break
        done
    fi
    echo "$port" >"$DIR/port"
    echo "$port"
}

write_files() {
    local port=$1 use_pam=no
    [[ -f $DIR/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N "" -C tokenmill-local-sshd -f "$DIR/ssh_host_ed25519_key"
    [[ -f $DIR/client_ed25519_key ]] || ssh-keygen -q -t ed25519 -N "" -C tokenmill-local-client -f "$DIR/client_ed25519_key"
    cp "$DIR/client_ed25519_key.pub" "$DIR/authorized_keys"
    chmod 600 "$DIR/authorized_keys"
    # No PAM: Debian's PAM session for sshd wants pam_loginuid, which fails in some containers. Without PAM, sshd
    # refuses an account whose password is locked with '!' in /etc/shadow (as useradd leaves it; root's '*' is
    # fine); only root can run sshd with PAM, which lets key logins into such accounts.
    if [[ $(id -u) -eq 0 ]] && [[ $(getent shadow "$USER_NAME" | cut -d: -f2) == '!'* ]]; then
        use_pam=yes
    fi
    cat >"$DIR/sshd_config" <<EOF
# Written by infra/deepspeed/local-ssh.sh; rewritten on every 'up'. Only this machine connects.
Port $port
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
AllowUsers $USER_NAME
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM $use_pam
# The keys live in a folder under /tmp, which is world-writable: sshd's ownership checks would refuse them.
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PrintMotd no
PrintLastLog no
EOF
    # One alias for every name sshd can be reached under here: the host key is checked the same way for all.
    echo "tokenmill-local-sshd $(cut -d' ' -f1-2 "$DIR/ssh_host_ed25519_key.pub")" >"$DIR/known_hosts"
    cat >"$DIR/ssh_config" <<EOF
# Written by infra/deepspeed/local-ssh.sh; read through $DIR/bin/ssh (ssh -F). The first value found wins,
# so these names use this folder's sshd and key, and every other host the system's and the user's own config.
Host ${NODES[*]}
    HostName 127.0.0.1
    Port $port
    User $USER_NAME
    IdentityFile $DIR/client_ed25519_key
    IdentitiesOnly yes
    HostKeyAlias tokenmill-local-sshd
    UserKnownHostsFile $DIR/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
Host *
    Include /etc/ssh/ssh_config
    Include $HOME/.ssh/config
EOF
    mkdir -p "$DIR/bin"
    cat >"$DIR/bin/ssh" <<EOF
#!/bin/sh
# Written by infra/deepspeed/local-ssh.sh: ssh with this folder's config (local-node-0, local-node-1).
exec $(command -v ssh) -F "$DIR/ssh_config" "\$@"
EOF
    chmod 755 "$DIR/bin/ssh"
    {
        echo "# Written by infra/deepspeed/local-ssh.sh: two \"nodes\", both this machine's sshd on 127.0.0.1:$port."
        for node in "${NODES[@]}"; do echo "$node slots=1"; done
    } >"$DIR/hostfile"
}

start_sshd() {
    running "$DIR/sshd.pid" && return
    local sshd
    sshd=$(sshd_path)
    # sshd as root wants its privilege separation directory (made by systemd/init on a normal boot).
    [[ $(id -u) -ne 0 ]] || mkdir -p /run/sshd
    "$sshd" -t -f "$DIR/sshd_config" || fail "sshd rejects $DIR/sshd_config (above)"
    # sshd needs its absolute path to start (it re-executes itself per connection); it detaches, writing its pid.
    "$sshd" -f "$DIR/sshd_config" -E "$DIR/sshd.log" || fail "sshd did not start; see $DIR/sshd.log"
    for _ in $(seq 50); do
        running "$DIR/sshd.pid" && return
        sleep 0.1
    done
    fail "sshd wrote no pid file; see $DIR/sshd.log"
}

check_login() {
    local node out
    for node in "${NODES[@]}"; do
        out=$("$DIR/bin/ssh" -o ConnectTimeout=10 "$node" echo ok 2>&1) && [[ $out == ok ]] ||
            fail "ssh $node as $USER_NAME failed: ${out:-no output}; see $DIR/sshd.log"
    done
}

up() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    install_packages
    local port
    # A config rewritten under a running sshd would not be what it read: rewrite only when it is stopped.
    if ! running "$DIR/sshd.pid"; then
        rm -f "$DIR/port"
        port=$(choose_port)
        port_free "$port" || fail "port $port on 127.0.0.1 is taken; choose another with TOKENMILL_SSH_PORT"
        write_files "$port"
    fi
    start_sshd
    check_login
    log "up: ${NODES[*]} are ssh logins into 127.0.0.1:$(cat "$DIR/port"); use them with:"
    log "  eval \"\$($0 env)\" and train.hostfile=$DIR/hostfile"
}

down() {
    local pid
    if running "$DIR/sshd.pid"; then
        pid=$(cat "$DIR/sshd.pid")
        kill "$pid"
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    fi
    rm -f "$DIR/sshd.pid"
    log "down"
}

status() {
    running "$DIR/sshd.pid" || { log "sshd is not running"; return 1; }
    check_login
    log "sshd on 127.0.0.1:$(cat "$DIR/port"), ${NODES[*]} log in; hostfile $DIR/hostfile"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    env) echo "export PATH=$DIR/bin:\$PATH TOKENMILL_SSH_DIR=$DIR" ;;
    *) fail "usage: $0 up|down|status|env" ;;
esac
