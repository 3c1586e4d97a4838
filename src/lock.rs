//! One advisory lock per server name, held around start and stop so that
//! concurrent managers (threads or processes) launch exactly one server.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

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
        let file = open_lock_file(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(NameLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) | Err((_, nix::errno::Errno::EINTR)) => {
                if Instant::now() >= deadline {
                    let who = holder_pid(path)
                        .map(|p| format!("process {p}"))
                        .unwrap_or_else(|| "another process".to_owned());
                    return Err(Error::LockTimeout(format!(
                        "{who} has held the lock {} longer than a start or stop can take; \
                         is another manager hung or stopped?",
                        path.display()
                    )));
                }
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

/// The PID holding a flock on `path`, from /proc/locks (matched by inode).
fn holder_pid(path: &Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dev_ino = fields.get(5)?;
        let line_ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        (fields.get(1) == Some(&"FLOCK") && line_ino == ino)
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
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
            Err(Error::LockTimeout(m)) => {
                assert!(
                    m.contains(&format!("process {}", std::process::id())),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        let again = acquire(&p, far, &mut || Ok(()));
        assert!(again.is_ok());
        drop(again);
        std::fs::remove_file(&p).unwrap();
    }
}
