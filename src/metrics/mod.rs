//! Prometheus metrics: what the watch loop counts as it goes (restarts, crashes, probe runs,
//! how fast a failure was decided on), and what a scrape reads from the engine's own status
//! report (each unit's state, episode and attempts). [`server`] serves them at `/metrics` in
//! Prometheus's text format; encoding is prometheus-client's.
//!
//! The loop only adds to the counters here ([`Metrics::event`], [`Metrics::probed`],
//! [`Metrics::resources`]): a scrape copies them under a lock that nothing holds across an
//! `await`, and asks the loop for its status through the control socket's channel like
//! `unitwarden status` does, so a scrape never reads the engine's state from aside.
//!
//! # Series per unit and the cap
//! Every unit has `unit_up`, one `unit_state` (its current state only), `restarts_total` for
//! the results `restarted` and `failed`, `episode_attempts`, `gave_up` and `crashes_total`:
//! 7 series. A unit with a probe adds `probe_failures_total` and the 12 series of
//! `probe_duration_seconds` (10 buckets, sum, count). Units named exactly in the config always
//! have series of their own. Units a glob picked up have their own for the first
//! [`MAX_GLOB_UNITS`] of them (as they are first seen); the instances beyond that are summed
//! into their glob's series, labelled with the pattern itself (`unit="celery@*.service"`), so
//! a glob matching 5,000 instances costs at most 1,001 units' worth of series.

pub mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::alert::{Event, EventKind};
use crate::config::Settings;
use crate::control::protocol::{EpisodeState, StatusReport};
use crate::resources::{Reading, Resource};
use crate::unit::{UnitName, UnitPattern};
use crate::window::Calendar;

/// Glob instances with series of their own; more are summed under their glob's pattern.
pub const MAX_GLOB_UNITS: usize = 1000;
/// The label of units beyond the cap that no configured glob matches any more (a reload
/// dropped it while they were still watched).
const OTHER: &str = "_other";

/// Probe run times, from a local socket's answer to the longest timeout one would set.
const PROBE_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// From a signal's arrival to the engine's decision: well under a millisecond when the loop is
/// free; the tail shows a loop held up (a poll of many units, a slow manager).
const DETECTION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The alert sinks' counts, as a scrape reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkStats {
    /// `email` or `alertmanager`.
    pub sink: &'static str,
    /// Emails the server took, alert posts the Alertmanager took.
    pub sent: u64,
    /// Delivery attempts that failed, and alerts dropped.
    pub failed: u64,
    /// Waiting for delivery (the email outbox, the Alertmanager's queue).
    pub waiting: usize,
}

/// One scrape, copied out of the loop's status and the counters, to be written one metric
/// family at a time.
pub struct Rendered(Arc<Scrape>);

impl Rendered {
    /// The text, in pieces of one family each (Prometheus's text format, 0.0.4).
    pub fn families(&self) -> impl Iterator<Item = String> + '_ {
        (0..FAMILIES).map(|family| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(Part {
                scrape: Arc::clone(&self.0),
                family,
            }));
            let mut text = String::new();
            // Writing to a String cannot fail; an encoder error would be a bug in a label.
            if let Err(e) =
                prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            {
                tracing::error!("metrics: cannot encode: {e}");
            }
            text
        })
    }
}

/// The daemon's metrics; shared between the watch loop, which adds to them, and the server.
pub struct Metrics {
    tally: Mutex<Tally>,
    listen: watch::Sender<Option<SocketAddr>>,
}

impl Metrics {
    pub fn new(settings: &Settings) -> Arc<Metrics> {
        let (listen, _) = watch::channel(None);
        let m = Metrics {
            tally: Mutex::new(Tally::default()),
            listen,
        };
        m.reload(settings);
        Arc::new(m)
    }

    /// Takes a new config: which units are named exactly, the globs, the windows, and where to
    /// listen (the server binds the new address, or keeps the old one if it cannot).
    pub fn reload(&self, settings: &Settings) {
        let mut t = self.lock();
        if settings.metrics.is_none() {
            // Off: nothing is counted, and nothing held for a thousand units.
            *t = Tally::default();
            drop(t);
            self.listen.send_replace(None);
            return;
        }
        t.on = true;
        t.exact = settings
            .exact_names()
            .into_iter()
            .map(|n| n.as_str().to_string())
            .collect();
        t.globs = settings
            .units
            .iter()
            .filter(|u| matches!(u.pattern, UnitPattern::Glob(_)))
            .map(|u| u.pattern.clone())
            .collect();
        t.calendar = settings.calendar.clone();
        drop(t);
        // Sent even when unchanged: a reload retries an address that could not be bound.
        self.listen
            .send_replace(settings.metrics.as_ref().map(|m| m.listen));
    }

    /// Counts what `ev` tells: a restart and its result, a crash systemd healed. `arrived`: when
    /// the signal it was decided on arrived, if it was; a unit found down or crashed then adds
    /// to the detection latency.
    pub fn event(&self, ev: &Event, arrived: Option<Instant>) {
        if let Some(at) = arrived
            && matches!(ev.kind, EventKind::Down | EventKind::Crashed)
        {
            self.detected(at.elapsed());
        }
        let Some(unit) = &ev.unit else { return };
        let mut t = self.lock();
        if !t.on {
            return;
        }
        let label = t.label(unit.as_str());
        let u = t.units.entry(label).or_default();
        match ev.kind {
            EventKind::Restarted => u.restarted += 1,
            EventKind::RestartFailed => u.failed += 1,
            EventKind::Crashed => u.crashes += 1,
            _ => {}
        }
    }

    fn detected(&self, latency: Duration) {
        let mut t = self.lock();
        if !t.on {
            return;
        }
        t.detection
            .get_or_insert_with(|| Hist::new(DETECTION_BUCKETS))
            .observe(latency);
    }

    /// One probe run of `unit`.
    pub fn probed(&self, unit: &UnitName, ok: bool, took: Duration) {
        let mut t = self.lock();
        if !t.on {
            return;
        }
        let label = t.label(unit.as_str());
        let u = t.units.entry(label).or_default();
        u.probe
            .get_or_insert_with(|| Hist::new(PROBE_BUCKETS))
            .observe(took);
        if !ok {
            u.probe_failures += 1;
        }
    }

    /// One round of host checks: how full each resource is (`disk:/var`, `memory`: used /
    /// total; `load`: per CPU). One that could not be read has no value until it can be.
    pub fn resources(&self, readings: &[Reading]) {
        let mut t = self.lock();
        if !t.on {
            return;
        }
        t.resources = readings
            .iter()
            .filter_map(|r| {
                let name = match &r.resource {
                    Resource::Disk(path) => format!("disk:{}", crate::text::path(path)),
                    Resource::Memory => "memory".to_string(),
                    Resource::Load => "load".to_string(),
                };
                Some((name, *r.value.as_ref().ok()?))
            })
            .collect();
    }

    /// What Prometheus reads, from the loop's `status` and the counters.
    pub fn render(&self, status: &StatusReport, sinks: &[SinkStats]) -> Rendered {
        let mut t = self.lock();
        t.forget_unwatched(status);
        Rendered(Arc::new(Scrape::new(&mut t, status, sinks)))
    }

    fn listening(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.listen.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // Counters stay readable after a panic elsewhere (release builds abort anyway).
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the loop has counted, and how units are labelled.
#[derive(Default)]
struct Tally {
    /// `[metrics]` is configured.
    on: bool,
    exact: HashSet<String>,
    globs: Vec<UnitPattern>,
    /// Glob instances with a label of their own (at most [`MAX_GLOB_UNITS`]).
    own: HashSet<String>,
    calendar: Calendar,
    /// By label: a unit's name, or the glob its instance is summed under.
    units: HashMap<String, UnitTally>,
    detection: Option<Hist>,
    resources: BTreeMap<String, f64>,
}

#[derive(Clone, Default)]
struct UnitTally {
    restarted: u64,
    failed: u64,
    crashes: u64,
    probe_failures: u64,
    probe: Option<Hist>,
}

impl Tally {
    /// The `unit` label for `unit`: its name while it has (or can get) series of its own, else
    /// its glob's pattern.
    fn label(&mut self, unit: &str) -> String {
        if self.exact.contains(unit) || self.own.contains(unit) {
            return unit.to_string();
        }
        if self.own.len() < MAX_GLOB_UNITS {
            self.own.insert(unit.to_string());
            return unit.to_string();
        }
        UnitName::parse(unit)
            .ok()
            .and_then(|n| self.globs.iter().find(|g| g.matches(&n)))
            .map_or_else(|| OTHER.to_string(), |g| g.as_str().to_string())
    }

    /// Drops what belongs to units no longer watched, and frees their labels for new ones.
    fn forget_unwatched(&mut self, status: &StatusReport) {
        let watched: HashSet<&str> = status.units.iter().map(|u| u.unit.as_str()).collect();
        self.own.retain(|u| watched.contains(u.as_str()));
        let Tally {
            exact, own, globs, ..
        } = self;
        let keep = |label: &str| {
            exact.contains(label)
                || own.contains(label)
                || label == OTHER
                || globs.iter().any(|g| g.as_str() == label)
        };
        self.units.retain(|label, _| keep(label));
    }
}

/// A fixed-bucket histogram: counts per bucket (the last one is +Inf), their sum and count.
#[derive(Clone)]
struct Hist {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Hist {
        Hist {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// One label's values in a scrape: one unit's, or the sum of a glob's instances beyond the
/// cap.
#[derive(Default)]
struct Row {
    up: u64,
    attempts: u64,
    gave_up: u64,
    states: BTreeMap<String, u64>,
    counts: UnitTally,
}

/// Everything one scrape writes, copied out of the loop's status and the tally.
#[derive(Debug)]
struct Scrape {
    units: usize,
    rows: Vec<(String, RowView)>,
    interval: f64,
    windows: Vec<(String, bool)>,
    detection: Option<HistView>,
    sinks: Vec<SinkStats>,
    resources: Vec<(String, f64)>,
}

#[derive(Debug)]
struct RowView {
    up: u64,
    attempts: u64,
    gave_up: u64,
    states: Vec<(String, u64)>,
    restarted: u64,
    failed: u64,
    crashes: u64,
    probe: Option<(HistView, u64)>,
}

#[derive(Debug)]
struct HistView {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl From<&Hist> for HistView {
    fn from(h: &Hist) -> HistView {
        HistView {
            sum: h.sum,
            count: h.count,
            buckets: h.buckets(),
        }
    }
}

impl Scrape {
    fn new(t: &mut Tally, status: &StatusReport, sinks: &[SinkStats]) -> Scrape {
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        for u in &status.units {
            let label = t.label(&u.unit);
            let row = rows.entry(label).or_default();
            row.up += u64::from(matches!(u.state.as_str(), "active" | "reloading"));
            row.attempts += u64::from(u.attempts);
            row.gave_up += u64::from(u.episode == EpisodeState::GaveUp);
            *row.states.entry(state_name(u.episode)).or_default() += 1;
        }
        for (label, counts) in &t.units {
            if let Some(row) = rows.get_mut(label) {
                row.counts = counts.clone();
            }
        }
        let active: HashSet<&str> = t
            .calendar
            .active(status.now)
            .into_iter()
            .map(|w| w.name.as_str())
            .collect();
        Scrape {
            units: status.units.len(),
            rows: rows
                .into_iter()
                .map(|(label, r)| {
                    let view = RowView {
                        up: r.up,
                        attempts: r.attempts,
                        gave_up: r.gave_up,
                        states: r.states.into_iter().collect(),
                        restarted: r.counts.restarted,
                        failed: r.counts.failed,
                        crashes: r.counts.crashes,
                        probe: r
                            .counts
                            .probe
                            .as_ref()
                            .map(|h| (HistView::from(h), r.counts.probe_failures)),
                    };
                    (label, view)
                })
                .collect(),
            interval: Duration::from_millis(status.interval_ms).as_secs_f64(),
            windows: t
                .calendar
                .windows
                .iter()
                .map(|w| (w.name.clone(), active.contains(w.name.as_str())))
                .collect(),
            detection: t.detection.as_ref().map(HistView::from),
            sinks: sinks.to_vec(),
            resources: t.resources.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

/// `EpisodeState` as `status --json` names it (`gave_up`, `stopped_by_operator`): one name for
/// a state wherever it is read, whatever states are added.
fn state_name(e: EpisodeState) -> String {
    match serde_json::to_value(e) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

type Labels<'a> = [(&'static str, &'a str)];

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &mut dyn Iterator<Item = (Vec<(&'static str, &str)>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &mut dyn Iterator<Item = (Vec<(&'static str, &str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn unit_label(label: &str) -> Vec<(&'static str, &str)> {
    vec![("unit", label)]
}

impl Scrape {
    /// Family `i` of the [`FAMILIES`]: a scrape is written one family at a time, so the largest
    /// piece in memory is one family of every unit, not the whole text.
    fn family(&self, i: usize, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = || self.rows.iter();
        let sinks = || self.sinks.iter();
        match i {
            0 => {
                let version: &Labels = &[("version", env!("CARGO_PKG_VERSION"))];
                enc.encode_descriptor(
                    "unitwarden_build",
                    "The running unitwarden's version.",
                    None,
                    MetricType::Info,
                )?
                .encode_info(&version)?;
                Ok(())
            }
            1 => {
                gauge(
                    &mut enc,
                    "unitwarden_units_watched",
                    "Units watched, each glob instance counted.",
                    None,
                    &mut std::iter::once((vec![], self.units as f64)),
                )?;
                Ok(())
            }
            2 => {
                gauge(
                    &mut enc,
                    "unitwarden_unit_up",
                    "1 while the unit is active (for a glob's instances beyond the cap: how many are).",
                    None,
                    &mut rows().map(|(l, r)| (unit_label(l), r.up as f64)),
                )?;
                Ok(())
            }
            3 => {
                gauge(
                    &mut enc,
                    "unitwarden_unit_state",
                    "The unit's episode state as unitwarden status names it (healthy, down, backing_off, restarting, verifying, gave_up, paused, stopped_by_operator, ...); only the current one is present.",
                    None,
                    &mut rows().flat_map(|(l, r)| {
                        r.states.iter().map(move |(s, n)| {
                            (vec![("unit", l.as_str()), ("state", s.as_str())], *n as f64)
                        })
                    }),
                )?;
                Ok(())
            }
            4 => {
                counter(
                    &mut enc,
                    "unitwarden_restarts",
                    "Restart attempts by unitwarden that ended, by result: restarted (verified) or failed.",
                    &mut rows().flat_map(|(l, r)| {
                        [("restarted", r.restarted), ("failed", r.failed)]
                            .into_iter()
                            .map(move |(res, n)| (vec![("unit", l.as_str()), ("result", res)], n))
                    }),
                )?;
                Ok(())
            }
            5 => {
                gauge(
                    &mut enc,
                    "unitwarden_episode_attempts",
                    "Restart attempts made in the unit's current episode.",
                    None,
                    &mut rows().map(|(l, r)| (unit_label(l), r.attempts as f64)),
                )?;
                Ok(())
            }
            6 => {
                gauge(
                    &mut enc,
                    "unitwarden_gave_up",
                    "1 while unitwarden has given up on the unit (max_attempts spent).",
                    None,
                    &mut rows().map(|(l, r)| (unit_label(l), r.gave_up as f64)),
                )?;
                Ok(())
            }
            7 => {
                counter(
                    &mut enc,
                    "unitwarden_crashes",
                    "Crashes that systemd's own Restart= healed (NRestarts rising).",
                    &mut rows().map(|(l, r)| (unit_label(l), r.crashes)),
                )?;
                Ok(())
            }
            8 => {
                let mut m = enc.encode_descriptor(
                    "unitwarden_probe_duration",
                    "How long the unit's health probe took.",
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?;
                for (l, r) in rows() {
                    if let Some((h, _)) = &r.probe {
                        m.encode_family(&unit_label(l))?
                            .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                    }
                }
                Ok(())
            }
            9 => {
                counter(
                    &mut enc,
                    "unitwarden_probe_failures",
                    "Health probe runs that failed.",
                    &mut rows()
                        .filter_map(|(l, r)| r.probe.as_ref().map(|(_, f)| (unit_label(l), *f))),
                )?;
                Ok(())
            }
            10 => {
                let mut m = enc.encode_descriptor(
                    "unitwarden_detection_latency",
                    "From a D-Bus signal's arrival to the decision that a unit is down or crashed.",
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?;
                let empty = HistView::from(&Hist::new(DETECTION_BUCKETS));
                let h = self.detection.as_ref().unwrap_or(&empty);
                m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                Ok(())
            }
            11 => {
                gauge(
                    &mut enc,
                    "unitwarden_critical_window_active",
                    "1 while the critical window is active.",
                    None,
                    &mut self
                        .windows
                        .iter()
                        .map(|(w, on)| (vec![("window", w.as_str())], f64::from(u8::from(*on)))),
                )?;
                Ok(())
            }
            12 => {
                gauge(
                    &mut enc,
                    "unitwarden_check_interval",
                    "The poll interval in force (shorter in a critical window).",
                    Some(&Unit::Seconds),
                    &mut std::iter::once((vec![], self.interval)),
                )?;
                Ok(())
            }
            13 => {
                counter(
                    &mut enc,
                    "unitwarden_alerts_sent",
                    "Alerts delivered, by sink: emails the SMTP server took, posts the Alertmanager took.",
                    &mut sinks().map(|s| (vec![("sink", s.sink)], s.sent)),
                )?;
                Ok(())
            }
            14 => {
                counter(
                    &mut enc,
                    "unitwarden_alerts_failed",
                    "Alert deliveries that failed (retried later) and alerts dropped, by sink.",
                    &mut sinks().map(|s| (vec![("sink", s.sink)], s.failed)),
                )?;
                Ok(())
            }
            15 => {
                gauge(
                    &mut enc,
                    "unitwarden_outbox_messages",
                    "Alerts waiting for delivery, by sink.",
                    None,
                    &mut sinks().map(|s| (vec![("sink", s.sink)], s.waiting as f64)),
                )?;
                Ok(())
            }
            16 => {
                gauge(
                    &mut enc,
                    "unitwarden_resource_used_ratio",
                    "How full a host resource is: used/total for disk:PATH and memory, the 1-minute load per CPU for load.",
                    None,
                    &mut self
                        .resources
                        .iter()
                        .map(|(r, v)| (vec![("resource", r.as_str())], *v)),
                )?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// How many metric families a scrape has.
const FAMILIES: usize = 17;

/// One family of a scrape, as prometheus-client's collector.
#[derive(Debug)]
struct Part {
    scrape: Arc<Scrape>,
    family: usize,
}

impl Collector for Part {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.scrape.family(self.family, enc)
    }
}
