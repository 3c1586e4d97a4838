//! One advisory lock per server name, held around start and stop so that
//! concurrent managers (threads or processes) launch exactly one server.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A held lock; released on drop (and by the kernel if the holder dies).
#[derive(Debug)]
pub struct NameLock {
    _lock: Flock<File>,
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
/// another holder has it, so the wait can be cancelled.
pub fn acquire(path: &Path, tick: &mut dyn FnMut() -> Result<()>) -> Result<NameLock> {
    let mut delay = Duration::from_micros(200);
    loop {
        let file = open_lock_file(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(NameLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) | Err((_, nix::errno::Errno::EINTR)) => {
                tick()?;
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(5));
            }
            Err((_, e)) => {
                return Err(Error::path("cannot lock", path, std::io::Error::from(e)));
            }
        }
    }
}

/// Takes the lock only if it is free right now.
pub fn try_acquire(path: &Path) -> Result<NameLock> {
    Flock::lock(open_lock_file(path)?, FlockArg::LockExclusiveNonblock)
        .map(|lock| NameLock { _lock: lock })
        .map_err(|_| Error::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_gets_it() {
        let p = std::env::temp_dir().join(format!("usm-lock-{}", std::process::id()));
        let first = acquire(&p, &mut || Ok(())).unwrap();
        let mut ticks = 0;
        let r = acquire(&p, &mut || {
            ticks += 1;
            if ticks > 3 {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Error::Interrupted)));
        drop(first);
        let again = acquire(&p, &mut || Ok(()));
        assert!(again.is_ok());
        drop(again);
        std::fs::remove_file(&p).unwrap();
    }
}
