#!/bin/bash
# nspawn-debian.sh ROOTFS [NSPAWN_OPTION...] -- COMMAND [ARGS...]
#
# Boots ROOTFS (a Debian with systemd, see debian-rootfs.sh) with
# systemd-nspawn, systemd as the container's real PID 1, on a host whose own
# PID 1 need not be systemd (no system bus, no machined).  Waits until boot has
# finished, runs COMMAND on the host side, then halts the container.  Exit
# status = COMMAND's (125: the harness itself failed; the reason is on stderr).
#
# This is the project's copy of recipe B in TESTING.md; the package test
# (tests/it/deb.rs) drives it from outside:
#
#   When the container is up, exactly one line goes to stdout, before COMMAND
#   runs:
#     NSPAWN_READY ctpid=<host PID of the container's PID 1> state=<running|degraded>
#       log=<console log> work=<work dir>
#   From the host:
#     nsenter -t <ctpid> -a -- CMD          runs CMD inside (systemctl, apt-get, ...)
#     /proc/<ctpid>/root/...                the container's file system
#   With COMMAND = `cat`, the container lives until the caller closes our stdin.
#
# Default nspawn options: --volatile=overlay (ROOTFS stays pristine: every
# write goes to a tmpfs) and --private-network (only lo inside).  Extra
# NSPAWN_OPTIONs are appended (e.g. --bind-ro=HOSTDIR:/srv/x).
#
# Knobs (environment):
#   NSPAWN_BOOT_TIMEOUT=60   seconds for the boot to finish
#   NSPAWN_STOP_TIMEOUT=20   seconds for a clean halt before everything is SIGKILLed
#   NSPAWN_KEEP=1            keep the work dir (console log)
#
# Teardown cannot leak: the container and nspawn live in a private PID + mount
# namespace whose PID 1 is this script's inner part (`setpriv --pdeathsig KILL
# unshare --kill-child`): however this script ends, the kernel kills all of it.
# The private cgroups and the work dir are removed on exit; those of a run that
# was SIGKILLed are collected by the next run.
#
# Root only.
set -euo pipefail

die() { echo "nspawn-debian.sh: $*" >&2; exit 125; }
now() { local t=${EPOCHREALTIME/[.,]/}; echo $(( 10#$t / 1000 )); }   # ms
secs() { printf '%d.%03d' $(( $1 / 1000 )) $(( $1 % 1000 )); }

# pause SECONDS: the poll interval of the wait loops.  `read -t` on a FIFO that
# nobody writes to; polling is the mechanism here (there is no event for "the
# container finished booting" that reaches the host), never a way to synchronise.
pause_open() {
    mkfifo "$1"
    exec {PAUSE_FD}<>"$1"
    rm -f "$1"
}
pause() { read -r -t "$1" -u "$PAUSE_FD" _ || true; }

SELF=$(readlink -f "$0")

##############################################################################
# inner part: PID 1 of a private PID + mount namespace
##############################################################################
if [ "${1:-}" = --inner ]; then
    WORK=$2 ROOT=$3; shift 3
    NSPAWN_OPTS=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do NSPAWN_OPTS+=("$1"); shift; done
    shift
    # join the private cgroups first: nothing may be forked before this
    IFS=: read -r -a cgs <<< "${NSPAWN_CG_DIRS:-}"
    for d in "${cgs[@]}"; do echo 0 > "$d/cgroup.procs"; done
    unset NSPAWN_CG_DIRS

    # Our host PID, from the host's procfs (still mounted on /proc: no
    # --mount-proc).  A bind mount keeps that host view for finding the
    # container's host PID later; then /proc becomes our namespace's own.
    NSPID=""
    while read -r key first rest; do
        [ "$key" = NSpid: ] && NSPID=$first
    done < /proc/self/status
    [ -n "$NSPID" ] && [ "$NSPID" != 1 ] || die "cannot read our host PID (NSpid)"
    mkdir "$WORK/host-proc"
    mount --bind /proc "$WORK/host-proc"
    mount -t proc -o nosuid,nodev,noexec proc /proc
    HOST_PROC=$WORK/host-proc
    # nspawn keeps its state in /run/systemd/nspawn: keep that off the host's /run
    mount -t tmpfs -o mode=755 tmpfs /run/systemd
    pause_open "$WORK/.pause"

    LOG=$WORK/console.log
    t0=$(now)
    # --register=no: no machined to register with; --keep-unit: no host systemd
    # to ask for a scope (both are needed), so the container stays in our cgroup.
    systemd-nspawn --quiet -D "$ROOT" --boot --register=no --keep-unit \
        --machine="uw-${WORK##*.}" "${NSPAWN_OPTS[@]}" </dev/null >"$LOG" 2>&1 &
    NSPAWN=$!

    # host PIDs of the children of host PID $1 (the host view of procfs)
    host_children() { cat "$HOST_PROC/$1"/task/*/children 2>/dev/null || true; }
    host_comm() { cat "$HOST_PROC/$1/comm" 2>/dev/null || true; }
    deadline=$(( t0 + ${NSPAWN_BOOT_TIMEOUT:-60} * 1000 ))
    # The container's PID 1 is the `systemd` child of nspawn, itself our child.
    CTPID=""
    while [ -z "$CTPID" ]; do
        kill -0 "$NSPAWN" 2>/dev/null || { cat "$LOG" >&2; die "systemd-nspawn exited during boot"; }
        for n in $(host_children "$NSPID"); do
            [ "$(host_comm "$n")" = systemd-nspawn ] || continue
            for c in $(host_children "$n"); do
                [ "$(host_comm "$c")" = systemd ] && CTPID=$c
            done
        done
        [ "$(now)" -gt "$deadline" ] && { cat "$LOG" >&2; die "no container PID 1 after ${NSPAWN_BOOT_TIMEOUT:-60}s"; }
        [ -n "$CTPID" ] || pause 0.02
    done
    # the same process as our namespace numbers it (NSpid: host, ours, its own)
    CT_HERE=$(awk '$1 == "NSpid:" { print $3 }' "$HOST_PROC/$CTPID/status")
    state=""
    while :; do
        state=$(nsenter -t "$CT_HERE" -a -- systemctl is-system-running 2>/dev/null || true)
        case $state in running|degraded) break ;; esac
        kill -0 "$NSPAWN" 2>/dev/null || { cat "$LOG" >&2; die "systemd-nspawn exited during boot"; }
        [ "$(now)" -gt "$deadline" ] && { cat "$LOG" >&2; die "boot not finished after ${NSPAWN_BOOT_TIMEOUT:-60}s (state '$state')"; }
        pause 0.05
    done
    t_boot=$(now)
    echo "NSPAWN_READY ctpid=$CTPID state=$state log=$LOG work=$WORK"

    set +e; "$@"; rc=$?; set -e
    t_cmd=$(now)

    # SIGTERM to nspawn = halt the container (a second one would kill it)
    kill -TERM "$NSPAWN" 2>/dev/null || true
    deadline=$(( t_cmd + ${NSPAWN_STOP_TIMEOUT:-20} * 1000 ))
    while kill -0 "$NSPAWN" 2>/dev/null && [ "$(now)" -le "$deadline" ]; do pause 0.02; done
    t_stop=$(now)
    echo "boot_s=$(secs $((t_boot - t0))) command_s=$(secs $((t_cmd - t_boot))) halt_s=$(secs $((t_stop - t_cmd)))" > "$WORK/timings"
    exit "$rc"   # PID 1 exits: the kernel SIGKILLs whatever is left, the container included
fi

##############################################################################
# outer part
##############################################################################
[ $# -ge 3 ] || die "usage: nspawn-debian.sh ROOTFS [NSPAWN_OPTION...] -- COMMAND [ARGS...]"
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, cgroups, systemd-nspawn)"
for tool in systemd-nspawn unshare setpriv nsenter mount; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian packages: systemd-container, util-linux, mount)"
done
ROOT=$(readlink -f "$1"); shift
[ -x "$ROOT/lib/systemd/systemd" ] || die "$ROOT has no /lib/systemd/systemd"
OPTS=(--volatile=overlay --private-network)
while [ $# -gt 0 ] && [ "$1" != -- ]; do OPTS+=("$1"); shift; done
[ "${1:-}" = -- ] || die "missing -- before COMMAND"; shift
[ $# -ge 1 ] || die "missing COMMAND"

t0=$(now)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nspawn-debian.XXXXXX")
ID=${WORK##*/}
# Private cgroups in the tracking hierarchies (same hazard as user-systemd.sh):
# with --keep-unit nspawn makes its *current* cgroup the container's and
# creates payload/ and supervisor/ below it; started from the host's root
# cgroup it would take that over.
CG_DIRS=()
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    CG_DIRS+=("/sys/fs/cgroup/nspawn-debian/$ID")
else
    [ -d /sys/fs/cgroup/systemd ] && CG_DIRS+=("/sys/fs/cgroup/systemd/nspawn-debian/$ID")
    [ -f /sys/fs/cgroup/unified/cgroup.controllers ] && CG_DIRS+=("/sys/fs/cgroup/unified/nspawn-debian/$ID")
fi
[ ${#CG_DIRS[@]} -gt 0 ] || die "no cgroup hierarchy to isolate the container in"
# Leftovers of SIGKILLed runs: empty cgroup trees older than a minute, and their work dirs.
for d in "${CG_DIRS[@]}"; do
    for stale in "${d%/*}"/nspawn-debian.*; do
        [ -d "$stale" ] && [ -n "$(find "$stale" -maxdepth 0 -mmin +1)" ] || continue
        [ -z "$(find "$stale" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] || continue
        find "$stale" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ -d "$stale" ] || rm -rf "${TMPDIR:-/tmp}/${stale##*/}"
    done
done
for d in "${CG_DIRS[@]}"; do mkdir -p "$d"; done

cleanup() {
    local d i
    pause_open "$WORK/.pause-cleanup" 2>/dev/null || true
    for d in "${CG_DIRS[@]}"; do
        for (( i = 0; i < 250; i++ )); do
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$d" ] || break
            pause 0.02
        done
        [ -d "$d" ] && echo "nspawn-debian.sh: warning: could not remove $d" >&2
        rmdir "${d%/*}" 2>/dev/null || true
    done
    if [ "${NSPAWN_KEEP:-0}" = 1 ]; then
        echo "nspawn-debian.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

set +e
NSPAWN_CG_DIRS=$(IFS=:; echo "${CG_DIRS[*]}") \
    setpriv --pdeathsig KILL \
    unshare --mount --pid --fork --kill-child --propagation private \
    "$SELF" --inner "$WORK" "$ROOT" "${OPTS[@]}" -- "$@" 0<&0 &
UPID=$!
trap 'kill -KILL $UPID 2>/dev/null' INT TERM HUP
{
    while kill -0 $UPID 2>/dev/null; do wait $UPID; done
    wait $UPID
} 2>/dev/null
rc=$?
set -e
[ -f "$WORK/timings" ] && echo "nspawn-debian.sh: $(cat "$WORK/timings") total_s=$(secs $(( $(now) - t0 )))" >&2
exit $rc
