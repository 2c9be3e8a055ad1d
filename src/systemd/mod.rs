//! The systemd manager over D-Bus: the only module that speaks zbus. Everything it hands out is
//! typed (`UnitName`, `ActiveState`, `JobResult`, object paths), never raw bus values.

mod inspect;
mod jobs;
mod path;
mod signals;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use zbus::message::Flags;
use zbus::{Connection, Message, ObjectPath, OwnedObjectPath};

use crate::unit::{ActiveState, JobResult, LoadState, Observation, SubState, UnitName};
pub use inspect::{AutoRestart, ServiceProps, UnitProps};
pub use jobs::Jobs;
pub use path::{JobPath, Router, UnitPath};
pub use signals::{Signal, Signals, UnitUpdate};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// A manager that does not answer within this is treated as a bus failure, so one stuck call
/// cannot stall the watchdog.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Which bus the manager is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    System,
    User,
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusKind::System => "system",
            BusKind::User => "user",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the {bus} bus: {source}")]
    Connect { bus: BusKind, source: zbus::Error },
    /// The manager answered with a D-Bus error (e.g. `org.freedesktop.systemd1.NoSuchUnit`,
    /// access denied): the connection itself is fine.
    #[error("{name}: {message}")]
    Refused { name: String, message: String },
    #[error("D-Bus: {0}")]
    Bus(zbus::Error),
}

impl SystemdError {
    /// Whether the connection should be rebuilt.
    pub fn is_connection_lost(&self) -> bool {
        !matches!(self, SystemdError::Refused { .. })
    }
}

impl From<zbus::Error> for SystemdError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => SystemdError::Refused {
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            // The standard `org.freedesktop.DBus.Error.*` answers (access denied, unknown
            // object, ...) come typed: the manager answered, the connection is fine.
            // The bus itself failing to reach the manager (restarting, gone) is no answer.
            zbus::Error::FDO(e) if !no_answer(&e) => {
                let (name, message) = fdo_parts(&e);
                SystemdError::Refused { name, message }
            }
            other => SystemdError::Bus(other),
        }
    }
}

/// Whether a standard error says the manager could not be reached, rather than answering.
fn no_answer(e: &zbus::fdo::Error) -> bool {
    use zbus::fdo::Error as E;
    matches!(
        e,
        E::ServiceUnknown(_)
            | E::NameHasNoOwner(_)
            | E::NoReply(_)
            | E::Disconnected(_)
            | E::TimedOut(_)
            | E::Timeout(_)
            | E::NoServer(_)
            | E::NoNetwork(_)
            | E::IOError(_)
            | E::LimitsExceeded(_)
    )
}

/// The error name and message of a standard D-Bus error.
fn fdo_parts(e: &zbus::fdo::Error) -> (String, String) {
    use zbus::DBusError;
    (
        e.name().to_string(),
        e.description().unwrap_or_default().to_string(),
    )
}

type Result<T> = std::result::Result<T, SystemdError>;

/// One unit as listed by the manager. An alias is listed under the real unit's name (and its
/// signals come from the real unit's path, [`UnitPath::of`] that name).
#[derive(Clone, Debug, PartialEq)]
pub struct UnitStatus {
    pub name: UnitName,
    pub observation: Observation,
}

/// A job we queued; resolves when the manager removes it.
pub struct Job {
    removed: tokio::sync::oneshot::Receiver<JobResult>,
}

impl Job {
    /// How the job ended; `None` if its `JobRemoved` can no longer arrive (the watch loop that
    /// reads signals is gone).
    pub async fn finished(self) -> Option<JobResult> {
        self.removed.await.ok()
    }
}

#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    jobs: Jobs,
}

impl Systemd {
    /// `jobs` outlives connections, so an attempt that started before a reconnect still hears
    /// how its job ended.
    pub async fn connect(bus: BusKind, jobs: Jobs) -> Result<Systemd> {
        let builder = match bus {
            BusKind::System => zbus::connection::Builder::system(),
            BusKind::User => zbus::connection::Builder::session(),
        };
        // A bus that accepts the connection but never answers (a socket whose daemon is not
        // started yet, a hung daemon) must not hold the watch loop: the handshake is bounded
        // like every call.
        let built =
            tokio::time::timeout(CALL_TIMEOUT, builder.method_timeout(CALL_TIMEOUT).build())
                .await
                .unwrap_or_else(|_| {
                    Err(zbus::Error::InputOutput(std::sync::Arc::new(
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer to the connection handshake",
                        ),
                    )))
                });
        let conn = built.map_err(|source| SystemdError::Connect { bus, source })?;
        Ok(Systemd { conn, jobs })
    }

    /// Opens the signal streams first, then subscribes, so nothing emitted after `Subscribe`
    /// can be missed. What arrives before the reply (another client may have subscribed the
    /// manager already) is read and dropped: the first poll supersedes it, and an unread
    /// queue would hold up the reply.
    pub async fn signals(&self) -> Result<Signals> {
        let mut signals = Signals::open(&self.conn, self.jobs.clone()).await?;
        signals.discard_while(self.subscribe()).await?;
        // Subscribed first: a job that ends from now on is heard; one that ended while the bus
        // was down is found missing here. (What is discarded meanwhile, the first poll reads.)
        match signals.discard_while(self.release_missed_jobs()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{n} restart job(s) ended while the bus was down; their units' states decide"
            ),
            Err(e) => tracing::debug!("cannot check restart jobs after connecting: {e}"),
        }
        Ok(signals)
    }

    /// Without a subscriber, systemd 252 emits no unit or job signals at all.
    pub async fn subscribe(&self) -> Result<()> {
        match self.manager_call("Subscribe", &()).await {
            Ok(_) => Ok(()),
            // Already subscribed on this connection (e.g. manager state serialized across
            // daemon-reexec): that is what we wanted.
            Err(SystemdError::Refused { name, .. }) if name.ends_with("AlreadySubscribed") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// One row per name, in order; an alias comes back under the real unit's name and path.
    pub async fn list_by_names(&self, names: &[UnitName]) -> Result<Vec<UnitStatus>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = names.iter().map(UnitName::as_str).collect();
        let reply = self.manager_call("ListUnitsByNames", &(names,)).await?;
        parse_listing(&reply)
    }

    pub async fn list_by_patterns(&self, patterns: &[&str]) -> Result<Vec<UnitStatus>> {
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        let states: &[&str] = &[];
        let reply = self
            .manager_call("ListUnitsByPatterns", &(states, patterns))
            .await?;
        parse_listing(&reply)
    }

    /// `ResetFailedUnit` (clears the start limiter) then `RestartUnit(name, "replace")`. As root,
    /// in one round trip: the reset goes out without waiting for its reply, and the manager
    /// handles a connection's calls in order. A refused reset shows as a failed restart.
    pub async fn reset_and_restart(&self, name: &UnitName) -> Result<Job> {
        if !nix::unistd::geteuid().is_root() {
            // Without root, each call waits for polkit, which may answer them in any order:
            // the reset must be done before the restart is asked for.
            match self
                .manager_call("ResetFailedUnit", &(name.as_str(),))
                .await
            {
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => tracing::warn!(unit = %name, "ResetFailedUnit: {e}"),
                Ok(_) => {}
            }
            return self.restart(name).await;
        }
        let reset = Message::method_call(MANAGER_PATH, "ResetFailedUnit")
            .destination(DEST)
            .interface(MANAGER)
            .with_flags(Flags::NO_REPLY_EXPECTED)
            .build(&(name.as_str(),))?;
        self.conn.send(&reset).await?;
        self.restart(name).await
    }

    /// Queues `RestartUnit(name, "replace")`.
    pub async fn restart(&self, name: &UnitName) -> Result<Job> {
        self.queue("RestartUnit", name).await
    }

    /// Queues `StartUnit(name, "replace")`: a recovery unit. For a oneshot the job ends when
    /// its run does.
    pub async fn start(&self, name: &UnitName) -> Result<Job> {
        self.queue("StartUnit", name).await
    }

    /// Calls the manager's `method(name, "replace")`, which queues a job, and claims the job
    /// before any `JobRemoved` can be read.
    async fn queue(&self, method: &str, name: &UnitName) -> Result<Job> {
        let call = self.jobs.call_out();
        let reply = self
            .manager_call(method, &(name.as_str(), "replace"))
            .await?;
        let job: OwnedObjectPath = reply.body().deserialize()?;
        let path = JobPath::from_bus(job.as_str());
        let removed = self.jobs.claim(path);
        drop(call);
        Ok(Job { removed })
    }

    /// After a reconnect: the jobs our attempts wait for that the manager no longer has. Their
    /// `JobRemoved` went out while we were not listening, so their attempts are told to stop
    /// waiting (the unit's state after `verify_after` decides) instead of waiting for a
    /// signal that will never come.
    async fn release_missed_jobs(&self) -> Result<usize> {
        let mut missed = 0;
        for job in self.jobs.waiting() {
            let asked = self
                .conn
                .call_method(
                    Some(DEST),
                    job.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &("org.freedesktop.systemd1.Job", "Id"),
                )
                .await;
            match asked.map_err(SystemdError::from) {
                Ok(_) => {}
                // No such object: the job is gone.
                Err(SystemdError::Refused { .. }) => {
                    self.jobs.missed(&job);
                    missed += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(missed)
    }

    async fn manager_call<B>(&self, method: &str, body: &B) -> Result<Message>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        Ok(self
            .conn
            .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), method, body)
            .await?)
    }
}

/// A row of `ListUnitsBy*`, borrowed from the reply: a poll of many units allocates only what
/// it keeps.
type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    ObjectPath<'a>,
    u32,
    &'a str,
    ObjectPath<'a>,
);

fn parse_listing(reply: &Message) -> Result<Vec<UnitStatus>> {
    let body = reply.body();
    let rows: Vec<Row<'_>> = body.deserialize()?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(name, _desc, load, active, sub, _following, _path, job_id, ..)| {
                let name = UnitName::parse(name).ok()?;
                let mut observation = Observation::new(
                    LoadState::parse(load),
                    ActiveState::parse(active),
                    SubState::new(sub),
                );
                observation.job_pending = job_id != 0;
                Some(UnitStatus { name, observation })
            },
        )
        .collect())
}
