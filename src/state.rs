//! Durable episode state in `state_dir`, so a restarted watchdog resumes counting where it left
//! off instead of starting a restart storm.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::policy::Episode;
use crate::unit::UnitName;

const FILE: &str = "state.json";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    version: u32,
    units: BTreeMap<UnitName, Episode>,
}

/// The episode file. Writes are atomic (temp file, fsync, rename), so a kill at any moment
/// leaves either the old or the new state, never a torn one.
pub struct Store {
    dir: PathBuf,
    /// The last write error, reported once rather than on every change.
    failing: bool,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            failing: false,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Reads the saved episodes. A missing file is a fresh start; an unreadable or corrupt one is
    /// set aside as `state.json.corrupt` and reported, and the watchdog starts fresh.
    pub fn load(&self) -> BTreeMap<UnitName, Episode> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read state: {e}; starting without saved episodes");
                return BTreeMap::new();
            }
        };
        match serde_json::from_str::<OnDisk>(&text) {
            Ok(s) => s.units,
            Err(e) => {
                let aside = self.dir.join(format!("{FILE}.corrupt"));
                let _ = std::fs::rename(&path, &aside);
                tracing::error!(path = %path.display(), "state file is corrupt ({e}); moved to {}, starting without saved episodes", aside.display());
                BTreeMap::new()
            }
        }
    }

    pub fn save(&mut self, units: &BTreeMap<UnitName, Episode>) {
        match self.try_save(units) {
            Ok(()) => {
                if self.failing {
                    tracing::info!(path = %self.path().display(), "state file writable again");
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(path = %self.path().display(), "cannot write state: {e}; attempt counts will not survive a restart until this is fixed");
                }
                self.failing = true;
            }
        }
    }

    fn try_save(&self, units: &BTreeMap<UnitName, Episode>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            units: units.clone(),
        })
        .map_err(std::io::Error::other)?;
        // Per process: a cron `once` beside the daemon must not interleave into one temp file.
        let tmp = self.dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path())?;
        // The rename itself must reach the disk for the write to survive a power cut.
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(&dir.path().join("sub"));
        assert!(store.load().is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            UnitName::parse("nginx").unwrap(),
            Episode {
                started: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                attempts: 2,
                gave_up: None,
                healthy_since: None,
            },
        );
        store.save(&m);
        assert_eq!(store.load(), m);
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(store.load().is_empty());
        assert!(dir.path().join("sub/state.json.corrupt").exists());
    }

    #[test]
    fn unwritable_dir_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let mut store = Store::new(&file.join("sub"));
        store.save(&BTreeMap::new());
        assert!(store.failing);
    }
}
