#!/bin/bash
# bench/restart-latency.sh — how fast a SIGKILLed service comes back, and what watching costs,
# for systemd alone, a shell loop, monit and unitwarden, side by side against one real
# `systemd --user` manager (tests/harness/user-systemd.sh). See bench/README.md.
#
#   bench/restart-latency.sh            (root; ~5.5 min at the defaults, plus the build)
#
# Knobs (environment):
#   BENCH_KILLS=50          kills per watcher
#   BENCH_IDLE=60           seconds of each idle-cost window (shell loop, monit, unitwarden)
#   BENCH_IDLE_BASE=5       seconds of the no-watcher baseline window (0: skip)
#   BENCH_IDLE_UNITS=6      healthy units watched during the idle windows
#   BENCH_UW_INTERVAL=1s    unitwarden's interval during its idle window
#   BENCH_SERIAL=0          1: measure the shell loop and monit one after the other instead of
#                           concurrently (on separate units); adds ~1 min
#   BENCH_BIN=PATH          unitwarden binary to measure (default: cargo build --release, then
#                           target/release/unitwarden)
#   BENCH_OUT=DIR           where the table and raw results go (default target/bench)
#
# Output: the table on stdout and in $BENCH_OUT/restart-latency.txt; the raw per-kill and
# per-window measurements in $BENCH_OUT/restart-latency.jsonl.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
PROBE=$HERE/probe.py

KILLS=${BENCH_KILLS:-50}
IDLE=${BENCH_IDLE:-60}
IDLE_BASE=${BENCH_IDLE_BASE:-5}
IDLE_UNITS=${BENCH_IDLE_UNITS:-6}
UW_INTERVAL=${BENCH_UW_INTERVAL:-1s}
SERIAL=${BENCH_SERIAL:-0}
OUT=${BENCH_OUT:-$ROOT/target/bench}

die() { echo "restart-latency.sh: $*" >&2; exit 1; }
say() { echo "[bench $(date +%T)] $*" >&2; }

for v in KILLS IDLE IDLE_BASE IDLE_UNITS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number (got '${!v}')"
done
[ "$KILLS" -ge 1 ] && [ "$IDLE_UNITS" -ge 1 ] || die "BENCH_KILLS and BENCH_IDLE_UNITS must be at least 1"

##############################################################################
# outer part: prerequisites, build, then re-exec inside the harness
##############################################################################
if [ "${1:-}" != --inner ]; then
    [ "$EUID" = 0 ] || die "must run as root (the harness needs namespaces and cgroups; monit is installed with apt-get)"
    command -v python3 >/dev/null || die "python3 is required (standard library only)"
    if ! command -v monit >/dev/null; then
        say "monit not found; installing it (apt-get install -y monit)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y monit >&2; then
            DEBIAN_FRONTEND=noninteractive apt-get update >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y monit >&2 ||
                die "cannot install monit with apt-get; install it by hand and run again"
        fi
        command -v monit >/dev/null || die "monit still not on PATH after apt-get install"
    fi
    if [ -z "${BENCH_BIN:-}" ]; then
        say "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BENCH_BIN=$ROOT/target/release/unitwarden
    fi
    [ -x "$BENCH_BIN" ] || die "no unitwarden binary at $BENCH_BIN"
    export BENCH_BIN=$(readlink -f "$BENCH_BIN")
    mkdir -p "$OUT"
    export BENCH_OUT=$(readlink -f "$OUT")
    rm -f "$BENCH_OUT/restart-latency.txt" "$BENCH_OUT/restart-latency.jsonl"
    # The harness prints one HARNESS_READY line on stdout; our inner part reports on stderr and
    # writes the table to a file, so stdout is dropped here and the table printed at the end.
    set +e
    HARNESS_QUIET=1 "$ROOT/tests/harness/user-systemd.sh" -- bash "$SELF" --inner >/dev/null
    rc=$?
    set -e
    [ "$rc" = 0 ] || die "benchmark failed (exit $rc)"
    [ -s "$BENCH_OUT/restart-latency.txt" ] || die "no results written"
    cat "$BENCH_OUT/restart-latency.txt"
    exit 0
fi

##############################################################################
# inner part: runs inside the harness namespace, next to systemd --user
##############################################################################
: "${HARNESS_UNITDIR:?run me through bench/restart-latency.sh, not with --inner}"
B=$HOME/bench                    # inside the harness work dir (on disk; removed with it)
UD=$HARNESS_UNITDIR
RESULTS=$B/results.jsonl
mkdir -p "$B"
: > "$RESULTS"
RUN_ENV="Environment=XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS"

# Stop whatever watcher is still running if we fail half-way (the namespace dies with us anyway).
trap 'systemctl --user stop "watch-*.service" >/dev/null 2>&1 || true' EXIT

# --- units -------------------------------------------------------------------
victim() {  # victim NAME [extra [Service] lines]
    local name=$1; shift
    {
        printf '[Unit]\nDescription=benchmark victim\n# no start rate limit: 50 restarts in a row are the point\nStartLimitIntervalSec=0\n'
        printf '[Service]\nExecStart=/bin/sleep infinity\n'
        printf '%s\n' "$@"
    } > "$UD/$name.service"
}
victim bench-systemd Restart=always RestartSec=0
victim bench-shell
victim bench-monit
victim bench-unitwarden
IDLE_LIST=()
for i in $(seq 1 "$IDLE_UNITS"); do
    victim "idle-$i"
    IDLE_LIST+=("idle-$i.service")
done

# the shell loop under test: one round = every unit checked once, then `sleep 1`
cat > "$B/shell-loop.sh" <<'EOF'
#!/bin/bash
counter=$1; shift
while :; do
    for u in "$@"; do
        systemctl --user is-active -q "$u" || systemctl --user restart "$u"
    done
    printf . >>"$counter"
    sleep 1
done
EOF

watcher_unit() {  # watcher_unit NAME TYPE EXEC...
    local name=$1 type=$2; shift 2
    cat > "$UD/watch-$name.service" <<EOF
[Unit]
Description=benchmark watcher $name
[Service]
Type=$type
NotifyAccess=main
$RUN_ENV
ExecStart=$*
TimeoutStartSec=15s
TimeoutStopSec=5s
EOF
}

monitrc() {  # monitrc NAME UNIT... -> control file for monit, in its own temp dir
    local name=$1 d=$B/monit-$1; shift
    mkdir -p "$d"
    {
        echo "set daemon 1"
        echo "set log $d/monit.log"
        echo "set pidfile $d/monit.pid"
        echo "set idfile $d/monit.id"
        echo "set statefile $d/monit.state"
        for u in "$@"; do
            echo "check program ${u%.service} with path \"/usr/bin/systemctl --user is-active -q $u\""
            echo "    restart program = \"/usr/bin/systemctl --user restart $u\""
            echo "    if status != 0 then restart"
        done
    } > "$d/monitrc"
    chmod 600 "$d/monitrc"     # monit refuses a control file others can read
    echo "$d/monitrc"
}

uwconfig() {  # uwconfig NAME INTERVAL UNIT... -> unitwarden config path
    local name=$1 interval=$2 d=$B/uw-$1; shift 2
    mkdir -p "$d"
    {
        cat <<EOF
[daemon]
bus = "user"
interval = "$interval"
log_dir = "$d/log"
log_rotation = "never"
state_dir = "$d/state"
control_socket = "$d/control.sock"

[restart]
max_attempts = 1000
backoff_initial = "0s"
verify_after = "250ms"
reset_after = "1h"
EOF
        for u in "$@"; do printf '\n[[unit]]\nname = "%s"\n' "$u"; done
    } > "$d/unitwarden.toml"
    echo "$d/unitwarden.toml"
}

watcher_unit shell-lat simple /bin/bash "$B/shell-loop.sh" "$B/shell-lat.count" bench-shell.service
watcher_unit shell-idle simple /bin/bash "$B/shell-loop.sh" "$B/shell-idle.count" "${IDLE_LIST[@]}"
watcher_unit monit-lat simple /usr/bin/monit -I -c "$(monitrc lat bench-monit.service)"
watcher_unit monit-idle simple /usr/bin/monit -I -c "$(monitrc idle "${IDLE_LIST[@]}")"
watcher_unit unitwarden-lat notify "$BENCH_BIN" run --config "$(uwconfig lat 60s bench-unitwarden.service)"
watcher_unit unitwarden-idle notify "$BENCH_BIN" run --config "$(uwconfig idle "$UW_INTERVAL" "${IDLE_LIST[@]}")"
"$BENCH_BIN" check-config --config "$B/uw-idle/unitwarden.toml" >/dev/null ||
    die "unitwarden rejects the benchmark config (see above)"

systemctl --user daemon-reload
systemctl --user start bench-systemd.service bench-shell.service bench-monit.service \
    bench-unitwarden.service "${IDLE_LIST[@]}"

mainpid() { systemctl --user show -p MainPID --value "$1"; }
record() {  # record TYPE NAME JSONFILE [EXTRA_JSON]
    python3 -c 'import json,sys; t,n,f=sys.argv[1:4]; r={"type":t,"name":n,"data":json.load(open(f))}; r.update(json.loads(sys.argv[4]) if len(sys.argv)>4 else {}); print(json.dumps(r))' \
        "$@" >> "$RESULTS"
}
memjson() {  # memjson PID -> {"mem_kb": {...}}
    awk '/^VmRSS:|^VmHWM:/ {sub(":", "", $1); v[$1]=$2} END {printf "{\"mem_kb\": {\"VmRSS\": %d, \"VmHWM\": %d}}", v["VmRSS"], v["VmHWM"]}' "/proc/$1/status"
}
start_watcher() {  # start_watcher NAME: Type=notify returns once READY=1 was sent
    systemctl --user start "watch-$1.service" || die "watcher $1 did not start (log: $HARNESS_LOG)"
}
stop_watcher() { systemctl --user stop "watch-$1.service" || true; }

# --- header --------------------------------------------------------------------
{
    echo "unitwarden restart-latency benchmark   $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "machine:    $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r), $(free -m | awk '/^Mem:/ {print $2}') MiB RAM"
    echo "systemd:    $(systemctl --version | head -1) (private systemd --user via tests/harness/user-systemd.sh)"
    echo "monit:      $(monit -V | head -1)"
    echo "unitwarden: $("$BENCH_BIN" --version) at $BENCH_BIN ($(date -r "$BENCH_BIN" '+%Y-%m-%d %H:%M'))$(cd "$ROOT" && rev=$(git rev-parse --short HEAD 2>/dev/null) && echo ", tree $rev$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo +changes)")"
    read -r l1 l5 l15 _ < /proc/loadavg
    echo "load:       $l1 $l5 $l15 at start (1/5/15 min; other work on the machine shows up in the tails)"
    echo "settings:   BENCH_KILLS=$KILLS BENCH_IDLE=${IDLE}s BENCH_IDLE_UNITS=$IDLE_UNITS BENCH_UW_INTERVAL=$UW_INTERVAL BENCH_SERIAL=$SERIAL"
} > "$B/header.txt"

# --- restart latency -------------------------------------------------------------
say "a) systemd Restart=always: $KILLS kills"
python3 "$PROBE" latency --unit bench-systemd.service --kills "$KILLS" --out "$B/lat-systemd.json"
record latency systemd "$B/lat-systemd.json"

say "d) unitwarden: $KILLS kills"
start_watcher unitwarden-lat
python3 "$PROBE" latency --unit bench-unitwarden.service --kills "$KILLS" \
    --log "$B/uw-lat/log/unitwarden.log" --out "$B/lat-unitwarden.json"
record latency unitwarden "$B/lat-unitwarden.json" "$(memjson "$(mainpid watch-unitwarden-lat.service)")"
stop_watcher unitwarden-lat

# The pollers: the kill lands at a uniformly random phase of their 1 s period (gap 0.05-1.05 s).
poller_phase() {  # poller_phase NAME
    start_watcher "$1-lat"
    python3 "$PROBE" latency --unit "bench-$1.service" --kills "$KILLS" --gap-min 0.05 --gap-max 1.05 \
        --out "$B/lat-$1.json"
}
if [ "$SERIAL" = 1 ]; then
    say "b) shell loop: $KILLS kills"
    poller_phase shell; stop_watcher shell-lat
    say "c) monit: $KILLS kills"
    poller_phase monit; stop_watcher monit-lat
else
    say "b) shell loop and c) monit, concurrently on separate units: $KILLS kills each"
    poller_phase shell & p1=$!
    poller_phase monit & p2=$!
    wait $p1 || die "shell loop phase failed"
    wait $p2 || die "monit phase failed"
    stop_watcher shell-lat; stop_watcher monit-lat
fi
record latency shell "$B/lat-shell.json"
record latency monit "$B/lat-monit.json"

# --- cost of checking while healthy ------------------------------------------------
idle_phase() {  # idle_phase KIND WINDOW [WATCHER_NAME [COUNTER]]
    local kind=$1 window=$2 w=${3:-} counter=${4:-} args=()
    if [ -n "$w" ]; then
        start_watcher "$w"
        # settle: first pass done, start-up allocations over
        sleep 1.5
        args+=(--watcher-pid "$(mainpid "watch-$w.service")")
    fi
    [ -n "$counter" ] && args+=(--counter "$counter")
    [ "$kind" = unitwarden ] && args+=(--interval "$UW_INTERVAL")
    python3 "$PROBE" idle --kind "$kind" --window "$window" --units "${IDLE_LIST[@]}" \
        --out "$B/idle-$kind.json" "${args[@]}"
    record idle "$kind" "$B/idle-$kind.json"
    [ -n "$w" ] && stop_watcher "$w"
    return 0
}
if [ "$IDLE_BASE" -gt 0 ]; then
    say "idle: no watcher, ${IDLE_BASE}s"
    idle_phase none "$IDLE_BASE"
fi
say "idle: shell loop, ${IDLE}s"
idle_phase shell "$IDLE" shell-idle "$B/shell-idle.count"
say "idle: monit, ${IDLE}s"
idle_phase monit "$IDLE" monit-idle
say "idle: unitwarden (interval $UW_INTERVAL), ${IDLE}s"
idle_phase unitwarden "$IDLE" unitwarden-idle

# --- report ---------------------------------------------------------------------------
python3 "$PROBE" report --results "$RESULTS" --header "$B/header.txt" > "$B/table.txt"
read -r l1 l5 l15 _ < /proc/loadavg
echo "   load average at the end: $l1 $l5 $l15" >> "$B/table.txt"
cp "$RESULTS" "$BENCH_OUT/restart-latency.jsonl"
cp "$B/table.txt" "$BENCH_OUT/restart-latency.txt.tmp"
mv "$BENCH_OUT/restart-latency.txt.tmp" "$BENCH_OUT/restart-latency.txt"
say "done"
