#!/bin/bash
# bench/metrics-scrape.sh — what /metrics costs with many watched units: unitwarden's RSS with
# [metrics] on, the CPU time and wall time of one scrape, its size and its series, against one
# real `systemd --user` manager (tests/harness/user-systemd.sh). See bench/README.md.
#
#   bench/metrics-scrape.sh             (root; about a minute at the defaults, plus the build)
#
# Knobs (environment):
#   BENCH_METRICS_UNITS=1000  healthy units watched (instances of one template, named in the config)
#   BENCH_SCRAPES=200         scrapes timed, one after the other
#   BENCH_METRICS_OFF=0       1: no [metrics] section; as many `unitwarden status --json` as
#                             scrapes instead, for the RSS without metrics and with status alone
#   BENCH_BIN=PATH            unitwarden binary to measure (default: cargo build --release)
#   BENCH_OUT=DIR             where the results go (default target/bench)
#
# Output: the figures on stdout and in $BENCH_OUT/metrics-scrape.txt, and one scrape as it was
# served in $BENCH_OUT/metrics-scrape.prom.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
UNITS=${BENCH_METRICS_UNITS:-1000}
SCRAPES=${BENCH_SCRAPES:-200}
OUT=${BENCH_OUT:-$ROOT/target/bench}
OFF=${BENCH_METRICS_OFF:-0}

die() { echo "metrics-scrape.sh: $*" >&2; exit 1; }
say() { echo "[bench $(date +%T)] $*" >&2; }
for v in UNITS SCRAPES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive whole number (got '${!v}')"
done

if [ "${1:-}" != --inner ]; then
    [ "$EUID" = 0 ] || die "must run as root (the harness needs namespaces and cgroups)"
    command -v python3 >/dev/null || die "python3 is required (standard library only)"
    if [ -z "${BENCH_BIN:-}" ]; then
        say "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BENCH_BIN=$ROOT/target/release/unitwarden
    fi
    [ -x "$BENCH_BIN" ] || die "no unitwarden binary at $BENCH_BIN"
    export BENCH_BIN=$(readlink -f "$BENCH_BIN")
    mkdir -p "$OUT"
    export BENCH_OUT=$(readlink -f "$OUT")
    rm -f "$BENCH_OUT/metrics-scrape.txt" "$BENCH_OUT/metrics-scrape.prom"
    set +e
    export BENCH_METRICS_OFF=$OFF
    HARNESS_QUIET=1 "$ROOT/tests/harness/user-systemd.sh" -- bash "$SELF" --inner >/dev/null
    rc=$?
    set -e
    [ "$rc" = 0 ] || die "benchmark failed (exit $rc)"
    [ -s "$BENCH_OUT/metrics-scrape.txt" ] || die "no results written"
    cat "$BENCH_OUT/metrics-scrape.txt"
    exit 0
fi

# inner part: inside the harness namespace, next to systemd --user
: "${HARNESS_UNITDIR:?run me through bench/metrics-scrape.sh, not with --inner}"
B=$HOME/bench-metrics
UD=$HARNESS_UNITDIR
mkdir -p "$B"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

printf '[Service]\nExecStart=/bin/sleep infinity\n' > "$UD/bench-metric@.service"
{
    cat <<CFG
[daemon]
bus = "user"
interval = "60s"
log_dir = "$B/log"
log_rotation = "never"
state_dir = "$B/state"
control_socket = "$B/control.sock"
CFG
    [ "$OFF" = 1 ] || printf '\n[metrics]\nlisten = "127.0.0.1:%s"\n' "$PORT"
    for i in $(seq 1 "$UNITS"); do printf '\n[[unit]]\nname = "bench-metric@%d.service"\n' "$i"; done
} > "$B/unitwarden.toml"
"$BENCH_BIN" check-config --config "$B/unitwarden.toml" >/dev/null || die "unitwarden rejects $B/unitwarden.toml"
cat > "$UD/bench-watcher.service" <<UNIT
[Service]
Type=notify
NotifyAccess=main
Environment=XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS
ExecStart=$BENCH_BIN run --config $B/unitwarden.toml
TimeoutStartSec=120s
UNIT
systemctl --user daemon-reload
say "starting $UNITS units"
for s in $(seq 1 250 "$UNITS"); do
    e=$(( s + 249 < UNITS ? s + 249 : UNITS ))
    systemctl --user start $(seq -f 'bench-metric@%.0f.service' "$s" "$e")
done
say "starting unitwarden"
systemctl --user start bench-watcher.service
PID=$(systemctl --user show -p MainPID --value bench-watcher.service)

BENCH_CONFIG=$B/unitwarden.toml python3 - "$PID" "$PORT" "$SCRAPES" "$UNITS" "$BENCH_OUT" "$OFF" <<'PY'
import os, sys, time, urllib.request
pid, port, scrapes, units, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
off = sys.argv[6] == "1"
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
def mem():
    m = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            m[k] = int(v.split()[0])
    return m
def scrape():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read()
time.sleep(5)  # let the first pass and its allocations settle
before = mem()
if off:
    # The same number of `unitwarden status --json` instead, for what a status report of this
    # many units costs the daemon by itself.
    import subprocess
    for _ in range(scrapes):
        subprocess.run([os.environ["BENCH_BIN"], "status", "--json", "--config", os.environ["BENCH_CONFIG"]],
                       stdout=subprocess.DEVNULL, check=True)
    after = mem()
    open(f"{out}/metrics-scrape.txt", "w").write(
        f"units watched:            {units}\n"
        f"RSS without [metrics]:    {before['VmRSS'] / 1024:.1f} MiB\n"
        f"RSS after {scrapes} status --json: {after['VmRSS'] / 1024:.1f} MiB (peak {after['VmHWM'] / 1024:.1f} MiB)\n")
    sys.exit(0)
# the idle baseline: the same span without scrapes (the loop's own timers, no polls due)
t0, c0 = time.monotonic(), cpu()
body = scrape()
first = time.monotonic() - t0
open(f"{out}/metrics-scrape.prom", "wb").write(body)
walls = []
c1 = cpu()
t1 = time.monotonic()
for _ in range(scrapes):
    s = time.monotonic()
    scrape()
    walls.append(time.monotonic() - s)
span = time.monotonic() - t1
c2 = cpu()
time.sleep(span)
c3 = cpu()
after = mem()
walls.sort()
text = body.decode()
series = [l for l in text.splitlines() if l and not l.startswith("#")]
per_unit = [l for l in series if 'unit="' in l]
lines = [
    f"units watched:            {units}",
    f"RSS before any scrape:    {before['VmRSS'] / 1024:.1f} MiB",
    f"RSS after {scrapes + 1} scrapes:     {after['VmRSS'] / 1024:.1f} MiB (peak {after['VmHWM'] / 1024:.1f} MiB)",
    f"scrape size:              {len(body) / 1024:.0f} KiB, {len(series)} series ({len(per_unit) / units:.1f} per unit)",
    f"CPU per scrape:           {((c2 - c1) - (c3 - c2)) / scrapes * 1000:.2f} ms (unitwarden, idle baseline subtracted)",
    f"wall per scrape:          median {walls[len(walls) // 2] * 1000:.1f} ms, max {walls[-1] * 1000:.1f} ms (first: {first * 1000:.1f} ms)",
]
open(f"{out}/metrics-scrape.txt", "w").write("\n".join(lines) + "\n")
PY
systemctl --user stop bench-watcher.service
