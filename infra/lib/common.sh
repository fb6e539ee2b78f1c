# Sourced by the local-* scripts (infra/slurm/local-cluster.sh, infra/deepspeed/local-ssh.sh), which set LOG_NAME
# first: log and fail with that prefix, whether a pid file's process runs, and apt_install.

log() { echo "$LOG_NAME: $*" >&2; }
fail() { log "$*"; exit 1; }

running() { # pid file -> whether that process is alive
    [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# apt_install LOG PACKAGE... installs the Debian packages with apt-get as root (quietly, into LOG; one `apt-get
# update` and a retry when the first try fails), or stops with the command a non-root user should run. The scripts
# install only what they find missing.
apt_install() {
    local log=$1
    shift
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        fail "missing $*: install them (Debian/Ubuntu: sudo apt-get install -y $*) and rerun"
    fi
    log "installing $* with apt-get"
    # -qq and a log: apt's progress is noise in a test's output; the log is there when it fails.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$log" 2>&1; then
        apt-get update -qq >>"$log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$log" 2>&1 ||
            fail "apt-get install $* failed; see $log"
    fi
}
