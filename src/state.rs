//! Durable episode state in `state_dir`, so a restarted watchdog resumes counting where it left
//! off instead of starting a restart storm.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::policy::{Episode, Hold};
use crate::unit::UnitName;

const FILE: &str = "state.json";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    version: u32,
    units: BTreeMap<UnitName, Episode>,
    /// Absent in files written before operators could pause units.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    holds: BTreeMap<UnitName, Hold>,
}

/// What survives a restart of unitwarden: the episodes, and the operators' holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub episodes: BTreeMap<UnitName, Episode>,
    pub holds: BTreeMap<UnitName, Hold>,
}

/// The episode file. Writes are atomic (temp file, rename), so a kill at any moment leaves
/// either the old or the new state, never a torn one.
///
/// [`Store::save`] is on the restart path: the new state is in the file (the kernel's page
/// cache, which outlives a killed process) before it returns, and the flush to the disk that
/// makes it survive a power cut follows on a thread of its own. A flush costs milliseconds
/// on an ordinary disk, more than the rest of a restart decision.
pub struct Store {
    dir: PathBuf,
    /// The last write error, reported once rather than on every change.
    failing: bool,
    /// Asks the flushing thread for a flush of what is written by then.
    flusher: Option<std::sync::mpsc::Sender<()>>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            failing: false,
            flusher: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Reads the saved episodes. A missing file is a fresh start; an unreadable or corrupt one is
    /// set aside as `state.json.corrupt` and reported, and the watchdog starts fresh.
    pub fn load(&self) -> Saved {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read state: {e}; starting without saved episodes");
                return Saved::default();
            }
        };
        match serde_json::from_str::<OnDisk>(&text) {
            Ok(s) => Saved {
                episodes: s.units,
                holds: s.holds,
            },
            Err(e) => {
                let aside = self.dir.join(format!("{FILE}.corrupt"));
                let _ = std::fs::rename(&path, &aside);
                tracing::error!(path = %path.display(), "state file is corrupt ({e}); moved to {}, starting without saved episodes", aside.display());
                Saved::default()
            }
        }
    }

    /// Writes the episodes; the flush to the disk follows off this thread.
    pub fn save(&mut self, units: &Saved) {
        let written = self.try_save(units, Flush::Later);
        if written.is_ok() {
            self.flush_later();
        }
        self.report(written);
    }

    /// Writes the episodes and flushes them to the disk before returning: the last write at
    /// shutdown and after `once`.
    pub fn save_durably(&mut self, units: &Saved) {
        let written = self.try_save(units, Flush::Now);
        self.report(written);
    }

    fn flush_later(&mut self) {
        if let Some(tx) = &self.flusher
            && tx.send(()).is_ok()
        {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("state-flush".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // Each round flushes whatever was renamed into place before it began, so
                // requests that piled up meanwhile cost one flush together.
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    if let Err(e) = flush(&dir) {
                        tracing::warn!(path = %dir.join(FILE).display(), "cannot flush state to disk: {e}");
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(());
                self.flusher = Some(tx);
            }
            Err(e) => {
                // Without the thread, flush here: slower, never less durable.
                tracing::warn!("cannot start the state flushing thread: {e}; flushing inline");
                if let Err(e) = flush(&self.dir) {
                    tracing::warn!(path = %self.path().display(), "cannot flush state to disk: {e}");
                }
            }
        }
    }

    fn report(&mut self, written: std::io::Result<()>) {
        match written {
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

    fn try_save(&self, saved: &Saved, when: Flush) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            units: saved.episodes.clone(),
            holds: saved.holds.clone(),
        })
        .map_err(std::io::Error::other)?;
        // Per process: a cron `once` beside the daemon must not interleave into one temp file.
        let tmp = self.dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        let written = f.write_all(&body).and_then(|()| match when {
            Flush::Now => f.sync_all(),
            Flush::Later => Ok(()),
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, self.path())) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        match when {
            // The rename itself must reach the disk for the write to survive a power cut.
            Flush::Now => std::fs::File::open(&self.dir)?.sync_all(),
            Flush::Later => Ok(()),
        }
    }
}

#[derive(Clone, Copy)]
enum Flush {
    Now,
    Later,
}

/// Flushes the state file and the directory entry that names it.
fn flush(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir.join(FILE))?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(&dir.path().join("sub"));
        assert_eq!(store.load(), Saved::default());
        let mut m = Saved::default();
        let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        m.episodes.insert(
            UnitName::parse("nginx").unwrap(),
            Episode {
                started: t,
                attempts: 2,
                gave_up: None,
                healthy_since: None,
            },
        );
        m.holds.insert(
            UnitName::parse("celery").unwrap(),
            Hold::Paused {
                since: t,
                until: None,
            },
        );
        store.save_durably(&m);
        assert_eq!(store.load(), m);
        m.episodes
            .get_mut(&UnitName::parse("nginx").unwrap())
            .unwrap()
            .attempts = 3;
        store.save(&m);
        assert_eq!(store.load(), m, "readable at once, before the flush");
        std::fs::write(store.path(), b"{not json").unwrap();
        assert_eq!(store.load(), Saved::default());
        assert!(dir.path().join("sub/state.json.corrupt").exists());
    }

    #[test]
    fn unwritable_dir_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let mut store = Store::new(&file.join("sub"));
        store.save(&Saved::default());
        assert!(store.failing);
    }
}
