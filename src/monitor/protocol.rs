//! What goes into the engine and what comes out: the inputs it decides on and the actions
//! the shell carries out.

use super::attempts::Reset;
use super::narrate::Line;
use crate::alert::Event;
use crate::config::{ProbeSettings, RecoverySettings, ResourceSettings, Settings};
use crate::policy::JobOutcome;
use crate::probe::ProbeOutcome;
use crate::resources::Reading;
use crate::state::Saved;
use crate::systemd::{Signal, UnitPath, UnitStatus};
use crate::unit::UnitName;

/// Something that happened, for the engine to decide on.
#[derive(Debug)]
pub enum Input {
    /// Connected (again) and subscribed: time to resynchronise with a full poll.
    Connected,
    /// A deadline from [`Engine::wake_at`](super::engine::Engine::wake_at) has come.
    Timer,
    /// Part of the answer to [`Action::Poll`]: one batch of the names.
    Listed(Listing),
    /// The rest of the answer to [`Action::Poll`], the units the globs match; the poll is
    /// complete.
    Polled { by_pattern: Vec<UnitStatus> },
    /// News from the manager.
    Signal(Signal),
    /// The answer to [`Action::Confirm`]; `None` if the read failed.
    Confirmed {
        name: UnitName,
        fresh: Option<UnitStatus>,
    },
    /// The answer to [`Action::Read`].
    Discovered(Vec<UnitStatus>),
    /// Our restart job for `name` ended.
    JobDone { name: UnitName, outcome: JobOutcome },
    /// The recovery unit of `name` ([`Action::Recover`]) has finished, failed, or timed out.
    RecoveryDone {
        name: UnitName,
        ok: bool,
        detail: String,
    },
    /// The answer to [`Action::CheckResources`].
    ResourcesRead(Vec<Reading>),
    /// The probe of `name` ([`Action::Probe`]) has an answer.
    Probed {
        name: UnitName,
        outcome: ProbeOutcome,
    },
    /// A new, valid configuration.
    Reload(Box<Settings>),
    /// The configuration file was refused; the running one stays.
    ReloadFailed(String),
    /// The daemon is stopping.
    Stopping,
}

/// `ListUnitsByNames` for a batch of names.
#[derive(Debug, Default)]
pub struct Listing {
    pub asked: Vec<UnitName>,
    /// One row per asked name, in order; `None` where the manager's answer could not be
    /// paired with the names asked.
    pub by_name: Vec<Option<UnitStatus>>,
}

/// What the shell must do, in order.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// List `names` by name, in batches, and `patterns` by pattern; answer with an
    /// [`Input::Listed`] per batch, then [`Input::Polled`].
    Poll {
        names: Vec<UnitName>,
        patterns: Vec<String>,
    },
    /// Read one unit afresh; answer with [`Input::Confirmed`].
    Confirm(UnitName),
    /// Read a unit a glob may pick up; answer with [`Input::Discovered`].
    Read(UnitName),
    /// Subscribe again (a restarted manager forgot us).
    Subscribe,
    /// Also route signals of this path (the real unit of an alias) to `name`.
    Follow(UnitName, UnitPath),
    /// `name` is no longer watched: forget its aliases.
    Unwatch(UnitName),
    /// Restart `unit`; answer with [`Input::JobDone`]. The episodes were persisted before.
    Restart {
        unit: UnitName,
        reset: Reset,
    },
    /// Run the health probe of `unit` once; answer with [`Input::Probed`]. It runs beside the
    /// loop, bounded by its own timeout.
    Probe {
        unit: UnitName,
        probe: Box<ProbeSettings>,
    },
    /// Start `unit`'s recovery unit and wait for its job (for a oneshot, its run), bounded by
    /// its `recovery_timeout`; answer with [`Input::RecoveryDone`].
    Recover {
        unit: UnitName,
        recovery: Box<RecoverySettings>,
    },
    /// Read the host's resources (blocking I/O, off the loop, bounded); answer with
    /// [`Input::ResourcesRead`].
    CheckResources(Box<ResourceSettings>),
    /// Write the episodes and holds to `state_dir`.
    Persist(Saved),
    // Boxed: most actions are small, and a turn at startup queues one per watched unit.
    Log(Box<Line>),
    Alert(Box<Event>),
    /// Tell systemd we are ready (`READY=1`, with the status line).
    Ready,
}

/// Whether the engine runs until stopped or makes one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Daemon,
    /// One pass: done once nothing is pending; units systemd is moving are waited for up to
    /// the longest `verify_after`.
    Once,
}
