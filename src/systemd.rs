//! The systemd manager over D-Bus: the only module that speaks zbus. Everything it hands out is
//! typed (`UnitName`, `ActiveState`, ...), never raw bus values.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use zbus::message::Type as MsgType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant};

use crate::config::BusKind;
use crate::unit::{ActiveState, LoadState, Observation, SubState, UnitName};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
/// A manager that does not answer within this is treated as a bus failure, so one stuck call
/// cannot stall the watchdog.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

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
            other => SystemdError::Bus(other),
        }
    }
}

type Result<T> = std::result::Result<T, SystemdError>;

/// One unit as listed by the manager.
#[derive(Clone, Debug)]
pub struct UnitStatus {
    pub name: UnitName,
    pub observation: Observation,
    /// The unit's object path as the manager gives it (an alias's is the real unit's).
    pub path: String,
}

/// Partial news about a unit from `PropertiesChanged`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitUpdate {
    pub load: Option<LoadState>,
    pub active: Option<ActiveState>,
    pub sub: Option<SubState>,
    pub result: Option<String>,
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

/// What the manager tells us without being asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// A unit's properties changed; `path` is its object path.
    Unit {
        path: String,
        update: UnitUpdate,
    },
    JobRemoved {
        job: String,
        unit: String,
        result: String,
    },
    UnitNew {
        name: String,
    },
    /// `Reloading(false)`: a daemon-reload finished; states may have moved silently.
    Reloaded,
    /// `org.freedesktop.systemd1` got a new owner (daemon-reexec, or a restarted user manager).
    ManagerRestarted,
}

#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
}

impl Systemd {
    pub async fn connect(bus: BusKind) -> Result<Systemd> {
        let builder = match bus {
            BusKind::System => zbus::connection::Builder::system(),
            BusKind::User => zbus::connection::Builder::session(),
        };
        let conn = builder
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|source| SystemdError::Connect { bus, source })?;
        Ok(Systemd { conn })
    }

    /// Opens the signal streams first, then subscribes, so nothing emitted after `Subscribe`
    /// can be missed.
    pub async fn signals(&self) -> Result<Signals> {
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
        // After Subscribe this carries the whole host's unit and job traffic; a full queue
        // would hold up method replies too, so leave room for bursts (boot, mass restarts).
        let systemd =
            MessageStream::for_match_rule(systemd, &self.conn, NonZeroUsize::new(4096)).await?;
        let owner = MessageStream::for_match_rule(owner, &self.conn, None).await?;
        self.subscribe().await?;
        Ok(Signals {
            systemd,
            owner,
            watched: Default::default(),
        })
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

    pub async fn list_by_names(&self, names: &[&str]) -> Result<Vec<UnitStatus>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.manager_call("ListUnitsByNames", &(names,)).await?;
        Ok(parse_listing(reply.body().deserialize()?))
    }

    pub async fn list_by_patterns(&self, patterns: &[&str]) -> Result<Vec<UnitStatus>> {
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        let states: &[&str] = &[];
        let reply = self
            .manager_call("ListUnitsByPatterns", &(states, patterns))
            .await?;
        Ok(parse_listing(reply.body().deserialize()?))
    }

    pub async fn reset_failed(&self, name: &UnitName) -> Result<()> {
        self.manager_call("ResetFailedUnit", &(name.as_str(),))
            .await?;
        Ok(())
    }

    /// Queues `RestartUnit(name, "replace")`; returns our job's path.
    pub async fn restart(&self, name: &UnitName) -> Result<String> {
        let reply = self
            .manager_call("RestartUnit", &(name.as_str(), "replace"))
            .await?;
        let job: OwnedObjectPath = reply.body().deserialize()?;
        Ok(job.as_str().to_string())
    }

    /// `Result` and `NRestarts` of a service, for log lines and flap detection.
    pub async fn service_details(&self, name: &UnitName) -> Result<(Option<String>, Option<u32>)> {
        if !name.as_str().ends_with(".service") {
            return Ok((None, None));
        }
        let path = name.object_path();
        let result = self.get_property(&path, SERVICE_IFACE, "Result").await?;
        let restarts = self.get_property(&path, SERVICE_IFACE, "NRestarts").await?;
        Ok((
            result.and_then(|v| String::try_from(v).ok()),
            restarts.and_then(|v| u32::try_from(v).ok()),
        ))
    }

    async fn get_property(
        &self,
        path: &str,
        iface: &str,
        prop: &str,
    ) -> Result<Option<OwnedVariant>> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, prop),
            )
            .await;
        match reply {
            Ok(m) => Ok(Some(m.body().deserialize::<OwnedVariant>()?)),
            Err(zbus::Error::MethodError(..)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn manager_call<B>(&self, method: &str, body: &B) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        Ok(self
            .conn
            .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), method, body)
            .await?)
    }
}

type Listing = Vec<(
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
)>;

fn parse_listing(rows: Listing) -> Vec<UnitStatus> {
    rows.into_iter()
        .filter_map(
            |(name, _desc, load, active, sub, _following, path, job_id, ..)| {
                let name = UnitName::parse(&name).ok()?;
                let mut observation = Observation::new(
                    LoadState::parse(&load),
                    ActiveState::parse(&active),
                    SubState::new(&sub),
                );
                observation.job_pending = job_id != 0;
                Some(UnitStatus {
                    name,
                    observation,
                    path: path.as_str().to_string(),
                })
            },
        )
        .collect()
}

/// The live signal streams of one connection.
pub struct Signals {
    systemd: MessageStream,
    owner: MessageStream,
    /// Object paths of the watched units. systemd signals every unit's changes once anyone
    /// subscribes; checking the header first skips decoding the others' property maps.
    watched: std::collections::HashSet<String>,
}

impl Signals {
    pub fn set_watched(&mut self, paths: impl IntoIterator<Item = String>) {
        self.watched = paths.into_iter().collect();
    }

    /// The next signal we care about; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<Signal> {
        loop {
            let msg = tokio::select! {
                m = next_item(&mut self.systemd) => m?,
                m = next_item(&mut self.owner) => m?,
            };
            let Ok(msg) = msg else { continue };
            if let Some(sig) = decode(&msg, &self.watched) {
                return Some(sig);
            }
        }
    }
}

async fn next_item<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

fn decode(msg: &zbus::Message, watched: &std::collections::HashSet<String>) -> Option<Signal> {
    let header = msg.header();
    let member = header.member()?.as_str();
    let body = msg.body();
    match member {
        "PropertiesChanged" => {
            let path = header.path()?.as_str();
            if !watched.contains(path) {
                return None;
            }
            let path = path.to_string();
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                body.deserialize().ok()?;
            if iface != UNIT_IFACE && iface != SERVICE_IFACE {
                return None;
            }
            let text = |k: &str| changed.get(k).and_then(|v| String::try_from(&**v).ok());
            let update = UnitUpdate {
                load: text("LoadState").map(|s| LoadState::parse(&s)),
                active: text("ActiveState").map(|s| ActiveState::parse(&s)),
                sub: text("SubState").map(|s| SubState::new(&s)),
                result: text("Result"),
                n_restarts: changed
                    .get("NRestarts")
                    .and_then(|v| u32::try_from(&**v).ok()),
                job_pending: changed
                    .get("Job")
                    .and_then(|v| <(u32, OwnedObjectPath)>::try_from(&**v).ok())
                    .map(|(id, _)| id != 0),
                exec_main_code: changed
                    .get("ExecMainCode")
                    .and_then(|v| i32::try_from(&**v).ok()),
                exec_main_status: changed
                    .get("ExecMainStatus")
                    .and_then(|v| i32::try_from(&**v).ok()),
            };
            (update != UnitUpdate::default()).then_some(Signal::Unit { path, update })
        }
        "JobRemoved" => {
            let (_id, job, unit, result): (u32, OwnedObjectPath, String, String) =
                body.deserialize().ok()?;
            Some(Signal::JobRemoved {
                job: job.as_str().to_string(),
                unit,
                result,
            })
        }
        "UnitNew" => {
            let (name, _path): (String, OwnedObjectPath) = body.deserialize().ok()?;
            Some(Signal::UnitNew { name })
        }
        "Reloading" => {
            let (active,): (bool,) = body.deserialize().ok()?;
            (!active).then_some(Signal::Reloaded)
        }
        "NameOwnerChanged" => {
            let (_name, _old, new): (String, String, String) = body.deserialize().ok()?;
            (!new.is_empty()).then_some(Signal::ManagerRestarted)
        }
        _ => None,
    }
}
