//! Durable episode state in `state_dir`, so a restarted watchdog resumes counting where it left
//! off instead of starting a restart storm.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::files::{self, Durability, Loaded};
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

    /// Reads the saved episodes and holds. A missing file is a fresh start; one that cannot be
    /// read, is not UTF-8 or not a state file is set aside (`state.json.corrupt`, never
    /// overwritten by the next save) and reported once, and the watchdog starts fresh.
    /// Temporary files of writes that a crash interrupted are removed first.
    pub fn load(&self) -> Saved {
        for stale in files::remove_stale_temporaries(&self.dir, Some(FILE)) {
            tracing::info!(path = %stale.display(), "removed the temporary file of an interrupted state write");
        }
        let path = self.path();
        match files::read_json::<OnDisk>(&path) {
            Loaded::Missing => Saved::default(),
            Loaded::Parsed(state) => Saved {
                episodes: state.units,
                holds: state.holds,
            },
            Loaded::Unreadable(reason) => {
                match files::set_aside(&path) {
                    Ok(aside) => {
                        tracing::error!(path = %path.display(), "state file is corrupt ({reason}); moved to {}, starting without saved episodes", aside.display())
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), "state file is corrupt ({reason}) and cannot be moved aside ({e}); starting without saved episodes")
                    }
                }
                Saved::default()
            }
        }
    }

    /// Writes the episodes; the flush to the disk follows off this thread.
    pub fn save(&mut self, units: &Saved) {
        let written = self.try_save(units, Durability::Cached);
        if written.is_ok() {
            self.flush_later();
        }
        self.report(written);
    }

    /// Writes the episodes and flushes them to the disk before returning: the last write at
    /// shutdown and after `once`.
    pub fn save_durably(&mut self, units: &Saved) {
        let written = self.try_save(units, Durability::Flushed);
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

    fn report(&mut self, written: io::Result<()>) {
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

    fn try_save(&self, saved: &Saved, when: Durability) -> io::Result<()> {
        files::create_private_dir(&self.dir)?;
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            units: saved.episodes.clone(),
            holds: saved.holds.clone(),
        })
        .map_err(io::Error::other)?;
        files::write_atomic(&self.path(), &body, when)
    }
}

/// Flushes the state file and the directory entry that names it.
fn flush(dir: &Path) -> io::Result<()> {
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
                recovery_ran: false,
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
    fn under_umask_000_the_dir_and_file_are_private() {
        crate::files::test_support::umask_000();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(&dir.path().join("state"));
        store.save(&Saved::default());
        let mode = |p: &Path| std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(p).unwrap());
        assert_eq!(mode(&dir.path().join("state")) & 0o777, 0o700);
        assert_eq!(mode(&store.path()) & 0o777, 0o600);
        store.save_durably(&Saved::default());
        assert_eq!(mode(&store.path()) & 0o777, 0o600);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_set_aside_beside_an_earlier_one_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(dir.path());
        std::fs::write(dir.path().join("state.json.corrupt"), b"the first").unwrap();
        std::fs::write(store.path(), b"{\"version\": 1, \"units\": {\"\xff\": 1}}").unwrap();
        assert_eq!(store.load(), Saved::default());
        assert!(!store.path().exists());
        store.save(&Saved::default());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "state.json");
        assert_eq!(names[1], "state.json.corrupt");
        assert!(names[2].starts_with("state.json.corrupt.2"), "{names:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&names[1])).unwrap(),
            b"the first"
        );
        assert!(
            std::fs::read(dir.path().join(&names[2]))
                .unwrap()
                .contains(&0xff)
        );
    }

    #[test]
    fn temporary_files_of_a_crashed_writer_are_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        // No process has a PID above the kernel's limit (4194304).
        let stale = dir.path().join("state.json.tmp.4194305");
        std::fs::write(&stale, b"{half").unwrap();
        assert_eq!(store.load(), Saved::default());
        assert!(!stale.exists());
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
