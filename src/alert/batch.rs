//! The pure core of alerting: which events become emails, which email they join, which thread
//! it continues, and when a reminder is due. No I/O and no clock: time is an argument and
//! message ids come from an injected source, so every rule is tested by tables.
//!
//! Rules (SPEC section 5, plus the choices where it is silent):
//! - Events not in `notify_on` never reach an email, but still end reminders and incidents.
//! - The same kind of event for the same unit is suppressed within `min_interval` (or the
//!   event's own stricter window value) of the last one accepted; the count goes into the next
//!   email.
//! - A batch opens with its first event and is due `batch_window` later, however many events
//!   follow, so a storm cannot postpone it. It gets its email's `Message-ID` when it opens, so
//!   a restart can tell whether a persisted batch already reached the outbox.
//! - A `gave_up` schedules reminders at each `remind_after` offset from the give-up; any later
//!   event for that unit cancels them. Several overdue reminders (after downtime) collapse into
//!   one.
//! - Threads: a unit with an open incident belongs to one thread. An email continues the
//!   oldest open thread among its units; its other units without a thread join that thread;
//!   units already in another thread stay there. An email about unitwarden alone starts no
//!   thread. `restarted` and `recovered` close the unit's incident after the email that carries
//!   them; a thread idle for [`THREAD_IDLE`] is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Event, EventKind};
use crate::config::EmailSettings;
use crate::unit::UnitName;

/// A thread without any email for this long is closed, so a forgotten incident cannot swallow
/// next month's one.
pub const THREAD_IDLE: Duration = Duration::from_secs(7 * 86400);
/// How many earlier message ids `References` carries besides the root.
const REFERENCES_KEPT: usize = 9;
/// Dedup entries are kept at least this long, to cover window overrides of `min_interval`.
const DEDUP_KEEP_MIN: Duration = Duration::from_secs(86400);

/// The settings the planner follows.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub batch_window: Duration,
    pub min_interval: Duration,
    pub remind_after: Vec<Duration>,
    pub notify_on: BTreeSet<EventKind>,
}

impl Rules {
    pub fn from_settings(s: &EmailSettings) -> Rules {
        let mut remind_after = s.remind_after.clone();
        remind_after.sort();
        Rules {
            batch_window: s.batch_window,
            min_interval: s.min_interval,
            remind_after,
            notify_on: s.notify_on.clone(),
        }
    }
}

/// One entry of an email.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Event(Event),
    /// The unit is still given up: reminder `n` of `of`, with the original `gave_up` event.
    Reminder {
        at: Timestamp,
        n: usize,
        of: usize,
        gave_up: Event,
    },
}

impl Item {
    pub fn unit(&self) -> Option<&UnitName> {
        match self {
            Item::Event(e) => e.unit.as_ref(),
            Item::Reminder { gave_up, .. } => gave_up.unit.as_ref(),
        }
    }
}

/// How many events of one kind for one unit were left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    pub unit: Option<UnitName>,
    pub kind: EventKind,
    pub count: u32,
}

/// One email, decided: what it says and where it sits in a thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub message_id: String,
    pub at: Timestamp,
    pub items: Vec<Item>,
    pub suppressed: Vec<Suppressed>,
    pub in_reply_to: Option<String>,
    /// Root first, then the most recent ids of the thread, oldest to newest.
    pub references: Vec<String>,
}

impl Draft {
    /// The units named in the email, in order of first appearance.
    pub fn units(&self) -> Vec<&UnitName> {
        let mut seen = BTreeSet::new();
        self.items
            .iter()
            .filter_map(Item::unit)
            .filter(|u| seen.insert(*u))
            .collect()
    }
}

/// What became of a pushed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Accepted,
    /// Same event for the same unit within `min_interval`: counted for the next email.
    Suppressed,
    /// Not in `notify_on`.
    Ignored,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Batch {
    /// The `Message-ID` of the email this batch becomes.
    id: String,
    opened: Timestamp,
    items: Vec<Item>,
    /// Units whose latest event in this batch ends their incident.
    closing: BTreeSet<UnitName>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Thread {
    /// Message ids, root first; trimmed to the root plus the newest few.
    chain: Vec<String>,
    created: Timestamp,
    touched: Timestamp,
    units: BTreeSet<UnitName>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Accepted {
    unit: Option<UnitName>,
    kind: EventKind,
    at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GivenUp {
    since: Timestamp,
    /// Reminders already queued.
    sent: usize,
    event: Event,
}

/// Everything the planner remembers; persisted so that a restart (or `kill -9`) of unitwarden
/// keeps pending events, threads, dedup and reminders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    batch: Option<Batch>,
    #[serde(default)]
    accepted: Vec<Accepted>,
    #[serde(default)]
    suppressed: Vec<Suppressed>,
    #[serde(default)]
    threads: Vec<Thread>,
    #[serde(default)]
    given_up: BTreeMap<UnitName, GivenUp>,
}

/// Where message ids come from: called once per email, with the time its batch opens.
pub type Ids = Box<dyn FnMut(Timestamp) -> String + Send + Sync>;

pub struct Planner {
    rules: Rules,
    state: State,
    ids: Ids,
}

fn resolves(kind: EventKind) -> bool {
    matches!(kind, EventKind::Restarted | EventKind::Recovered)
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    // A duration too large for a timestamp means "never" in practice.
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl Planner {
    pub fn new(rules: Rules, state: State, ids: Ids) -> Planner {
        Planner { rules, state, ids }
    }

    /// The `Message-ID` of the open batch, if any.
    pub fn pending_id(&self) -> Option<&str> {
        self.state.batch.as_ref().map(|b| b.id.as_str())
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether events wait for their batch to be sent.
    pub fn has_pending(&self) -> bool {
        self.state.batch.is_some()
    }

    /// Takes in one event from the watch loop at `now`.
    pub fn push(&mut self, ev: Event, now: Timestamp) -> Pushed {
        let unit = ev.unit.clone();
        let kind = ev.kind;
        let selected = self.rules.notify_on.contains(&kind);
        if let Some(u) = &unit {
            self.state.given_up.remove(u);
            if kind == EventKind::GaveUp && selected && !self.rules.remind_after.is_empty() {
                self.state.given_up.insert(
                    u.clone(),
                    GivenUp {
                        since: now,
                        sent: 0,
                        event: ev.clone(),
                    },
                );
            }
        }
        let outcome = if !selected {
            Pushed::Ignored
        } else if self.is_repeat(&unit, kind, ev.min_interval, now) {
            match self
                .state
                .suppressed
                .iter_mut()
                .find(|s| s.unit == unit && s.kind == kind)
            {
                Some(s) => s.count += 1,
                None => self.state.suppressed.push(Suppressed {
                    unit: unit.clone(),
                    kind,
                    count: 1,
                }),
            }
            Pushed::Suppressed
        } else {
            self.state
                .accepted
                .retain(|a| !(a.unit == unit && a.kind == kind));
            self.state.accepted.push(Accepted {
                unit: unit.clone(),
                kind,
                at: now,
            });
            self.batch_at(now).items.push(Item::Event(ev));
            Pushed::Accepted
        };
        if let Some(u) = unit {
            match (&mut self.state.batch, resolves(kind)) {
                (Some(b), true) => {
                    b.closing.insert(u);
                }
                (Some(b), false) => {
                    b.closing.remove(&u);
                }
                (None, true) => self.leave_thread(&u),
                (None, false) => {}
            }
        }
        outcome
    }

    fn is_repeat(
        &self,
        unit: &Option<UnitName>,
        kind: EventKind,
        own: Option<Duration>,
        now: Timestamp,
    ) -> bool {
        let interval = own.unwrap_or(self.rules.min_interval);
        self.state
            .accepted
            .iter()
            .any(|a| &a.unit == unit && a.kind == kind && now < later(a.at, interval))
    }

    fn batch_at(&mut self, now: Timestamp) -> &mut Batch {
        let ids = &mut self.ids;
        self.state.batch.get_or_insert_with(|| Batch {
            id: ids(now),
            opened: now,
            ..Batch::default()
        })
    }

    /// The next moment `poll` has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let batch = self
            .state
            .batch
            .as_ref()
            .map(|b| later(b.opened, self.rules.batch_window));
        let reminder = self
            .state
            .given_up
            .values()
            .filter_map(|g| {
                self.rules
                    .remind_after
                    .get(g.sent)
                    .map(|d| later(g.since, *d))
            })
            .min();
        batch.into_iter().chain(reminder).min()
    }

    /// Queues the reminders due at `now`; true when the open batch is due to be sent.
    pub fn poll(&mut self, now: Timestamp) -> bool {
        let of = self.rules.remind_after.len();
        let mut due = Vec::new();
        for (unit, g) in &mut self.state.given_up {
            let overdue = self
                .rules
                .remind_after
                .iter()
                .filter(|d| later(g.since, **d) <= now)
                .count();
            if overdue > g.sent {
                g.sent = overdue;
                due.push((
                    unit.clone(),
                    Item::Reminder {
                        at: now,
                        n: overdue,
                        of,
                        gave_up: g.event.clone(),
                    },
                ));
            }
        }
        for (unit, item) in due {
            let batch = self.batch_at(now);
            batch.items.push(item);
            batch.closing.remove(&unit);
        }
        self.state
            .given_up
            .retain(|_, g| g.sent < self.rules.remind_after.len());
        self.state
            .batch
            .as_ref()
            .is_some_and(|b| later(b.opened, self.rules.batch_window) <= now)
    }

    /// Closes the open batch into its email (due or not: shutdown sends early). `None` when
    /// nothing waits.
    pub fn flush(&mut self, now: Timestamp) -> Option<Draft> {
        let batch = self.state.batch.take()?;
        let message_id = batch.id.clone();
        let keep = self.rules.min_interval.max(DEDUP_KEEP_MIN);
        self.state.accepted.retain(|a| now < later(a.at, keep));
        self.state
            .threads
            .retain(|t| now < later(t.touched, THREAD_IDLE));
        if batch.items.is_empty() {
            return None;
        }
        let mut draft = Draft {
            message_id: message_id.clone(),
            at: now,
            items: batch.items,
            suppressed: std::mem::take(&mut self.state.suppressed),
            in_reply_to: None,
            references: Vec::new(),
        };
        let units: Vec<UnitName> = draft.units().into_iter().cloned().collect();
        if !units.is_empty() {
            let chosen = self
                .state
                .threads
                .iter()
                .enumerate()
                .filter(|(_, t)| units.iter().any(|u| t.units.contains(u)))
                .min_by_key(|(_, t)| t.created)
                .map(|(i, _)| i);
            let i = match chosen {
                Some(i) => {
                    let t = &self.state.threads[i];
                    draft.in_reply_to = t.chain.last().cloned();
                    draft.references = t.chain.clone();
                    i
                }
                None => {
                    self.state.threads.push(Thread {
                        chain: Vec::new(),
                        created: now,
                        touched: now,
                        units: BTreeSet::new(),
                    });
                    self.state.threads.len() - 1
                }
            };
            let homeless: Vec<UnitName> = units
                .iter()
                .filter(|u| !self.state.threads.iter().any(|t| t.units.contains(*u)))
                .cloned()
                .collect();
            let t = &mut self.state.threads[i];
            t.units.extend(homeless);
            t.touched = now;
            t.chain.push(message_id);
            if t.chain.len() > REFERENCES_KEPT + 1 {
                t.chain.drain(1..t.chain.len() - REFERENCES_KEPT);
            }
        }
        for u in &batch.closing {
            self.leave_thread(u);
        }
        Some(draft)
    }

    fn leave_thread(&mut self, unit: &UnitName) {
        for t in &mut self.state.threads {
            t.units.remove(unit);
        }
        self.state.threads.retain(|t| !t.units.is_empty());
    }

    /// The root message id of `unit`'s open incident, if any.
    pub fn thread_of(&self, unit: &UnitName) -> Option<&str> {
        self.state
            .threads
            .iter()
            .find(|t| t.units.contains(unit))
            .and_then(|t| t.chain.first())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::ALL_EVENTS;

    const S: u64 = 1;
    const M: u64 = 60;
    const H: u64 = 3600;

    fn t0() -> Timestamp {
        "2026-11-23T05:00:00Z".parse().unwrap()
    }

    fn at(secs: u64) -> Timestamp {
        later(t0(), Duration::from_secs(secs))
    }

    fn rules() -> Rules {
        Rules {
            batch_window: Duration::from_secs(30),
            min_interval: Duration::from_secs(15 * M),
            remind_after: vec![
                Duration::from_secs(H),
                Duration::from_secs(4 * H),
                Duration::from_secs(24 * H),
            ],
            notify_on: ALL_EVENTS.into_iter().collect(),
        }
    }

    fn unit(n: &str) -> UnitName {
        UnitName::parse(n).unwrap()
    }

    fn ev(kind: EventKind, u: Option<&str>, secs: u64) -> Event {
        Event::new(kind, u.map(unit), at(secs), format!("{kind:?}"))
    }

    /// Ids `<m1@test>`, `<m2@test>`, ... in the order batches open.
    fn ids() -> Ids {
        let mut n = 0;
        Box::new(move |_| {
            n += 1;
            format!("<m{n}@test>")
        })
    }

    /// A planner driven by a script of (seconds, event) pairs, flushing whenever due.
    struct Run {
        p: Planner,
        mails: Vec<Draft>,
    }

    impl Run {
        fn new(rules: Rules) -> Run {
            Run {
                p: Planner::new(rules, State::default(), ids()),
                mails: Vec::new(),
            }
        }

        /// Advances time to `secs`, sending whatever falls due on the way (in order).
        fn advance(&mut self, secs: u64) {
            while let Some(d) = self.p.next_deadline() {
                if d > at(secs) {
                    break;
                }
                self.tick(d);
            }
            self.tick(at(secs));
        }

        fn tick(&mut self, now: Timestamp) {
            if self.p.poll(now)
                && let Some(d) = self.p.flush(now)
            {
                self.mails.push(d);
            }
        }

        fn push(&mut self, secs: u64, kind: EventKind, u: Option<&str>) -> Pushed {
            self.advance(secs);
            self.p.push(ev(kind, u, secs), at(secs))
        }
    }

    fn kinds(d: &Draft) -> Vec<(Option<String>, EventKind)> {
        d.items
            .iter()
            .map(|i| match i {
                Item::Event(e) => (e.unit.as_ref().map(|u| u.to_string()), e.kind),
                Item::Reminder { gave_up, .. } => {
                    (gave_up.unit.as_ref().map(|u| u.to_string()), gave_up.kind)
                }
            })
            .collect()
    }

    #[test]
    fn five_units_down_at_once_are_one_email() {
        let mut r = Run::new(rules());
        for (i, u) in ["nginx", "gunicorn", "daphne", "celery", "celerybeat"]
            .iter()
            .enumerate()
        {
            assert_eq!(r.push(i as u64, EventKind::Down, Some(u)), Pushed::Accepted);
        }
        r.advance(29 * S);
        assert!(r.mails.is_empty(), "not before batch_window");
        r.advance(30 * S);
        assert_eq!(r.mails.len(), 1);
        let names: Vec<_> = r.mails[0].units().iter().map(|u| u.to_string()).collect();
        assert_eq!(
            names,
            [
                "nginx.service",
                "gunicorn.service",
                "daphne.service",
                "celery.service",
                "celerybeat.service"
            ]
        );
        assert_eq!(r.mails[0].in_reply_to, None);
    }

    #[test]
    fn the_window_counts_from_the_first_event_so_a_storm_cannot_postpone_it() {
        let mut r = Run::new(rules());
        for s in 0..60 {
            r.push(s, EventKind::Down, Some(&format!("u{s}")));
        }
        r.advance(61);
        assert_eq!(r.mails.len(), 2);
        assert_eq!(r.mails[0].at, at(30));
        assert_eq!(r.mails[0].items.len(), 30, "events at 0..30 s");
        assert_eq!(r.mails[1].at, at(60));
        assert_eq!(r.mails[1].items.len(), 30, "events at 30..60 s");
    }

    #[test]
    fn zero_batch_window_sends_each_event_at_once() {
        let mut r = Run::new(Rules {
            batch_window: Duration::ZERO,
            ..rules()
        });
        r.push(0, EventKind::Down, Some("a"));
        r.advance(0);
        r.push(0, EventKind::Down, Some("b"));
        r.advance(0);
        assert_eq!(r.mails.len(), 2);
    }

    #[test]
    fn dedup_table() {
        // (events as (second, kind, unit), expected outcome of each push)
        use EventKind::*;
        use Pushed::*;
        type Case = (
            &'static str,
            Vec<(u64, EventKind, Option<&'static str>)>,
            Vec<Pushed>,
        );
        let cases: Vec<Case> = vec![
            (
                "same kind, same unit, within min_interval",
                vec![
                    (0, RestartFailed, Some("a")),
                    (60, RestartFailed, Some("a")),
                ],
                vec![Accepted, Suppressed],
            ),
            (
                "after min_interval it goes out again",
                vec![(0, Down, Some("a")), (15 * M, Down, Some("a"))],
                vec![Accepted, Accepted],
            ),
            (
                "another unit is not a repeat",
                vec![(0, Down, Some("a")), (1, Down, Some("b"))],
                vec![Accepted, Accepted],
            ),
            (
                "another kind is not a repeat",
                vec![(0, Down, Some("a")), (1, GaveUp, Some("a"))],
                vec![Accepted, Accepted],
            ),
            (
                "suppression does not extend the interval",
                vec![
                    (0, Down, Some("a")),
                    (14 * M, Down, Some("a")),
                    (15 * M, Down, Some("a")),
                ],
                vec![Accepted, Suppressed, Accepted],
            ),
            (
                "events about unitwarden itself are deduplicated too",
                vec![(0, Started, None), (5, Started, None)],
                vec![Accepted, Suppressed],
            ),
        ];
        for (name, script, want) in cases {
            let mut r = Run::new(rules());
            let got: Vec<_> = script.iter().map(|(s, k, u)| r.push(*s, *k, *u)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_next_email_counts_what_was_suppressed() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::RestartFailed, Some("a"));
        r.advance(40);
        r.push(60, EventKind::RestartFailed, Some("a"));
        r.push(70, EventKind::RestartFailed, Some("a"));
        r.push(100, EventKind::GaveUp, Some("a"));
        r.advance(200);
        assert_eq!(r.mails.len(), 2);
        assert!(r.mails[0].suppressed.is_empty());
        assert_eq!(
            r.mails[1].suppressed,
            [Suppressed {
                unit: Some(unit("a")),
                kind: EventKind::RestartFailed,
                count: 2
            }]
        );
        assert_eq!(
            kinds(&r.mails[1]),
            [(Some("a.service".into()), EventKind::GaveUp)]
        );
    }

    #[test]
    fn a_window_min_interval_overrides_the_default() {
        let mut r = Run::new(rules());
        let mut e = ev(EventKind::Down, Some("a"), 0);
        e.min_interval = Some(Duration::from_secs(M));
        assert_eq!(r.p.push(e.clone(), at(0)), Pushed::Accepted);
        e.at = at(2 * M);
        assert_eq!(r.p.push(e, at(2 * M)), Pushed::Accepted);
    }

    #[test]
    fn notify_on_filters_kinds() {
        let mut r = Run::new(Rules {
            notify_on: [EventKind::GaveUp].into_iter().collect(),
            ..rules()
        });
        assert_eq!(r.push(0, EventKind::Down, Some("a")), Pushed::Ignored);
        assert_eq!(r.push(1, EventKind::GaveUp, Some("a")), Pushed::Accepted);
        r.advance(60);
        assert_eq!(
            kinds(&r.mails[0]),
            [(Some("a.service".into()), EventKind::GaveUp)]
        );
    }

    #[test]
    fn reminders_follow_remind_after_while_given_up() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::GaveUp, Some("a"));
        r.advance(60);
        assert_eq!(r.mails.len(), 1);
        r.advance(H - 1);
        assert_eq!(r.mails.len(), 1, "no reminder before 1h");
        r.advance(30 * H);
        let reminders: Vec<_> = r.mails[1..]
            .iter()
            .map(|d| match &d.items[..] {
                [Item::Reminder { at, n, of, .. }] => (*at, *n, *of, d.at),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reminders,
            [
                (at(H), 1, 3, at(H + 30)),
                (at(4 * H), 2, 3, at(4 * H + 30)),
                (at(24 * H), 3, 3, at(24 * H + 30)),
            ]
        );
        r.advance(300 * H);
        assert_eq!(r.mails.len(), 4, "nothing after the last reminder");
        assert!(r.mails.iter().skip(1).all(|d| d.in_reply_to.is_some()));
    }

    #[test]
    fn any_later_event_for_the_unit_cancels_its_reminders() {
        for kind in [EventKind::Recovered, EventKind::Down, EventKind::Restarted] {
            let mut r = Run::new(rules());
            r.push(0, EventKind::GaveUp, Some("a"));
            r.push(10 * M, kind, Some("a"));
            r.advance(48 * H);
            assert_eq!(r.mails.len(), 2, "{kind:?}: {:#?}", r.mails);
        }
        // ...even when that event is not emailed
        let mut r = Run::new(Rules {
            notify_on: [EventKind::GaveUp].into_iter().collect(),
            ..rules()
        });
        r.push(0, EventKind::GaveUp, Some("a"));
        r.push(10 * M, EventKind::Recovered, Some("a"));
        r.advance(48 * H);
        assert_eq!(r.mails.len(), 1);
    }

    #[test]
    fn overdue_reminders_after_downtime_collapse_into_one() {
        let mut p = Planner::new(rules(), State::default(), ids());
        p.push(ev(EventKind::GaveUp, Some("a"), 0), at(0));
        assert!(p.poll(at(30)));
        p.flush(at(30)).unwrap();
        // unitwarden was down from 30 s to 5 h
        p.poll(at(5 * H));
        let d = p.flush(at(5 * H)).unwrap();
        assert!(
            matches!(&d.items[..], [Item::Reminder { n: 2, of: 3, .. }]),
            "{d:?}"
        );
        assert_eq!(p.next_deadline(), Some(at(24 * H)));
    }

    #[test]
    fn one_incident_is_one_thread() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::Down, Some("a"));
        r.advance(40);
        r.push(60, EventKind::RestartFailed, Some("a"));
        r.advance(100);
        r.push(200, EventKind::Recovered, Some("a"));
        r.advance(300);
        let [m1, m2, m3] = &r.mails[..] else {
            panic!("{:#?}", r.mails)
        };
        assert_eq!(m1.in_reply_to, None);
        assert_eq!(m2.in_reply_to.as_deref(), Some("<m1@test>"));
        assert_eq!(m2.references, ["<m1@test>"]);
        assert_eq!(m3.in_reply_to.as_deref(), Some("<m2@test>"));
        assert_eq!(m3.references, ["<m1@test>", "<m2@test>"]);
        // recovered closed the incident: the next failure starts a new thread
        r.push(20 * M, EventKind::Down, Some("a"));
        r.advance(30 * M);
        assert_eq!(r.mails[3].in_reply_to, None);
        assert!(r.mails[3].references.is_empty());
    }

    #[test]
    fn a_batch_of_units_shares_one_thread_through_recovery() {
        let mut r = Run::new(rules());
        for u in ["a", "b", "c"] {
            r.push(0, EventKind::Down, Some(u));
        }
        r.advance(40);
        for u in ["a", "b", "c"] {
            r.push(60, EventKind::Recovered, Some(u));
        }
        r.advance(100);
        assert_eq!(r.mails.len(), 2);
        assert_eq!(r.mails[1].in_reply_to.as_deref(), Some("<m1@test>"));
        assert!(r.p.state().threads.is_empty(), "all incidents closed");
    }

    #[test]
    fn a_mixed_batch_continues_the_oldest_thread_and_adopts_new_units() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::Down, Some("old"));
        r.advance(40);
        r.push(M, EventKind::Down, Some("mid"));
        r.advance(2 * M);
        r.push(3 * M, EventKind::RestartFailed, Some("mid"));
        r.push(3 * M, EventKind::RestartFailed, Some("old"));
        r.push(3 * M, EventKind::Down, Some("new"));
        r.advance(4 * M);
        assert_eq!(r.mails.len(), 3);
        assert_eq!(r.mails[2].references, ["<m1@test>"], "oldest thread wins");
        assert_eq!(r.p.thread_of(&unit("new")), Some("<m1@test>"), "adopted");
        assert_eq!(
            r.p.thread_of(&unit("mid")),
            Some("<m2@test>"),
            "kept its own"
        );
    }

    #[test]
    fn a_resolution_followed_by_a_new_failure_in_one_batch_keeps_the_thread() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::Down, Some("a"));
        r.advance(40);
        r.push(60, EventKind::Restarted, Some("a"));
        r.push(65, EventKind::Down, Some("a"));
        r.advance(100);
        assert_eq!(r.p.thread_of(&unit("a")), Some("<m1@test>"));
    }

    #[test]
    fn emails_about_unitwarden_alone_start_no_thread() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::Started, None);
        r.advance(40);
        assert_eq!(r.mails.len(), 1);
        assert!(r.p.state().threads.is_empty());
    }

    #[test]
    fn references_keep_the_root_and_the_newest_ids() {
        let mut r = Run::new(Rules {
            min_interval: Duration::ZERO,
            ..rules()
        });
        for i in 0..20 {
            r.push(i * M, EventKind::RestartFailed, Some("a"));
            r.advance(i * M + 40);
        }
        let last = r.mails.last().unwrap();
        assert_eq!(last.references.len(), REFERENCES_KEPT + 1);
        assert_eq!(last.references[0], "<m1@test>");
        assert_eq!(last.in_reply_to.as_deref(), Some("<m19@test>"));
        assert_eq!(
            last.references.last().map(String::as_str),
            Some("<m19@test>")
        );
    }

    #[test]
    fn idle_threads_are_forgotten() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::Flapping, Some("a"));
        r.advance(40);
        r.push(8 * 24 * H, EventKind::Down, Some("a"));
        r.advance(8 * 24 * H + 40);
        assert_eq!(r.mails[1].in_reply_to, None);
    }

    #[test]
    fn state_survives_a_round_trip_through_json() {
        let mut r = Run::new(rules());
        r.push(0, EventKind::GaveUp, Some("a"));
        r.advance(40);
        r.push(50, EventKind::Down, Some("b"));
        let text = serde_json::to_string(r.p.state()).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, r.p.state());
        let mut p = Planner::new(rules(), back, ids());
        assert_eq!(
            p.pending_id(),
            Some("<m2@test>"),
            "the id is kept with the batch"
        );
        assert!(p.poll(at(80)));
        let d = p.flush(at(80)).unwrap();
        assert_eq!(d.message_id, "<m2@test>");
        assert_eq!(d.in_reply_to, None, "b has no thread yet");
        assert_eq!(p.next_deadline(), Some(at(H)));
    }
}
