//! Plain-language diagnosis of how a unit last ended: what systemd's `Result=` and the main
//! process's exit status mean, and what to look at next. Pure and total: any result, any pair of
//! numbers and any memory figure give an answer, never a panic.
//!
//! The commands named are those of the system manager (`journalctl -u`, `systemctl`); the
//! email's journal excerpt names the exact command for a user manager.

use std::fmt;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::unit::{ServiceResult, UnitName};

/// `ExecMainCode`: how `waitid(2)` saw the main process end (`CLD_*` of `<signal.h>`).
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// What a unit's end means and what to look at next, each one short line of ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// systemd's words, compact, for tables: `exit-code 203/EXEC`, `signal 9/KILL`, `oom-kill`.
    pub label: String,
    /// What happened, in plain words.
    pub meaning: String,
    /// What to look at next; reads after "check".
    pub check: String,
}

impl fmt::Display for Diagnosis {
    /// Two sentences to follow a log message: `Killed (SIGKILL): ... Check the kernel log ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut meaning = self.meaning.chars();
        match meaning.next() {
            // systemd spells itself in lower case, even at the start of a sentence.
            Some(first) if !self.meaning.starts_with("systemd") => {
                write!(f, "{}{}", first.to_ascii_uppercase(), meaning.as_str())?
            }
            _ => f.write_str(&self.meaning)?,
        }
        write!(f, ". Check {}", self.check)
    }
}

/// How the main process ended, from `ExecMainCode` and `ExecMainStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited(i32),
    Killed(i32),
    Dumped(i32),
    /// Still running, never started, or a code no service reports.
    Unknown,
}

impl End {
    fn of(exec_main: Option<(i32, i32)>) -> End {
        match exec_main {
            Some((CLD_EXITED, status)) => End::Exited(status),
            Some((CLD_KILLED, signal)) => End::Killed(signal),
            Some((CLD_DUMPED, signal)) => End::Dumped(signal),
            _ => End::Unknown,
        }
    }

    /// `203/EXEC`, `3`, `9/KILL`: the status as `systemctl status` words it.
    fn status(self) -> Option<String> {
        match self {
            End::Exited(n) => Some(match exit_name(n) {
                Some(name) => format!("{n}/{name}"),
                None => n.to_string(),
            }),
            End::Killed(s) | End::Dumped(s) => Some(match Signal::try_from(s) {
                Ok(sig) => format!("{s}/{}", sig.as_str().trim_start_matches("SIG")),
                Err(_) => s.to_string(),
            }),
            End::Unknown => None,
        }
    }

    /// The `code=` word of `systemctl status`, for when systemd gave no `Result=`.
    fn code_word(self) -> &'static str {
        match self {
            End::Exited(_) => "exited",
            End::Killed(_) => "killed",
            End::Dumped(_) => "dumped",
            End::Unknown => "unknown",
        }
    }
}

/// The name `systemctl status` gives an exit status (`status=203/EXEC`): the C library's two
/// and systemd's own codes (`exit-status.h`), not the conventions programs may or may not follow.
pub fn exit_name(status: i32) -> Option<&'static str> {
    match status {
        0 => Some("SUCCESS"),
        1 => Some("FAILURE"),
        _ => systemd_exit(status).map(|(name, _, _)| name),
    }
}

/// systemd's own exit codes (200-245): the process failed while systemd prepared it, before
/// the program ran. Name, what failed, and where to look when the unit's journal is not enough.
fn systemd_exit(status: i32) -> Option<(&'static str, &'static str, Option<&'static str>)> {
    Some(match status {
        200 => (
            "CHDIR",
            "WorkingDirectory= is missing or not accessible",
            Some("that WorkingDirectory= exists and User= may enter it"),
        ),
        201 => ("NICE", "Nice= could not be applied", None),
        202 => ("FDS", "its file descriptors could not be set up", None),
        203 => (
            "EXEC",
            "ExecStart= is missing or not executable (or its #! interpreter is)",
            Some("the ExecStart= path (systemctl cat): it must exist and be executable by User="),
        ),
        204 => (
            "MEMORY",
            "out of memory while preparing it",
            Some("the host's free memory (free -m)"),
        ),
        205 => ("LIMITS", "a Limit*= setting could not be applied", None),
        206 => ("OOM_ADJUST", "OOMScoreAdjust= could not be applied", None),
        207 => ("SIGNAL_MASK", "the signal mask could not be set", None),
        208 => ("STDIN", "StandardInput= could not be set up", None),
        209 => (
            "STDOUT",
            "StandardOutput= could not be set up",
            Some("the file, socket or tty StandardOutput= names: it must exist and be writable"),
        ),
        210 => (
            "CHROOT",
            "RootDirectory=/RootImage= could not be entered",
            None,
        ),
        211 => (
            "IOPRIO",
            "IOSchedulingClass=/Priority= could not be applied",
            None,
        ),
        212 => ("TIMERSLACK", "TimerSlackNSec= could not be applied", None),
        213 => ("SECUREBITS", "SecureBits= could not be applied", None),
        214 => (
            "SETSCHEDULER",
            "CPUSchedulingPolicy= could not be applied",
            None,
        ),
        215 => ("CPUAFFINITY", "CPUAffinity= could not be applied", None),
        216 => (
            "GROUP",
            "Group= or SupplementaryGroups= does not exist or could not be set",
            Some("that the group exists (getent group NAME)"),
        ),
        217 => (
            "USER",
            "User= does not exist or could not be set",
            Some("that the user exists (getent passwd NAME)"),
        ),
        218 => ("CAPABILITIES", "its capabilities could not be set", None),
        219 => ("CGROUP", "its control group could not be set up", None),
        220 => ("SETSID", "a new session could not be created", None),
        221 => (
            "CONFIRM",
            "the start was refused at the confirmation prompt",
            None,
        ),
        222 => ("STDERR", "StandardError= could not be set up", None),
        224 => (
            "PAM",
            "the PAM session (PAMName=) could not be opened",
            None,
        ),
        225 => ("NETWORK", "PrivateNetwork= could not be set up", None),
        226 => (
            "NAMESPACE",
            "sandbox setup failed, often a missing path in *Paths=",
            Some("the sandbox settings (Protect*=, Private*=, *Paths=) and that their paths exist"),
        ),
        227 => (
            "NO_NEW_PRIVILEGES",
            "NoNewPrivileges= could not be applied",
            None,
        ),
        228 => ("SECCOMP", "SystemCallFilter= could not be applied", None),
        229 => (
            "SELINUX_CONTEXT",
            "SELinuxContext= could not be applied",
            None,
        ),
        230 => ("PERSONALITY", "Personality= could not be applied", None),
        231 => ("APPARMOR", "AppArmorProfile= could not be applied", None),
        232 => (
            "ADDRESS_FAMILIES",
            "RestrictAddressFamilies= could not be applied",
            None,
        ),
        233 => (
            "RUNTIME_DIRECTORY",
            "RuntimeDirectory= could not be created",
            None,
        ),
        235 => ("CHOWN", "a socket's owner could not be set", None),
        236 => (
            "SMACK_PROCESS_LABEL",
            "SmackProcessLabel= could not be applied",
            None,
        ),
        237 => ("KEYRING", "its kernel keyring could not be set up", None),
        238 => (
            "STATE_DIRECTORY",
            "StateDirectory= could not be created",
            None,
        ),
        239 => (
            "CACHE_DIRECTORY",
            "CacheDirectory= could not be created",
            None,
        ),
        240 => (
            "LOGS_DIRECTORY",
            "LogsDirectory= could not be created",
            None,
        ),
        241 => (
            "CONFIGURATION_DIRECTORY",
            "ConfigurationDirectory= could not be created",
            None,
        ),
        242 => (
            "NUMA_POLICY",
            "NUMAPolicy=/NUMAMask= could not be applied",
            None,
        ),
        243 => (
            "CREDENTIALS",
            "its credentials (LoadCredential= and similar) could not be set up",
            None,
        ),
        244 => (
            "BPF",
            "a BPF restriction (RestrictFileSystems= and similar) failed",
            None,
        ),
        245 => ("KSM", "MemoryKSM= could not be applied", None),
        _ => return None,
    })
}

/// By LSB convention (2-7) and BSD's sysexits.h (64-78): what a program may mean by a status.
fn conventional_exit(status: i32) -> Option<(&'static str, &'static str)> {
    Some(match status {
        2 => ("INVALIDARGUMENT", "invalid or excess arguments"),
        3 => ("NOTIMPLEMENTED", "unimplemented feature"),
        4 => ("NOPERMISSION", "insufficient privileges"),
        5 => ("NOTINSTALLED", "program not installed"),
        6 => ("NOTCONFIGURED", "program not configured"),
        7 => ("NOTRUNNING", "program not running"),
        64 => ("USAGE", "command line usage error"),
        65 => ("DATAERR", "data format error"),
        66 => ("NOINPUT", "cannot open input"),
        67 => ("NOUSER", "addressee unknown"),
        68 => ("NOHOST", "host name unknown"),
        69 => ("UNAVAILABLE", "service unavailable"),
        70 => ("SOFTWARE", "internal software error"),
        71 => ("OSERR", "system error"),
        72 => ("OSFILE", "critical OS file missing"),
        73 => ("CANTCREAT", "cannot create output file"),
        74 => ("IOERR", "input/output error"),
        75 => ("TEMPFAIL", "temporary failure"),
        76 => ("PROTOCOL", "remote error in protocol"),
        77 => ("NOPERM", "permission denied"),
        78 => ("CONFIG", "configuration error"),
        _ => return None,
    })
}

/// A signal's name (`SIGKILL`, or `signal 40` for one without a name), how the process ended
/// by it, and why that usually happens.
fn signal_words(signal: i32) -> (String, &'static str, &'static str) {
    let Ok(sig) = Signal::try_from(signal) else {
        return (
            format!("signal {signal}"),
            "killed",
            "a signal it does not handle",
        );
    };
    let (verb, why) = match sig {
        Signal::SIGKILL => (
            "killed",
            "by an operator, a script, the OOM killer, or systemd when a stop timed out",
        ),
        Signal::SIGTERM => ("terminated", "someone or something asked it to stop"),
        Signal::SIGINT => ("interrupted", "as by Ctrl-C"),
        Signal::SIGHUP => (
            "hung up",
            "it does not handle SIGHUP, often sent to make it reload",
        ),
        Signal::SIGQUIT => ("quit", "someone asked it to quit"),
        Signal::SIGSEGV => (
            "crashed",
            "invalid memory access, a bug in the program or a library",
        ),
        Signal::SIGABRT => (
            "aborted",
            "it stopped itself after a fatal internal error (assertion, panic)",
        ),
        Signal::SIGBUS => (
            "crashed",
            "bad memory access, often a mapped file that was truncated",
        ),
        Signal::SIGFPE => ("crashed", "arithmetic error such as division by zero"),
        Signal::SIGILL => (
            "crashed",
            "illegal instruction, a binary for another CPU or a corrupt one",
        ),
        Signal::SIGSYS => ("killed", "a system call that SystemCallFilter= forbids"),
        Signal::SIGPIPE => ("killed", "it wrote to a pipe or socket nobody reads"),
        Signal::SIGXCPU => ("killed", "it used up its CPU time limit (LimitCPU=)"),
        Signal::SIGXFSZ => ("killed", "a file grew past its size limit (LimitFSIZE=)"),
        _ => ("killed", "a signal it does not handle"),
    };
    (sig.as_str().to_string(), verb, why)
}

/// Where to look after a process died of `signal`.
fn signal_check(signal: i32, unit: &UnitName) -> String {
    match Signal::try_from(signal) {
        Ok(Signal::SIGKILL) => format!(
            "the kernel log for an OOM kill (journalctl -k) and who sent it (journalctl -u {unit})"
        ),
        Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGHUP) => {
            format!("who sent it: an operator, a deploy or logrotate script (journalctl -u {unit})")
        }
        Ok(Signal::SIGSYS) => {
            format!("SystemCallFilter= of {unit}; journalctl -k names the forbidden call")
        }
        Ok(
            Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE | Signal::SIGABRT,
        ) => {
            format!("its last log lines (journalctl -u {unit}) and coredumpctl info {unit}")
        }
        _ => format!("its last log lines: journalctl -u {unit}"),
    }
}

/// `1.5 GiB`: a byte count for people. `None` for systemd's "not set" (`u64::MAX`).
pub fn format_bytes(bytes: u64) -> Option<String> {
    if bytes == u64::MAX {
        return None;
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return Some(format!("{bytes} B"));
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    Some(format!("{value:.1} {unit}"))
}

/// Keeps a value from the bus printable and short: it goes into mail and log lines as is.
fn sanitize(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(40)
        .collect()
}

fn diag(label: String, meaning: String, check: String) -> Option<Diagnosis> {
    Some(Diagnosis {
        label,
        meaning,
        check,
    })
}

/// `label` with the status appended where one is known: `exit-code 203/EXEC`.
fn with_status(label: &str, end: End) -> String {
    match end.status() {
        Some(status) => format!("{label} {status}"),
        None => label.to_string(),
    }
}

/// What `unit`'s last end means, from its `Result=` and `(ExecMainCode, ExecMainStatus)`;
/// `peak_memory` (bytes, `MemoryPeak`) sharpens an OOM kill. `None` when nothing is known.
pub fn diagnose(
    unit: &UnitName,
    result: Option<&ServiceResult>,
    exec_main: Option<(i32, i32)>,
    peak_memory: Option<u64>,
) -> Option<Diagnosis> {
    let end = End::of(exec_main);
    let journal = format!("journalctl -u {unit}");
    let Some(result) = result else {
        // No Result= (not a service, or not read yet): the process's end alone.
        let label = with_status(end.code_word(), end);
        return match end {
            End::Exited(0) => clean_exit(label, &journal),
            End::Exited(n) => exit_code(label, n, unit),
            End::Killed(s) => killed(label, s, unit),
            End::Dumped(s) => core_dump(label, s, unit),
            End::Unknown => None,
        };
    };
    let name = sanitize(result.as_str());
    let label = with_status(if name.is_empty() { "unknown" } else { &name }, end);
    match result {
        ServiceResult::Success => match end {
            End::Killed(s) | End::Dumped(s) => {
                let (name, _, _) = signal_words(s);
                diag(
                    label,
                    format!("stopped by {name}, which systemd counts as a clean exit"),
                    format!(
                        "who stopped it: systemctl stop, an operator or a script ({journal})"
                    ),
                )
            }
            End::Exited(n) if n != 0 => diag(
                label,
                format!("exited with status {n}, which SuccessExitStatus= counts as success"),
                format!("why it ended: {journal}"),
            ),
            _ => clean_exit(label, &journal),
        },
        ServiceResult::ExitCode => match end {
            End::Exited(n) if n != 0 => exit_code(label, n, unit),
            _ => diag(
                label,
                "a command of the unit (ExecStartPre=, ExecStart=, ExecStop=...) failed".into(),
                format!("which one and why: {journal}"),
            ),
        },
        ServiceResult::Signal => match end {
            End::Killed(s) | End::Dumped(s) => killed(label, s, unit),
            _ => diag(
                label,
                "killed by a signal".into(),
                format!("who sent it: {journal}"),
            ),
        },
        ServiceResult::CoreDump => match end {
            End::Killed(s) | End::Dumped(s) => core_dump(label, s, unit),
            _ => diag(
                label,
                "crashed and dumped core".into(),
                format!("coredumpctl info {unit} for the backtrace ({journal})"),
            ),
        },
        ServiceResult::OomKill => {
            let meaning = match peak_memory.and_then(format_bytes) {
                Some(peak) => format!(
                    "killed by the kernel's OOM killer: out of memory at a peak of {peak}"
                ),
                None => "killed by the kernel's OOM killer: the unit or the host ran out of memory"
                    .into(),
            };
            diag(
                label,
                meaning,
                format!(
                    "MemoryMax= of {unit} (systemctl show -p MemoryMax), free memory, and journalctl -k"
                ),
            )
        }
        ServiceResult::Timeout => diag(
            label,
            "timed out: a start, stop or reload took longer than TimeoutStartSec=/TimeoutStopSec="
                .into(),
            format!(
                "why it hangs ({journal}); a Type=notify service must send READY=1 in time"
            ),
        ),
        ServiceResult::Watchdog => diag(
            label,
            "stopped answering: no watchdog ping within WatchdogSec=, so systemd killed it".into(),
            format!("what it did before it hung: {journal}"),
        ),
        ServiceResult::StartLimitHit => diag(
            label,
            "systemd refused to start it: more than StartLimitBurst= starts within StartLimitIntervalSec="
                .into(),
            format!("why it keeps failing ({journal}), then systemctl reset-failed {unit}"),
        ),
        ServiceResult::Resources => diag(
            label,
            "systemd could not set up something it needs (PIDFile=, a directory, a socket, fork)"
                .into(),
            format!("which resource: {journal}"),
        ),
        ServiceResult::Protocol => diag(
            label,
            "it broke its Type= protocol, e.g. Type=forking wrote no PIDFile=".into(),
            format!("Type= and PIDFile= (systemctl cat {unit}) against how the program starts"),
        ),
        ServiceResult::Other(other) => match other.as_str() {
            "exec-condition" => diag(
                label,
                "skipped on purpose: ExecCondition= said not to run it".into(),
                format!("the ExecCondition= command (systemctl cat {unit})"),
            ),
            "cleaner-failed" => diag(
                label,
                "systemctl clean could not remove its directories".into(),
                format!("which path failed: {journal}"),
            ),
            "trigger-limit-hit" => diag(
                label,
                "triggered too often: TriggerLimitBurst= within TriggerLimitIntervalSec=".into(),
                format!("what floods it, then systemctl reset-failed {unit}"),
            ),
            "service-start-limit-hit" => diag(
                label,
                "its service hit its start limit, so systemd stopped this unit too".into(),
                format!("why the service keeps failing, then systemctl reset-failed {unit}"),
            ),
            _ => diag(
                label,
                format!("systemd reports Result={}", sanitize(other)),
                format!("systemctl status {unit} and {journal}"),
            ),
        },
    }
}

fn clean_exit(label: String, journal: &str) -> Option<Diagnosis> {
    diag(
        label,
        "ended without an error: stopped on purpose or the program exited by itself".into(),
        format!("why it ended: {journal}"),
    )
}

fn exit_code(label: String, n: i32, unit: &UnitName) -> Option<Diagnosis> {
    let journal = format!("journalctl -u {unit}");
    if let Some((name, what, check)) = systemd_exit(n) {
        return diag(
            label,
            format!("systemd could not start it ({n}/{name}): {what}"),
            match check {
                Some(check) => format!("{check} ({journal})"),
                None => format!("the setting named in {journal}"),
            },
        );
    }
    let meaning = match n {
        1 => "exited with status 1: the program reported a generic error".to_string(),
        126 => "exited with status 126: a shell found a command it could not execute".into(),
        127 => "exited with status 127: a shell could not find a command".into(),
        255 => "exited with status 255: a fatal error the program reported (often exit(-1))".into(),
        129..=192 => match Signal::try_from(n - 128) {
            Ok(sig) => format!(
                "exited with status {n} (128+{}): a wrapper reports its child died of {}",
                n - 128,
                sig.as_str()
            ),
            Err(_) => format!("exited with status {n}: the program's own error code"),
        },
        _ => match conventional_exit(n) {
            Some((name, what)) => {
                format!("exited with status {n}; by convention {name}, {what}")
            }
            None => format!("exited with status {n}: the program's own error code"),
        },
    };
    diag(
        label,
        meaning,
        format!("the program's last log lines: {journal}"),
    )
}

fn killed(label: String, signal: i32, unit: &UnitName) -> Option<Diagnosis> {
    let (name, verb, why) = signal_words(signal);
    diag(
        label,
        format!("{verb} ({name}): {why}"),
        signal_check(signal, unit),
    )
}

fn core_dump(label: String, signal: i32, unit: &UnitName) -> Option<Diagnosis> {
    let (name, _, why) = signal_words(signal);
    diag(
        label,
        format!("crashed and dumped core ({name}): {why}"),
        format!("coredumpctl info {unit} for the backtrace (coredumpctl list {unit} for more)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitName {
        UnitName::parse("web").unwrap()
    }

    fn run(result: Option<&str>, exec: Option<(i32, i32)>, peak: Option<u64>) -> Option<Diagnosis> {
        let result = result.map(ServiceResult::parse);
        diagnose(&unit(), result.as_ref(), exec, peak)
    }

    /// (Result=, (ExecMainCode, ExecMainStatus), peak memory, label, words in the meaning,
    /// words in the check)
    type Row = (
        Option<&'static str>,
        Option<(i32, i32)>,
        Option<u64>,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    );

    #[test]
    fn each_result_and_status_reads_in_plain_words() {
        let table: Vec<Row> = vec![
            (
                Some("oom-kill"),
                Some((2, 9)),
                Some(3 << 29),
                "oom-kill 9/KILL",
                &["OOM killer", "peak of 1.5 GiB"],
                &["MemoryMax=", "journalctl -k"],
            ),
            (
                Some("oom-kill"),
                None,
                None,
                "oom-kill",
                &["OOM killer", "ran out of memory"],
                &["MemoryMax= of web.service"],
            ),
            (
                Some("oom-kill"),
                None,
                Some(u64::MAX),
                "oom-kill",
                &["ran out of memory"],
                &["MemoryMax="],
            ),
            (
                Some("exit-code"),
                Some((1, 203)),
                None,
                "exit-code 203/EXEC",
                &["203/EXEC", "ExecStart= is missing or not executable"],
                &["ExecStart= path", "journalctl -u web.service"],
            ),
            (
                Some("exit-code"),
                Some((1, 200)),
                None,
                "exit-code 200/CHDIR",
                &["200/CHDIR", "WorkingDirectory="],
                &["WorkingDirectory= exists"],
            ),
            (
                Some("exit-code"),
                Some((1, 209)),
                None,
                "exit-code 209/STDOUT",
                &["209/STDOUT", "StandardOutput="],
                &["StandardOutput= names"],
            ),
            (
                Some("exit-code"),
                Some((1, 217)),
                None,
                "exit-code 217/USER",
                &["217/USER", "User= does not exist"],
                &["getent passwd"],
            ),
            (
                Some("exit-code"),
                Some((1, 226)),
                None,
                "exit-code 226/NAMESPACE",
                &["226/NAMESPACE", "sandbox setup failed"],
                &["*Paths="],
            ),
            (
                Some("exit-code"),
                Some((1, 206)),
                None,
                "exit-code 206/OOM_ADJUST",
                &["206/OOM_ADJUST", "OOMScoreAdjust="],
                &["journalctl -u web.service"],
            ),
            (
                Some("exit-code"),
                Some((1, 250)),
                None,
                "exit-code 250",
                &["status 250", "own error code"],
                &["journalctl -u web.service"],
            ),
            (
                Some("exit-code"),
                Some((1, 3)),
                None,
                "exit-code 3",
                &["status 3; by convention NOTIMPLEMENTED"],
                &["journalctl -u web.service"],
            ),
            (
                Some("exit-code"),
                Some((1, 1)),
                None,
                "exit-code 1/FAILURE",
                &["status 1", "generic error"],
                &["journalctl -u web.service"],
            ),
            (
                Some("exit-code"),
                Some((1, 78)),
                None,
                "exit-code 78",
                &["status 78", "CONFIG, configuration error"],
                &["journalctl"],
            ),
            (
                Some("exit-code"),
                Some((1, 42)),
                None,
                "exit-code 42",
                &["status 42", "own error code"],
                &["journalctl"],
            ),
            (
                Some("exit-code"),
                Some((1, 137)),
                None,
                "exit-code 137",
                &["128+9", "SIGKILL"],
                &["journalctl"],
            ),
            (
                Some("exit-code"),
                Some((1, 127)),
                None,
                "exit-code 127",
                &["could not find a command"],
                &["journalctl"],
            ),
            (
                Some("exit-code"),
                None,
                None,
                "exit-code",
                &["ExecStartPre="],
                &["journalctl -u web.service"],
            ),
            (
                Some("signal"),
                Some((2, 9)),
                None,
                "signal 9/KILL",
                &["killed (SIGKILL): by an operator, a script, the OOM killer"],
                &["journalctl -k", "journalctl -u web.service"],
            ),
            (
                Some("signal"),
                Some((2, 11)),
                None,
                "signal 11/SEGV",
                &["crashed (SIGSEGV)", "invalid memory access"],
                &["coredumpctl info web.service"],
            ),
            (
                Some("signal"),
                Some((2, 6)),
                None,
                "signal 6/ABRT",
                &["aborted (SIGABRT)"],
                &["journalctl -u web.service"],
            ),
            (
                Some("signal"),
                Some((2, 15)),
                None,
                "signal 15/TERM",
                &["terminated (SIGTERM)"],
                &["who sent it"],
            ),
            (
                Some("signal"),
                Some((2, 1)),
                None,
                "signal 1/HUP",
                &["hung up (SIGHUP)", "reload"],
                &["who sent it"],
            ),
            (
                Some("signal"),
                Some((2, 31)),
                None,
                "signal 31/SYS",
                &["SIGSYS", "SystemCallFilter="],
                &["SystemCallFilter="],
            ),
            (
                Some("signal"),
                Some((2, 40)),
                None,
                "signal 40",
                &["killed (signal 40)"],
                &["journalctl -u web.service"],
            ),
            (
                Some("signal"),
                None,
                None,
                "signal",
                &["killed by a signal"],
                &["journalctl"],
            ),
            (
                Some("core-dump"),
                Some((3, 11)),
                None,
                "core-dump 11/SEGV",
                &["dumped core (SIGSEGV)"],
                &[
                    "coredumpctl info web.service",
                    "coredumpctl list web.service",
                ],
            ),
            (
                Some("core-dump"),
                None,
                None,
                "core-dump",
                &["dumped core"],
                &["coredumpctl info web.service"],
            ),
            (
                Some("timeout"),
                None,
                None,
                "timeout",
                &["timed out", "TimeoutStartSec="],
                &["READY=1"],
            ),
            (
                Some("watchdog"),
                Some((2, 6)),
                None,
                "watchdog 6/ABRT",
                &["WatchdogSec="],
                &["journalctl -u web.service"],
            ),
            (
                Some("start-limit-hit"),
                None,
                None,
                "start-limit-hit",
                &["StartLimitBurst=", "StartLimitIntervalSec="],
                &["systemctl reset-failed web.service"],
            ),
            (
                Some("resources"),
                None,
                None,
                "resources",
                &["PIDFile="],
                &["journalctl"],
            ),
            (
                Some("protocol"),
                None,
                None,
                "protocol",
                &["Type="],
                &["systemctl cat web.service"],
            ),
            (
                Some("exec-condition"),
                Some((1, 1)),
                None,
                "exec-condition 1/FAILURE",
                &["ExecCondition="],
                &["ExecCondition="],
            ),
            (
                Some("cleaner-failed"),
                None,
                None,
                "cleaner-failed",
                &["systemctl clean"],
                &["journalctl"],
            ),
            (
                Some("trigger-limit-hit"),
                None,
                None,
                "trigger-limit-hit",
                &["TriggerLimitBurst="],
                &["reset-failed"],
            ),
            (
                Some("brand-new-result"),
                None,
                None,
                "brand-new-result",
                &["Result=brand-new-result"],
                &["systemctl status web.service"],
            ),
            (
                Some("success"),
                Some((2, 15)),
                None,
                "success 15/TERM",
                &["stopped by SIGTERM", "clean exit"],
                &["systemctl stop"],
            ),
            (
                Some("success"),
                Some((1, 0)),
                None,
                "success 0/SUCCESS",
                &["without an error"],
                &["journalctl -u web.service"],
            ),
            (
                Some("success"),
                Some((1, 143)),
                None,
                "success 143",
                &["SuccessExitStatus="],
                &["journalctl"],
            ),
            (
                None,
                Some((1, 203)),
                None,
                "exited 203/EXEC",
                &["203/EXEC"],
                &["ExecStart="],
            ),
            (
                None,
                Some((2, 9)),
                None,
                "killed 9/KILL",
                &["SIGKILL"],
                &["journalctl -k"],
            ),
            (
                None,
                Some((3, 7)),
                None,
                "dumped 7/BUS",
                &["dumped core (SIGBUS)"],
                &["coredumpctl"],
            ),
            (
                None,
                Some((1, 0)),
                None,
                "exited 0/SUCCESS",
                &["without an error"],
                &["journalctl"],
            ),
        ];
        for (result, exec, peak, label, meaning, check) in table {
            let d = run(result, exec, peak)
                .unwrap_or_else(|| panic!("no diagnosis for {result:?} {exec:?}"));
            let case = format!("{result:?} {exec:?}: {d:?}");
            assert_eq!(d.label, label, "{case}");
            for want in meaning {
                assert!(d.meaning.contains(want), "meaning lacks {want:?}: {case}");
            }
            for want in check {
                assert!(d.check.contains(want), "check lacks {want:?}: {case}");
            }
            for text in [&d.label, &d.meaning, &d.check] {
                assert!(text.is_ascii() && !text.contains('\n'), "{case}");
                assert!(text.len() <= 110, "{} chars: {text}", text.len());
            }
        }
    }

    #[test]
    fn nothing_known_means_no_diagnosis() {
        assert_eq!(run(None, None, None), None);
        assert_eq!(run(None, Some((0, 0)), None), None);
        assert_eq!(run(None, Some((5, 19)), None), None);
    }

    #[test]
    fn any_input_gives_an_answer_without_panicking() {
        let weird = [
            i32::MIN,
            -1,
            0,
            1,
            64,
            128,
            129,
            192,
            193,
            199,
            223,
            234,
            246,
            254,
            255,
            256,
            i32::MAX,
        ];
        let results = [
            None,
            Some("exit-code"),
            Some("signal"),
            Some("core-dump"),
            Some("success"),
            Some(""),
            Some("\u{1b}[31mcrash\nnext line\u{e9}"),
        ];
        for result in results {
            for code in [-1, 0, 1, 2, 3, 4, 99] {
                for status in weird {
                    for peak in [
                        None,
                        Some(0),
                        Some(1023),
                        Some(u64::MAX - 1),
                        Some(u64::MAX),
                    ] {
                        if let Some(d) = run(result, Some((code, status)), peak) {
                            for text in [&d.label, &d.meaning, &d.check] {
                                assert!(text.is_ascii() && !text.contains('\n'), "{d:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_log_form_is_two_sentences() {
        let d = run(Some("signal"), Some((2, 9)), None).unwrap();
        assert_eq!(
            d.to_string(),
            "Killed (SIGKILL): by an operator, a script, the OOM killer, or systemd when a stop \
             timed out. Check the kernel log for an OOM kill (journalctl -k) and who sent it \
             (journalctl -u web.service)"
        );
    }

    #[test]
    fn systemd_keeps_its_lower_case_at_the_start_of_a_sentence() {
        let d = run(Some("start-limit-hit"), None, None).unwrap();
        assert!(d.to_string().starts_with("systemd refused"), "{d}");
    }

    #[test]
    fn exit_names_follow_systemctl() {
        assert_eq!(exit_name(0), Some("SUCCESS"));
        assert_eq!(exit_name(1), Some("FAILURE"));
        assert_eq!(exit_name(3), None);
        assert_eq!(exit_name(203), Some("EXEC"));
        assert_eq!(exit_name(223), None, "reserved, never used");
        assert_eq!(exit_name(234), None, "reserved, never used");
        assert_eq!(exit_name(244), Some("BPF"));
        assert_eq!(exit_name(-203), None);
    }

    #[test]
    fn memory_reads_in_binary_units() {
        assert_eq!(format_bytes(0).as_deref(), Some("0 B"));
        assert_eq!(format_bytes(1023).as_deref(), Some("1023 B"));
        assert_eq!(format_bytes(1536).as_deref(), Some("1.5 KiB"));
        assert_eq!(format_bytes(512 << 20).as_deref(), Some("512.0 MiB"));
        assert_eq!(format_bytes(u64::MAX - 1).as_deref(), Some("16384.0 PiB"));
        assert_eq!(format_bytes(u64::MAX), None);
    }
}
