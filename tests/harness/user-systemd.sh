#!/bin/bash
# user-systemd.sh [UNITDIR] -- COMMAND [ARGS...]
#
# Runs COMMAND next to a private, real `systemd --user` manager (systemd 252)
# with its own D-Bus session bus, both inside fresh PID + mount namespaces,
# and tears everything down afterwards.  Exit status = COMMAND's (125: the
# harness itself failed; the reason is on stderr).
#
# This is the project's copy of recipe A in TESTING.md; the integration tests
# (tests/it/support) drive it from *outside* the namespace:
#
#   When the manager is ready, exactly one line goes to stdout, before COMMAND
#   runs:
#     HARNESS_READY nspid=<host PID of the namespace's PID 1> work=<work dir>
#       unitdir=<host path of the user unit dir> log=<manager log>
#       bus=unix:path=/proc/<nspid>/root/run/user/<uid>/bus
#   (one line, fields separated by single spaces; paths never contain spaces).
#   From the host:
#     busctl --address=<bus> ...                 (any D-Bus client)
#     nsenter -t <nspid> -m -p -- env XDG_RUNTIME_DIR=/run/user/<uid> \
#         DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/<uid>/bus systemctl --user ...
#   The unit dir, work dir and log are ordinary host paths (the mount namespace
#   shares the host file system except /run/systemd, /run/user and /proc).
#   With COMMAND = `cat`, the namespace lives until the caller closes our stdin
#   (or kills this script).
#
# Exported to COMMAND (which runs inside the namespace):
#   DBUS_SESSION_BUS_ADDRESS  the private session bus (systemd1 is on it)
#   XDG_RUNTIME_DIR           /run/user/<uid> (tmpfs, private)
#   HOME                      throw-away home (HARNESS_ORIG_HOME = the real one;
#                             CARGO_HOME/RUSTUP_HOME are pinned to the real ones)
#   HARNESS_UNITDIR           $HOME/.config/systemd/user (copy of UNITDIR, if
#                             given; drop more units here + daemon-reload)
#   HARNESS_LOG               the manager's log and all services' stdout/stderr
#   HARNESS_MANAGER_PID       PID of systemd --user (in the namespace)
#   HARNESS_NSPID             host PID of the namespace's PID 1
#
# Knobs (environment):
#   HARNESS_READY_TIMEOUT=30  seconds to wait for the manager + bus
#   HARNESS_STOP_TIMEOUT=2    seconds for a graceful manager exit after COMMAND
#                             (0: none; the kernel SIGKILLs the namespace)
#   HARNESS_KEEP=1            keep the work dir (printed on stderr)
#   HARNESS_VERBOSE=1         dump the manager log to stderr at exit
#   HARNESS_QUIET=1           no timing line on stderr at exit
#   HARNESS_MASK="a b"        extra user units to mask
#   HARNESS_SYSTEM_BUS=1      also export DBUS_SYSTEM_BUS_ADDRESS=<private bus> to COMMAND
#   HARNESS_LOG_LEVEL=info    manager log level (debug is very verbose)
#
# Teardown cannot leak, however this script ends:
#   - the namespace: `setpriv --pdeathsig KILL unshare --kill-child ...`: if this
#     script dies (even by SIGKILL) unshare gets SIGKILL, then the namespace's
#     PID 1 gets SIGKILL, and the kernel kills everything inside;
#   - the private cgroups and the work dir: a cleaner process (a coproc, which
#     ignores INT/TERM/HUP/PIPE) waits for EOF on a pipe that only this script
#     holds open, then removes them.  On a normal exit this script waits for it;
#     after a SIGKILL it finishes alone.  It keeps our stderr open, so a caller
#     that reads our stderr to EOF knows the cleanup is complete.
#
# Root only (the supported path, see TESTING.md A.8).
set -euo pipefail

die() { echo "user-systemd.sh: $*" >&2; exit 125; }
now() { local t=${EPOCHREALTIME/[.,]/}; echo $(( 10#$t / 1000 )); }   # ms
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }

# pause SECONDS: the poll interval of the wait loops below.  It is `read -t` on
# a FIFO that nobody writes to: a fork-free sub-second wait (a forked `sleep`
# costs about as much as the interval).  Polling *is* the mechanism here (there
# is no event for "the manager is on the bus"); it is never used to synchronise.
pause_open() {  # pause_open FIFO_PATH
    mkfifo "$1"
    exec {PAUSE_FD}<>"$1"
    rm -f "$1"
}
pause() { read -r -t "$1" -u "$PAUSE_FD" _ || true; }

SELF=$(readlink -f "$0")

##############################################################################
# inner part: runs as PID 1 of the new PID namespace
##############################################################################
if [ "${1:-}" = "--inner" ]; then
    WORK=$2; shift 2
    # join the private cgroup(s) first: nothing may be forked before this
    IFS=: read -r -a cgs <<< "${HARNESS_CG_DIRS:-}"
    for d in "${cgs[@]}"; do echo 0 > "$d/cgroup.procs"; done
    unset HARNESS_CG_DIRS
    t_ns=$(now)

    # Our host PID, read race-free from the *host's* procfs, which is still
    # mounted on /proc in this fresh mount namespace (no --mount-proc): /proc/self
    # resolves in the pid namespace of the procfs, so NSpid reads "<host> 1".
    NSPID=""
    while read -r key first rest; do
        if [ "$key" = NSpid: ]; then
            [ "${rest##*[[:space:]]}" = 1 ] || die "not PID 1 of a new PID namespace (NSpid: $first $rest)"
            NSPID=$first
        fi
    done < /proc/self/status
    [ -n "$NSPID" ] && [ "$NSPID" != 1 ] || die "cannot read our host PID from /proc/self/status (NSpid)"
    # now our own /proc (what unshare --mount-proc would have done)
    mount -t proc -o nosuid,nodev,noexec proc /proc

    uid=$EUID
    # private /run pieces (mount namespace is private, host /run untouched)
    # (/run/systemd and /run/user must exist on the host; they do on Debian)
    mount -t tmpfs -o mode=755 tmpfs /run/systemd
    mkdir -p /run/systemd/system            # makes sd_booted()/systemctl happy
    mount -t tmpfs -o mode=755 tmpfs /run/user
    export XDG_RUNTIME_DIR=/run/user/$uid
    mkdir -m 700 -p "$XDG_RUNTIME_DIR"
    # HOME becomes a throw-away dir; keep toolchains (cargo/rustup) reachable.
    export HARNESS_ORIG_HOME=${HOME:-/root}
    [ -z "${CARGO_HOME:-}" ] && [ -d "$HARNESS_ORIG_HOME/.cargo" ] && export CARGO_HOME=$HARNESS_ORIG_HOME/.cargo
    [ -z "${RUSTUP_HOME:-}" ] && [ -d "$HARNESS_ORIG_HOME/.rustup" ] && export RUSTUP_HOME=$HARNESS_ORIG_HOME/.rustup
    export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_DATA_HOME=$WORK/home/.local/share
    export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
    [ "${HARNESS_SYSTEM_BUS:-0}" = 1 ] && export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS
    export HARNESS_UNITDIR=$XDG_CONFIG_HOME/systemd/user HARNESS_LOG=$WORK/manager.log
    export HARNESS_NSPID=$NSPID
    unset NOTIFY_SOCKET INVOCATION_ID MANAGERPID LISTEN_FDS LISTEN_PIDS LISTEN_FDNAMES WATCHDOG_PID WATCHDOG_USEC || true

    # systemd --user (LogTarget=console) logs to /dev/console -- the machine's
    # real console -- and only if it is a tty.  Give the manager a pty (script(1))
    # and, in our mount namespace only, bind that pty over /dev/console; script
    # copies everything into $HARNESS_LOG.  Services inherit the same stdout.
    : > "$HARNESS_LOG"
    HARNESS_PIDFILE=$WORK/manager.pid SHELL=/bin/sh \
    script -qfe -c 'mount --bind "$(tty)" /dev/console && stty -onlcr && echo $$ > "$HARNESS_PIDFILE" && exec /lib/systemd/systemd --user' \
        "$HARNESS_LOG" </dev/null >/dev/null 2>&1 &
    SCRIPT_PID=$!
    pause_open "$WORK/.pause-inner"          # (after forking the manager: not for it to inherit)
    deadline=$(( $(now) + ${HARNESS_READY_TIMEOUT:-30} * 1000 ))
    until [ -s "$WORK/manager.pid" ]; do
        if ! kill -0 "$SCRIPT_PID" 2>/dev/null || [ "$(now)" -gt "$deadline" ]; then
            cat "$HARNESS_LOG" >&2; die "manager did not start"
        fi
        pause 0.005
    done
    HARNESS_MANAGER_PID=$(cat "$WORK/manager.pid")
    export HARNESS_MANAGER_PID

    # Ready = manager finished startup AND org.freedesktop.systemd1 is on the bus.
    # The first bus client socket-activates dbus.service (systemd then connects),
    # so ask the bus first: that overlaps the bus start-up with the manager's.
    state=""
    while :; do
        kill -0 "$HARNESS_MANAGER_PID" 2>/dev/null || { cat "$HARNESS_LOG" >&2; die "manager died"; }
        if [ -S "$XDG_RUNTIME_DIR/bus" ] &&
           [ "$(busctl --user call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                   NameHasOwner s org.freedesktop.systemd1 2>/dev/null)" = "b true" ]; then
            state=$(systemctl --user is-system-running 2>/dev/null || true)
            if [ "$state" = running ] || [ "$state" = degraded ]; then
                break
            fi
        fi
        if [ "$(now)" -gt "$deadline" ]; then
            cat "$HARNESS_LOG" >&2; die "not ready after ${HARNESS_READY_TIMEOUT:-30}s (state='$state')"
        fi
        pause 0.01
    done
    t_ready=$(now)

    echo "HARNESS_READY nspid=$NSPID work=$WORK unitdir=$HARNESS_UNITDIR log=$HARNESS_LOG bus=unix:path=/proc/$NSPID/root$XDG_RUNTIME_DIR/bus"

    set +e
    "$@"
    rc=$?
    set -e
    t_cmd=$(now)

    # graceful: SIGTERM makes the user manager start exit.target (stops all
    # units); HARNESS_STOP_TIMEOUT=0 skips this (everything gets SIGKILL).
    stop_timeout=${HARNESS_STOP_TIMEOUT:-2}
    if [ "$stop_timeout" != 0 ]; then
        kill -TERM "$HARNESS_MANAGER_PID" 2>/dev/null || true
        deadline=$(( $(now) + stop_timeout * 1000 ))
        while kill -0 "$HARNESS_MANAGER_PID" 2>/dev/null && [ "$(now)" -le "$deadline" ]; do
            pause 0.01
        done
    fi
    t_stop=$(now)
    echo "startup_s=$(secs $((t_ready - t_ns))) command_s=$(secs $((t_cmd - t_ready))) manager_stop_s=$(secs $((t_stop - t_cmd)))" \
        > "$WORK/timings"
    # Returning from PID 1 makes the kernel SIGKILL everything left in the namespace.
    exit $rc
fi

##############################################################################
# outer part
##############################################################################
usage="usage: user-systemd.sh [UNITDIR] -- COMMAND [ARGS...]"
UNITDIR=""
if [ "${1:-}" != -- ]; then
    [ $# -ge 1 ] || die "$usage"
    UNITDIR=$1; shift
    [ -d "$UNITDIR" ] || die "UNITDIR '$UNITDIR' is not a directory"
fi
[ "${1:-}" = -- ] || die "$usage"
shift
[ $# -ge 1 ] || die "$usage"

[ "$EUID" = 0 ] || die "must run as root (a private systemd --user needs its own cgroup and namespaces)"
missing=""
for tool in unshare setpriv script mount systemctl busctl stty; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -x /lib/systemd/systemd ] || missing="$missing /lib/systemd/systemd"
[ -x /usr/bin/dbus-daemon ] || missing="$missing /usr/bin/dbus-daemon"
[ -z "$missing" ] || die "missing:$missing"
case "${TMPDIR:-/tmp}" in *[[:space:]]*) die "TMPDIR must not contain white space" ;; esac
t0=$(now)

# --- cgroup isolation (the dangerous part) ----------------------------------
# systemd uses its *current* cgroup (minus a trailing /init.scope) as the root
# of everything it manages.  Started from the host's /init.scope it would take
# over the host's root cgroup (and delete empty top-level cgroups on exit), so
# the namespace joins a private sub-cgroup of the tracking hierarchies first,
# named after the (unique) work dir -> parallel instances are independent.
cg_dirs_for() {  # cg_dirs_for ID: sets CG_DIRS (and CG_PARENTS, shared by instances)
    CG_DIRS=()
    CG_PARENTS=()
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then                   # pure v2 (untested)
        local cur
        cur=$(awk -F: '$1=="0"{print $3}' /proc/self/cgroup)
        CG_DIRS+=("/sys/fs/cgroup${cur%/}/$1")
    else                                                                # v1 / hybrid
        [ -d /sys/fs/cgroup/systemd ] && CG_DIRS+=("/sys/fs/cgroup/systemd/user-systemd-harness/$1")
        [ -f /sys/fs/cgroup/unified/cgroup.controllers ] &&
            CG_DIRS+=("/sys/fs/cgroup/unified/user-systemd-harness/$1")
        local d
        for d in "${CG_DIRS[@]}"; do CG_PARENTS+=("${d%/*}"); done
    fi
}
kill_cgroup() {  # kill_cgroup DIR: SIGKILL every process in DIR's subtree
    [ -f "$1/cgroup.kill" ] && echo 1 > "$1/cgroup.kill"
    local pids
    pids=$(find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
}

# --- the cleaner -------------------------------------------------------------
# A coproc that creates the work dir, hands its path over, then waits for EOF on
# a pipe whose write end only this script holds (coproc fds are close-on-exec,
# so unshare & co. do not inherit it): EOF = this script is gone, however it
# ended.  Then it kills whatever is left in the private cgroups and removes
# them and the work dir.  Since it creates the work dir itself, there is no
# moment at which something exists that it would not clean up.
cleaner() {
    set +e
    trap '' INT TERM HUP PIPE
    local work d i
    work=$(mktemp -d "${TMPDIR:-/tmp}/user-systemd.XXXXXX") || exit 1
    chmod 755 "$work"
    echo "$work"                             # to this script, through the coproc pipe
    exec >&2
    cg_dirs_for "${work##*/}"
    read -r _                                # until EOF
    pause_open "$work/.pause-cleaner"
    # Normally the namespace is gone by now (its PID 1 exited, or the pdeathsig
    # chain killed it), but if this script died before setpriv had armed its
    # pdeathsig, it may still be running: kill the cgroups' contents anyway,
    # then remove them, deepest first, as soon as they are empty.
    for d in "${CG_DIRS[@]}"; do
        for (( i = 0; i < 1000; i++ )); do   # up to ~10 s
            [ -d "$d" ] || break
            kill_cgroup "$d"
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$d" ] || break
            pause 0.01
        done
        [ -d "$d" ] && echo "user-systemd.sh: warning: could not remove $d" >&2
    done
    # the shared parent goes when the last instance leaves (creators retry)
    for d in "${CG_PARENTS[@]}"; do rmdir "$d" 2>/dev/null; done
    if [ "${HARNESS_KEEP:-0}" = 1 ]; then
        echo "user-systemd.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
coproc CLEANER { cleaner; }
CLEANER_FD=${CLEANER[1]}
CLEANER_WAIT=$CLEANER_PID
read -r WORK <&"${CLEANER[0]}" && [ -d "$WORK" ] || die "cannot create a work dir in ${TMPDIR:-/tmp}"
ID=${WORK##*/}
cg_dirs_for "$ID"
[ ${#CG_DIRS[@]} -gt 0 ] || die "no cgroup hierarchy to isolate the manager in"

# GC of instances whose cleaner could not run either (e.g. the whole process
# group was SIGKILLed): only cgroup trees with no process left anywhere (a live
# manager always has one) and older than a minute (a sibling that has created
# its cgroup but not joined it yet is younger).
for parent in "${CG_PARENTS[@]}"; do
    for stale in "$parent"/user-systemd.*; do
        [ -d "$stale" ] && [ -n "$(find "$stale" -maxdepth 0 -mmin +1)" ] || continue
        [ -z "$(find "$stale" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] || continue
        find "$stale" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$stale" ] || rm -rf "${TMPDIR:-/tmp}/${stale##*/}"
    done
done

# mkdir -p races with a sibling's cleaner removing the shared parent: retry.
# Never go on without the private cgroup.
for d in "${CG_DIRS[@]}"; do
    for (( i = 0; i < 20; i++ )); do
        mkdir -p "$d" 2>/dev/null && break
    done
    [ -d "$d" ] || die "cannot create the private cgroup $d"
done

# --- manager configuration -----------------------------------------------------
CFG=$WORK/home/.config/systemd
mkdir -p "$CFG/user/sockets.target.wants" "$CFG/user.conf.d"
[ -n "$UNITDIR" ] && cp -a "$UNITDIR"/. "$CFG/user/"

# Log to our file, let services inherit it, and do NOT use the v1 resource
# controllers (memory/pids/cpu/...): otherwise systemd --user creates cgroups at
# the top of those hierarchies and moves services out of whatever memory/pids
# limits the CI job runs under.
cat > "$CFG/user.conf.d/50-harness.conf" <<EOF
[Manager]
LogTarget=console
LogColor=no
LogLevel=${HARNESS_LOG_LEVEL:-info}
DefaultStandardOutput=inherit
DefaultStandardError=inherit
DefaultCPUAccounting=no
DefaultIOAccounting=no
DefaultBlockIOAccounting=no
DefaultMemoryAccounting=no
DefaultTasksAccounting=no
DefaultIPAccounting=no
DefaultTimeoutStopSec=5s
EOF

# Our own socket-activated session bus (as Debian's dbus-user-session does, but
# shipped here so that package is not required; only dbus-daemon is).
cat > "$CFG/user/dbus.socket" <<'EOF'
[Unit]
Description=D-Bus User Message Bus Socket (harness)
[Socket]
ListenStream=%t/bus
[Install]
WantedBy=sockets.target
EOF
cat > "$CFG/user/dbus.service" <<'EOF'
[Unit]
Description=D-Bus User Message Bus (harness)
Requires=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --session --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
ExecReload=/usr/bin/dbus-send --print-reply --session --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig
EOF
ln -sf ../dbus.socket "$CFG/user/sockets.target.wants/dbus.socket"
# Mask host-installed user units that only add noise/start-up time.
for u in gpg-agent.socket gpg-agent-browser.socket gpg-agent-extra.socket gpg-agent-ssh.socket \
         dirmngr.socket pk-debconf-helper.socket ssh-agent.service at-spi-dbus-bus.service \
         systemd-tmpfiles-setup.service systemd-tmpfiles-clean.timer ${HARNESS_MASK:-}; do
    [ -e "$CFG/user/$u" ] || ln -sf /dev/null "$CFG/user/$u"
done

# --- run ---------------------------------------------------------------------
# setpriv --pdeathsig: if this script dies (even SIGKILL), unshare gets SIGKILL;
# --kill-child: if unshare dies, the namespace's PID 1 gets SIGKILL, and the
# kernel kills everything inside.  No --mount-proc: the inner part reads its
# host PID from the host's /proc first, then mounts its own.
set +e
HARNESS_CG_DIRS=$(IFS=:; echo "${CG_DIRS[*]}") \
    setpriv --pdeathsig KILL \
    unshare --mount --pid --fork --kill-child --propagation private \
    "$SELF" --inner "$WORK" "$@" 0<&0 &
UPID=$!
# forward INT/TERM/HUP: killing unshare SIGKILLs the whole namespace
trap 'kill -KILL $UPID 2>/dev/null' INT TERM HUP
# `wait` returns early (>128) when a trapped signal arrives; the last one gives
# the job's own status.  (stderr: no "Killed" job notice from bash)
{
    while kill -0 $UPID 2>/dev/null; do wait $UPID; done
    wait $UPID
} 2>/dev/null
rc=$?
set -e
t1=$(now)
if [ -f "$WORK/timings" ] && [ "${HARNESS_QUIET:-0}" != 1 ]; then
    echo "user-systemd.sh: $(cat "$WORK/timings") total_s=$(secs $((t1 - t0)))" >&2
fi
if [ "${HARNESS_VERBOSE:-0}" = 1 ]; then
    echo "----- manager log" >&2; cat "$WORK/manager.log" >&2 || true
fi
# let the cleaner go, and wait for it (so that a normal exit leaves nothing)
exec {CLEANER_FD}>&-
wait "$CLEANER_WAIT" 2>/dev/null || true
exit $rc
