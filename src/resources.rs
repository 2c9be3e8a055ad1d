//! Host resources (`[resources]`): disk, memory and load readings, and the thresholds they
//! cross. Two halves: [`read`] does the blocking I/O (`statvfs(2)`, `/proc/meminfo`,
//! `/proc/loadavg`, `sysconf(3)`) and is meant for a blocking thread; [`Tracker`] is pure and
//! turns successive readings into crossings, each told once.
//!
//! What is measured:
//! - **Disk**, like `df`: used = `f_blocks - f_bfree`, and the share is
//!   used / (used + `f_bavail`), so the blocks reserved for root do not count as room: a disk
//!   at 100% is one that users can no longer write to.
//! - **Memory**: (`MemTotal - MemAvailable`) / `MemTotal` from `/proc/meminfo`. A kernel
//!   without `MemAvailable` (before 3.14) gives an unreadable reading, not a guess from
//!   `MemFree`, which counts the page cache as used.
//! - **Load**: the 1-minute load average over the host's online CPUs
//!   (`sysconf(_SC_NPROCESSORS_ONLN)`). `/proc/loadavg` counts runnable tasks on the whole
//!   host, so it is divided by the whole host's CPUs, not by `available_parallelism`, which
//!   shrinks with the daemon's own cgroup quota and CPU affinity and would make a quiet host
//!   look overloaded.
//!
//! The rules of [`Tracker::assess`]:
//! - A check is over when its value is above its threshold, and back only when it falls below
//!   the threshold minus a margin: 5 percentage points for disk and memory (90% is back below
//!   85%; a threshold under 10% uses half of itself, so that 4% can still come back below 2%),
//!   10% of the threshold for load (2.0 is back below 1.8). A value that hovers at the
//!   threshold is one [`Crossing::Over`], not a flap.
//! - The first assessment reports the checks that are over already: the operator wants to know
//!   at start. Checks under their threshold say nothing.
//! - A check that cannot be read is [`Crossing::Unreadable`] once, until it is read again. It
//!   keeps its state: one that was over stays over and is not reported back.
//! - A check that is no longer read (removed from the config by a reload) is forgotten; if it
//!   comes back it starts afresh. A changed threshold applies to the state as it is: a check
//!   over 90% whose threshold is raised to 99% is back once it reads below 94%.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ResourceSettings;
use crate::diagnosis::format_bytes;
use crate::text;

const MEMINFO: &str = "/proc/meminfo";
const LOADAVG: &str = "/proc/loadavg";
/// The margin of disk and memory thresholds, in percentage points.
const PERCENT_MARGIN: f64 = 5.0;
/// The margin of load thresholds, as a share of the threshold.
const LOAD_MARGIN: f64 = 0.1;
/// Text from `/proc` quoted in a message is cut here: one line, not a file.
const QUOTE_MAX: usize = 40;

/// One configured check, identified stably across readings and reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The file system holding this path.
    Disk(PathBuf),
    Memory,
    Load,
}

impl Resource {
    /// A value or threshold of this check for people: `93.1%` (or `90%` when whole) for disk
    /// and memory, `2.50` for load.
    pub fn show(&self, value: f64) -> String {
        match self {
            Resource::Disk(_) | Resource::Memory => {
                let percent = value * 100.0;
                if (percent - percent.round()).abs() < 1e-9 {
                    format!("{percent:.0}%")
                } else {
                    format!("{percent:.1}%")
                }
            }
            Resource::Load => format!("{value:.2}"),
        }
    }
}

/// `disk /var`, `memory`, `load`: how lines and alerts name the check.
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Disk(path) => write!(f, "disk {}", text::path(path)),
            Resource::Memory => f.write_str("memory"),
            Resource::Load => f.write_str("load"),
        }
    }
}

/// What one check read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub resource: Resource,
    /// The used share (0 to 1) for disk and memory, the load per CPU for load; or why it
    /// could not be read, as one line.
    pub value: Result<f64, String>,
    /// Over when `value` is above this (same unit as `value`).
    pub threshold: f64,
    /// Back only when `value` is below this: the threshold minus the margin.
    pub back_below: f64,
    /// The reading for people: `/var 93.1% used (9.3 GiB of 10.0 GiB)`,
    /// `memory 91.0% used (MemAvailable 1.4 GiB of 15.6 GiB)`,
    /// `load 3.10 per CPU (12.40 over 4 CPUs)`, or the error of an unreadable one.
    pub detail: String,
}

impl Reading {
    /// A disk or memory reading against a threshold of `max_used_percent`.
    pub fn percent(
        resource: Resource,
        max_used_percent: u32,
        value: Result<f64, String>,
        detail: String,
    ) -> Reading {
        let max = f64::from(max_used_percent);
        // Computed in percentage points and divided once, so that 90% gives exactly the
        // ratio 0.85 that a reading of 85/100 gives, not 0.9 - 0.05.
        let margin = PERCENT_MARGIN.min(max / 2.0);
        Reading {
            resource,
            value,
            threshold: max / 100.0,
            back_below: (max - margin) / 100.0,
            detail,
        }
    }

    /// A load reading against `load_max` per CPU.
    pub fn load(load_max: f64, value: Result<f64, String>, detail: String) -> Reading {
        Reading {
            resource: Resource::Load,
            value,
            threshold: load_max,
            back_below: load_max - load_max * LOAD_MARGIN,
            detail,
        }
    }

    fn unreadable(resource: Resource, threshold: Threshold, error: String) -> Reading {
        let detail = format!("{resource}: {error}");
        match threshold {
            Threshold::Percent(max) => Reading::percent(resource, max, Err(error), detail),
            Threshold::Load(max) => Reading::load(max, Err(error), detail),
        }
    }
}

#[derive(Clone, Copy)]
enum Threshold {
    Percent(u32),
    Load(f64),
}

/// Every configured check as unreadable for `why`: what a read that did not come back in time
/// gives, so the tracker neither forgets nor re-tells what it knew.
pub fn all_unreadable(settings: &ResourceSettings, why: &str) -> Vec<Reading> {
    let mut out = Vec::with_capacity(settings.disks.len() + 2);
    for d in &settings.disks {
        out.push(Reading::unreadable(
            Resource::Disk(d.path.clone()),
            Threshold::Percent(d.max_used_percent),
            why.to_string(),
        ));
    }
    if let Some(m) = settings.memory_max_used_percent {
        out.push(Reading::unreadable(
            Resource::Memory,
            Threshold::Percent(m),
            why.to_string(),
        ));
    }
    if let Some(l) = settings.load_max {
        out.push(Reading::unreadable(
            Resource::Load,
            Threshold::Load(l),
            why.to_string(),
        ));
    }
    out
}

/// Reads every configured check now, in the config's order: disks, memory, load. Blocking
/// (`statvfs`, `/proc`), so the watch loop runs it on a blocking thread; `statvfs` on a network
/// file system that stopped answering may not return at all, so the caller bounds its wait.
/// Never panics: a check that cannot be read gives a reading with an error.
pub fn read(settings: &ResourceSettings) -> Vec<Reading> {
    let mut readings = Vec::with_capacity(settings.disks.len() + 2);
    for disk in &settings.disks {
        readings.push(read_disk(&disk.path, disk.max_used_percent));
    }
    if let Some(max) = settings.memory_max_used_percent {
        readings.push(read_memory(max));
    }
    if let Some(max) = settings.load_max {
        readings.push(read_load(max));
    }
    readings
}

fn read_disk(path: &Path, max_used_percent: u32) -> Reading {
    let resource = Resource::Disk(path.to_path_buf());
    let threshold = Threshold::Percent(max_used_percent);
    let stat = match nix::sys::statvfs::statvfs(path) {
        Ok(stat) => stat,
        Err(e) => {
            return Reading::unreadable(
                resource,
                threshold,
                format!("cannot read its file system: {e}"),
            );
        }
    };
    // statvfs counts blocks in fragments; f_frsize is 0 on a few old file systems, where the
    // block size is what counts.
    let unit = match stat.fragment_size() {
        0 => stat.block_size(),
        n => n,
    };
    match disk_use(
        stat.blocks(),
        stat.blocks_free(),
        stat.blocks_available(),
        unit,
    ) {
        Ok(usage) => {
            let detail = format!(
                "{} {:.1}% used ({} of {})",
                text::path(path),
                usage.ratio * 100.0,
                bytes(usage.used),
                bytes(usage.size),
            );
            Reading::percent(resource, max_used_percent, Ok(usage.ratio), detail)
        }
        Err(e) => Reading::unreadable(resource, threshold, e),
    }
}

/// A file system's use as `df` computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DiskUse {
    /// Bytes in use, root's included.
    used: u64,
    /// Bytes users may fill: those in use and those still available to them.
    size: u64,
    /// `used / size`.
    ratio: f64,
}

fn disk_use(blocks: u64, free: u64, available: u64, unit: u64) -> Result<DiskUse, String> {
    let used = blocks.saturating_sub(free);
    let size = used.saturating_add(available);
    if size == 0 {
        return Err("its file system has no blocks to fill (a virtual file system?)".into());
    }
    Ok(DiskUse {
        used: used.saturating_mul(unit),
        size: size.saturating_mul(unit),
        ratio: used as f64 / size as f64,
    })
}

fn read_memory(max_used_percent: u32) -> Reading {
    let threshold = Threshold::Percent(max_used_percent);
    let parsed = std::fs::read_to_string(MEMINFO)
        .map_err(|e| format!("cannot read {MEMINFO}: {e}"))
        .and_then(|t| parse_meminfo(&t));
    match parsed {
        Ok(m) => {
            let ratio = m.used_ratio();
            let detail = format!(
                "memory {:.1}% used (MemAvailable {} of {})",
                ratio * 100.0,
                bytes(m.available_kib.saturating_mul(1024)),
                bytes(m.total_kib.saturating_mul(1024)),
            );
            Reading::percent(Resource::Memory, max_used_percent, Ok(ratio), detail)
        }
        Err(e) => Reading::unreadable(Resource::Memory, threshold, e),
    }
}

/// The two lines of `/proc/meminfo` that memory use is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Meminfo {
    total_kib: u64,
    available_kib: u64,
}

impl Meminfo {
    fn used_ratio(&self) -> f64 {
        self.total_kib.saturating_sub(self.available_kib) as f64 / self.total_kib as f64
    }
}

/// `MemTotal` and `MemAvailable` from the text of `/proc/meminfo` (`MemTotal:  16318412 kB`).
fn parse_meminfo(text: &str) -> Result<Meminfo, String> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        *slot = Some(parse_kib(key, rest)?);
    }
    let total_kib = total.ok_or_else(|| format!("{MEMINFO} has no MemTotal"))?;
    let available_kib = available.ok_or_else(|| {
        format!("{MEMINFO} has no MemAvailable (a kernel older than 3.14): memory use is unknown")
    })?;
    if total_kib == 0 {
        return Err(format!("{MEMINFO} says MemTotal is 0 kB"));
    }
    Ok(Meminfo {
        total_kib,
        available_kib,
    })
}

/// `  16318412 kB`: the kernel writes every size in kB (KiB).
fn parse_kib(key: &str, rest: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{MEMINFO}: {key} is not a size in kB: {}",
            quote(rest.trim())
        )
    };
    let mut words = rest.split_whitespace();
    let number = words.next().ok_or_else(bad)?;
    match (words.next(), words.next()) {
        (None | Some("kB"), None) => {}
        _ => return Err(bad()),
    }
    number.parse().map_err(|_| bad())
}

fn read_load(load_max: f64) -> Reading {
    let parsed = std::fs::read_to_string(LOADAVG)
        .map_err(|e| format!("cannot read {LOADAVG}: {e}"))
        .and_then(|t| parse_loadavg(&t))
        .and_then(|load| Ok((load, online_cpus()?)));
    match parsed {
        Ok((load, cpus)) => {
            let per_cpu = load / cpus as f64;
            let detail = format!(
                "load {per_cpu:.2} per CPU ({load:.2} over {cpus} CPU{})",
                if cpus == 1 { "" } else { "s" }
            );
            Reading::load(load_max, Ok(per_cpu), detail)
        }
        Err(e) => Reading::unreadable(Resource::Load, Threshold::Load(load_max), e),
    }
}

/// The 1-minute load average, the first field of `/proc/loadavg` (`0.52 0.58 0.59 1/467 123`).
fn parse_loadavg(text: &str) -> Result<f64, String> {
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(load) if load.is_finite() && load >= 0.0 => Ok(load),
        _ => Err(format!(
            "{LOADAVG} does not start with a load average: {}",
            quote(text.trim())
        )),
    }
}

/// The host's online CPUs: what `/proc/loadavg` is spread over (see the module's doc).
fn online_cpus() -> Result<u64, String> {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => Ok(n as u64),
        Ok(_) => Err("the number of online CPUs is unknown".into()),
        Err(e) => Err(format!("cannot count the online CPUs: {e}")),
    }
}

/// Text from `/proc` for a message: one line, short, quoted.
fn quote(raw: &str) -> String {
    let cut: String = raw.chars().take(QUOTE_MAX).collect();
    let ellipsis = if cut.len() < raw.len() { "..." } else { "" };
    format!("\"{}{ellipsis}\"", text::one_line(&cut))
}

fn bytes(n: u64) -> String {
    // format_bytes keeps u64::MAX for systemd's "not set"; a size saturated there is just big.
    format_bytes(n.min(u64::MAX - 1)).unwrap_or_default()
}

/// A change worth telling, with the reading that made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Crossing {
    /// Newly over its threshold: one `resource` event.
    Over(Reading),
    /// Back below its threshold with the margin: one `recovered` event.
    Back(Reading),
    /// Newly unreadable: told once, until it is read again.
    Unreadable(Reading),
}

impl Crossing {
    #[cfg(test)]
    pub fn reading(&self) -> &Reading {
        match self {
            Crossing::Over(r) | Crossing::Back(r) | Crossing::Unreadable(r) => r,
        }
    }
}

/// Remembers which checks are over their threshold and which could not be read, across
/// assessments. Pure: readings in, crossings out.
#[derive(Debug, Default)]
pub struct Tracker {
    /// In the order of the last readings (the config's), so status lists them that way.
    checks: Vec<Check>,
}

#[derive(Debug)]
struct Check {
    resource: Resource,
    over: bool,
    unreadable: bool,
}

impl Tracker {
    /// Takes one round of readings, every configured check once; what it does not name is
    /// forgotten. Returns the crossings in the readings' order.
    pub fn assess(&mut self, readings: Vec<Reading>) -> Vec<Crossing> {
        let mut before = std::mem::take(&mut self.checks);
        let mut crossings = Vec::new();
        for reading in readings {
            let i = match self
                .checks
                .iter()
                .position(|c| c.resource == reading.resource)
            {
                Some(i) => i,
                None => {
                    let check = match before.iter().position(|c| c.resource == reading.resource) {
                        Some(j) => before.swap_remove(j),
                        None => Check {
                            resource: reading.resource.clone(),
                            over: false,
                            unreadable: false,
                        },
                    };
                    self.checks.push(check);
                    self.checks.len() - 1
                }
            };
            crossings.extend(self.checks[i].step(reading));
        }
        crossings
    }

    /// The checks over their threshold now.
    pub fn over(&self) -> impl Iterator<Item = &Resource> {
        self.checks.iter().filter(|c| c.over).map(|c| &c.resource)
    }

    /// The checks whose last reading failed.
    #[cfg(test)]
    pub fn unreadable(&self) -> impl Iterator<Item = &Resource> {
        self.checks
            .iter()
            .filter(|c| c.unreadable)
            .map(|c| &c.resource)
    }
}

impl Check {
    fn step(&mut self, reading: Reading) -> Option<Crossing> {
        let value = match reading.value {
            Ok(value) => value,
            Err(_) if self.unreadable => return None,
            Err(_) => {
                self.unreadable = true;
                return Some(Crossing::Unreadable(reading));
            }
        };
        self.unreadable = false;
        if !self.over && value > reading.threshold {
            self.over = true;
            Some(Crossing::Over(reading))
        } else if self.over && value < reading.back_below {
            self.over = false;
            Some(Crossing::Back(reading))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskLimit;
    use crate::testing::on_tiny_tmpfs;
    use std::fs::{self, File};
    use std::io::Write;
    use std::time::Duration;

    fn disk(path: &str, max: u32, value: f64) -> Reading {
        Reading::percent(
            Resource::Disk(path.into()),
            max,
            Ok(value),
            format!("{path} test"),
        )
    }

    fn memory(max: u32, value: f64) -> Reading {
        Reading::percent(Resource::Memory, max, Ok(value), "memory test".into())
    }

    fn load(max: f64, value: f64) -> Reading {
        Reading::load(max, Ok(value), "load test".into())
    }

    fn broken(resource: Resource, max: u32) -> Reading {
        Reading::unreadable(resource, Threshold::Percent(max), "gone".into())
    }

    /// `over disk /`, `back memory`, `unreadable load`: a crossing as a table reads it.
    fn show(c: &Crossing) -> String {
        let kind = match c {
            Crossing::Over(_) => "over",
            Crossing::Back(_) => "back",
            Crossing::Unreadable(_) => "unreadable",
        };
        format!("{kind} {}", c.reading().resource)
    }

    #[test]
    fn thresholds_and_margins_are_exact_for_whole_percentages() {
        let cases: &[(u32, f64, f64)] = &[
            (90, 0.90, 0.85),
            (85, 0.85, 0.80),
            (100, 1.00, 0.95),
            (10, 0.10, 0.05),
            // Below 10%, the margin is half the threshold: 5 points would never come back.
            (4, 0.04, 0.02),
            (1, 0.01, 0.005),
        ];
        for &(max, threshold, back) in cases {
            let r = memory(max, 0.0);
            assert_eq!((r.threshold, r.back_below), (threshold, back), "{max}%");
        }
        let r = load(2.0, 0.0);
        assert_eq!((r.threshold, r.back_below), (2.0, 1.8));
        let r = load(0.5, 0.0);
        assert_eq!((r.threshold, r.back_below), (0.5, 0.45));
    }

    #[test]
    fn the_tracker_tells_each_crossing_once_with_hysteresis() {
        let root = || Resource::Disk("/".into());
        // Each case: rounds of readings, and the crossings expected after each.
        type Round = (Vec<Reading>, Vec<&'static str>);
        let cases: Vec<(&str, Vec<Round>)> = vec![
            (
                "under at start says nothing",
                vec![(
                    vec![disk("/", 90, 0.5), memory(90, 0.2), load(2.0, 0.1)],
                    vec![],
                )],
            ),
            (
                "over at start is told at once",
                vec![(
                    vec![disk("/", 90, 0.95), memory(90, 0.2), load(2.0, 3.0)],
                    vec!["over disk /", "over load"],
                )],
            ),
            (
                "exactly at the threshold is not over; just above is",
                vec![
                    (vec![disk("/", 90, 0.90)], vec![]),
                    (vec![disk("/", 90, 0.9001)], vec!["over disk /"]),
                ],
            ),
            (
                "oscillating at the edge is one over; back only below the margin",
                vec![
                    (vec![disk("/", 90, 0.91)], vec!["over disk /"]),
                    (vec![disk("/", 90, 0.89)], vec![]),
                    (vec![disk("/", 90, 0.91)], vec![]),
                    (vec![disk("/", 90, 0.86)], vec![]),
                    (vec![disk("/", 90, 0.90)], vec![]),
                    (vec![disk("/", 90, 0.85)], vec![]),
                    (vec![disk("/", 90, 0.8499)], vec!["back disk /"]),
                    (vec![disk("/", 90, 0.89)], vec![]),
                    (vec![disk("/", 90, 0.91)], vec!["over disk /"]),
                ],
            ),
            (
                "load comes back below 90% of its threshold",
                vec![
                    (vec![load(2.0, 2.1)], vec!["over load"]),
                    (vec![load(2.0, 1.85)], vec![]),
                    (vec![load(2.0, 1.8)], vec![]),
                    (vec![load(2.0, 1.79)], vec!["back load"]),
                ],
            ),
            (
                "unreadable while over is told once and keeps it over",
                vec![
                    (vec![memory(90, 0.95)], vec!["over memory"]),
                    (
                        vec![broken(Resource::Memory, 90)],
                        vec!["unreadable memory"],
                    ),
                    (vec![broken(Resource::Memory, 90)], vec![]),
                    (vec![memory(90, 0.92)], vec![]),
                    (vec![memory(90, 0.5)], vec!["back memory"]),
                ],
            ),
            (
                "unreadable at start is told; over once readable",
                vec![
                    (vec![broken(root(), 90)], vec!["unreadable disk /"]),
                    (vec![disk("/", 90, 0.97)], vec!["over disk /"]),
                ],
            ),
            (
                "unreadable again after a good reading is told again",
                vec![
                    (vec![broken(root(), 90)], vec!["unreadable disk /"]),
                    (vec![disk("/", 90, 0.5)], vec![]),
                    (vec![broken(root(), 90)], vec!["unreadable disk /"]),
                ],
            ),
            (
                "checks are independent",
                vec![
                    (
                        vec![disk("/", 90, 0.95), disk("/var", 90, 0.5)],
                        vec!["over disk /"],
                    ),
                    (
                        vec![disk("/", 90, 0.95), disk("/var", 90, 0.95)],
                        vec!["over disk /var"],
                    ),
                    (
                        vec![disk("/", 90, 0.1), disk("/var", 90, 0.95)],
                        vec!["back disk /"],
                    ),
                ],
            ),
            (
                "a check removed by a reload is forgotten, and starts afresh when it returns",
                vec![
                    (
                        vec![disk("/", 90, 0.95), memory(90, 0.95)],
                        vec!["over disk /", "over memory"],
                    ),
                    (vec![memory(90, 0.95)], vec![]),
                    (vec![memory(90, 0.5)], vec!["back memory"]),
                    (vec![disk("/", 90, 0.95)], vec!["over disk /"]),
                ],
            ),
            (
                "a threshold raised by a reload applies to the state as it is",
                vec![
                    (vec![disk("/", 90, 0.95)], vec!["over disk /"]),
                    (vec![disk("/", 99, 0.95)], vec![]),
                    (vec![disk("/", 99, 0.93)], vec!["back disk /"]),
                ],
            ),
            (
                "a small threshold can still come back",
                vec![
                    (vec![memory(4, 0.05)], vec!["over memory"]),
                    (vec![memory(4, 0.021)], vec![]),
                    (vec![memory(4, 0.019)], vec!["back memory"]),
                ],
            ),
            (
                "a value that is not a number crosses nothing",
                vec![
                    (vec![disk("/", 90, f64::NAN)], vec![]),
                    (vec![disk("/", 90, 0.95)], vec!["over disk /"]),
                    (vec![disk("/", 90, f64::NAN)], vec![]),
                ],
            ),
        ];
        for (name, rounds) in cases {
            let mut tracker = Tracker::default();
            for (n, (readings, expected)) in rounds.into_iter().enumerate() {
                let got: Vec<String> = tracker.assess(readings).iter().map(show).collect();
                assert_eq!(got, expected, "{name}, round {}", n + 1);
            }
        }
    }

    #[test]
    fn over_and_unreadable_list_the_current_state_in_config_order() {
        let mut tracker = Tracker::default();
        tracker.assess(vec![
            disk("/var", 90, 0.95),
            disk("/", 90, 0.5),
            broken(Resource::Disk("/srv".into()), 90),
            memory(90, 0.95),
        ]);
        let over: Vec<String> = tracker.over().map(Resource::to_string).collect();
        assert_eq!(over, ["disk /var", "memory"]);
        let unreadable: Vec<String> = tracker.unreadable().map(Resource::to_string).collect();
        assert_eq!(unreadable, ["disk /srv"]);

        tracker.assess(vec![memory(90, 0.1)]);
        assert_eq!(tracker.over().count(), 0);
        assert_eq!(tracker.unreadable().count(), 0);
    }

    #[test]
    fn crossings_carry_the_reading_that_made_them() {
        let mut tracker = Tracker::default();
        let reading = disk("/var", 90, 0.95);
        assert_eq!(
            tracker.assess(vec![reading.clone()]),
            [Crossing::Over(reading)]
        );
    }

    #[test]
    fn names_and_values_read_as_people_write_them() {
        assert_eq!(
            Resource::Disk("/var/lib".into()).to_string(),
            "disk /var/lib"
        );
        assert_eq!(Resource::Disk("/a\nb".into()).to_string(), r"disk /a\nb");
        assert_eq!(Resource::Memory.to_string(), "memory");
        assert_eq!(Resource::Load.to_string(), "load");
        assert_eq!(Resource::Memory.show(0.9), "90%");
        assert_eq!(Resource::Memory.show(0.85), "85%");
        assert_eq!(Resource::Disk("/".into()).show(0.9312), "93.1%");
        assert_eq!(Resource::Load.show(1.8), "1.80");
    }

    #[test]
    fn meminfo_gives_total_and_available() {
        let typical = "MemTotal:       16318412 kB\nMemFree:         1021340 kB\n\
                       MemAvailable:    1468004 kB\nBuffers:          402112 kB\n\
                       HugePages_Total:       0\n";
        /// The text, and its `(MemTotal, MemAvailable)` or the error.
        type Case = (&'static str, Result<(u64, u64), &'static str>);
        let cases: &[Case] = &[
            (typical, Ok((16318412, 1468004))),
            ("MemAvailable: 5 kB\nMemTotal: 10 kB\n", Ok((10, 5))),
            // A size without its unit is read as kB, the unit of every size in the file.
            ("MemTotal: 10\nMemAvailable: 5\n", Ok((10, 5))),
            (
                "MemTotal:       16318412 kB\nMemFree:         1021340 kB\n",
                Err(
                    "/proc/meminfo has no MemAvailable (a kernel older than 3.14): memory use is unknown",
                ),
            ),
            ("MemAvailable: 5 kB\n", Err("/proc/meminfo has no MemTotal")),
            ("", Err("/proc/meminfo has no MemTotal")),
            (
                "MemTotal: 0 kB\nMemAvailable: 0 kB\n",
                Err("/proc/meminfo says MemTotal is 0 kB"),
            ),
            (
                "MemTotal: lots kB\nMemAvailable: 5 kB\n",
                Err("/proc/meminfo: MemTotal is not a size in kB: \"lots kB\""),
            ),
            (
                "MemTotal: 10 MB\nMemAvailable: 5 kB\n",
                Err("/proc/meminfo: MemTotal is not a size in kB: \"10 MB\""),
            ),
            (
                "MemTotal:\nMemAvailable: 5 kB\n",
                Err("/proc/meminfo: MemTotal is not a size in kB: \"\""),
            ),
            (
                "MemTotal: -3 kB\nMemAvailable: 5 kB\n",
                Err("/proc/meminfo: MemTotal is not a size in kB: \"-3 kB\""),
            ),
            (
                "MemTotal: 99999999999999999999999 kB\nMemAvailable: 5 kB\n",
                Err("/proc/meminfo: MemTotal is not a size in kB: \"99999999999999999999999 kB\""),
            ),
        ];
        for &(text, expected) in cases {
            let got = parse_meminfo(text).map(|m| (m.total_kib, m.available_kib));
            assert_eq!(got, expected.map_err(str::to_owned), "{text:?}");
        }
    }

    #[test]
    fn memory_use_is_total_minus_available_over_total() {
        let cases: &[(u64, u64, f64)] = &[
            (100, 10, 0.9),
            (100, 100, 0.0),
            (100, 0, 1.0),
            // Never reported, but never a negative share either.
            (100, 150, 0.0),
        ];
        for &(total_kib, available_kib, ratio) in cases {
            let m = Meminfo {
                total_kib,
                available_kib,
            };
            assert_eq!(m.used_ratio(), ratio, "{m:?}");
        }
    }

    #[test]
    fn loadavg_gives_the_one_minute_average() {
        let cases: &[(&str, Result<f64, &str>)] = &[
            ("0.52 0.58 0.59 1/467 12345\n", Ok(0.52)),
            ("12.40 8.00 4.00 9/900 1\n", Ok(12.4)),
            ("0.00 0.00 0.00 1/1 1", Ok(0.0)),
            (
                "",
                Err("/proc/loadavg does not start with a load average: \"\""),
            ),
            (
                "high 0.58\n",
                Err("/proc/loadavg does not start with a load average: \"high 0.58\""),
            ),
            (
                "-1 0 0\n",
                Err("/proc/loadavg does not start with a load average: \"-1 0 0\""),
            ),
            (
                "NaN 0 0\n",
                Err("/proc/loadavg does not start with a load average: \"NaN 0 0\""),
            ),
            (
                "inf 0 0\n",
                Err("/proc/loadavg does not start with a load average: \"inf 0 0\""),
            ),
            (
                "\u{1b}[2J 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                Err(
                    r#"/proc/loadavg does not start with a load average: "\u{1b}[2J 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0...""#,
                ),
            ),
        ];
        for &(text, expected) in cases {
            assert_eq!(
                parse_loadavg(text),
                expected.map_err(str::to_owned),
                "{text:?}"
            );
        }
    }

    #[test]
    fn disk_use_counts_reserved_blocks_as_used_room_as_df_does() {
        /// `f_blocks`, `f_bfree`, `f_bavail`, `f_frsize`, and the bytes used, the bytes users
        /// may fill and the share, or the error.
        type Case = (u64, u64, u64, u64, Result<(u64, u64, f64), &'static str>);
        let cases: &[Case] = &[
            // 1000 blocks, 100 free of which 50 are root's: 900 of 950 usable.
            (
                1000,
                100,
                50,
                4096,
                Ok((900 * 4096, 950 * 4096, 900.0 / 950.0)),
            ),
            // Full for users while root still has room: 100%.
            (1000, 50, 0, 4096, Ok((950 * 4096, 950 * 4096, 1.0))),
            (1000, 1000, 1000, 1024, Ok((0, 1000 * 1024, 0.0))),
            // More free than blocks: nothing used rather than an underflow.
            (10, 20, 20, 512, Ok((0, 20 * 512, 0.0))),
            (
                0,
                0,
                0,
                4096,
                Err("its file system has no blocks to fill (a virtual file system?)"),
            ),
            (u64::MAX, 0, 0, 4096, Ok((u64::MAX, u64::MAX, 1.0))),
        ];
        for &(blocks, free, available, unit, expected) in cases {
            let got = disk_use(blocks, free, available, unit).map(|d| (d.used, d.size, d.ratio));
            assert_eq!(
                got,
                expected.map_err(str::to_owned),
                "{blocks} {free} {available} {unit}"
            );
        }
    }

    fn settings(
        disks: &[(&Path, u32)],
        memory: Option<u32>,
        load: Option<f64>,
    ) -> ResourceSettings {
        ResourceSettings {
            interval: Duration::from_secs(60),
            disks: disks
                .iter()
                .map(|&(path, max_used_percent)| DiskLimit {
                    path: path.to_path_buf(),
                    max_used_percent,
                })
                .collect(),
            memory_max_used_percent: memory,
            load_max: load,
        }
    }

    #[test]
    fn reading_the_real_host_gives_plausible_values() {
        let readings = read(&settings(&[(Path::new("/"), 90)], Some(90), Some(2.0)));
        let kinds: Vec<String> = readings.iter().map(|r| r.resource.to_string()).collect();
        assert_eq!(kinds, ["disk /", "memory", "load"]);
        for r in &readings {
            let value = r
                .value
                .clone()
                .unwrap_or_else(|e| panic!("{}: {e}", r.resource));
            match r.resource {
                Resource::Load => assert!(value.is_finite() && value >= 0.0, "{r:?}"),
                _ => assert!((0.0..=1.0).contains(&value), "{r:?}"),
            }
        }
        assert!(
            readings[0].detail.starts_with("/ "),
            "{}",
            readings[0].detail
        );
        assert!(
            readings[1].detail.starts_with("memory ")
                && readings[1].detail.contains("MemAvailable"),
            "{}",
            readings[1].detail
        );
        assert!(
            readings[2].detail.starts_with("load ") && readings[2].detail.contains(" per CPU ("),
            "{}",
            readings[2].detail
        );
    }

    #[test]
    fn a_path_that_vanished_is_an_unreadable_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let readings = read(&settings(&[(&gone, 90)], None, None));
        assert_eq!(readings.len(), 1);
        let r = &readings[0];
        assert_eq!(
            r.value,
            Err("cannot read its file system: ENOENT: No such file or directory".into())
        );
        assert_eq!(
            r.detail,
            format!(
                "disk {}: cannot read its file system: ENOENT: No such file or directory",
                gone.display()
            )
        );
        let mut tracker = Tracker::default();
        let crossings: Vec<String> = tracker.assess(readings).iter().map(show).collect();
        assert_eq!(crossings, [format!("unreadable disk {}", gone.display())]);
    }

    #[test]
    fn a_tmpfs_filled_past_its_threshold_is_over_and_back_once_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        on_tiny_tmpfs(&path, "1m", || {
            let config = settings(&[(&path, 90)], None, None);
            let mut tracker = Tracker::default();

            let empty = read(&config);
            assert_eq!(empty[0].value, Ok(0.0), "{}", empty[0].detail);
            assert_eq!(tracker.assess(empty), []);

            // 960 KiB of the 1 MiB: 240 of 256 pages, 93.75%.
            let filler = path.join("filler");
            let mut file = File::create(&filler).expect("create filler");
            file.write_all(&[b'f'; 960 * 1024]).expect("fill");
            file.sync_all().expect("sync");
            drop(file);
            let full = read(&config);
            assert_eq!(full[0].value, Ok(240.0 / 256.0), "{}", full[0].detail);
            assert_eq!(
                full[0].detail,
                format!("{} 93.8% used (960.0 KiB of 1.0 MiB)", path.display())
            );
            let crossings: Vec<String> = tracker.assess(full).iter().map(show).collect();
            assert_eq!(crossings, [format!("over disk {}", path.display())]);
            assert_eq!(
                tracker.over().collect::<Vec<_>>(),
                [&Resource::Disk(path.clone())]
            );
            // Still full: nothing new.
            assert_eq!(tracker.assess(read(&config)), []);

            fs::remove_file(&filler).expect("make room");
            let emptied = read(&config);
            assert_eq!(emptied[0].value, Ok(0.0), "{}", emptied[0].detail);
            let crossings: Vec<String> = tracker.assess(emptied).iter().map(show).collect();
            assert_eq!(crossings, [format!("back disk {}", path.display())]);
            assert_eq!(tracker.over().count(), 0);
        });
    }
}
