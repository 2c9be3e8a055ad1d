//! The I/O half of `doctor`: reads what `judge` needs from the manager (through
//! `crate::systemd`), from unit files where systemd is too old to tell, and from polkit's rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{EntryFacts, Facts, PolkitFacts, RESTART_STEPS_SINCE, Read, UnitFacts, UnitFile};
use crate::config::{BusKind, Settings};
use crate::systemd::{Jobs, Systemd, SystemdError};
use crate::unit::{LoadState, UnitName, UnitPattern};

/// The daemon's own unit, whose `User=` is the account that manages the watched units.
const DAEMON_UNIT: &str = "unitwarden.service";

/// Reads every watched unit (each loaded instance of a glob), each recovery unit, the manager's
/// version and, where another account than root manages the units, polkit's rules. An error
/// means the manager could not be reached (or was lost): nothing can be judged then.
pub async fn gather(settings: &Settings) -> Result<Facts, SystemdError> {
    let systemd = Systemd::connect(settings.daemon.bus, Jobs::default()).await?;
    let version = systemd.version().await?;
    // Older managers do not show these settings over D-Bus, and ignore them: only the unit
    // files tell that they are set in vain.
    let read_files = version
        .as_deref()
        .and_then(super::major_version)
        .is_some_and(|v| v < RESTART_STEPS_SINCE);
    // Every probe once, side by side, while the units are read.
    let mut probes = tokio::task::JoinSet::new();
    for (i, unit) in settings.units.iter().enumerate() {
        if let Some(p) = unit.probe.clone() {
            probes.spawn(async move { (i, crate::probe::run(&p).await) });
        }
    }
    let mut entries = Vec::with_capacity(settings.units.len());
    for unit in &settings.units {
        let names = match &unit.pattern {
            UnitPattern::Exact(name) => vec![name.clone()],
            UnitPattern::Glob(glob) => systemd
                .list_by_patterns(&[glob.as_str()])
                .await?
                .into_iter()
                // Listed only because something refers to it: not a unit that runs.
                .filter(|s| s.observation.load != LoadState::NotFound)
                .map(|s| s.name)
                .collect(),
        };
        let mut units = Vec::with_capacity(names.len());
        for name in names {
            let read = read(&systemd, &name).await?;
            let files = match &read {
                Ok(props) if read_files && props.service.is_some() => unit_files(&props.files),
                _ => Vec::new(),
            };
            units.push(UnitFacts { name, read, files });
        }
        entries.push(EntryFacts { units, probe: None });
    }
    while let Some(done) = probes.join_next().await {
        if let Ok((i, answer)) = done
            && let Some(entry) = entries.get_mut(i)
        {
            entry.probe = Some(answer);
        }
    }
    let mut recovery = BTreeMap::new();
    for r in settings.units.iter().filter_map(|u| u.recovery.as_ref()) {
        if !recovery.contains_key(&r.unit) {
            recovery.insert(r.unit.clone(), read(&systemd, &r.unit).await?);
        }
    }
    let polkit = match settings.daemon.bus {
        // The user's own manager lets the user manage its units: there is nothing to permit.
        BusKind::User => None,
        BusKind::System => polkit(settings, &systemd).await?,
    };
    Ok(Facts {
        version,
        entries,
        recovery,
        polkit,
    })
}

/// The unit's properties, or the manager's refusal to give them; only a lost bus is an error.
async fn read(systemd: &Systemd, name: &UnitName) -> Result<Read, SystemdError> {
    match systemd.unit_props(name).await {
        Ok(props) => Ok(Ok(props)),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// The unit's files that can be read; one that cannot (a runtime drop-in out of reach) is left
/// out, since the others may still tell.
fn unit_files(paths: &[String]) -> Vec<UnitFile> {
    paths
        .iter()
        .filter_map(|path| {
            let text = crate::config::read_text(Path::new(path)).ok()?;
            Some(UnitFile {
                path: path.clone(),
                text,
            })
        })
        .collect()
}

/// Who manages the units, and polkit's rules, unless that is root (whom systemd lets manage
/// any unit without asking polkit).
async fn polkit(
    settings: &Settings,
    systemd: &Systemd,
) -> Result<Option<PolkitFacts>, SystemdError> {
    let daemon = UnitName::parse(DAEMON_UNIT).map_err(|message| SystemdError::Refused {
        name: DAEMON_UNIT.into(),
        message,
    })?;
    let installed = match read(systemd, &daemon).await? {
        Ok(props) if props.load == LoadState::Loaded => props.service.map(|s| s.user),
        _ => None,
    };
    let (user, whose) = match installed {
        Some(user) => (user.unwrap_or_default(), format!("User= of {DAEMON_UNIT}")),
        // Not installed as a service: whoever runs unitwarden by hand, as this does.
        None => (current_user(), "the user running doctor".to_string()),
    };
    if user.is_empty() || user == "root" || user == "0" {
        return Ok(None);
    }
    let dir = PathBuf::from(super::POLKIT_RULES_DIR);
    Ok(Some(PolkitFacts {
        expected: crate::polkit::rule_for(&user, settings),
        rules: rules(&dir),
        user,
        whose,
        config: settings.path.clone(),
        dir,
    }))
}

/// The name of the effective user, or its uid if it has none.
fn current_user() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// The `*.rules` files of `dir` that can be read.
fn rules(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| crate::config::ReadError::from(e).to_string())?;
    let mut rules: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .filter_map(|p| {
            let text = crate::config::read_text(&p).ok()?;
            Some((p, text))
        })
        .collect();
    rules.sort();
    Ok(rules)
}
