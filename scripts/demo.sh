#!/bin/bash
# scripts/demo.sh: see unitwarden keep services alive, on any machine.
#
#   sudo bash scripts/demo.sh          (DEMO_KEEP=1 keeps the temp dir with logs)
#
# PID 1 does not have to be systemd: the demo starts a private, real
# `systemd --user` manager (tests/harness/user-systemd.sh) in its own PID and
# mount namespaces, with stand-in services for nginx, gunicorn, daphne, celery
# and celerybeat (`sleep infinity`), and runs unitwarden in it as a
# Type=notify service, the way it runs on a real host.  It then kills gunicorn
# with SIGKILL and shows unitwarden bringing it back, and makes daphne's health
# probe fail until its recovery unit (a repair oneshot) has run.  Everything is torn down
# at the end; nothing on the host is touched apart from the temp dir.
#
# Needs root (namespaces and a private cgroup), systemd and dbus-daemon
# installed (not running), and Rust/cargo if the binary has to be built.
set -euo pipefail

RESTART_DEADLINE=20   # seconds to see gunicorn restarted before the demo fails
PROBE_DEADLINE=45     # seconds for daphne's failing probe, its repair and restart
ACTIVE_DEADLINE=15    # seconds for unitwarden.service to become active (READY=1)
STANDINS=(nginx gunicorn daphne celery celerybeat)

say() { printf '%s\n' "$*"; }
heading() { printf '\n== %s ==\n' "$*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

##############################################################################
# inside the private namespace, next to the user manager (see the end of file)
##############################################################################
inner() {
    DEMO_DIR=$1 BIN=$2
    CONFIG=$DEMO_DIR/unitwarden.toml
    LOG=$DEMO_DIR/log/unitwarden.log
    # where the manager log is, for `DEMO_KEEP=1` and for the failure report
    printf 'HARNESS_LOG=%s\nHARNESS_NSPID=%s\n' "$HARNESS_LOG" "$HARNESS_NSPID" > "$DEMO_DIR/harness.env"
    trap 'cp "$HARNESS_LOG" "$DEMO_DIR/manager.log" 2>/dev/null || true' EXIT

    set -E
    trap 'fail "unexpected error (line $LINENO): $BASH_COMMAND"' ERR
    sc() { systemctl --user --no-pager "$@"; }
    status_line() { sc status -n 0 unitwarden 2>/dev/null | grep -m1 '^ *Status:' | sed 's/^ *//' || true; }

    fail() {
        {
            printf '\ndemo: FAILED: %s\n' "$*"
            if [ -e "$LOG" ]; then
                printf -- '--- last lines of %s\n' "$LOG"; tail -n 20 "$LOG"
            fi
            printf -- '--- last lines of the user manager log (systemd + service stderr)\n'
            tail -n 30 "$HARNESS_LOG"
        } >&2
        timeout 10 systemctl --user stop unitwarden >/dev/null 2>&1 || true
        exit 1
    }

    heading "starting stand-ins for ${STANDINS[*]}"
    sc start "${STANDINS[@]}" || fail "could not start the stand-in services"
    for u in "${STANDINS[@]}"; do
        printf '  %-22s %-8s pid %-7s %s\n' "$u.service" "$(sc is-active "$u" || true)" \
            "$(sc show -P MainPID "$u")" "$(sc show -P Description "$u")"
    done

    heading "starting unitwarden.service (Type=notify) in the same manager"
    sc start --no-block unitwarden || fail "systemctl --user start unitwarden refused"
    t0=$(now_ms)
    while :; do
        state=$(sc is-active unitwarden || true)
        [ "$state" = active ] && break
        [ "$state" = failed ] && fail "unitwarden.service failed to start"
        [ $(( $(now_ms) - t0 )) -gt $(( ACTIVE_DEADLINE * 1000 )) ] &&
            fail "unitwarden.service not active after ${ACTIVE_DEADLINE}s (state: $state; no READY=1?)"
        sleep 0.1
    done
    say "  active after $(( $(now_ms) - t0 )) ms (READY=1 is sent after the first check of all units)"

    heading "systemctl --user status unitwarden"
    sc status -l -n 0 unitwarden | sed 's/^/  /' || true
    [ -n "$(status_line)" ] || fail "no Status: line in systemctl status (no STATUS= from unitwarden?)"

    heading "killing gunicorn with SIGKILL"
    old_pid=$(sc show -P MainPID gunicorn)
    seen=$(grep -c 'unit=gunicorn.service.*result=restarted' "$LOG" 2>/dev/null || true)
    say "  systemctl --user kill -s KILL gunicorn   (main PID $old_pid)"
    sc kill -s KILL gunicorn || fail "could not kill gunicorn"
    t0=$(now_ms)
    shown_down=no shown_restarting=no
    while :; do
        n=$(grep -c 'unit=gunicorn.service.*result=restarted' "$LOG" 2>/dev/null || true)
        [ "${n:-0}" -gt "${seen:-0}" ] && break
        if [ $shown_down = no ] && [ "$(sc is-active gunicorn || true)" = failed ]; then
            say "  gunicorn.service is now: $(sc show -P ActiveState gunicorn) (Result=$(sc show -P Result gunicorn)); systemd will not restart it (no Restart=)"
            shown_down=yes
        fi
        if [ $shown_restarting = no ]; then
            s=$(status_line)
            case $s in *restarting*gunicorn*) say "  unitwarden $s"; shown_restarting=yes ;; esac
        fi
        [ $(( $(now_ms) - t0 )) -gt $(( RESTART_DEADLINE * 1000 )) ] &&
            fail "unitwarden did not log 'unit=gunicorn.service ... result=restarted' within ${RESTART_DEADLINE}s"
        sleep 0.1
    done
    elapsed=$(( $(now_ms) - t0 ))
    say "  restarted and verified after $(( elapsed / 1000 )).$(( elapsed % 1000 / 100 ))s: gunicorn.service is $(sc is-active gunicorn || true), main PID $(sc show -P MainPID gunicorn)"

    heading "grep gunicorn $LOG"
    grep 'gunicorn' "$LOG" | sed 's/^/  /'

    heading "status after the restart"
    say "  $(status_line)"

    heading "systemctl --user stop celery   (an operator's stop: respected, reported once)"
    sc stop celery || fail "could not stop celery"
    t0=$(now_ms)
    until grep -q 'unit=celery.service.*action=operator_stop' "$LOG" 2>/dev/null; do
        [ $(( $(now_ms) - t0 )) -gt $(( RESTART_DEADLINE * 1000 )) ] &&
            fail "unitwarden did not log the operator's stop of celery within ${RESTART_DEADLINE}s"
        sleep 0.1
    done
    grep 'unit=celery.service.*action=operator_stop' "$LOG" | sed 's/^/  /'

    heading "unitwarden pause nginx --for 30m   (maintenance: watched, not restarted)"
    "$BIN" pause nginx --for 30m --config "$CONFIG" | sed 's/^/  /' || fail "unitwarden pause failed"

    heading "unitwarden status"
    "$BIN" status --config "$CONFIG" | sed 's/^/  /' || fail "unitwarden status failed"

    heading "unitwarden resume nginx; systemctl --user start celery"
    "$BIN" resume nginx --config "$CONFIG" | sed 's/^/  /' || fail "unitwarden resume failed"
    sc start celery || fail "could not start celery"

    heading "daphne's health check starts failing   (a probe and a recovery unit)"
    say "  daphne.service stays active, but its exec probe (test -e $DEMO_DIR/daphne-ok) now fails;"
    say "  in demo-window one failed probe is enough (failures = 1). Restarting alone will not fix it:"
    say "  daphne-repair.service (a oneshot that puts the file back) runs after the first attempt."
    rm -f "$DEMO_DIR/daphne-ok"
    t0=$(now_ms)
    until grep -q 'unit=daphne.service.*attempt=2/3 result=restarted' "$LOG" 2>/dev/null; do
        [ $(( $(now_ms) - t0 )) -gt $(( PROBE_DEADLINE * 1000 )) ] &&
            fail "unitwarden did not probe, repair and restart daphne within ${PROBE_DEADLINE}s"
        sleep 0.1
    done
    grep 'unit=daphne.service' "$LOG" | grep -v 'watching' | sed 's/^/  /'
    say "  daphne-repair.service ran $(wc -l < "$DEMO_DIR/repair-runs") time(s)"

    heading "unitwarden windows --next 2"
    "$BIN" windows --next 2 --config "$CONFIG" | sed 's/^/  /' || fail "unitwarden windows failed"

    heading "unitwarden check-config"
    "$BIN" check-config --config "$CONFIG" | sed 's/^/  /' || fail "unitwarden check-config failed"

    heading "stopping unitwarden (SIGTERM; it answers STOPPING=1 and exits 0)"
    timeout 20 systemctl --user stop unitwarden || fail "systemctl --user stop unitwarden failed"
    result=$(sc show -P Result unitwarden) main_status=$(sc show -P ExecMainStatus unitwarden)
    say "  unitwarden.service: $(sc is-active unitwarden || true), Result=$result, exit status $main_status"
    [ "$result" = success ] && [ "$main_status" = 0 ] || fail "unitwarden did not stop cleanly"
    tail -n 2 "$LOG" | sed 's/^/  /'
}

if [ "${1:-}" = --inner ]; then
    shift
    exec 1>&3 3>&-      # our stdout (the harness's own goes to /dev/null)
    inner "$@"
    exit 0
fi

##############################################################################
# outside: checks, build, files, then run `inner` in the harness
##############################################################################
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
HARNESS=$ROOT/tests/harness/user-systemd.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/release/unitwarden
T_START=$(now_ms)

[ "$(id -u)" = 0 ] || die "must run as root: it starts a private systemd --user in its own namespaces and cgroup.
      Run: sudo bash scripts/demo.sh"
[ -f "$HARNESS" ] || die "missing $HARNESS (run from a full checkout)"
# The paths end up in unit files and TOML strings: keep them plain.
for p in "$BIN" "${TMPDIR:-/tmp}"; do
    [[ $p =~ ^[A-Za-z0-9_./@+-]+$ ]] || die "path '$p' has characters the demo does not handle (spaces, quotes, %); move the checkout or set TMPDIR"
done

DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/unitwarden-demo.XXXXXX")
cleanup() {
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        say "demo: kept $DEMO_DIR (config, units, log/, state/, manager.log)"
    else
        rm -rf "$DEMO_DIR"
    fi
}
trap cleanup EXIT

say "unitwarden demo: a private systemd --user manager, five stand-in services, unitwarden watching them"

# --- build if missing or stale -------------------------------------------------
stale=""
if [ ! -x "$BIN" ]; then
    stale="not built yet"
elif [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" $( [ -e "$ROOT/build.rs" ] && echo "$ROOT/build.rs") \
             -newer "$BIN" -print -quit 2>/dev/null)" ]; then
    stale="sources changed"
fi
if [ -n "$stale" ]; then
    heading "building unitwarden ($stale): cargo build --release --locked"
    [ -x "$BIN" ] || say "  (the first build takes a few minutes)"
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ "$(stat -c %U "$ROOT")" = "$SUDO_USER" ]; then
        # Under sudo, build as the owner of the checkout (a login shell finds
        # their rustup toolchain), so target/ does not fill up with root's files.
        build=(runuser -u "$SUDO_USER" -- bash -lc 'cd "$1" && cargo build --release --locked --quiet' demo-build "$ROOT")
    else
        CARGO=$(command -v cargo || true)
        [ -z "$CARGO" ] && [ -x "${HOME:-/root}/.cargo/bin/cargo" ] && CARGO=${HOME:-/root}/.cargo/bin/cargo
        [ -n "$CARGO" ] || die "cargo not found: install Rust (https://rustup.rs), or build first with
      cargo build --release --locked   and re-run the demo"
        build=(bash -c 'cd "$1" && "$2" build --release --locked --quiet' demo-build "$ROOT" "$CARGO")
    fi
    if ! "${build[@]}" > "$DEMO_DIR/build.log" 2>&1; then
        tail -n 40 "$DEMO_DIR/build.log" >&2
        die "the build failed (output above); fix it or build by hand: cargo build --release --locked"
    fi
    [ -x "$BIN" ] || die "the build succeeded but $BIN is missing"
fi

# --- stand-in units, unitwarden's unit and config --------------------------------
mkdir -p "$DEMO_DIR/units" "$DEMO_DIR/log" "$DEMO_DIR/state"
declare -A REAL=(
    [nginx]="nginx (HTTP front end and reverse proxy)"
    [gunicorn]="gunicorn (Django WSGI application server)"
    [daphne]="daphne (Django ASGI server for websockets)"
    [celery]="celery (background task workers)"
    [celerybeat]="celerybeat (periodic task scheduler)"
)
for u in "${STANDINS[@]}"; do
    cat > "$DEMO_DIR/units/$u.service" <<EOF
# Demo stand-in.  No Restart=: when it dies, systemd leaves it failed and
# unitwarden is the one that brings it back.
[Unit]
Description=Stand-in for ${REAL[$u]}

[Service]
ExecStart=/bin/sleep infinity
EOF
done

# daphne's repair: what a site's backend-restart.service does, here putting back the file
# daphne's health check looks for.
cat > "$DEMO_DIR/units/daphne-repair.service" <<EOF
[Unit]
Description=Repair for the daphne stand-in (a site's repair script)

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'touch $DEMO_DIR/daphne-ok; echo ran >> $DEMO_DIR/repair-runs'
EOF
touch "$DEMO_DIR/daphne-ok"

# unitwarden itself, inside the private manager, as on a real host
# (systemd/unitwarden.service), but watching the user manager's units.
cat > "$DEMO_DIR/units/unitwarden.service" <<EOF
[Unit]
Description=unitwarden watchdog (demo, watching the stand-ins)

[Service]
Type=notify
ExecStart=$BIN run --config $DEMO_DIR/unitwarden.toml
ExecReload=/bin/kill -HUP \$MAINPID
# bus = "user": the private manager's bus (%t = its XDG_RUNTIME_DIR)
Environment=DBUS_SESSION_BUS_ADDRESS=unix:path=%t/bus
WatchdogSec=30s
TimeoutStartSec=${ACTIVE_DEADLINE}s
TimeoutStopSec=10s
EOF

# A critical window that is active now: from this minute to 10 minutes later.
WIN_START=$(date +%H:%M)
WIN_END=$(date -d '+10 minutes' +%H:%M)
cat > "$DEMO_DIR/unitwarden.toml" <<EOF
# unitwarden demo configuration (see config/unitwarden.toml for a real host)
[daemon]
bus = "user"
interval = "30s"
log_dir = "$DEMO_DIR/log"
state_dir = "$DEMO_DIR/state"
control_socket = "$DEMO_DIR/control.sock"   # unitwarden status --config $DEMO_DIR/unitwarden.toml

[restart]
backoff_initial = "1s"      # first attempt 1s after the unit is seen down
verify_after = "2s"         # ... and it must still be active 2s later

# Active right now, so the demo shows window mode (checks every 5s).
[[window]]
name = "demo-window"
start = "$WIN_START"
end = "$WIN_END"
interval = "5s"
failures = 1                # while it lasts, one failed probe makes a unit down

$(for u in nginx gunicorn celery celerybeat; do printf '[[unit]]\nname = "%s"\n\n' "$u"; done)
[[unit]]
name = "daphne"
recovery_unit = "daphne-repair"   # runs once per episode, after the first failed attempt
[unit.probe]
exec = ["/bin/test", "-e", "$DEMO_DIR/daphne-ok"]   # on a real host: http = "http://127.0.0.1:8001/health/"
failures = 2
grace = "1s"
timeout = "2s"
EOF

# --- run ---------------------------------------------------------------------------
# Run a snapshot of the harness: bash reads a script as it goes, so editing the
# harness while a demo runs would otherwise break that run.
cp "$HARNESS" "$DEMO_DIR/user-systemd.sh"
# The harness prints one HARNESS_READY line on stdout for programs that drive
# it; the demo does not want it.  Its stdout goes to /dev/null and `inner`
# writes to fd 3, our real stdout.
# Ctrl-C / SIGTERM: the harness's TERM handler kills the whole namespace.
interrupted=""
trap 'interrupted=yes; kill -TERM "$HPID" 2>/dev/null' INT TERM HUP
HARNESS_QUIET=1 bash "$DEMO_DIR/user-systemd.sh" "$DEMO_DIR/units" -- \
    bash "$SELF" --inner "$DEMO_DIR" "$BIN" 3>&1 >/dev/null &
HPID=$!
while :; do
    rc=0; wait "$HPID" || rc=$?
    kill -0 "$HPID" 2>/dev/null || break    # else: wait was cut short by a signal
done
trap - INT TERM HUP
[ -z "$interrupted" ] || die "interrupted; the private manager and everything in it are gone"
case $rc in
    0) ;;
    125) die "the harness could not start a private systemd --user (reason above).
      It needs (Debian packages): systemd dbus-daemon util-linux bsdutils" ;;
    *) hint=""
       [ "${DEMO_KEEP:-0}" = 1 ] || hint="  (DEMO_KEEP=1 keeps the config, logs and manager log)"
       die "FAILED (exit $rc); see above.$hint" ;;
esac
elapsed=$(( $(now_ms) - T_START ))
heading "done in $(( elapsed / 1000 )).$(( elapsed % 1000 / 100 ))s; the private manager, its services and cgroups are gone"
