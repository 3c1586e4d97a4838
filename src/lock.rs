//! One advisory lock per server name, held around start and stop so that
//! concurrent managers (threads or processes) launch exactly one server.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform;

/// A held lock; released on drop (and by the kernel if the holder dies).
#[derive(Debug)]
pub struct NameLock {
    file: File,
    path: std::path::PathBuf,
}

impl NameLock {
    /// Releases the lock and removes its file, so that stopped servers leave
    /// no lock files behind. Safe because every taker checks, once it holds
    /// the lock, that the path still names the file it locked (see
    /// `try_acquire`): a taker that locked the removed file retries.
    pub fn release_and_remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Opens (creating, 0600, never through a symlink) the lock file.
fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::path("cannot open the lock file", path, e))
}

/// Acquires the lock at `path`, calling `tick` every few milliseconds while
/// another holder has it, so the wait can be cancelled. Gives up at
/// `deadline`: a manager that legitimately holds the lock finishes within
/// its own timeouts, so a longer wait means it hangs (or is stopped).
pub fn acquire(
    path: &Path,
    deadline: Instant,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<NameLock> {
    let mut delay = Duration::from_micros(200);
    loop {
        if let Some(lock) = try_acquire(path)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            return Err(Error::LockTimeout {
                lock_file: path.to_owned(),
                holder: platform::flock_holder(path),
            });
        }
        tick()?;
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(5));
    }
}

/// Takes the lock only if it is free right now; `None` while another
/// holder has it.
pub fn try_acquire(path: &Path) -> Result<Option<NameLock>> {
    let file = open_lock_file(path)?;
    match platform::try_lock_exclusive(&file) {
        Ok(true) if still_named(&file, path) => Ok(Some(NameLock {
            file,
            path: path.to_owned(),
        })),
        // Locked a file its holder removed meanwhile: as good as busy; the
        // next try opens (or creates) the file the path names now.
        Ok(true) | Ok(false) => Ok(None),
        Err(e) => Err(Error::path("cannot lock", path, e)),
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_gets_it() {
        let p = std::env::temp_dir().join(format!("usm-lock-{}", std::process::id()));
        let far = Instant::now() + Duration::from_secs(60);
        let first = acquire(&p, far, &mut || Ok(())).unwrap();
        let mut ticks = 0;
        let r = acquire(&p, far, &mut || {
            ticks += 1;
            if ticks > 3 {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Error::Interrupted)));
        // A holder that never lets go is reported, naming it, at the deadline.
        let soon = Instant::now() + Duration::from_millis(50);
        match acquire(&p, soon, &mut || Ok(())) {
            Err(Error::LockTimeout { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id() as i32))
            }
            other => panic!("{other:?}"),
        }
        assert!(try_acquire(&p).unwrap().is_none());
        // A file removed by its holder is not a lock: the next taker retries.
        let stale = open_lock_file(&p).unwrap();
        first.release_and_remove();
        assert!(!p.exists());
        assert!(platform::try_lock_exclusive(&stale).unwrap());
        assert!(!still_named(&stale, &p));
        drop(stale);
        let again = acquire(&p, far, &mut || Ok(())).unwrap();
        assert!(p.exists());
        again.release_and_remove();
        assert!(!p.exists());
    }
}
