//! The signals the manager sends without being asked, decoded into typed news about the
//! watched units. `JobRemoved` never leaves this module: it goes to the attempt that owns the
//! job (see `jobs`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::pin::Pin;

use futures_core::Stream;
use zbus::message::Type as MsgType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant};

use super::jobs::Jobs;
use super::path::{JobPath, Router};
use super::{DEST, MANAGER_PATH, Result};
use crate::unit::{
    ActiveState, JobResult, LoadState, Observation, ServiceResult, SubState, UnitName,
};

const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

/// Partial news about a unit from `PropertiesChanged`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitUpdate {
    pub load: Option<LoadState>,
    pub active: Option<ActiveState>,
    pub sub: Option<SubState>,
    pub result: Option<ServiceResult>,
    pub n_restarts: Option<u32>,
    pub job_pending: Option<bool>,
    pub exec_main_code: Option<i32>,
    pub exec_main_status: Option<i32>,
}

impl UnitUpdate {
    pub fn apply(&self, obs: &mut Observation) {
        if let Some(l) = self.load {
            obs.load = l;
        }
        if let Some(a) = self.active {
            obs.active = a;
        }
        if let Some(s) = &self.sub {
            obs.sub = s.clone();
        }
        if let Some(r) = &self.result {
            obs.result = Some(r.clone());
        }
        if let Some(n) = self.n_restarts {
            obs.n_restarts = Some(n);
        }
        if let Some(j) = self.job_pending {
            obs.job_pending = j;
        }
        if let (Some(code), Some(status)) = (self.exec_main_code, self.exec_main_status) {
            obs.exec_main = Some((code, status));
        }
    }
}

/// What the manager tells us about the watched units and itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// A watched unit's properties changed.
    Unit { name: UnitName, update: UnitUpdate },
    /// The manager loaded a unit (perhaps an instance a glob should pick up).
    UnitNew(UnitName),
    /// `Reloading(false)`: a daemon-reload finished; states may have moved silently.
    Reloaded,
    /// `org.freedesktop.systemd1` got a new owner (daemon-reexec, or a restarted user manager).
    ManagerRestarted,
    /// A job was queued for a watched unit (by anyone: an operator, a dependency, us).
    JobNew { name: UnitName, job: JobPath },
    /// A job of a watched unit ended (ours also reach their attempts).
    JobRemoved {
        name: UnitName,
        job: JobPath,
        result: JobResult,
    },
    /// The manager is bringing the host (or, for a user manager, the session) down.
    ShuttingDown,
}

/// Targets whose start means the manager is going down: nothing may be restarted any more.
const SHUTDOWN_TARGETS: [&str; 7] = [
    "shutdown.target",
    "poweroff.target",
    "reboot.target",
    "halt.target",
    "kexec.target",
    "soft-reboot.target",
    "exit.target",
];

/// The live signal streams of one connection.
pub struct Signals {
    systemd: MessageStream,
    owner: MessageStream,
    jobs: Jobs,
}

impl Signals {
    pub(super) async fn open(conn: &Connection, jobs: Jobs) -> Result<Signals> {
        let systemd = MatchRule::builder()
            .msg_type(MsgType::Signal)
            .path_namespace(MANAGER_PATH)
            .build()?;
        let owner = MatchRule::builder()
            .msg_type(MsgType::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .arg(0, DEST)
            .build()?;
        // After Subscribe this carries the whole host's unit and job traffic. A full queue
        // holds up the connection's reader, method replies included, so the watch loop keeps
        // reading signals while it waits for a reply; the queue only has to absorb what
        // arrives within one turn of the loop. Its slots are allocated up front.
        // The quiet stream first: the busy one is read from the moment it exists.
        let owner = MessageStream::for_match_rule(owner, conn, None).await?;
        let systemd = MessageStream::for_match_rule(systemd, conn, NonZeroUsize::new(256)).await?;
        Ok(Signals {
            systemd,
            owner,
            jobs,
        })
    }

    /// Runs `call` to completion, reading and dropping whatever arrives meanwhile, except the
    /// ends of jobs, which still reach their attempts.
    pub(super) async fn discard_while<F: std::future::Future>(&mut self, call: F) -> F::Output {
        tokio::pin!(call);
        let nothing_watched = Router::default();
        loop {
            tokio::select! {
                biased;
                out = &mut call => return out,
                m = next_item(&mut self.systemd) => match m {
                    Some(Ok(msg)) => {
                        if let Some(Decoded::JobRemoved(job, result, _)) =
                            decode(&msg, &nothing_watched, &|_: &UnitName| false)
                        {
                            self.jobs.removed(job, result);
                        }
                    }
                    Some(Err(_)) => {}
                    None => return call.await,
                },
                m = next_item(&mut self.owner) => if m.is_none() { return call.await },
            }
        }
    }

    /// The next signal about a watched unit (as `router` and `watched` tell) or about the
    /// manager; `None` when the connection is gone. Job removals are delivered to their
    /// attempts on the way.
    pub async fn next(
        &mut self,
        router: &Router,
        watched: impl Fn(&UnitName) -> bool,
    ) -> Option<Signal> {
        loop {
            let msg = tokio::select! {
                m = next_item(&mut self.systemd) => m?,
                m = next_item(&mut self.owner) => m?,
            };
            let Ok(msg) = msg else { continue };
            match decode(&msg, router, &watched) {
                Some(Decoded::Signal(sig)) => return Some(sig),
                Some(Decoded::JobRemoved(job, result, news)) => {
                    self.jobs.removed(job, result);
                    if let Some(sig) = news {
                        return Some(sig);
                    }
                }
                None => {}
            }
        }
    }
}

async fn next_item<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

enum Decoded {
    Signal(Signal),
    /// For the attempt that owns the job, and news if the unit is watched.
    JobRemoved(JobPath, JobResult, Option<Signal>),
}

fn decode(
    msg: &zbus::Message,
    router: &Router,
    watched: &impl Fn(&UnitName) -> bool,
) -> Option<Decoded> {
    let header = msg.header();
    let member = header.member()?.as_str();
    let body = msg.body();
    let signal = match member {
        "PropertiesChanged" => {
            let name = router.resolve(header.path()?.as_str(), watched)?;
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                body.deserialize().ok()?;
            if iface != UNIT_IFACE && iface != SERVICE_IFACE {
                return None;
            }
            let update = unit_update(&changed);
            (update != UnitUpdate::default()).then_some(Signal::Unit { name, update })?
        }
        "JobRemoved" => {
            let (_id, job, unit, result): (u32, OwnedObjectPath, String, String) =
                body.deserialize().ok()?;
            let job = JobPath::from_bus(job.as_str());
            let result = JobResult::parse(&result);
            let news = UnitName::parse(&unit)
                .ok()
                .filter(|n| watched(n))
                .map(|name| Signal::JobRemoved {
                    name,
                    job: job.clone(),
                    result: result.clone(),
                });
            return Some(Decoded::JobRemoved(job, result, news));
        }
        "JobNew" => {
            let (_id, job, unit): (u32, OwnedObjectPath, String) = body.deserialize().ok()?;
            if SHUTDOWN_TARGETS.contains(&unit.as_str()) {
                Signal::ShuttingDown
            } else {
                let name = UnitName::parse(&unit).ok().filter(|n| watched(n))?;
                Signal::JobNew {
                    name,
                    job: JobPath::from_bus(job.as_str()),
                }
            }
        }
        "UnitNew" => {
            let (name, _path): (String, OwnedObjectPath) = body.deserialize().ok()?;
            Signal::UnitNew(UnitName::parse(&name).ok()?)
        }
        "Reloading" => {
            let (active,): (bool,) = body.deserialize().ok()?;
            (!active).then_some(Signal::Reloaded)?
        }
        "NameOwnerChanged" => {
            let (_name, _old, new): (String, String, String) = body.deserialize().ok()?;
            (!new.is_empty()).then_some(Signal::ManagerRestarted)?
        }
        _ => return None,
    };
    Some(Decoded::Signal(signal))
}

fn unit_update(changed: &HashMap<String, OwnedVariant>) -> UnitUpdate {
    let text = |k: &str| changed.get(k).and_then(|v| String::try_from(&**v).ok());
    let int = |k: &str| changed.get(k).and_then(|v| i32::try_from(&**v).ok());
    UnitUpdate {
        load: text("LoadState").map(|s| LoadState::parse(&s)),
        active: text("ActiveState").map(|s| ActiveState::parse(&s)),
        sub: text("SubState").map(|s| SubState::new(&s)),
        result: text("Result").map(|s| ServiceResult::parse(&s)),
        n_restarts: changed
            .get("NRestarts")
            .and_then(|v| u32::try_from(&**v).ok()),
        job_pending: changed
            .get("Job")
            .and_then(|v| <(u32, OwnedObjectPath)>::try_from(&**v).ok())
            .map(|(id, _)| id != 0),
        exec_main_code: int("ExecMainCode"),
        exec_main_status: int("ExecMainStatus"),
    }
}
