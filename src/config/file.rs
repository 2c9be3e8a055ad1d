//! Reading the small files the config names (the config itself, `password_file`, `ca_file`)
//! so that nothing at their path can hang or swamp the reader: only a regular file is read,
//! and at most [`MAX_FILE`] bytes of it.
//!
//! A FIFO at the path would block a plain `open` until a writer comes, `/dev/zero` would fill
//! memory, a directory fails late with a confusing error. The file is opened without blocking
//! and without becoming a controlling terminal, the opened descriptor is examined (not the
//! path, which may change in between), and the read stops one byte past the limit.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::OFlag;

/// The largest file read: a config with a thousand `[[unit]]` entries is under 100 KiB.
pub const MAX_FILE: u64 = 1024 * 1024;

/// Why a file was not read, in words for `PATH: reason`.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    NotFound,
    PermissionDenied,
    NotRegular,
    TooLarge,
    NotUtf8,
    Other(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => f.write_str("no such file"),
            ReadError::PermissionDenied => f.write_str("permission denied"),
            ReadError::NotRegular => f.write_str("not a regular file"),
            ReadError::TooLarge => f.write_str("larger than 1 MiB"),
            ReadError::NotUtf8 => f.write_str("not valid UTF-8"),
            ReadError::Other(e) => f.write_str(e),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> ReadError {
        match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            std::io::ErrorKind::PermissionDenied => ReadError::PermissionDenied,
            std::io::ErrorKind::InvalidData => ReadError::NotUtf8,
            // open(2) of a socket file: ENXIO. Of a directory for writing: EISDIR (not here).
            _ if e.raw_os_error() == Some(nix::libc::ENXIO) => ReadError::NotRegular,
            _ => ReadError::Other(e.to_string()),
        }
    }
}

/// The text of the regular file at `path` (symlinks followed), at most [`MAX_FILE`] bytes.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Without O_NONBLOCK, opening a FIFO waits for a writer; O_NOCTTY keeps a terminal
        // device at the path from becoming ours. Neither changes how a regular file reads.
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > MAX_FILE {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since fstat (or a /proc file that
    // reports no size) from one that fits.
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_of_at_most_one_mib_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "x = 1\n").unwrap();
        assert_eq!(read_text(&ok).unwrap(), "x = 1\n");

        let exact = dir.path().join("exact.toml");
        std::fs::write(&exact, vec![b'#'; MAX_FILE as usize]).unwrap();
        assert_eq!(read_text(&exact).unwrap().len() as u64, MAX_FILE);

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE as usize + 1]).unwrap();

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

        let socket = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

        let link = dir.path().join("zero-link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();

        let bad = dir.path().join("bad-utf8");
        std::fs::write(&bad, b"a = \"\xff\"\n").unwrap();

        let table: &[(&Path, ReadError)] = &[
            (&big, ReadError::TooLarge),
            (&fifo, ReadError::NotRegular),
            (&socket, ReadError::NotRegular),
            (Path::new("/dev/zero"), ReadError::NotRegular),
            (&link, ReadError::NotRegular),
            (dir.path(), ReadError::NotRegular),
            (&dir.path().join("missing"), ReadError::NotFound),
            (&bad, ReadError::NotUtf8),
        ];
        for (path, want) in table {
            assert_eq!(&read_text(path).unwrap_err(), want, "{}", path.display());
        }
        assert_eq!(ReadError::TooLarge.to_string(), "larger than 1 MiB");
        assert_eq!(ReadError::NotRegular.to_string(), "not a regular file");
    }

    /// /proc files report a size of 0 and may be longer: the read itself is bounded.
    #[test]
    fn a_file_that_reports_no_size_is_still_read_whole() {
        let text = read_text(Path::new("/proc/self/status")).unwrap();
        assert!(text.contains("Pid:"), "{text}");
    }
}
