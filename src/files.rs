//! The files unitwarden keeps in `state_dir` (`state.json`, `alerts.json`, the outbox): private
//! whatever the umask (directories 0700, files 0600), replaced atomically through a temporary
//! file that never outlives a failed write, and set aside rather than overwritten when they
//! cannot be read back.
//!
//! Modes are given explicitly rather than left to the umask: the unit's `UMask=0077` protects
//! a service, but `unitwarden once` from cron or a shell may run under 022 or even 000, and the
//! outbox holds whole emails, the state when each unit failed.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jiff::Timestamp;
use serde::de::DeserializeOwned;

/// `state_dir` when unitwarden creates it, and the outbox always.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;
/// Between a file's name and the writing process's PID in its temporary file's name
/// (`state.json.tmp.1234`): per process, so a cron `once` beside the daemon never writes into
/// the daemon's temporary file, and a crashed writer's file is known by its PID being gone.
const TMP_INFIX: &str = ".tmp.";
/// Far more than any file unitwarden writes (the episodes of 1000 units are ~200 KiB): a larger
/// file is not one of ours, and reading it whole could exhaust the daemon's memory.
const MAX_READ: u64 = 64 << 20;
/// Set-aside names tried after `NAME.corrupt` and `NAME.corrupt.TIME` are taken.
const ASIDE_ATTEMPTS: u32 = 100;

/// Whether [`write_atomic`] waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The file and the directory entry naming it are flushed before returning.
    Flushed,
    /// In the page cache: survives a killed process, not a power cut; the caller flushes later.
    Cached,
}

/// Creates `dir` and its missing parents with [`DIR_MODE`]. An existing directory keeps its
/// mode: `state_dir` may be systemd's `StateDirectory=` or an operator's choice of a shared one.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// [`create_private_dir`], and an existing `dir` loses any group or other bits: for a
/// directory only unitwarden uses, such as the outbox, left looser by an older version or by
/// a hand-made copy.
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    create_private_dir(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash at any moment leaves the old file or the new
/// one, never a torn one. The file is [`FILE_MODE`]; the temporary file is removed when any
/// step fails.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = parent(path);
    let tmp = temporary_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        // The mode above applies only to a new file; a temporary file left by a crashed
        // process that had our PID keeps whatever it had.
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
        file.write_all(bytes)?;
        if durability == Durability::Flushed {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durability == Durability::Flushed {
            // The rename itself must reach the disk for the new file to survive a power cut.
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `path`'s temporary file for this process.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TMP_INFIX}{}", std::process::id()));
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes the temporary files in `dir` (of `name` only, when given) whose writer is gone: a
/// process killed or crashed mid-write leaves one behind. Returns the paths removed.
pub fn remove_stale_temporaries(dir: &Path, name: Option<&str>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some((base, pid)) = file_name.to_str().and_then(|n| n.rsplit_once(TMP_INFIX)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if name.is_some_and(|name| name != base) || writer_alive(pid) {
            continue;
        }
        let path = entry.path();
        if fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether process `pid` may still be writing its temporary file. Our own PID counts as gone:
/// nothing of this process writes before the start-up clean-up, so the file is a crashed
/// predecessor's that had the same PID.
fn writer_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    // 0 and values beyond i32 are no process; kill(2) would read 0 as our process group.
    let Some(pid) = i32::try_from(pid).ok().filter(|&p| p > 0) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno != nix::errno::Errno::ESRCH,
    }
}

/// What reading a JSON file gave.
#[derive(Debug)]
pub enum Loaded<T> {
    Missing,
    Parsed(T),
    /// Unreadable, not UTF-8, not JSON, or not the expected shape; the reason says which.
    Unreadable(String),
}

/// Reads and parses the JSON file at `path`. Only a regular file of a sane size is read: a FIFO
/// put there would block the reader forever.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Loaded<T> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unreadable(e.to_string()),
    };
    if !meta.is_file() {
        return Loaded::Unreadable("not a regular file".into());
    }
    if meta.len() > MAX_READ {
        return Loaded::Unreadable(format!(
            "{} bytes, more than unitwarden ever writes",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|f| f.take(MAX_READ).read_to_end(&mut bytes));
    match read {
        Ok(_) => {}
        // Removed between the two calls: a delivered email, or another process's set-aside.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unreadable(e.to_string()),
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => return Loaded::Unreadable(format!("not UTF-8: {e}")),
    };
    match serde_json::from_str(text) {
        Ok(value) => Loaded::Parsed(value),
        Err(e) => Loaded::Unreadable(format!("not valid JSON for this file: {e}")),
    }
}

/// Moves the unreadable file `path` out of the way, to `NAME.corrupt`, or when that is taken by
/// an earlier one, `NAME.corrupt.YYYYMMDDTHHMMSSZ` (then `-1`, `-2`, ...): each is kept for
/// the operator, none replaced. Returns the new name.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut base = path.file_name().unwrap_or_default().to_os_string();
    base.push(".corrupt");
    let first = path.with_file_name(&base);
    let stamp = Timestamp::try_from(SystemTime::now())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut last_error = None;
    for n in 0..ASIDE_ATTEMPTS {
        let candidate = match n {
            0 => first.clone(),
            1 => first.with_file_name(format!("{}.{stamp}", base.to_string_lossy())),
            n => first.with_file_name(format!("{}.{stamp}-{}", base.to_string_lossy(), n - 1)),
        };
        match move_without_replacing(path, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free name to set the file aside")))
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists`). A hard link fails atomically
/// when the name is taken; where links are refused (a directory, some file systems), a checked
/// rename stands in.
fn move_without_replacing(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            // Should the old name stay, the copy is safe and the next write replaces it.
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Once;

    /// Sets the process's umask to 000 for the rest of the test run. Process-wide on purpose and
    /// never restored: every file unitwarden creates must get its mode whatever the umask, so
    /// no test of this binary may depend on a friendlier one.
    pub(crate) fn umask_000() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::umask_000;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn under_umask_000_created_dirs_and_files_are_private() {
        umask_000();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        create_private_dir(&state).unwrap();
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE, "parents too");
        assert_eq!(mode(&state), DIR_MODE);
        let file = state.join("state.json");
        write_atomic(&file, b"{}", Durability::Cached).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        write_atomic(&file, b"{}", Durability::Flushed).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
    }

    #[test]
    fn an_existing_dir_keeps_its_mode_unless_it_must_be_private() {
        umask_000();
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
        make_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), DIR_MODE);
    }

    #[test]
    fn a_leftover_temporary_file_with_loose_bits_does_not_leak_them() {
        umask_000();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alerts.json");
        let tmp = temporary_path(&file);
        fs::write(&tmp, b"half").unwrap();
        fs::set_permissions(&tmp, Permissions::from_mode(0o666)).unwrap();
        write_atomic(&file, b"{}", Durability::Cached).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(fs::read(&file).unwrap(), b"{}");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way makes the rename fail after the temporary file was written.
        let file = dir.path().join("state.json");
        fs::create_dir(&file).unwrap();
        fs::write(file.join("x"), b"x").unwrap();
        assert!(write_atomic(&file, b"{}", Durability::Flushed).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn stale_temporaries_are_removed_and_live_writers_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // PID 1 always runs; a PID above the kernel's limit (4194304) never does.
        let live = dir.path().join("state.json.tmp.1");
        let dead = dir.path().join("state.json.tmp.4194305");
        let own = temporary_path(&dir.path().join("state.json"));
        let other = dir.path().join("alerts.json.tmp.4194305");
        let unrelated = dir.path().join("notes.tmp.txt");
        for p in [&live, &dead, &own, &other, &unrelated] {
            fs::write(p, b"x").unwrap();
        }
        let mut removed = remove_stale_temporaries(dir.path(), Some("state.json"));
        removed.sort();
        let mut expected = vec![dead.clone(), own.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(live.exists() && other.exists() && unrelated.exists());
        assert_eq!(remove_stale_temporaries(dir.path(), None), [other]);
        assert!(live.exists() && unrelated.exists());
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Shape {
        version: u32,
    }

    #[test]
    fn reading_tells_missing_parsed_and_unreadable_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        assert!(matches!(read_json::<Shape>(&path), Loaded::Missing));
        fs::write(&path, br#"{"version": 1}"#).unwrap();
        assert!(matches!(
            read_json::<Shape>(&path),
            Loaded::Parsed(Shape { version: 1 })
        ));
        for (bytes, reason) in [
            (&b"\xff\xfe{}"[..], "not UTF-8"),
            (b"{\"version\":", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"{\"other\": 2}", "missing field `version`"),
        ] {
            fs::write(&path, bytes).unwrap();
            match read_json::<Shape>(&path) {
                Loaded::Unreadable(why) => assert!(why.contains(reason), "{why}"),
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_fifo_is_not_read_but_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        match read_json::<Shape>(&path) {
            Loaded::Unreadable(why) => assert_eq!(why, "not a regular file"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn setting_aside_never_replaces_an_earlier_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut asides = Vec::new();
        for n in 0..4 {
            fs::write(&path, format!("corrupt {n}")).unwrap();
            asides.push(set_aside(&path).unwrap());
            assert!(!path.exists());
        }
        assert_eq!(asides[0], dir.path().join("state.json.corrupt"));
        let names: Vec<String> = asides
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // The later ones are named by the time (and a counter within the same second).
        for name in &names[1..] {
            assert!(name.starts_with("state.json.corrupt.2"), "{names:?}");
        }
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 4, "{names:?}");
        for (n, aside) in asides.iter().enumerate() {
            assert_eq!(fs::read_to_string(aside).unwrap(), format!("corrupt {n}"));
        }
    }

    #[test]
    fn a_directory_in_the_way_is_set_aside_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::create_dir(&path).unwrap();
        assert!(matches!(read_json::<Shape>(&path), Loaded::Unreadable(_)));
        let aside = set_aside(&path).unwrap();
        assert!(aside.is_dir() && !path.exists());
    }
}
