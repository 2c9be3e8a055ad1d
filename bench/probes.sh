#!/bin/bash
# bench/probes.sh — what a health check costs, per probe kind (http, tcp, exec), for
# unitwarden, a shell loop and monit, side by side against the same targets: N nginx
# instances run as units of one real `systemd --user` manager (tests/harness/user-systemd.sh),
# all inside a private network namespace so that every TCP connection counted is one of ours.
# See bench/README.md.
#
#   bench/probes.sh                  (root; ~5 minutes at the defaults, plus the build)
#
# Knobs (environment):
#   BENCH_PROBE_UNITS=5       targets (nginx units), each checked once per period
#   BENCH_PROBE_WINDOW=30     seconds measured per row
#   BENCH_PROBE_KINDS="http tcp exec"  the probe kinds measured, in that order
#   BENCH_PROBE_INTERVAL=1s   period of every watcher (unitwarden's interval, monit's cycle,
#                             the shell loop's sleep)
#   BENCH_BIN=PATH            unitwarden binary to measure (default: cargo build --release,
#                             then target/release/unitwarden)
#   BENCH_OUT=DIR             where the table and raw results go (default target/bench)
#
# Output: the table on stdout and in $BENCH_OUT/probes.txt; one JSON object per row in
# $BENCH_OUT/probes.jsonl.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")

UNITS=${BENCH_PROBE_UNITS:-5}
WINDOW=${BENCH_PROBE_WINDOW:-30}
INTERVAL=${BENCH_PROBE_INTERVAL:-1s}
KINDS=${BENCH_PROBE_KINDS:-http tcp exec}
OUT=${BENCH_OUT:-$ROOT/target/bench}
NGINX=/usr/sbin/nginx
CURL=/usr/bin/curl
MONIT=/usr/bin/monit
BASE_PORT=18000                  # a private network namespace: every port is free

die() { echo "probes.sh: $*" >&2; exit 1; }
say() { echo "[bench $(date +%T)] $*" >&2; }

[[ $UNITS =~ ^[1-9][0-9]*$ ]] || die "BENCH_PROBE_UNITS must be a whole number >= 1 (got '$UNITS')"
[[ $WINDOW =~ ^[1-9][0-9]*$ ]] || die "BENCH_PROBE_WINDOW must be a whole number >= 1 (got '$WINDOW')"
for kind in $KINDS; do
    case $kind in http|tcp|exec) ;; *) die "BENCH_PROBE_KINDS: unknown kind '$kind' (http, tcp, exec)" ;; esac
done
[ -n "${KINDS// /}" ] || die "BENCH_PROBE_KINDS is empty"
[[ $INTERVAL =~ ^([0-9]+)(ms|s)$ ]] || die "BENCH_PROBE_INTERVAL must look like 1s or 500ms (got '$INTERVAL')"
if [ "${BASH_REMATCH[2]}" = ms ]; then
    PERIOD_MS=${BASH_REMATCH[1]}
else
    PERIOD_MS=$(( BASH_REMATCH[1] * 1000 ))
fi
[ "$PERIOD_MS" -ge 100 ] || die "BENCH_PROBE_INTERVAL must be at least 100ms"
# monit's cycle is whole seconds
MONIT_PERIOD=$(( (PERIOD_MS + 999) / 1000 ))
SLEEP=$(printf '%d.%03d' $(( PERIOD_MS / 1000 )) $(( PERIOD_MS % 1000 )))

##############################################################################
# outer part: prerequisites, build, then re-exec inside a private network namespace and the
# harness
##############################################################################
if [ "${1:-}" != --inner ]; then
    [ "$EUID" = 0 ] || die "must run as root (the harness needs namespaces and cgroups)"
    command -v python3 >/dev/null || die "python3 is required (standard library only)"
    missing=()
    [ -x "$NGINX" ] || missing+=("nginx (apt-get install nginx)")
    [ -x "$CURL" ] || missing+=("curl (apt-get install curl)")
    [ -x "$MONIT" ] || missing+=("monit (apt-get install monit)")
    command -v ip >/dev/null || missing+=("ip (apt-get install iproute2)")
    [ ${#missing[@]} = 0 ] || die "missing: ${missing[*]}"
    if [ -z "${BENCH_BIN:-}" ]; then
        say "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BENCH_BIN=$ROOT/target/release/unitwarden
    fi
    [ -x "$BENCH_BIN" ] || die "no unitwarden binary at $BENCH_BIN"
    export BENCH_BIN=$(readlink -f "$BENCH_BIN")
    mkdir -p "$OUT"
    export BENCH_OUT=$(readlink -f "$OUT")
    rm -f "$BENCH_OUT/probes.txt" "$BENCH_OUT/probes.jsonl"
    # A network namespace of our own (loopback only): the host's other traffic stays out of
    # the connection counts, and nothing we start listens on the host. The harness adds its
    # PID and mount namespaces inside it.
    set +e
    HARNESS_QUIET=1 unshare --net -- bash -c 'ip link set lo up && exec "$@"' _ \
        "$ROOT/tests/harness/user-systemd.sh" -- bash "$SELF" --inner >/dev/null
    rc=$?
    set -e
    [ "$rc" = 0 ] || die "benchmark failed (exit $rc)"
    [ -s "$BENCH_OUT/probes.txt" ] || die "no results written"
    cat "$BENCH_OUT/probes.txt"
    exit 0
fi

##############################################################################
# inner part: inside the harness, next to systemd --user
##############################################################################
: "${HARNESS_UNITDIR:?run me through bench/probes.sh, not with --inner}"
B=$HOME/bench
UD=$HARNESS_UNITDIR
RESULTS=$B/results.jsonl
mkdir -p "$B"
: > "$RESULTS"
RUN_ENV="Environment=XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS"
trap 'systemctl --user stop "watch-*.service" >/dev/null 2>&1 || true' EXIT

# --- the targets: N nginx instances answering /health/ themselves ---------------------
TARGETS=()
for i in $(seq 1 "$UNITS"); do
    d=$B/web-$i
    mkdir -p "$d/temp"
    cat > "$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 64; }
http {
    access_log $d/access.log;
    client_body_temp_path $d/temp/body;
    proxy_temp_path $d/temp/proxy;
    fastcgi_temp_path $d/temp/fastcgi;
    uwsgi_temp_path $d/temp/uwsgi;
    scgi_temp_path $d/temp/scgi;
    server {
        listen 127.0.0.1:$(( BASE_PORT + i ));
        location = /health/ { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
    cat > "$UD/bench-web-$i.service" <<EOF
[Unit]
Description=probe benchmark target $i
[Service]
ExecStart=$NGINX -e $d/error.log -p $d -c $d/nginx.conf -g 'daemon off;'
EOF
    TARGETS+=("bench-web-$i.service")
done
url() { echo "http://127.0.0.1:$(( BASE_PORT + $1 ))/health/"; }

# --- the watchers ---------------------------------------------------------------------
watcher_unit() {  # watcher_unit NAME TYPE EXEC...
    local name=$1 type=$2; shift 2
    cat > "$UD/watch-$name.service" <<EOF
[Unit]
Description=probe benchmark watcher $name
[Service]
Type=$type
NotifyAccess=main
$RUN_ENV
ExecStart=$*
TimeoutStartSec=15s
TimeoutStopSec=5s
EOF
}

# unitwarden: one [[unit]] per target with a probe of the kind; restarts as in production.
uwconfig() {  # uwconfig KIND -> config path
    local kind=$1 d=$B/uw-$1 i
    mkdir -p "$d"
    {
        cat <<EOF
[daemon]
bus = "user"
interval = "$INTERVAL"
log_dir = "$d/log"
log_rotation = "never"
state_dir = "$d/state"
control_socket = "$d/control.sock"
EOF
        for i in $(seq 1 "$UNITS"); do
            printf '\n[[unit]]\nname = "bench-web-%d"\n[unit.probe]\n' "$i"
            case $kind in
                http) printf 'http = "%s"\n' "$(url "$i")" ;;
                tcp) printf 'tcp = "127.0.0.1:%d"\n' $(( BASE_PORT + i )) ;;
                exec) printf 'exec = ["%s", "-fsS", "-o", "/dev/null", "--max-time", "3", "%s"]\n' "$CURL" "$(url "$i")" ;;
            esac
            printf 'timeout = "3s"\nfailures = 3\ngrace = "0s"\n'
        done
    } > "$d/unitwarden.toml"
    "$BENCH_BIN" check-config --config "$d/unitwarden.toml" >/dev/null ||
        die "unitwarden rejects $d/unitwarden.toml (see above)"
    echo "$d/unitwarden.toml"
}

# The shell loop: each target checked once per round, restarted if the check fails.
cat > "$B/shell-loop.sh" <<'EOF'
#!/bin/bash
# shell-loop.sh KIND SLEEP UNIT=TARGET... (TARGET: a URL for http, a port for tcp)
kind=$1 pause=$2; shift 2
while :; do
    for pair in "$@"; do
        unit=${pair%%=*} target=${pair#*=}
        case $kind in
            http) curl -fsS -o /dev/null --max-time 3 "$target" ;;
            tcp) (exec 3<>"/dev/tcp/127.0.0.1/$target") 2>/dev/null ;;
        esac || systemctl --user restart "$unit"
    done
    sleep "$pause"
done
EOF
shell_args() {  # shell_args KIND -> UNIT=TARGET words
    local i
    for i in $(seq 1 "$UNITS"); do
        case $1 in
            http) printf 'bench-web-%d.service=%s ' "$i" "$(url "$i")" ;;
            tcp) printf 'bench-web-%d.service=%d ' "$i" $(( BASE_PORT + i )) ;;
        esac
    done
}

# monit: `check host` with a protocol test (http), a plain connect (tcp), or `check program`
# running the same curl as unitwarden's exec probe.
monitrc() {  # monitrc KIND -> control file
    local kind=$1 d=$B/monit-$1 i
    mkdir -p "$d"
    {
        echo "set daemon $MONIT_PERIOD"
        echo "set log $d/monit.log"
        echo "set pidfile $d/monit.pid"
        echo "set idfile $d/monit.id"
        echo "set statefile $d/monit.state"
        for i in $(seq 1 "$UNITS"); do
            case $kind in
                http)
                    echo "check host web-$i with address 127.0.0.1"
                    echo "    if failed port $(( BASE_PORT + i )) protocol http request \"/health/\" with timeout 3 seconds then alert"
                    ;;
                tcp)
                    echo "check host web-$i with address 127.0.0.1"
                    echo "    if failed port $(( BASE_PORT + i )) type tcp with timeout 3 seconds then alert"
                    ;;
                exec)
                    echo "check program web-$i with path \"$CURL -fsS -o /dev/null --max-time 3 $(url "$i")\" with timeout 5 seconds"
                    echo "    if status != 0 then alert"
                    ;;
            esac
        done
    } > "$d/monitrc"
    chmod 600 "$d/monitrc"     # monit refuses a control file others can read
    echo "$d/monitrc"
}

ROWS=()
for kind in $KINDS; do
    watcher_unit "unitwarden-$kind" notify "$BENCH_BIN" run --config "$(uwconfig "$kind")"
    ROWS+=("$kind unitwarden")
    if [ "$kind" != exec ]; then
        # shellcheck disable=SC2046  # one argument per UNIT=TARGET pair
        watcher_unit "shell-$kind" simple /bin/bash "$B/shell-loop.sh" "$kind" "$SLEEP" $(shell_args "$kind")
        ROWS+=("$kind shell")
    fi
    watcher_unit "monit-$kind" simple "$MONIT" -I -c "$(monitrc "$kind")"
    ROWS+=("$kind monit")
done

systemctl --user daemon-reload
systemctl --user start "${TARGETS[@]}"
for i in $(seq 1 "$UNITS"); do
    for _ in $(seq 1 100); do
        "$CURL" -fsS -o /dev/null --max-time 1 "$(url "$i")" 2>/dev/null && break
        sleep 0.05
    done
    "$CURL" -fsS -o /dev/null --max-time 1 "$(url "$i")" || die "target $i does not answer (log: $HARNESS_LOG)"
done
: > "$B/warmup-done"

# --- measuring ------------------------------------------------------------------------
cat > "$B/measure.py" <<'EOF'
"""prep: what a window needs resolved beforehand (cgroups, PIDs), with systemctl; snap: the
counters alone, from files, so that taking a snapshot costs the manager nothing; row: two
snapshots -> one result row (the targets' PIDs checked again, after the window)."""
import json, os, subprocess, sys, time

def show(unit, prop):
    return subprocess.run(["systemctl", "--user", "show", "-p", prop, "--value", unit],
                          capture_output=True, text=True, check=True).stdout.strip()

def cg_dir(unit):
    return "/sys/fs/cgroup/unified" + show(unit, "ControlGroup")

def cg_usec(d):
    try:
        with open(d + "/cpu.stat") as f:
            for line in f:
                k, v = line.split()
                if k == "usage_usec":
                    return int(v)
    except OSError:
        pass
    return 0

def schedstat_us(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1000.0

def tcp_passive_opens():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])

def requests(dirs):
    n = 0
    for d in dirs:
        try:
            with open(os.path.join(d, "access.log")) as f:
                n += sum(1 for l in f if '"GET /health/ ' in l)
        except OSError:
            pass
    return n

def status_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out

cmd = sys.argv[1]
if cmd == "prep":
    watcher, targets, dirs, out = sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(","), sys.argv[5]
    p = {"targets": targets, "target_cgs": [cg_dir(t) for t in targets],
         "target_pids": [show(t, "MainPID") for t in targets], "dirs": dirs,
         "bus_cg": cg_dir("dbus.service"), "mgr_pid": int(os.environ["HARNESS_MANAGER_PID"])}
    if watcher:
        p["watcher_cg"] = cg_dir(watcher)
        p["watcher_pid"] = int(show(watcher, "MainPID"))
    json.dump(p, open(out, "w"))
elif cmd == "snap":
    p = json.load(open(sys.argv[2]))
    s = {"t": time.monotonic(), "mgr_us": schedstat_us(p["mgr_pid"]),
         "bus_us": cg_usec(p["bus_cg"]),
         "targets_us": sum(cg_usec(d) for d in p["target_cgs"]),
         "watcher_us": cg_usec(p["watcher_cg"]) if "watcher_cg" in p else None,
         "connections": tcp_passive_opens(), "requests": requests(p["dirs"])}
    json.dump(s, open(sys.argv[3], "w"))
elif cmd == "row":
    kind, watcher, pp, s0p, s1p = sys.argv[2:7]
    p, s0, s1 = json.load(open(pp)), json.load(open(s0p)), json.load(open(s1p))
    r = {"kind": kind, "watcher": watcher, "window_s": s1["t"] - s0["t"],
         "targets_us": s1["targets_us"] - s0["targets_us"],
         "mgr_us": s1["mgr_us"] - s0["mgr_us"], "bus_us": s1["bus_us"] - s0["bus_us"],
         "connections": s1["connections"] - s0["connections"],
         "requests": s1["requests"] - s0["requests"],
         "targets_restarted": [show(t, "MainPID") for t in p["targets"]] != p["target_pids"]}
    if "watcher_cg" in p:
        r["watcher_us"] = s1["watcher_us"] - s0["watcher_us"]
        r["mem_kb"] = status_kb(p["watcher_pid"])
    # A check is one request for http and exec (curl), one connection for tcp.
    r["checks"] = r["connections"] if kind == "tcp" else r["requests"]
    print(json.dumps(r))
EOF

TARGET_LIST=$(IFS=,; echo "${TARGETS[*]}")
DIR_LIST=$(for i in $(seq 1 "$UNITS"); do printf '%s,' "$B/web-$i"; done)
DIR_LIST=${DIR_LIST%,}
measure() {  # measure KIND WATCHER_NAME|none
    local kind=$1 w=$2 unit=""
    if [ "$w" != none ]; then
        unit=watch-$w-$kind.service
        systemctl --user start "$unit" || die "watcher $unit did not start (log: $HARNESS_LOG)"
        # settle: start-up over, the first checks made
        sleep 2
    fi
    python3 "$B/measure.py" prep "$unit" "$TARGET_LIST" "$DIR_LIST" "$B/prep.json"
    python3 "$B/measure.py" snap "$B/prep.json" "$B/s0.json"
    sleep "$WINDOW"
    python3 "$B/measure.py" snap "$B/prep.json" "$B/s1.json"
    python3 "$B/measure.py" row "$kind" "$w" "$B/prep.json" "$B/s0.json" "$B/s1.json" >> "$RESULTS"
    [ -n "$unit" ] && systemctl --user stop "$unit"
    return 0
}

{
    echo "unitwarden probe-cost benchmark   $(date '+%Y-%m-%d %H:%M:%S %z')"
    echo "machine:    $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r)"
    echo "targets:    $UNITS × $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') (one worker each), as units of a private systemd --user"
    echo "watchers:   unitwarden $("$BENCH_BIN" --version | awk '{print $2}'), $(monit -V | head -1 | sed 's/This is //'), bash + $("$CURL" --version | head -1 | awk '{print $1, $2}')"
    echo "settings:   BENCH_PROBE_UNITS=$UNITS BENCH_PROBE_WINDOW=${WINDOW}s BENCH_PROBE_KINDS=\"$KINDS\" BENCH_PROBE_INTERVAL=$INTERVAL (monit: set daemon $MONIT_PERIOD)"
    read -r l1 l5 l15 _ < /proc/loadavg
    echo "load:       $l1 $l5 $l15 at start"
} > "$B/header.txt"

say "baseline: targets with nobody checking, ${WINDOW}s"
measure none none
for row in "${ROWS[@]}"; do
    read -r kind w <<< "$row"
    say "$kind: $w, ${WINDOW}s"
    measure "$kind" "$w"
done

# --- report ---------------------------------------------------------------------------
python3 - "$RESULTS" "$B/header.txt" "$UNITS" > "$B/table.txt" <<'EOF'
import json, sys
results, header, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(results)]
print(open(header).read().rstrip())
print()
label = {"unitwarden": "unitwarden", "shell": "shell loop", "monit": "monit"}
how = {("http", "shell"): "curl -fsS", ("tcp", "shell"): "bash /dev/tcp",
       ("http", "monit"): "protocol http", ("tcp", "monit"): "type tcp",
       ("exec", "monit"): "check program", ("http", "unitwarden"): "http probe",
       ("tcp", "unitwarden"): "tcp probe", ("exec", "unitwarden"): "exec probe"}
print("CPU µs per check (µs of CPU time over the window / checks in it)")
print("%-5s %-28s %7s %8s %9s %9s %9s %9s %12s" % (
    "kind", "watcher", "checks", "per s", "watcher", "target", "w+target", "mgr+bus", "RSS/HWM KiB"))
base = next((r for r in rows if r["watcher"] == "none"), None)
for r in rows:
    if r["watcher"] == "none":
        continue
    c = r["checks"]
    per = lambda us: ("%9.0f" % (us / c)) if c else "%9s" % "-"
    name = "%s (%s)" % (label[r["watcher"]], how.get((r["kind"], r["watcher"]), "exec: curl"))
    mem = r.get("mem_kb", {})
    flag = "  TARGET RESTARTED" if r["targets_restarted"] else ""
    if not c:
        flag += "  NO CHECKS SEEN"
    print("%-5s %-28s %7d %8.1f %s %s %s %s %12s%s" % (
        r["kind"], name, c, c / r["window_s"], per(r["watcher_us"]), per(r["targets_us"]),
        per(r["watcher_us"] + r["targets_us"]), per(r["mgr_us"] + r["bus_us"]),
        "%d/%d" % (mem.get("VmRSS", 0), mem.get("VmHWM", 0)), flag))
print()
if base:
    print("baseline (nobody checking): targets %.0f µs/s, manager+bus %.0f µs/s; "
          "nothing is subtracted above." % (base["targets_us"] / base["window_s"],
                                            (base["mgr_us"] + base["bus_us"]) / base["window_s"]))
print("checks: requests in the targets' access logs (http, exec) or TCP connections accepted "
      "in the namespace (tcp); %d targets, so one check of each per period is %d." % (units, units))
print("watcher: its service's cgroup (children included: curl, monit's programs); "
      "target: the nginx units' cgroups; mgr+bus: systemd --user and dbus-daemon (unitwarden polls "
      "the units it watches every interval; the shell loop and monit ask the manager nothing while "
      "all is well). RSS/HWM: the watcher's main process at the end of the window.")
EOF
read -r l1 l5 l15 _ < /proc/loadavg
echo "load average at the end: $l1 $l5 $l15" >> "$B/table.txt"
cp "$RESULTS" "$BENCH_OUT/probes.jsonl"
cp "$B/table.txt" "$BENCH_OUT/probes.txt.tmp"
mv "$BENCH_OUT/probes.txt.tmp" "$BENCH_OUT/probes.txt"
say "done"
