#!/usr/bin/env python3
"""Measurement helper for bench/restart-latency.sh (runs inside the harness namespace).

Standard library only: a minimal D-Bus client (SASL EXTERNAL, method calls, replies) on the
session bus polls the manager's unit properties; CPU time comes from cgroup v2 cpu.stat and
/proc; unitwarden's D-Bus calls are counted with `perf stat` when perf is installed.

  probe.py latency --unit U --kills N --out FILE [--log FILE] [--gap-min S --gap-max S]
  probe.py floor --unit U --kills N --out FILE [--gap-min S --gap-max S]
  probe.py idle --window S (--units U... | --units-file FILE) --kind none|shell|monit|unitwarden
               --out FILE [--watcher-pid PID] [--counter FILE] [--interval DURATION]
  probe.py churn --unit U --units-file FILE --out FILE [--restarts N] [--watcher-pid PID]
  probe.py report --results FILE --header FILE
"""

import argparse
import datetime
import json
import math
import os
import random
import signal
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

# --------------------------------------------------------------------------------------------
# minimal D-Bus client


def _pad(buf, n):
    buf += b"\0" * (-len(buf) % n)


def _m_sig(buf, s):
    b = s.encode()
    buf += bytes([len(b)]) + b + b"\0"


def _m_str(buf, s):
    _pad(buf, 4)
    b = s.encode()
    buf += struct.pack("<I", len(b)) + b + b"\0"


def _m_value(buf, sig, val):
    if sig in ("s", "o"):
        _m_str(buf, val)
    elif sig == "g":
        _m_sig(buf, val)
    elif sig == "u":
        _pad(buf, 4)
        buf += struct.pack("<I", val)
    elif sig == "as":
        _pad(buf, 4)
        at = len(buf)
        buf += b"\0\0\0\0"
        start = len(buf)
        for s in val:
            _m_str(buf, s)
        struct.pack_into("<I", buf, at, len(buf) - start)
    else:
        raise ValueError("cannot marshal " + sig)


def _split_sig(sig):
    """Splits a signature into complete types."""
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _type_end(sig, i):
    c = sig[i]
    if c == "a":
        return _type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while sig[j] != close:
            j = _type_end(sig, j)
        return j + 1
    return i + 1


_FIXED = {"y": ("<B", 1), "b": ("<I", 4), "n": ("<h", 2), "q": ("<H", 2), "i": ("<i", 4),
          "u": ("<I", 4), "x": ("<q", 8), "t": ("<Q", 8), "d": ("<d", 8), "h": ("<I", 4)}


def _align_of(t):
    c = t[0]
    if c in "({xtd":
        return 8
    if c in "ygv":
        return 1
    if c in "nq":
        return 2
    return 4


def _parse(t, data, off):
    """Parses one value of complete type t at off (offsets relative to a 8-aligned start)."""
    c = t[0]
    if c in _FIXED:
        fmt, size = _FIXED[c]
        off += -off % size
        v = struct.unpack_from(fmt, data, off)[0]
        return (bool(v) if c == "b" else v), off + size
    if c in "so":
        off += -off % 4
        n = struct.unpack_from("<I", data, off)[0]
        return data[off + 4:off + 4 + n].decode(), off + 5 + n
    if c == "g":
        n = data[off]
        return data[off + 1:off + 1 + n].decode(), off + 2 + n
    if c == "v":
        inner, off = _parse("g", data, off)
        return _parse(inner, data, off)
    if c == "a":
        off += -off % 4
        n = struct.unpack_from("<I", data, off)[0]
        off += 4
        elem = t[1:]
        off += -off % _align_of(elem)
        end = off + n
        items = []
        while off < end:
            v, off = _parse(elem, data, off)
            items.append(v)
        if elem[0] == "{":
            return dict(items), end
        return items, end
    if c in "({":
        off += -off % 8
        vals = []
        for sub in _split_sig(t[1:-1]):
            v, off = _parse(sub, data, off)
            vals.append(v)
        return tuple(vals), off
    raise ValueError("cannot parse " + t)


DEBUG = os.environ.get("PROBE_DEBUG") == "1"


class DBusError(Exception):
    pass


class Bus:
    """One synchronous D-Bus connection (peer-to-peer to the manager, or to a bus daemon)."""

    def __init__(self, path, hello, dest=None):
        self.dest = dest
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(15)  # a manager that stops answering is an error, not a hang
        self.sock.connect(path)
        uid = str(os.getuid()).encode().hex().encode()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise DBusError("connection closed during authentication")
            line += chunk
        if not line.startswith(b"OK"):
            raise DBusError("authentication refused: %r" % line)
        self.sock.sendall(b"BEGIN\r\n")
        self.serial = 0
        self.buf = b""
        if hello:
            self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                      dest="org.freedesktop.DBus")

    def close(self):
        self.sock.close()

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DBusError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def call(self, path, iface, member, sig="", args=(), dest=None):
        self.serial += 1
        body = bytearray()
        for t, v in zip(_split_sig(sig), args):
            _m_value(body, t, v)
        fields = bytearray()

        def field(code, t, v):
            _pad(fields, 8)
            fields.append(code)
            _m_sig(fields, t)
            _m_value(fields, t, v)

        field(1, "o", path)
        field(2, "s", iface)
        field(3, "s", member)
        dest = dest or self.dest
        if dest:
            field(6, "s", dest)
        if sig:
            field(8, "g", sig)
        msg = bytearray(struct.pack("<cBBBIII", b"l", 1, 0, 1, len(body), self.serial, len(fields)))
        msg += fields
        _pad(msg, 8)
        msg += body
        self.sock.sendall(msg)
        while True:
            head = self._read(16)
            if head[0:1] != b"l":
                raise DBusError("big-endian peer not supported")
            mtype = head[1]
            blen, _serial, flen = struct.unpack_from("<III", head, 4)
            rest = self._read(flen + (-(16 + flen) % 8) + blen)
            hdr = head + rest[:flen]
            fields_v, _ = _parse("a(yv)", hdr, 12)
            f = dict(fields_v)
            data = rest[flen + (-(16 + flen) % 8):]
            if DEBUG:
                print("dbus: type=%d fields=%r blen=%d want=%d" % (mtype, f, blen, self.serial), file=sys.stderr)
            if mtype not in (2, 3) or f.get(5) != self.serial:
                continue  # signals, or replies to someone else
            rsig = f.get(8, "")
            vals, off = [], 0
            for t in _split_sig(rsig):
                v, off = _parse(t, data, off)
                vals.append(v)
            if mtype == 3:
                raise DBusError("%s: %s" % (f.get(4), vals[0] if vals else ""))
            return vals


def unit_path(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalpha() or (ch.isdigit() and i > 0)):
            out.append(ch)
        else:
            out.append("_%02x" % ord(ch))
    return "/org/freedesktop/systemd1/unit/" + "".join(out)


def runtime_dir():
    return os.environ.get("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid())


def session_bus(dest=None):
    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "unix:path=%s/bus" % runtime_dir())
    path = addr.split("path=", 1)[1].split(",", 1)[0]
    return Bus(path, hello=True, dest=dest)


def manager():
    """The manager through the bus daemon, without Subscribe().

    Not through its private socket ($XDG_RUNTIME_DIR/systemd/private, what systemctl uses):
    systemd sends every unit and job signal to every private connection unconditionally, so a
    2 ms poller there would add ~20 signals of ~1 KiB per restart to the manager's work. On the
    bus, with no subscriber of ours, the manager emits nothing for us.
    """
    return session_bus(dest="org.freedesktop.systemd1")


PROPS = "org.freedesktop.DBus.Properties"


def active_state(m, path):
    return m.call(path, PROPS, "Get", "ss", ("org.freedesktop.systemd1.Unit", "ActiveState"))[0]


def main_pid(m, path):
    return m.call(path, PROPS, "Get", "ss", ("org.freedesktop.systemd1.Service", "MainPID"))[0]


# --------------------------------------------------------------------------------------------
# latency

POLL = 0.002  # poll period, seconds


def wait_healthy(m, path, timeout):
    """Until the unit is active with a main PID; returns the PID or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if active_state(m, path) == "active":
            pid = main_pid(m, path)
            if pid:
                return pid
        time.sleep(POLL)
    return None


def ready_victim(m, path, a):
    """Before a kill: until the unit is active, then the random gap, then its MainPID.

    Returns the PID to kill, 0 if the unit is not active after the gap (skip this kill), or
    None if it did not become active within the timeout (stop the phase)."""
    pid = wait_healthy(m, path, a.timeout)
    if pid is None:
        print("probe: %s is not active; stopping this phase" % a.unit, file=sys.stderr)
        return None
    time.sleep(random.uniform(a.gap_min, a.gap_max))
    pid = main_pid(m, path)
    if not pid or active_state(m, path) != "active":
        return 0
    return pid


def poll_back(m, path, pid, t0, timeout, resume=False):
    """After the kill of pid at t0 (monotonic): polls ActiveState, then MainPID, every POLL
    seconds on a grid anchored at t0 until the unit is active with another MainPID.

    Returns (the time it was seen so, or None after timeout; the number of polls). resume:
    the caller did something else since t0, so the first poll is at the first grid point not
    yet past, as it would have been had the polling run since the kill."""
    deadline = t0 + timeout
    t1 = None
    polls = 0
    next_poll = t0
    if resume:
        behind = time.monotonic() - t0
        if behind > 0:
            next_poll = t0 + math.ceil(behind / POLL) * POLL
            delay = next_poll - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    while True:
        now = time.monotonic()
        if now > deadline:
            break
        polls += 1
        if active_state(m, path) == "active":
            new = main_pid(m, path)
            if new and new != pid:
                t1 = time.monotonic()
                break
        next_poll += POLL
        delay = next_poll - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_poll = time.monotonic()
    return t1, polls


def parse_ts(text):
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def read_new_lines(log, offset):
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def cmd_latency(a):
    m = manager()
    path = unit_path(a.unit)
    tag = "unit=" + a.unit
    results = []
    timeouts_in_a_row = 0
    for i in range(a.kills):
        pid = ready_victim(m, path, a)
        if pid is None:
            break
        if not pid:
            continue
        log_off = os.path.getsize(a.log) if a.log and os.path.exists(a.log) else 0
        t_wall = time.time()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t1, polls = poll_back(m, path, pid, t0, a.timeout)
        r = {"i": i, "active_ms": None if t1 is None else (t1 - t0) * 1000.0, "polls": polls}
        if t1 is None:
            timeouts_in_a_row += 1
        else:
            timeouts_in_a_row = 0
        if a.log:
            # unitwarden: wait for its verdict (so the next kill starts from a verified restart),
            # then read its lines since the kill.
            verdict_deadline = time.monotonic() + a.timeout
            lines = []
            while time.monotonic() < verdict_deadline:
                lines = read_new_lines(a.log, log_off)
                if any(tag in l and ("result=restarted" in l or "result=failed" in l) for l in lines):
                    break
                time.sleep(0.01)
            mine = [l for l in lines if tag in l.split()]
            first = mine[0] if mine else None
            restarting = next((l for l in mine if l.endswith(" restarting")), None)
            if first:
                ts = parse_ts(first.split(" ", 1)[0])
                r["detect_ms"] = None if ts is None else (ts - t_wall) * 1000.0
                r["detect_line"] = first
            if restarting:
                ts = parse_ts(restarting.split(" ", 1)[0])
                r["restart_ms"] = None if ts is None else (ts - t_wall) * 1000.0
            r["verdict"] = next((w for l in mine for w in l.split()
                                 if w in ("result=restarted", "result=failed")), None)
        results.append(r)
        if timeouts_in_a_row >= 3:
            print("probe: 3 kills in a row not recovered within %.0fs; stopping this phase"
                  % a.timeout, file=sys.stderr)
            break
    with open(a.out, "w") as f:
        json.dump({"unit": a.unit, "kills": a.kills, "poll_ms": POLL * 1000, "results": results}, f)


# --------------------------------------------------------------------------------------------
# floor: the least any restarter outside systemd does

FLOOR_POLL = 0.0005  # the bare client's sleep between two ActiveState reads, seconds
MANAGER = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"


def cmd_floor(a):
    """Row e): kills the unit's MainPID and restarts the unit itself, with nothing in between.

    Over its own bus connection (no Subscribe), it reads ActiveState with FLOOR_POLL sleeps
    until `failed`, then calls ResetFailedUnit and RestartUnit(unit, "replace"), each waiting
    for its reply: the two calls unitwarden makes, with no decision, state file or log line
    before them. Kill -> active is measured as in cmd_latency, by the 2 ms poll of a second
    connection, on the grid anchored at the kill.
    """
    m = manager()                    # the measuring poller, as for the other rows
    w = manager()                    # the restarter's own connection
    path = unit_path(a.unit)
    results = []
    lost_in_a_row = 0
    for i in range(a.kills):
        pid = ready_victim(m, path, a)
        if pid is None:
            break
        if not pid:
            continue
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = t0 + a.timeout
        reads = 0
        state = None
        t_failed = None
        while time.monotonic() < deadline:
            reads += 1
            state = active_state(w, path)
            if state == "failed":
                t_failed = time.monotonic()
                break
            time.sleep(FLOOR_POLL)
        w.call(MANAGER, MANAGER_IFACE, "ResetFailedUnit", "s", (a.unit,))
        t_reset = time.monotonic()
        w.call(MANAGER, MANAGER_IFACE, "RestartUnit", "ss", (a.unit, "replace"))
        t_calls = time.monotonic()
        r = {"i": i, "state_reads": reads}
        if t_failed is None:
            # Never read `failed` (the calls above bring the unit back for the next round):
            # counted as lost, like a kill that does not come back.
            r.update({"active_ms": None, "last_state": state})
            wait_healthy(m, path, a.timeout)
        else:
            t1, polls = poll_back(m, path, pid, t0, a.timeout, resume=True)
            ms = lambda t: (t - t0) * 1000.0
            r.update({"failed_ms": ms(t_failed), "reset_ms": ms(t_reset), "calls_ms": ms(t_calls),
                      "active_ms": None if t1 is None else ms(t1), "polls": polls})
        results.append(r)
        lost_in_a_row = lost_in_a_row + 1 if r["active_ms"] is None else 0
        if lost_in_a_row >= 3:
            print("probe: 3 kills in a row not recovered within %.0fs; stopping this phase"
                  % a.timeout, file=sys.stderr)
            break
    with open(a.out, "w") as f:
        json.dump({"unit": a.unit, "kills": a.kills, "poll_ms": POLL * 1000,
                   "state_poll_sleep_ms": FLOOR_POLL * 1000, "results": results}, f)


# --------------------------------------------------------------------------------------------
# idle cost


def proc_stat_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    return sum(int(fields[k - 3]) for k in (14, 15, 16, 17))


def schedstat_ns(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def cgroup_dir(pid):
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            hid, _, path = line.rstrip("\n").split(":", 2)
            if hid == "0":
                for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                    d = root + path
                    if os.path.exists(d + "/cpu.stat"):
                        return d
    return None


def cgroup_usec(d):
    with open(d + "/cpu.stat") as f:
        for line in f:
            k, v = line.split()
            if k == "usage_usec":
                return int(v)
    return None


def status_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def last_pid():
    with open("/proc/sys/kernel/ns_last_pid") as f:
        return int(f.read())


def cmd_idle(a):
    if a.units_file:
        with open(a.units_file) as f:
            a.units = f.read().split()
    if not a.units:
        sys.exit("probe: idle: no units given (--units or --units-file)")
    m = manager()
    mgr_pid = int(os.environ["HARNESS_MANAGER_PID"])
    bus_pid = main_pid(m, unit_path("dbus.service"))
    bus_cg = cgroup_dir(bus_pid)
    pids_before = {u: main_pid(m, unit_path(u)) for u in a.units}
    states = {u: active_state(m, unit_path(u)) for u in a.units}
    if not all(p for p in pids_before.values()) or set(states.values()) != {"active"}:
        sys.exit("probe: idle units not all active: %r" % states)
    wpid = a.watcher_pid
    wcg = cgroup_dir(wpid) if wpid else None

    def snap():
        s = {"t": time.monotonic(), "mgr_ns": schedstat_ns(mgr_pid), "mgr_ticks": proc_stat_ticks(mgr_pid),
             "bus_us": cgroup_usec(bus_cg) if bus_cg else None, "bus_ns": schedstat_ns(bus_pid),
             "last_pid": last_pid()}
        if wpid:
            s["w_ticks"] = proc_stat_ticks(wpid)
            s["w_us"] = cgroup_usec(wcg) if wcg else None
        if a.counter:
            s["rounds"] = os.path.getsize(a.counter)
        return s

    sent = None
    s0 = snap()
    if a.kind == "unitwarden" and shutil.which("perf"):
        # Count the D-Bus messages unitwarden sends (one sendmsg(2) each; while healthy, each is
        # one ListUnitsByNames poll). In-kernel counting: no ptrace, no measurable overhead. The
        # perf window sits inside the CPU window, so polls are if anything undercounted by one.
        res = subprocess.run(["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_sendmsg",
                              "-p", str(wpid), "--", "sleep", str(a.window)],
                             capture_output=True, text=True)
        for line in res.stderr.splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2] == "syscalls:sys_enter_sendmsg" and parts[0].isdigit():
                sent = int(parts[0])
        if sent is None:
            print("probe: perf stat gave no count (%s); estimating polls from the interval"
                  % res.stderr.strip()[:200], file=sys.stderr)
    else:
        time.sleep(a.window)
    s1 = snap()
    pids_after = {u: main_pid(m, unit_path(u)) for u in a.units}
    hz = os.sysconf("SC_CLK_TCK")
    r = {"kind": a.kind, "units": len(a.units), "window_s": s1["t"] - s0["t"],
         "mgr_us": (s1["mgr_ns"] - s0["mgr_ns"]) / 1000.0,
         "mgr_stat_us": (s1["mgr_ticks"] - s0["mgr_ticks"]) * 1e6 / hz,
         "bus_us": ((s1["bus_us"] - s0["bus_us"]) if bus_cg else (s1["bus_ns"] - s0["bus_ns"]) / 1000.0),
         "forks": s1["last_pid"] - s0["last_pid"],
         "restarted_during_window": sorted(u for u in a.units if pids_after[u] != pids_before[u])}
    if wpid:
        r["w_stat_us"] = (s1["w_ticks"] - s0["w_ticks"]) * 1e6 / hz
        r["w_us"] = (s1["w_us"] - s0["w_us"]) if wcg else r["w_stat_us"]
        # The watcher's cgroup is created when its service starts: what it had used when the
        # window opened is its start-up (first pass, READY, the settle pause).
        r["w_us_before"] = s0["w_us"] if wcg else None
        r["w_source"] = "cgroup cpu.stat" if wcg else "/proc/PID/stat"
        r["mem_kb"] = status_kb(wpid)
    # unit-checks performed during the window
    if a.kind == "shell":
        r["polls"] = s1["rounds"] - s0["rounds"]
        r["polls_source"] = "loop rounds (counter file)"
    elif a.kind == "monit":
        r["polls"] = r["forks"] / float(len(a.units))
        r["polls_source"] = "check programs forked / units"
    elif a.kind == "unitwarden" and sent is not None:
        # A poll lists the named units in batches (POLL_BATCH in src/monitor/mod.rs), one call
        # each, or the globs in one call.
        r["polls"] = sent / float(a.calls_per_poll)
        r["polls_source"] = "D-Bus calls sent (perf: sendmsg count) / %d per poll" % a.calls_per_poll
    elif a.kind == "unitwarden":
        r["polls"] = int(r["window_s"] / a.interval)
        r["polls_source"] = "estimated as window / interval (perf unavailable)"
    else:
        r["polls"] = 0
    r["checks"] = r["polls"] * len(a.units)
    with open(a.out, "w") as f:
        json.dump(r, f)


# --------------------------------------------------------------------------------------------
# churn: what a subscriber costs when units it does not watch change


def cmd_churn(a):
    """Restarts an unwatched unit, then reloads the manager, and measures the CPU it took.

    Both go over the bus without Subscribe(), so systemd emits unit and job signals on the bus
    only if some other client (the watcher) has subscribed: run once with and once without it.
    """
    with open(a.units_file) as f:
        units = f.read().split()
    m = manager()
    mgr_pid = int(os.environ["HARNESS_MANAGER_PID"])
    bus_cg = cgroup_dir(main_pid(m, unit_path("dbus.service")))
    wcg = cgroup_dir(a.watcher_pid) if a.watcher_pid else None
    pids_before = {u: main_pid(m, unit_path(u)) for u in units}

    def snap():
        return {"t": time.monotonic(), "mgr_us": schedstat_ns(mgr_pid) / 1000.0,
                "bus_us": cgroup_usec(bus_cg), "w_us": cgroup_usec(wcg) if wcg else 0}

    def delta(s0, s1):
        return {k: s1[k] - s0[k] for k in s0}

    mgr = "/org/freedesktop/systemd1"
    iface = "org.freedesktop.systemd1.Manager"
    path = unit_path(a.unit)
    r = {"units": len(units), "restarts": a.restarts, "unit": a.unit, "watcher": bool(a.watcher_pid)}
    s0 = snap()
    for _ in range(a.restarts):
        old = main_pid(m, path)
        m.call(mgr, iface, "RestartUnit", "ss", (a.unit, "replace"))
        deadline = time.monotonic() + 10
        while not (active_state(m, path) == "active" and main_pid(m, path) not in (0, old)):
            if time.monotonic() > deadline:
                sys.exit("probe: churn: %s did not come back after RestartUnit" % a.unit)
            time.sleep(POLL)
    time.sleep(a.drain)               # signals still queued for the watcher
    s1 = snap()
    r["restart"] = delta(s0, s1)
    m.call(mgr, iface, "Reload")      # the reply comes once the manager has reloaded
    time.sleep(a.drain)
    s2 = snap()
    r["reload"] = delta(s1, s2)
    pids_after = {u: main_pid(m, unit_path(u)) for u in units}
    r["restarted_during_window"] = sorted(u for u in units if pids_after[u] != pids_before[u])
    with open(a.out, "w") as f:
        json.dump(r, f)


# --------------------------------------------------------------------------------------------
# report


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def fmt_ms(x):
    if x is None:
        return "-"
    return "%.0f" % x if x >= 100 else "%.1f" % x


def stats_cols(vals):
    """N, median, p90, p99, max of a list of ms values, formatted for the tables."""
    if not vals:
        return (0, "-", "-", "-", "-")
    return (len(vals), fmt_ms(statistics.median(vals)), fmt_ms(pct(vals, 90)), fmt_ms(pct(vals, 99)),
            fmt_ms(max(vals)))


def fmt_pct(x):
    if x is None:
        return "-"
    return "%.3f" % x if x < 10 else "%.1f" % x


def segments(rs):
    """Per kill, unitwarden's three segments (ms), from its log lines and the probe's clocks."""
    det, dec, rest = [], [], []
    for r in rs:
        d, s, t = r.get("detect_ms"), r.get("restart_ms"), r.get("active_ms")
        if d is not None:
            det.append(d)
        if d is not None and s is not None:
            dec.append(s - d)
        if s is not None and t is not None:
            rest.append(t - s)
    return det, dec, rest


def cmd_status(a):
    """Times `unitwarden status` (the table, and --json) against a running daemon."""
    res = {}
    for label, extra in (("table", []), ("json", ["--json"])):
        times, size = [], 0
        for _ in range(a.runs):
            t0 = time.perf_counter()
            out = subprocess.run([a.bin, "--config", a.config, "status"] + extra,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
            times.append((time.perf_counter() - t0) * 1000.0)
            if out.returncode != 0:
                sys.exit("unitwarden status %s failed (%d): %s"
                         % (" ".join(extra), out.returncode, out.stderr.decode(errors="replace")))
            size = len(out.stdout)
        res[label] = {"ms": times, "bytes": size}
    with open(a.out, "w") as f:
        json.dump(res, f)


def cmd_report(a):
    with open(a.header) as f:
        out = [f.read().rstrip("\n"), ""]
    lat, idle, scale, setup, churn, status = {}, {}, [], [], {}, []
    for line in open(a.results):
        rec = json.loads(line)
        if rec["type"] == "latency":
            lat[rec["name"]] = rec
        elif rec["type"] == "idle":
            idle[rec["name"]] = rec
        elif rec["type"] == "scale":
            scale.append(rec)
        elif rec["type"] == "scale_setup":
            setup.append(rec)
        elif rec["type"] == "churn":
            churn[rec["name"]] = rec["data"]
        elif rec["type"] == "status":
            status.append(rec)
    active = lambda rec: [r["active_ms"] for r in rec["data"]["results"] if r["active_ms"] is not None]

    # --- restart latency
    order = [("systemd", "a) systemd Restart=always, RestartSec=0"),
             ("shell", "b) shell loop (is-active || restart; sleep 1)"),
             ("monit", "c) monit (set daemon 1, check program)"),
             ("unitwarden", "d) unitwarden (event-driven, backoff 0)"),
             ("floor", "e) bare D-Bus client (floor for restarting from outside)")]
    row = "%-56s %4s %8s %8s %8s %8s %8s"
    out.append("Restart latency: SIGKILL of MainPID -> unit active again with a new MainPID")
    out.append("(polled every %g ms over the bus, no Subscribe; ms; N = kills measured; percentiles"
               % (POLL * 1000))
    out.append("nearest rank: with N < 100, p99 is the max)")
    out.append("")
    out.append(row % ("watcher", "N", "median", "p90", "p99", "max", "lost"))
    for key, label in order:
        rec = lat.get(key)
        if not rec:
            out.append(row % (label, "-", "-", "-", "-", "-", "not run"))
            continue
        vals = active(rec)
        lost = len(rec["data"]["results"]) - len(vals)
        out.append(row % ((label,) + stats_cols(vals) + (lost,)))
    sd, uw = lat.get("systemd"), lat.get("unitwarden")
    gap_med = gap_p99 = None
    if sd and uw and active(sd) and active(uw):
        s, u = active(sd), active(uw)
        gap_med = statistics.median(u) - statistics.median(s)
        gap_p99 = pct(u, 99) - pct(s, 99)
        out.append("   gap unitwarden - systemd: median %+.1f ms (%.1f vs %.1f), p99 %+.1f ms (%.1f vs %.1f)"
                   % (gap_med, statistics.median(u), statistics.median(s), gap_p99, pct(u, 99), pct(s, 99)))
    fl = lat.get("floor")
    floor_med = floor_p99 = None
    if fl and uw and active(fl) and active(uw):
        f, u = active(fl), active(uw)
        floor_med = statistics.median(u) - statistics.median(f)
        floor_p99 = pct(u, 99) - pct(f, 99)
        out.append("   gap unitwarden - bare client: median %+.1f ms (%.1f vs %.1f), p99 %+.1f ms (%.1f vs %.1f)"
                   % (floor_med, statistics.median(u), statistics.median(f), floor_p99, pct(u, 99), pct(f, 99)))

    # --- where unitwarden's time goes
    if uw:
        rs = uw["data"]["results"]
        det, dec, rest = segments(rs)
        out.append("")
        out.append("Where unitwarden's time goes, per kill (its log lines: RFC 3339 timestamps with")
        out.append("milliseconds, so each log-based figure is +-1 ms; ms)")
        out.append("")
        srow = "%-48s %4s %8s %8s %8s %8s"
        out.append(srow % ("segment", "N", "median", "p90", "p99", "max"))
        out.append(srow % (("kill -> detection (first line naming the unit)",) + stats_cols(det)))
        out.append(srow % (("detection -> 'restarting' (decision path)",) + stats_cols(dec)))
        out.append(srow % (("'restarting' -> active (D-Bus calls + start)",) + stats_cols(rest)))
        if det and dec and rest:
            out.append("   sum of the segment medians %.1f ms; median kill -> active %.1f ms"
                       % (statistics.median(det) + statistics.median(dec) + statistics.median(rest),
                          statistics.median(active(uw))))
        if dec:
            out.append("   detection -> 'restarting' was 0 ms (same millisecond) in %d of %d kills"
                       % (sum(1 for x in dec if abs(x) < 0.5), len(dec)))
        verdicts = [r.get("verdict") for r in rs]
        out.append("   verdicts: %d restarted, %d failed, %d none"
                   % (verdicts.count("result=restarted"), verdicts.count("result=failed"),
                      verdicts.count(None)))
        first = next((r.get("detect_line") for r in rs if r.get("detect_line")), None)
        if first:
            out.append("   first line after a kill: " + first.split(" ", 1)[1][:100])
    if fl:
        rs = [r for r in fl["data"]["results"] if r.get("failed_ms") is not None]
        seen = [r["failed_ms"] for r in rs]
        back = [r["active_ms"] - r["failed_ms"] for r in rs if r["active_ms"] is not None]
        calls = [r["calls_ms"] - r["failed_ms"] for r in rs]
        out.append("")
        out.append("The bare client's time (row e), per kill, for comparison (its own monotonic clock; ms)")
        out.append("")
        srow = "%-48s %4s %8s %8s %8s %8s"
        out.append(srow % ("segment", "N", "median", "p90", "p99", "max"))
        out.append(srow % (("kill -> 'failed' read (%g ms sleeps)"
                            % fl["data"]["state_poll_sleep_ms"],) + stats_cols(seen)))
        out.append(srow % (("'failed' read -> active (D-Bus calls + start)",) + stats_cols(back)))
        out.append(srow % (("   of which the two calls, until both replies",) + stats_cols(calls)))
        reads = [r["state_reads"] for r in rs]
        if reads:
            out.append("   ActiveState reads per kill until 'failed': median %.0f, max %d"
                       % (statistics.median(reads), max(reads)))

    # --- cost of checking while healthy
    if idle:
        out.append("")
        out.append("Cost of checking while healthy (idle window; CPU time / unit-checks; unit-check = one unit")
        out.append("checked once; watcher = its service cgroup incl. children, manager = systemd --user,")
        out.append("bus = dbus-daemon)")
        out.append("")
        out.append("%-22s %6s %7s %7s %10s %10s %10s %10s %11s" % (
            "watcher", "units", "polls", "checks", "watcher", "manager", "bus", "total", "RSS/HWM"))
        out.append("%-22s %6s %7s %7s %10s %10s %10s %10s %11s" % (
            "", "", "", "", "us/check", "us/check", "us/check", "us/check", "MiB"))
    for key, label in [("none", "(no watcher)"), ("shell", "shell loop"), ("monit", "monit"),
                       ("unitwarden", "unitwarden")]:
        rec = idle.get(key)
        if not rec:
            continue
        d = rec["data"]
        n = d["checks"]
        if key == "none":
            out.append("%-22s %6d %7s %7s %10s %10s %10s %10s %11s" % (
                label, d["units"], "-", "-", "-", "%.0f us/s" % (d["mgr_us"] / d["window_s"]),
                "%.0f us/s" % (d["bus_us"] / d["window_s"]), "-", "-"))
            continue
        per = lambda us: "%.0f" % (us / n) if n else "-"
        mem = d.get("mem_kb", {})
        memtxt = "%.1f/%.1f" % (mem.get("VmRSS", 0) / 1024.0, mem.get("VmHWM", 0) / 1024.0) if mem else "-"
        out.append("%-22s %6d %7.0f %7.0f %10s %10s %10s %10s %11s" % (
            label, d["units"], d["polls"], n, per(d["w_us"]), per(d["mgr_us"]), per(d["bus_us"]),
            per(d["w_us"] + d["mgr_us"] + d["bus_us"]), memtxt))
    notes = []
    for key in ("none", "shell", "monit", "unitwarden"):
        rec = idle.get(key)
        if not rec:
            continue
        notes.extend(window_notes("idle " + key, rec["data"]))

    # --- scale
    big = None
    if scale:
        first = scale[0]
        out.append("")
        out.append("Scale: N healthy units (bench-scale@1..N) watched by unitwarden, interval %s, %.0f s window;"
                   % (first["interval"], first["data"]["window_s"]))
        out.append("CPU in % of one core over the window (unitwarden = its service cgroup, systemd = the")
        out.append("systemd --user manager, dbus = dbus-daemon; all = the three together; idle = systemd + dbus")
        out.append("with the same units and no watcher); RSS/HWM = unitwarden's VmRSS/VmHWM at the end")
        out.append("")
        hrow = "%6s %-6s %7s %7s %6s %10s %8s %7s %7s %7s %9s %11s"
        out.append(hrow % ("units", "config", "ready", "start", "polls", "unitwarden", "systemd", "dbus",
                           "all", "idle", "all", "RSS/HWM"))
        out.append(hrow % ("", "", "ms", "CPU ms", "", "%core", "%core", "%core", "%core", "%core",
                           "us/check", "MiB"))
        for rec in scale:
            d = rec["data"]
            w = d["window_s"] * 1e6 / 100.0          # us of CPU per 1 % of one core
            base = rec.get("base")
            idle_pct = (base["mgr_us"] + base["bus_us"]) / (base["window_s"] * 1e6 / 100.0) if base else None
            all_us = d["w_us"] + d["mgr_us"] + d["bus_us"]
            mem = d.get("mem_kb", {})
            out.append(hrow % (
                d["units"], rec["mode"], "%.0f" % (rec["ready_us"] / 1000.0),
                "%.0f" % (d["w_us_before"] / 1000.0) if d.get("w_us_before") is not None else "-",
                "%.0f" % d["polls"], fmt_pct(d["w_us"] / w), fmt_pct(d["mgr_us"] / w), fmt_pct(d["bus_us"] / w),
                fmt_pct(all_us / w), fmt_pct(idle_pct),
                "%.1f" % (all_us / d["checks"]) if d["checks"] else "-",
                "%.1f/%.1f" % (mem.get("VmRSS", 0) / 1024.0, mem.get("VmHWM", 0) / 1024.0)))
            if d["units"] == 1000 and rec["mode"] == "names":
                big = rec
        names = sorted((r for r in scale if r["mode"] == "names"), key=lambda r: r["data"]["units"])
        if len(names) >= 2 and names[-1]["data"]["units"] > names[0]["data"]["units"]:
            lo, hi = names[0]["data"], names[-1]["data"]
            dn = hi["units"] - lo["units"]
            out.append("   memory per watched unit (%d -> %d units): VmRSS %+.1f KiB, VmHWM %+.1f KiB per unit"
                       % (lo["units"], hi["units"], (hi["mem_kb"]["VmRSS"] - lo["mem_kb"]["VmRSS"]) / dn,
                          (hi["mem_kb"]["VmHWM"] - lo["mem_kb"]["VmHWM"]) / dn))
            if lo["polls"] and hi["polls"]:
                out.append("   CPU per watched unit per poll (%d -> %d units, all three): %.1f us"
                           % (lo["units"], hi["units"],
                              ((hi["w_us"] + hi["mgr_us"] + hi["bus_us"]) / hi["polls"]
                               - (lo["w_us"] + lo["mgr_us"] + lo["bus_us"]) / lo["polls"]) / dn))
        if churn:
            c = next(iter(churn.values()))
            out.append("")
            out.append("Churn at %d units: CPU (ms) for changes of a unit unitwarden does not watch. With a"
                       % c["units"])
            out.append("subscriber, systemd sends every unit's signals over the bus, and unitwarden receives and")
            out.append("drops them; without one, it sends nothing on the bus.")
            out.append("")
            crow = "%-48s %10s %10s %10s"
            out.append(crow % ("", "systemd", "dbus", "unitwarden"))
            for what, label in (("restart", "%d restarts of %s" % (c["restarts"], c["unit"])),
                                ("reload", "one daemon-reload")):
                out.append(label)
                for key, who in (("none", "no watcher"), ("names", "unitwarden subscribed")):
                    d = churn.get(key)
                    if not d:
                        continue
                    x = d[what]
                    out.append(crow % ("   " + who, fmt_ms(x["mgr_us"] / 1000.0),
                                       fmt_ms(x["bus_us"] / 1000.0),
                                       fmt_ms(x["w_us"] / 1000.0) if d["watcher"] else "-"))
            for key, d in churn.items():
                if d["restarted_during_window"]:
                    out.append("   WARNING churn %s: %d watched units restarted: %s"
                               % (key, len(d["restarted_during_window"]), " ".join(d["restarted_during_window"][:10])))
        based = set()
        for rec in scale:
            n = rec["data"]["units"]
            if rec.get("base") and n not in based:
                based.add(n)
                notes.extend(window_notes("scale %d base" % n, rec["base"]))
            notes.extend(window_notes("scale %d %s" % (n, rec["mode"]), rec["data"]))
        for rec in setup:
            notes.append("   scale setup: %d instances running (%s) in %.1f s"
                         % (rec["units"], rec["action"], rec["seconds"]))

    # --- status
    if status:
        out.append("")
        out.append("unitwarden status against the running daemon (the CLI process included)")
        srow = "%-36s %10s %10s %10s"
        out.append(srow % ("", "median", "max", "output"))
        for rec in status:
            for label in ("table", "json"):
                d = rec["data"][label]
                out.append(srow % ("   %s units, %s" % (rec["name"], "status --json" if label == "json" else "status"),
                                   fmt_ms(statistics.median(d["ms"])), fmt_ms(max(d["ms"])),
                                   "%.0f KiB" % (d["bytes"] / 1024.0)))

    # --- goals
    out.append("")
    out.append("unitwarden goals:")
    goal = lambda ok: "ok  " if ok else "MISS"
    if uw and active(uw):
        vals = active(uw)
        med = statistics.median(vals)
        out.append("   %s kill -> active median <= 30 ms: %.1f ms (p90 %.1f, p99 %.1f, max %.1f)"
                   % (goal(med <= 30), med, pct(vals, 90), pct(vals, 99), max(vals)))
    if gap_med is not None:
        out.append("   %s median gap to systemd <= 3 ms: %+.1f ms (p99 gap %+.1f ms)"
                   % (goal(gap_med <= 3), gap_med, gap_p99))
    if floor_med is not None:
        out.append("   info median gap to the bare D-Bus client (row e, the floor from outside): %+.1f ms"
                   " (p99 gap %+.1f ms)" % (floor_med, floor_p99))
    d = idle.get("unitwarden", {}).get("data")
    if d and d["checks"]:
        tot = (d["w_us"] + d["mgr_us"] + d["bus_us"]) / d["checks"]
        out.append("   %s <= 150 us CPU per unit-check, all included: %.0f us (unitwarden %.0f + systemd %.0f + dbus-daemon %.0f)"
                   % (goal(tot <= 150), tot, d["w_us"] / d["checks"], d["mgr_us"] / d["checks"], d["bus_us"] / d["checks"]))
    mems = [rec["data"]["mem_kb"] for rec in idle.values() if rec["name"] == "unitwarden" and "mem_kb" in rec["data"]]
    mems += [rec["mem_kb"] for key, rec in lat.items() if key == "unitwarden" and "mem_kb" in rec]
    if mems:
        hwm = max(m.get("VmHWM", 0) for m in mems) / 1024.0
        rss = max(m.get("VmRSS", 0) for m in mems) / 1024.0
        out.append("   %s RSS <= 6 MiB: VmRSS %.1f MiB, VmHWM %.1f MiB (largest of the latency and idle runs)"
                   % (goal(hwm <= 6), rss, hwm))
    if big:
        d = big["data"]
        mem = d["mem_kb"]
        out.append("   %s RSS <= 6 MiB at 1000 units: VmRSS %.1f MiB, VmHWM %.1f MiB"
                   % (goal(mem["VmHWM"] / 1024.0 <= 6), mem["VmRSS"] / 1024.0, mem["VmHWM"] / 1024.0))
        w = d["window_s"] * 1e6 / 100.0
        tot = (d["w_us"] + d["mgr_us"] + d["bus_us"]) / w
        out.append("   %s 1000 units at %s <= 1%% of one core, systemd and dbus-daemon included: %s%% "
                   "(unitwarden %s + systemd %s + dbus-daemon %s)"
                   % (goal(tot <= 1.0), big["interval"], fmt_pct(tot), fmt_pct(d["w_us"] / w),
                      fmt_pct(d["mgr_us"] / w), fmt_pct(d["bus_us"] / w)))
    elif scale:
        out.append("   (the 1000-unit goals need 1000 in BENCH_SCALE_UNITS)")
    out.append("")
    out.append("Details:")
    out.extend(notes)
    for key, rec in lat.items():
        mem = rec.get("mem_kb")
        if mem:
            out.append("   %s after the latency run: VmRSS %.1f MiB, VmHWM %.1f MiB"
                       % (key, mem.get("VmRSS", 0) / 1024.0, mem.get("VmHWM", 0) / 1024.0))
    print("\n".join(out))


def window_notes(label, d):
    """The raw figures of one measuring window, for the Details section."""
    extra = ""
    if "w_stat_us" in d:
        extra = "; watcher per /proc/PID/stat (ticks, incl. reaped children): %.0f ms" % (d["w_stat_us"] / 1000)
    notes = ["   %-16s window %.1f s, %s; watcher %.1f ms, manager %.1f ms (per /proc stat %.0f ms), "
             "bus %.1f ms CPU; %d forks%s" % (
                 label, d["window_s"], d.get("polls_source", "no checks"), d.get("w_us", 0) / 1000,
                 d["mgr_us"] / 1000, d["mgr_stat_us"] / 1000, d["bus_us"] / 1000, d["forks"], extra)]
    if d["restarted_during_window"]:
        shown = d["restarted_during_window"]
        notes.append("   WARNING %s: %d units restarted during the window: %s%s"
                     % (label, len(shown), " ".join(shown[:10]), " ..." if len(shown) > 10 else ""))
    return notes


def duration(text):
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix) and text[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(text[:-len(suffix)]) * scale
    raise argparse.ArgumentTypeError("not a duration: %r (use e.g. 1s, 500ms)" % text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("latency")
    l.add_argument("--unit", required=True)
    l.add_argument("--kills", type=int, default=50)
    l.add_argument("--out", required=True)
    l.add_argument("--log")
    l.add_argument("--gap-min", type=float, default=0.05)
    l.add_argument("--gap-max", type=float, default=0.15)
    l.add_argument("--timeout", type=float, default=10.0)
    fl = sub.add_parser("floor")
    fl.add_argument("--unit", required=True, help="its victim: no Restart=, nobody else watching")
    fl.add_argument("--kills", type=int, default=50)
    fl.add_argument("--out", required=True)
    fl.add_argument("--gap-min", type=float, default=0.05)
    fl.add_argument("--gap-max", type=float, default=0.15)
    fl.add_argument("--timeout", type=float, default=10.0)
    i = sub.add_parser("idle")
    i.add_argument("--window", type=float, required=True)
    i.add_argument("--units", nargs="+", default=[])
    i.add_argument("--units-file", help="file with the unit names, whitespace-separated")
    i.add_argument("--kind", required=True, choices=["none", "shell", "monit", "unitwarden"])
    i.add_argument("--watcher-pid", type=int)
    i.add_argument("--counter")
    i.add_argument("--interval", type=duration, default=1.0, help="unitwarden's interval (1s, 500ms)")
    i.add_argument("--calls-per-poll", type=int, default=1,
                   help="D-Bus calls unitwarden makes per poll (names in batches of 256)")
    i.add_argument("--out", required=True)
    c = sub.add_parser("churn")
    c.add_argument("--unit", required=True, help="an unwatched unit to restart")
    c.add_argument("--restarts", type=int, default=20)
    c.add_argument("--units-file", required=True, help="the watched units (must not be restarted)")
    c.add_argument("--watcher-pid", type=int)
    c.add_argument("--drain", type=float, default=1.0, help="seconds to let signals drain")
    c.add_argument("--out", required=True)
    st = sub.add_parser("status")
    st.add_argument("--bin", required=True)
    st.add_argument("--config", required=True)
    st.add_argument("--runs", type=int, default=20)
    st.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--header", required=True)
    a = p.parse_args()
    {"latency": cmd_latency, "floor": cmd_floor, "idle": cmd_idle, "churn": cmd_churn, "status": cmd_status,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
