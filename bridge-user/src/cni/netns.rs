//! Running work inside a pod's network namespace: on a dedicated thread that `setns`es and
//! then ends, so the plugin's main thread never leaves the node's namespace.

use std::{fs::File, io, os::fd::AsFd, path::Path};

use nix::sched::{setns, CloneFlags};

/// Opens a network namespace file (`CNI_NETNS`).
///
/// # Errors
/// The path does not exist or cannot be opened.
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Runs `f` on a new thread joined to the namespace `ns` and returns its result.
///
/// # Errors
/// `setns` failed (`ns` is not a network namespace).
///
/// # Panics
/// If `f` panics (the panic is propagated).
pub fn run_in<T, F>(ns: &File, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        let joined = s
            .spawn(|| {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
