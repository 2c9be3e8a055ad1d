#!/bin/bash
# bench/restart-latency.sh — how fast a SIGKILLed service comes back, and what watching costs,
# for systemd alone, a shell loop, monit and unitwarden, side by side against one real
# `systemd --user` manager (tests/harness/user-systemd.sh), with a bare D-Bus client as the
# floor for restarting from outside; then what unitwarden costs with 10, 100 and 1000 watched
# units. See bench/README.md.
#
#   bench/restart-latency.sh            (root; ~9.5 min at the defaults, plus the build)
#
# Knobs (environment):
#   BENCH_KILLS=100         kills for systemd, unitwarden and the bare D-Bus client
#   BENCH_PEER_KILLS=50     kills for the shell loop and monit
#   BENCH_PEERS=1           0: skip the shell loop and monit (latency and idle rows; no monit needed)
#   BENCH_IDLE=60           seconds of each idle-cost window (shell loop, monit, unitwarden)
#   BENCH_IDLE_BASE=5       seconds of the no-watcher baseline window (0: skip)
#   BENCH_IDLE_UNITS=6      healthy units watched during the idle windows
#   BENCH_UW_INTERVAL=1s    unitwarden's interval during its idle window
#   BENCH_SERIAL=0          1: measure the shell loop and monit one after the other instead of
#                           concurrently (on separate units); adds ~1 min
#   BENCH_SCALE=1           0: skip the scale section
#   BENCH_SCALE_UNITS="10 100 1000"  sizes of the scale section (healthy units watched)
#   BENCH_SCALE_WINDOW=60   seconds of each scale window
#   BENCH_SCALE_INTERVAL=5s unitwarden's interval in the scale section
#   BENCH_SCALE_GLOB=0      1: also measure the largest size with one glob entry instead of
#                           N names (adds ~70 s)
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

KILLS=${BENCH_KILLS:-100}
PEER_KILLS=${BENCH_PEER_KILLS:-50}
PEERS=${BENCH_PEERS:-1}
IDLE=${BENCH_IDLE:-60}
IDLE_BASE=${BENCH_IDLE_BASE:-5}
IDLE_UNITS=${BENCH_IDLE_UNITS:-6}
UW_INTERVAL=${BENCH_UW_INTERVAL:-1s}
SERIAL=${BENCH_SERIAL:-0}
SCALE=${BENCH_SCALE:-1}
SCALE_UNITS=${BENCH_SCALE_UNITS:-10 100 1000}
SCALE_WINDOW=${BENCH_SCALE_WINDOW:-60}
SCALE_INTERVAL=${BENCH_SCALE_INTERVAL:-5s}
SCALE_GLOB=${BENCH_SCALE_GLOB:-0}
SCALE_BATCH=250                  # instances per `systemctl --user start` call
OUT=${BENCH_OUT:-$ROOT/target/bench}

die() { echo "restart-latency.sh: $*" >&2; exit 1; }
say() { echo "[bench $(date +%T)] $*" >&2; }

for v in KILLS PEER_KILLS IDLE IDLE_BASE IDLE_UNITS SCALE_WINDOW; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number (got '${!v}')"
done
[ "$KILLS" -ge 1 ] && [ "$PEER_KILLS" -ge 1 ] && [ "$IDLE_UNITS" -ge 1 ] ||
    die "BENCH_KILLS, BENCH_PEER_KILLS and BENCH_IDLE_UNITS must be at least 1"
for v in PEERS SERIAL SCALE SCALE_GLOB; do
    [[ ${!v} =~ ^[01]$ ]] || die "BENCH_$v must be 0 or 1 (got '${!v}')"
done
read -r -a SCALE_SIZES <<< "$SCALE_UNITS"
if [ "$SCALE" = 1 ]; then
    [ ${#SCALE_SIZES[@]} -ge 1 ] || die "BENCH_SCALE_UNITS is empty (use BENCH_SCALE=0 to skip the scale section)"
    for n in "${SCALE_SIZES[@]}"; do
        [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE_UNITS must be whole numbers >= 1 (got '$n')"
    done
    [ "$SCALE_WINDOW" -ge 1 ] || die "BENCH_SCALE_WINDOW must be at least 1"
    [[ $SCALE_INTERVAL =~ ^[0-9]+(ms|s|m)$ ]] || die "BENCH_SCALE_INTERVAL must look like 5s, 500ms or 1m (got '$SCALE_INTERVAL')"
fi

##############################################################################
# outer part: prerequisites, build, then re-exec inside the harness
##############################################################################
if [ "${1:-}" != --inner ]; then
    [ "$EUID" = 0 ] || die "must run as root (the harness needs namespaces and cgroups; monit is installed with apt-get)"
    command -v python3 >/dev/null || die "python3 is required (standard library only)"
    if [ "$PEERS" = 1 ] && ! command -v monit >/dev/null; then
        say "monit not found; installing it (apt-get install -y monit)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y monit >&2; then
            DEBIAN_FRONTEND=noninteractive apt-get update >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y monit >&2 ||
                die "cannot install monit with apt-get; install it by hand and run again"
        fi
        command -v monit >/dev/null || die "monit still not on PATH after apt-get install (or skip it: BENCH_PEERS=0)"
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
victim bench-floor               # e) restarted by probe.py floor itself
victim bench-churn               # scale section: an unwatched unit that changes
IDLE_LIST=()
for i in $(seq 1 "$IDLE_UNITS"); do
    victim "idle-$i"
    IDLE_LIST+=("idle-$i.service")
done
# the scale section's healthy units: instances bench-scale@1..N of one template
printf '[Unit]\nDescription=benchmark scale instance %%i\n[Service]\nExecStart=/bin/sleep infinity\n' \
    > "$UD/bench-scale@.service"

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
if [ "$SCALE" = 1 ]; then
    SCALE_MAX=0
    for n in "${SCALE_SIZES[@]}"; do
        [ "$n" -gt "$SCALE_MAX" ] && SCALE_MAX=$n
        seq -f 'bench-scale@%.0f.service' 1 "$n" > "$B/scale-$n.units"
        # shellcheck disable=SC2046  # one argument per unit name
        watcher_unit "uw-scale-$n" notify "$BENCH_BIN" run \
            --config "$(uwconfig "scale-$n" "$SCALE_INTERVAL" $(cat "$B/scale-$n.units"))"
    done
    watcher_unit "uw-scale-$SCALE_MAX-glob" notify "$BENCH_BIN" run \
        --config "$(uwconfig "scale-$SCALE_MAX-glob" "$SCALE_INTERVAL" 'bench-scale@*.service')"
    # the starts of a 1000-unit config may take a moment: READY only after the first pass
    sed -i 's/^TimeoutStartSec=15s$/TimeoutStartSec=60s/' "$UD"/watch-uw-scale-*.service
    for c in "$B"/uw-scale-*/unitwarden.toml; do
        "$BENCH_BIN" check-config --config "$c" >/dev/null || die "unitwarden rejects $c (see above)"
    done
fi

systemctl --user daemon-reload
VICTIMS=(bench-systemd.service bench-unitwarden.service bench-floor.service)
[ "$PEERS" = 1 ] && VICTIMS+=(bench-shell.service bench-monit.service)
[ "$SCALE" = 1 ] && VICTIMS+=(bench-churn.service)
systemctl --user start "${VICTIMS[@]}" "${IDLE_LIST[@]}"

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
    [ "$PEERS" = 1 ] && echo "monit:      $(monit -V | head -1)"
    echo "unitwarden: $("$BENCH_BIN" --version) at $BENCH_BIN ($(date -r "$BENCH_BIN" '+%Y-%m-%d %H:%M'))$(cd "$ROOT" && rev=$(git rev-parse --short HEAD 2>/dev/null) && echo ", tree $rev$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo +changes)")"
    read -r l1 l5 l15 _ < /proc/loadavg
    echo "load:       $l1 $l5 $l15 at start (1/5/15 min; other work on the machine shows up in the tails)"
    echo "settings:   BENCH_KILLS=$KILLS BENCH_PEER_KILLS=$PEER_KILLS BENCH_PEERS=$PEERS BENCH_IDLE=${IDLE}s BENCH_IDLE_BASE=${IDLE_BASE}s"
    echo "            BENCH_IDLE_UNITS=$IDLE_UNITS BENCH_UW_INTERVAL=$UW_INTERVAL BENCH_SERIAL=$SERIAL BENCH_SCALE=$SCALE$(
        [ "$SCALE" = 1 ] && echo " BENCH_SCALE_UNITS=\"$SCALE_UNITS\" BENCH_SCALE_WINDOW=${SCALE_WINDOW}s BENCH_SCALE_INTERVAL=$SCALE_INTERVAL BENCH_SCALE_GLOB=$SCALE_GLOB")"
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

say "e) bare D-Bus client: $KILLS kills"
python3 "$PROBE" floor --unit bench-floor.service --kills "$KILLS" --out "$B/lat-floor.json"
record latency floor "$B/lat-floor.json"

# The pollers: the kill lands at a uniformly random phase of their 1 s period (gap 0.05-1.05 s).
poller_phase() {  # poller_phase NAME
    start_watcher "$1-lat"
    python3 "$PROBE" latency --unit "bench-$1.service" --kills "$PEER_KILLS" --gap-min 0.05 --gap-max 1.05 \
        --out "$B/lat-$1.json"
}
if [ "$PEERS" = 0 ]; then
    say "b) shell loop and c) monit: skipped (BENCH_PEERS=0)"
elif [ "$SERIAL" = 1 ]; then
    say "b) shell loop: $PEER_KILLS kills"
    poller_phase shell; stop_watcher shell-lat
    say "c) monit: $PEER_KILLS kills"
    poller_phase monit; stop_watcher monit-lat
else
    say "b) shell loop and c) monit, concurrently on separate units: $PEER_KILLS kills each"
    poller_phase shell & p1=$!
    poller_phase monit & p2=$!
    wait $p1 || die "shell loop phase failed"
    wait $p2 || die "monit phase failed"
    stop_watcher shell-lat; stop_watcher monit-lat
fi
if [ "$PEERS" = 1 ]; then
    record latency shell "$B/lat-shell.json"
    record latency monit "$B/lat-monit.json"
fi

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
if [ "$PEERS" = 1 ]; then
    say "idle: shell loop, ${IDLE}s"
    idle_phase shell "$IDLE" shell-idle "$B/shell-idle.count"
    say "idle: monit, ${IDLE}s"
    idle_phase monit "$IDLE" monit-idle
fi
say "idle: unitwarden (interval $UW_INTERVAL), ${IDLE}s"
idle_phase unitwarden "$IDLE" unitwarden-idle

# --- scale: what unitwarden costs with 10, 100, 1000 watched units ----------------------
usecs() { echo "${EPOCHREALTIME/[.,]/}"; }
SCALE_UP=0                       # instances bench-scale@1..SCALE_UP are running
scale_to() {  # scale_to N: exactly bench-scale@1..N running (started SCALE_BATCH per call)
    local n=$1 t0 s e action count
    t0=$(usecs)
    if [ "$n" -gt "$SCALE_UP" ]; then
        for (( s = SCALE_UP + 1; s <= n; s += SCALE_BATCH )); do
            e=$(( s + SCALE_BATCH - 1 < n ? s + SCALE_BATCH - 1 : n ))
            # shellcheck disable=SC2046  # one argument per unit name
            systemctl --user start $(seq -f 'bench-scale@%.0f.service' "$s" "$e") ||
                die "cannot start bench-scale@$s..$e.service (manager log: $HARNESS_LOG)"
        done
        action="started $(( SCALE_UP + 1 ))..$n, $SCALE_BATCH per systemctl call"
    elif [ "$n" -lt "$SCALE_UP" ]; then
        # shellcheck disable=SC2046
        systemctl --user stop $(seq -f 'bench-scale@%.0f.service' $(( n + 1 )) "$SCALE_UP") ||
            die "cannot stop bench-scale@$(( n + 1 ))..$SCALE_UP.service (manager log: $HARNESS_LOG)"
        action="stopped $(( n + 1 ))..$SCALE_UP, one systemctl call"
    else
        return 0
    fi
    printf '{"type": "scale_setup", "units": %d, "action": "%s", "seconds": %s, "batch": %d}\n' \
        "$n" "$action" "$(( ($(usecs) - t0) / 1000 ))e-3" "$SCALE_BATCH" >> "$RESULTS"
    SCALE_UP=$n
    count=$(systemctl --user list-units --state=active --no-legend --plain 'bench-scale@*.service' | wc -l)
    [ "$count" = "$n" ] || die "expected $n active bench-scale@ instances, found $count (manager log: $HARNESS_LOG)"
}
scale_phase() {  # scale_phase N MODE(names|glob) BASE_JSON
    local n=$1 mode=$2 base=$3 w t0 ready_us
    w=uw-scale-$n; [ "$mode" = glob ] && w=$w-glob
    t0=$(usecs)
    start_watcher "$w"           # Type=notify: returns at READY=1, sent after the first full pass
    ready_us=$(( $(usecs) - t0 ))
    # Its `watching` line (logged right after READY=1) names how many units it watches: all N,
    # or the setup is wrong.
    local log=$B/$w/log/unitwarden.log deadline=$(( $(usecs) + 10000000 ))
    until grep -q ' watching$' "$log" 2>/dev/null; do
        [ "$(usecs)" -lt "$deadline" ] || die "unitwarden ($w) sent READY=1 but logged no 'watching' line within 10 s ($log)"
        sleep 0.05
    done
    grep -q " units=$n .*watching\$" "$log" ||
        die "unitwarden ($w) does not watch $n units: $(grep ' watching$' "$log" | tail -1)"
    sleep 1.5                    # settle: start-up allocations over, as in the idle windows
    # unitwarden lists named units in batches of 256 per call; a glob is one call.
    local calls=$(( (n + 255) / 256 )); [ "$mode" = glob ] && calls=1
    python3 "$PROBE" idle --kind unitwarden --window "$SCALE_WINDOW" --units-file "$B/scale-$n.units" \
        --watcher-pid "$(mainpid "watch-$w.service")" --interval "$SCALE_INTERVAL" \
        --calls-per-poll "$calls" --out "$B/$w.json"
    record scale "$n-$mode" "$B/$w.json" \
        "{\"mode\": \"$mode\", \"interval\": \"$SCALE_INTERVAL\", \"ready_us\": $ready_us, \"base\": $base}"
    if [ "$mode" = names ]; then
        say "scale: $n units, unitwarden status"
        python3 "$PROBE" status --bin "$BENCH_BIN" --config "$B/$w/unitwarden.toml" --out "$B/$w-status.json"
        record status "$n" "$B/$w-status.json"
    fi
    if [ "$n" = "$SCALE_MAX" ] && [ "$mode" = names ]; then
        say "scale: $n units, churn with unitwarden subscribed"
        churn "$mode" --watcher-pid "$(mainpid "watch-$w.service")"
    fi
    stop_watcher "$w"
}
churn() {  # churn NAME [probe args]: restarts of an unwatched unit + one daemon-reload
    local name=$1; shift
    python3 "$PROBE" churn --unit bench-churn.service --units-file "$B/scale-$SCALE_MAX.units" \
        --out "$B/churn-$name.json" "$@"
    record churn "$name" "$B/churn-$name.json"
}
if [ "$SCALE" = 1 ]; then
    for n in "${SCALE_SIZES[@]}"; do
        say "scale: $n units"
        scale_to "$n"
        base=null
        if [ "$IDLE_BASE" -gt 0 ]; then
            say "scale: $n units, no watcher, ${IDLE_BASE}s"
            python3 "$PROBE" idle --kind none --window "$IDLE_BASE" --units-file "$B/scale-$n.units" \
                --out "$B/scale-$n-base.json"
            base=$(cat "$B/scale-$n-base.json")
        fi
        if [ "$n" = "$SCALE_MAX" ]; then
            say "scale: $n units, churn with no watcher"
            churn none
        fi
        say "scale: $n units, unitwarden (explicit names, interval $SCALE_INTERVAL), ${SCALE_WINDOW}s"
        scale_phase "$n" names "$base"
        if [ "$SCALE_GLOB" = 1 ] && [ "$n" = "$SCALE_MAX" ]; then
            say "scale: $n units, unitwarden (one glob, interval $SCALE_INTERVAL), ${SCALE_WINDOW}s"
            scale_phase "$n" glob "$base"
        fi
    done
fi

# --- report ---------------------------------------------------------------------------
python3 "$PROBE" report --results "$RESULTS" --header "$B/header.txt" > "$B/table.txt"
read -r l1 l5 l15 _ < /proc/loadavg
echo "   load average at the end: $l1 $l5 $l15" >> "$B/table.txt"
cp "$RESULTS" "$BENCH_OUT/restart-latency.jsonl"
cp "$B/table.txt" "$BENCH_OUT/restart-latency.txt.tmp"
mv "$BENCH_OUT/restart-latency.txt.tmp" "$BENCH_OUT/restart-latency.txt"
say "done"
