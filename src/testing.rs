//! What several modules' tests share: a real file system that fills.

use std::path::Path;

/// Runs `f` on a thread of its own in a private mount namespace with a tmpfs of `size` on
/// `dir`: a real disk that fills, on no file system of the host. Needs root, as the whole
/// suite does (TESTING.md); the namespace and the mount end with the thread.
pub fn on_tiny_tmpfs<T: Send>(dir: &Path, size: &str, f: impl FnOnce() -> T + Send) -> T {
    use nix::mount::{MsFlags, mount};
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .expect("a private mount namespace for a tiny tmpfs (the tests run as root)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make the namespace's mounts private");
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .expect("mount a tmpfs");
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
