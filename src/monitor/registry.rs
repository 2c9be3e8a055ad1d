//! The watched units: each holds its own settings, its restart machine and what was last seen
//! of it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::clock::Now;
use crate::config::UnitSettings;
use crate::policy::{Deps, Episode, Hold, UnitMachine, holds_dependents};
use crate::systemd::JobPath;
use crate::unit::{Observation, UnitName};

/// How many of a unit's last lines `status UNIT` shows.
const RECENT: usize = 10;

pub struct Watched {
    /// Its `[[unit]]` entry (for a glob instance, the glob's).
    pub settings: Arc<UnitSettings>,
    pub machine: UnitMachine,
    pub obs: Option<Observation>,
    /// The real unit when this name is an alias, once followed.
    pub alias: Option<UnitName>,
    /// A signal's view held back while a fresh read confirms the unit went down.
    pub unconfirmed: Option<Box<Observation>>,
    // Boxed, like the rest that most units never have: a thousand units each carry these
    // fields.
    /// An operator's pause or stop: watched and reported, never restarted.
    pub hold: Option<Box<Hold>>,
    /// A job someone else queued for the unit (an operator's stop or start, a dependency):
    /// how the unit ends up when it is done tells a deliberate stop from a failure.
    pub foreign_job: Option<Box<JobPath>>,
    /// When the unit was first seen in its current active state.
    pub since: Option<Timestamp>,
    /// The unit's last lines, newest last, for `status UNIT`.
    history: Option<Box<History>>,
    /// Its health probe, when it has one.
    pub probe: Option<Box<ProbeState>>,
}

/// A unit's health probe: when it runs next, what it last said, its failures in a row.
#[derive(Debug)]
pub struct ProbeState {
    /// When the next probe is due (while none is out).
    pub next_at: Instant,
    /// A probe is out: never two at once for one unit.
    pub running: bool,
    /// Failures in a row that count (outside `grace`).
    pub failures: u32,
    /// `failures` were reached: the unit counts as down until a probe passes or it (re)starts.
    pub down: bool,
    /// Failures before then do not count: the unit (re)started and may be warming up.
    pub grace_until: Option<Instant>,
    pub last: Option<ProbeResult>,
}

#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub ok: bool,
    pub detail: Box<str>,
    pub at: Timestamp,
    pub took: Duration,
}

impl ProbeState {
    pub fn new(now: &Now) -> ProbeState {
        ProbeState {
            next_at: now.at,
            running: false,
            failures: 0,
            down: false,
            grace_until: None,
            last: None,
        }
    }

    /// The unit (re)started (or was first seen active): failures start over, and for `grace`
    /// they do not count.
    pub fn started(&mut self, grace: Duration, now: &Now) {
        self.failures = 0;
        self.down = false;
        self.grace_until = Some(now.after(grace));
    }

    /// The unit is not active: nothing to probe, nothing counted.
    pub fn stopped(&mut self) {
        self.failures = 0;
        self.down = false;
        self.grace_until = None;
    }

    pub fn in_grace(&self, now: &Now) -> bool {
        self.grace_until.is_some_and(|g| now.at < g)
    }
}

#[derive(Default)]
struct History(VecDeque<Recent>);

/// One line of a unit's recent history.
#[derive(Clone, Debug)]
pub struct Recent {
    pub at: Timestamp,
    /// What was done (`restart`, `pause`, ...), if the line was an action.
    pub action: Option<&'static str>,
    pub text: Box<str>,
}

impl Watched {
    pub fn remember(&mut self, r: Recent) {
        let lines = &mut self.history.get_or_insert_with(Default::default).0;
        if lines.len() == RECENT {
            lines.pop_front();
        }
        lines.push_back(r);
    }

    /// The latest line that was an action.
    pub fn last_action(&self) -> Option<&Recent> {
        self.recent().rev().find(|r| r.action.is_some())
    }

    /// The unit's last lines, oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Recent> {
        self.history.iter().flat_map(|h| h.0.iter())
    }
}

pub struct Registry {
    // Boxed: the map's nodes hold room for eleven entries each, mostly unused, and a unit's
    // state is ten times the size of a pointer.
    units: BTreeMap<UnitName, Box<Watched>>,
    seed: u64,
}

impl Registry {
    /// `seed` spreads the backoff jitter of the units' machines.
    pub fn new(seed: u64) -> Registry {
        Registry {
            units: BTreeMap::new(),
            seed,
        }
    }

    /// Starts watching `name`; false if it already is.
    pub fn watch(
        &mut self,
        name: UnitName,
        settings: Arc<UnitSettings>,
        episode: Option<Episode>,
        now: &Now,
    ) -> bool {
        if self.units.contains_key(&name) {
            return false;
        }
        // An LCG step per unit: each machine gets its own jitter sequence.
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let probe = settings
            .probe
            .as_ref()
            .map(|_| Box::new(ProbeState::new(now)));
        self.units.insert(
            name,
            Box::new(Watched {
                settings,
                machine: UnitMachine::new(episode, self.seed),
                obs: None,
                alias: None,
                unconfirmed: None,
                hold: None,
                foreign_job: None,
                since: None,
                history: None,
                probe,
            }),
        );
        true
    }

    pub fn unwatch(&mut self, name: &UnitName) -> bool {
        self.units.remove(name).is_some()
    }

    pub fn get(&self, name: &UnitName) -> Option<&Watched> {
        self.units.get(name).map(|w| &**w)
    }

    pub fn get_mut(&mut self, name: &UnitName) -> Option<&mut Watched> {
        self.units.get_mut(name).map(|w| &mut **w)
    }

    pub fn contains(&self, name: &UnitName) -> bool {
        self.units.contains_key(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&UnitName, &Watched)> {
        self.units.iter().map(|(n, w)| (n, &**w))
    }

    /// The units whose machines have something to do at `now`.
    pub fn due(&self, now: &Now) -> Vec<UnitName> {
        self.units
            .iter()
            .filter(|(_, w)| w.machine.due(&w.settings.policy, now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn names(&self) -> Vec<UnitName> {
        self.units.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Whether `name` may make its attempt now, by the dependency rule of `policy`.
    pub fn deps(&self, name: &UnitName) -> Deps {
        let Some(w) = self.units.get(name) else {
            return Deps::Ready;
        };
        w.settings
            .depends_on
            .iter()
            .find(|dep| {
                self.units
                    .get(*dep)
                    .is_some_and(|d| holds_dependents(&d.machine))
            })
            .map_or(Deps::Ready, |dep| Deps::Waiting(dep.clone()))
    }

    /// The episodes to persist.
    pub fn episodes(&self) -> BTreeMap<UnitName, Episode> {
        self.units
            .iter()
            .filter_map(|(n, w)| Some((n.clone(), w.machine.episode()?.clone())))
            .collect()
    }

    /// The operators' holds to persist.
    pub fn holds(&self) -> BTreeMap<UnitName, Hold> {
        self.units
            .iter()
            .filter_map(|(n, w)| Some((n.clone(), w.hold.as_deref()?.clone())))
            .collect()
    }

    /// The longest `verify_after` of the watched units.
    pub fn max_verify(&self) -> Duration {
        self.units
            .values()
            .map(|w| w.settings.policy.verify_after)
            .max()
            .unwrap_or_default()
    }
}
