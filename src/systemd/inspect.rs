//! Reading a unit's settings and the manager's version for `unitwarden doctor`: the properties
//! that decide whether a unit can be watched well, as plain values. A property an older systemd
//! does not have is `None`, never an error.

use std::collections::HashMap;

use zbus::OwnedVariant;

use super::path::UnitPath;
use super::{DEST, MANAGER, MANAGER_PATH, Result, Systemd, SystemdError};
use crate::unit::{ActiveState, LoadState, SubState, UnitName};

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

/// What systemd does when a service's process ends (`Restart=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoRestart {
    /// `Restart=no`: systemd never restarts it by itself.
    Never,
    /// Any other setting (`on-failure`, `always`, ...), by its name.
    When(String),
}

/// The unit's settings and state that `doctor` judges.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitProps {
    /// The unit's real name: an alias is read as the unit it names.
    pub id: Option<UnitName>,
    pub load: LoadState,
    /// Why it could not be loaded (`LoadError=`'s message), when it could not.
    pub load_error: Option<String>,
    pub active: ActiveState,
    pub sub: SubState,
    /// The unit file and its drop-ins, in the order systemd applies them.
    pub files: Vec<String>,
    /// Units with `PartOf=` (or `BindsTo=`) this one.
    pub consists_of: Vec<UnitName>,
    pub wants: Vec<UnitName>,
    pub requires: Vec<UnitName>,
    pub start_limit_burst: Option<u32>,
    /// 0 disables the start limit.
    pub start_limit_interval_us: Option<u64>,
    /// Set for services only.
    pub service: Option<ServiceProps>,
}

/// The `org.freedesktop.systemd1.Service` part of a unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceProps {
    pub oneshot: bool,
    pub remain_after_exit: Option<bool>,
    /// 0 when there is no main process.
    pub main_pid: Option<u32>,
    pub restart: Option<AutoRestart>,
    pub restart_us: Option<u64>,
    /// systemd 254 and later; `u64::MAX` is `infinity`.
    pub restart_max_delay_us: Option<u64>,
    /// systemd 254 and later.
    pub restart_steps: Option<u32>,
    /// `User=`; empty for root.
    pub user: Option<String>,
}

impl Systemd {
    /// The manager's `Version` (e.g. `252.39-1~deb12u2`); `None` if it does not say.
    pub async fn version(&self) -> Result<Option<String>> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                MANAGER_PATH,
                Some(PROPERTIES),
                "Get",
                &(MANAGER, "Version"),
            )
            .await;
        match reply.map_err(SystemdError::from) {
            Ok(reply) => {
                let value: OwnedVariant = reply.body().deserialize()?;
                Ok(String::try_from(&*value).ok())
            }
            Err(SystemdError::Refused { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads `name` (systemd loads it for the occasion, as `systemctl show` does); a unit that
    /// does not exist reads as `LoadState=not-found`. An error is the manager refusing to
    /// answer, or the bus failing.
    pub async fn unit_props(&self, name: &UnitName) -> Result<UnitProps> {
        let path = UnitPath::of(name);
        let mut unit = self.get_all(&path, UNIT_IFACE).await?;
        let id = text(&unit, "Id").and_then(|s| UnitName::parse(&s).ok());
        let is_service = id.as_ref().unwrap_or(name).as_str().ends_with(".service");
        let service = if is_service {
            // Read as far as the manager answers: a unit that could not be loaded may lack
            // the service's half.
            match self.get_all(&path, SERVICE_IFACE).await {
                Ok(s) => Some(service_props(s)),
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(_) => None,
            }
        } else {
            None
        };
        let mut files: Vec<String> = text(&unit, "FragmentPath")
            .filter(|p| !p.is_empty())
            .into_iter()
            .collect();
        files.extend(texts(&mut unit, "DropInPaths"));
        let load_error = unit
            .get("LoadError")
            .and_then(|v| <(String, String)>::try_from(&**v).ok())
            .and_then(|(name, message)| {
                (!name.is_empty()).then_some(if message.is_empty() { name } else { message })
            });
        Ok(UnitProps {
            id,
            load: text(&unit, "LoadState").map_or(LoadState::Unknown, |s| LoadState::parse(&s)),
            load_error,
            active: text(&unit, "ActiveState")
                .map_or(ActiveState::Unknown, |s| ActiveState::parse(&s)),
            sub: SubState::new(&text(&unit, "SubState").unwrap_or_default()),
            files,
            consists_of: names(&mut unit, "ConsistsOf"),
            wants: names(&mut unit, "Wants"),
            requires: names(&mut unit, "Requires"),
            start_limit_burst: get_u32(&unit, "StartLimitBurst"),
            start_limit_interval_us: get_u64(&unit, "StartLimitIntervalUSec"),
            service,
        })
    }

    async fn get_all(&self, path: &UnitPath, iface: &str) -> Result<HashMap<String, OwnedVariant>> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path.as_str(),
                Some(PROPERTIES),
                "GetAll",
                &(iface,),
            )
            .await?;
        Ok(reply.body().deserialize()?)
    }
}

fn service_props(s: HashMap<String, OwnedVariant>) -> ServiceProps {
    ServiceProps {
        oneshot: text(&s, "Type").is_some_and(|t| t == "oneshot"),
        remain_after_exit: s
            .get("RemainAfterExit")
            .and_then(|v| bool::try_from(&**v).ok()),
        main_pid: get_u32(&s, "MainPID"),
        restart: text(&s, "Restart").map(|r| {
            if r == "no" {
                AutoRestart::Never
            } else {
                AutoRestart::When(r)
            }
        }),
        restart_us: get_u64(&s, "RestartUSec"),
        restart_max_delay_us: get_u64(&s, "RestartMaxDelayUSec"),
        restart_steps: get_u32(&s, "RestartSteps"),
        user: text(&s, "User"),
    }
}

fn text(m: &HashMap<String, OwnedVariant>, key: &str) -> Option<String> {
    String::try_from(&**m.get(key)?).ok()
}

fn texts(m: &mut HashMap<String, OwnedVariant>, key: &str) -> Vec<String> {
    m.remove(key)
        .and_then(|v| Vec::<String>::try_from(v).ok())
        .unwrap_or_default()
}

/// Names systemd lists; one it lists that is not a valid name cannot be watched anyway.
fn names(m: &mut HashMap<String, OwnedVariant>, key: &str) -> Vec<UnitName> {
    texts(m, key)
        .iter()
        .filter_map(|n| UnitName::parse(n).ok())
        .collect()
}

fn get_u32(m: &HashMap<String, OwnedVariant>, key: &str) -> Option<u32> {
    u32::try_from(&**m.get(key)?).ok()
}

fn get_u64(m: &HashMap<String, OwnedVariant>, key: &str) -> Option<u64> {
    u64::try_from(&**m.get(key)?).ok()
}
