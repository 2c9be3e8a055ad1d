//! The durable outbox: one JSON file per email in `state_dir/outbox`, written atomically
//! (temporary file, fsync, rename, fsync of the directory) before the first send attempt, and
//! removed only after the server accepted the message. A `kill -9` at any moment leaves every
//! email either fully in the outbox or delivered. The directory is 0700 and each message 0600,
//! whatever the umask: they are whole emails.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::files::{self, Durability, Loaded};

const VERSION: u32 = 1;
const SUFFIX: &str = ".json";
/// Temporary files of the versions that named them `.tmp-NAME`, before
/// [`files::write_atomic`] named them after the writing process.
const OLD_TMP_PREFIX: &str = ".tmp-";

/// One email waiting for delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub version: u32,
    pub message_id: String,
    pub subject: String,
    pub created: Timestamp,
    /// Envelope sender and recipients (bare addresses).
    pub from: String,
    pub to: Vec<String>,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The whole message as sent (RFC 5322; lettre's output is ASCII).
    pub message: String,
}

impl Stored {
    pub fn new(
        message_id: String,
        subject: String,
        created: Timestamp,
        from: String,
        to: Vec<String>,
        message: String,
    ) -> Stored {
        Stored {
            version: VERSION,
            message_id,
            subject,
            created,
            from,
            to,
            attempts: 0,
            last_error: None,
            message,
        }
    }

    /// File name: creation time first so a directory listing is the delivery order.
    fn file_name(&self) -> String {
        format!(
            "{:020}-{}{SUFFIX}",
            self.created.as_millisecond().max(0),
            id_part(&self.message_id)
        )
    }
}

/// The message id as it appears in a file name.
fn id_part(message_id: &str) -> String {
    message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .take(80)
        .collect()
}

/// A message file that could not be read back.
#[derive(Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(state_dir: &Path) -> Outbox {
        Outbox {
            dir: state_dir.join("outbox"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `msg`; returns its path.
    pub fn put(&self, msg: &Stored) -> std::io::Result<PathBuf> {
        files::create_private_dir(&self.dir)?;
        let path = self.dir.join(msg.file_name());
        let json = serde_json::to_vec_pretty(msg).map_err(std::io::Error::other)?;
        files::write_atomic(&path, &json, Durability::Flushed)?;
        Ok(path)
    }

    /// Rewrites a stored message (its attempt count and last error).
    pub fn update(&self, path: &Path, msg: &Stored) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(msg).map_err(std::io::Error::other)?;
        files::write_atomic(path, &json, Durability::Flushed)
    }

    pub fn remove(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => {
                if let Ok(d) = std::fs::File::open(&self.dir) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
        }
    }

    fn names(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
    }

    /// Whether the email with this `Message-ID` waits in the outbox.
    pub fn has(&self, message_id: &str) -> bool {
        let suffix = format!("-{}{SUFFIX}", id_part(message_id));
        self.names().iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
    }

    pub fn len(&self) -> usize {
        self.names().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest stored message was written, from its name (which starts with that
    /// time, so the names sort oldest first).
    pub fn oldest(&self) -> Option<Timestamp> {
        let first = self.names().into_iter().next()?;
        let name = first.file_name()?.to_str()?;
        let ms: i64 = name.split('-').next()?.parse().ok()?;
        Timestamp::from_millisecond(ms).ok()
    }

    /// Every stored message, oldest first, plus the files that could not be parsed (which the
    /// caller sets aside and reports).
    pub fn list(&self) -> (Vec<(PathBuf, Stored)>, Vec<Unreadable>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for path in self.names() {
            match files::read_json::<Stored>(&path) {
                Loaded::Parsed(m) => ok.push((path, m)),
                // Delivered and removed between listing and reading.
                Loaded::Missing => {}
                Loaded::Unreadable(reason) => bad.push(Unreadable { path, reason }),
            }
        }
        (ok, bad)
    }

    /// Moves an unreadable file out of the way (`NAME.json.corrupt`, an earlier one of that name
    /// kept), so it is reported once and kept for the operator.
    pub fn set_aside(&self, path: &Path) -> std::io::Result<PathBuf> {
        files::set_aside(path)
    }

    /// At start: makes the directory private if it exists with looser bits (an older version
    /// created it under the umask) and removes the temporary files of writes a crash
    /// interrupted. Returns the temporary files removed.
    pub fn prepare(&self) -> Vec<PathBuf> {
        if self.dir.exists()
            && let Err(e) = files::make_private_dir(&self.dir)
        {
            tracing::warn!(path = %self.dir.display(), "cannot make the outbox private (mode 0700): {e}");
        }
        let mut removed = files::remove_stale_temporaries(&self.dir, None);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(OLD_TMP_PREFIX)
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed.push(e.path());
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, created: &str) -> Stored {
        Stored::new(
            id.into(),
            "subject".into(),
            created.parse().unwrap(),
            "a@b".into(),
            vec!["c@d".into()],
            "Subject: x\r\n\r\nbody\r\n".into(),
        )
    }

    #[test]
    fn messages_round_trip_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::new(dir.path());
        assert!(ob.is_empty(), "a missing outbox is empty");
        ob.put(&msg("<b.2@h>", "2026-01-01T00:00:02Z")).unwrap();
        ob.put(&msg("<a.1@h>", "2026-01-01T00:00:01Z")).unwrap();
        let (ok, bad) = ob.list();
        assert!(bad.is_empty());
        let ids: Vec<_> = ok.iter().map(|(_, m)| m.message_id.as_str()).collect();
        assert_eq!(ids, ["<a.1@h>", "<b.2@h>"]);
        assert!(ob.has("<a.1@h>") && !ob.has("<c.3@h>"));
        let (path, mut m) = ok[0].clone();
        m.attempts = 3;
        ob.update(&path, &m).unwrap();
        assert_eq!(ob.list().0[0].1.attempts, 3);
        ob.remove(&path).unwrap();
        ob.remove(&path).unwrap();
        assert_eq!(ob.len(), 1);
    }

    #[test]
    fn temporaries_and_corrupt_files_are_not_messages() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::new(dir.path());
        ob.put(&msg("<a@h>", "2026-01-01T00:00:01Z")).unwrap();
        // A crashed writer's (no process has a PID above the kernel's limit) and an older
        // version's temporary files.
        let stale = ob.dir().join("0001-x.json.tmp.4194305");
        let old = ob.dir().join(".tmp-0001-x.json");
        std::fs::write(&stale, b"{half").unwrap();
        std::fs::write(&old, b"{half").unwrap();
        std::fs::write(ob.dir().join("0002-y.json"), b"not json").unwrap();
        std::fs::write(ob.dir().join("0003-z.json"), b"\xff\xfe").unwrap();
        let (ok, bad) = ob.list();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 2);
        assert!(bad[1].reason.contains("UTF-8"), "{}", bad[1].reason);
        for b in &bad {
            let aside = ob.set_aside(&b.path).unwrap();
            assert!(aside.exists() && !b.path.exists());
            assert!(aside.to_string_lossy().ends_with(".json.corrupt"));
        }
        let mut removed = ob.prepare();
        removed.sort();
        assert_eq!(removed, [old, stale]);
        assert_eq!(ob.len(), 1);
        assert_eq!(ob.list().1.len(), 0, "set aside means reported once");
    }

    #[test]
    fn under_umask_000_the_outbox_and_its_messages_are_private() {
        crate::files::test_support::umask_000();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ob = Outbox::new(&state);
        let path = ob.put(&msg("<a@h>", "2026-01-01T00:00:01Z")).unwrap();
        let mode =
            |p: &Path| std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(p).unwrap()) & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(ob.dir()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let (_, mut m) = ob.list().0.remove(0);
        m.attempts = 1;
        ob.update(&path, &m).unwrap();
        assert_eq!(mode(&path), 0o600);
        // An outbox an older version left readable to others is made private at start.
        std::fs::set_permissions(
            ob.dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        ob.prepare();
        assert_eq!(mode(ob.dir()), 0o700);
    }
}
