//! The one descriptor hand-over every child we create goes through: a cold
//! server (`spawn.rs`), a supervisor (`supervise/client.rs`), the warm-start
//! preloader (`warm/preloader.rs`) and, through `_core.hand_over_fds`, a
//! server the preloader forks (`_preload.py`). A child gets exactly the
//! descriptors named here, whatever numbers they have in this process
//! (`platform::handover::place` moves every source out of the way before
//! setting any target); every other descriptor is closed at exec.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::Command;

use crate::error::{Error, Result};
use crate::platform::{self, FdMap};

/// What a child will be given. Keep it alive until the child is spawned
/// (it owns the descriptors given with `owned`), then drop it.
#[derive(Debug, Default)]
pub struct Handover {
    map: FdMap,
    keep: Vec<OwnedFd>,
}

fn err(e: std::io::Error) -> Error {
    Error::os("handing descriptors to a child process", e)
}

impl Handover {
    /// Nothing yet: a child given only this has no descriptors beyond
    /// whatever 0, 1 and 2 are here.
    pub fn new() -> Self {
        Self::default()
    }

    /// `fd` becomes the child's `target`; this keeps it open until dropped.
    pub fn owned(mut self, target: RawFd, fd: impl Into<OwnedFd>) -> Result<Self> {
        let fd = fd.into();
        self.map.set(target, fd.as_raw_fd()).map_err(err)?;
        self.keep.push(fd);
        Ok(self)
    }

    /// `fd` becomes the child's `target`; the caller keeps it open until
    /// the child is spawned.
    pub fn borrowed(mut self, target: RawFd, fd: BorrowedFd<'_>) -> Result<Self> {
        self.map.set(target, fd.as_raw_fd()).map_err(err)?;
        Ok(self)
    }

    /// Standard input from /dev/null.
    pub fn stdin_null(self) -> Result<Self> {
        let null = File::open("/dev/null").map_err(err)?;
        self.owned(0, null)
    }

    /// The child's `target` is this process's own (standard output or
    /// error shared with the caller), or /dev/null when that is closed.
    pub fn inherit(self, target: RawFd) -> Result<Self> {
        // SAFETY: fcntl(F_GETFD) only asks whether the number is open.
        if unsafe { libc::fcntl(target, libc::F_GETFD) } >= 0 {
            // SAFETY: open (just checked) for as long as this process
            // does not close its own stdio, which it never does.
            let fd = unsafe { BorrowedFd::borrow_raw(target) };
            return self.borrowed(target, fd);
        }
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(err)?;
        self.owned(target, null)
    }

    /// Standard output and error: the given files, or this process's own.
    pub fn output(self, files: Option<(File, File)>) -> Result<Self> {
        match files {
            Some((out, e)) => self.owned(1, out)?.owned(2, e),
            None => self.inherit(1)?.inherit(2),
        }
    }

    /// Makes `cmd` apply the hand-over in its child.
    pub fn apply(&self, cmd: &mut Command) {
        platform::hand_over(cmd, self.map);
    }

    /// The (target, source) pairs.
    pub fn pairs(&self) -> &[(RawFd, RawFd)] {
        self.map.pairs()
    }
}

/// Applies `pairs` (target, source) in this process, closing every other
/// descriptor from 3 up: for a child forked without exec (`_preload.py`).
pub fn place_here(pairs: &[(RawFd, RawFd)]) -> Result<()> {
    let mut map = FdMap::default();
    for (t, s) in pairs {
        map.set(*t, *s).map_err(err)?;
    }
    platform::handover::place(&map, platform::Others::Close).map_err(err)
}

#[cfg(test)]
mod tests {
    //! Real children with adversarial layouts: each prints, for every
    //! descriptor it has open, what it is (from /proc/self/fd), so we can
    //! check that each target is the right source and nothing else leaked.
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    fn ident(fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// The child's open descriptors (below 1000) and what each one is.
    fn child_fds(h: &Handover, stdout_pipe: bool) -> BTreeMap<RawFd, String> {
        let (r, w) = pipe_pair();
        let mut r = File::from(r);
        let mut cmd = Command::new("python3");
        // Each open descriptor and what it is, to the report pipe (not
        // stdout, which may be mapped). The directory listdir opened is
        // closed again before readlink, so it does not show.
        cmd.args([
            "-S",
            "-c",
            "import os\nr = []\nfor n in os.listdir('/proc/self/fd'):\n    try: r.append(n + ' ' + os.readlink('/proc/self/fd/' + n))\n    except OSError: pass\nos.write(9, '\\n'.join(r).encode())",
        ]);
        h.apply(&mut cmd);
        let w_fd = w.as_raw_fd();
        // The report pipe as 9, after the hand-over (a pre_exec of its own).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(w_fd, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = stdout_pipe;
        let mut child = cmd.spawn().unwrap();
        drop(w);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        child.wait().unwrap();
        out.lines()
            .filter_map(|l| {
                let (n, what) = l.split_once(' ')?;
                let n: RawFd = n.parse().ok()?;
                (n != 9 && n < 1000).then(|| (n, what.to_owned()))
            })
            .collect()
    }

    fn pipe_pair() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    /// A pipe whose ends are far above the low numbers (which the tests
    /// then place descriptors on by number).
    fn high_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = pipe_pair();
        let up = |fd: OwnedFd| rustix::io::fcntl_dupfd_cloexec(&fd, 500).unwrap();
        (up(r), up(w))
    }

    /// Runs `f` in a fresh process running only this test: the layouts
    /// below close and overwrite descriptors by number, which other tests'
    /// threads of the same process would trip over.
    fn isolated(name: &str, f: impl FnOnce()) {
        const INNER: &str = "USM_HANDOVER_TEST";
        if std::env::var(INNER).as_deref() == Ok(name) {
            f();
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                &format!("handover::tests::{name}"),
                "--exact",
                "--test-threads=1",
            ])
            .env(INNER, name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} failed in its own process:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Puts `fd` at exactly number `at` in this process (close-on-exec).
    fn at(fd: OwnedFd, at: RawFd) -> OwnedFd {
        use std::os::fd::FromRawFd;
        unsafe {
            assert!(libc::dup3(fd.as_raw_fd(), at, libc::O_CLOEXEC) == at);
            OwnedFd::from_raw_fd(at)
        }
    }

    #[test]
    fn sources_on_each_others_targets_are_not_overwritten() {
        isolated("sources_on_each_others_targets_are_not_overwritten", || {
            // The caller's socket-to-be at 4 and lifeline-to-be at 3: the old
            // one-at-a-time dup2 made both 3 and 4 the first one moved.
            let (a, _a2) = high_pipe();
            let (b, _b2) = high_pipe();
            let (a_name, b_name) = (ident(a.as_raw_fd()), ident(b.as_raw_fd()));
            let a4 = at(a, 4);
            let b3 = at(b, 3);
            let h = Handover::new()
                .borrowed(3, a4.as_fd_b())
                .unwrap()
                .borrowed(4, b3.as_fd_b())
                .unwrap();
            let fds = child_fds(&h, false);
            assert_eq!(fds.get(&3), Some(&a_name), "{fds:?}");
            assert_eq!(fds.get(&4), Some(&b_name), "{fds:?}");
            assert_ne!(a_name, b_name);
        });
    }

    trait AsFdB {
        fn as_fd_b(&self) -> BorrowedFd<'_>;
    }
    impl AsFdB for OwnedFd {
        fn as_fd_b(&self) -> BorrowedFd<'_> {
            use std::os::fd::AsFd;
            self.as_fd()
        }
    }

    #[test]
    fn stdin_closed_and_a_source_at_zero() {
        isolated("stdin_closed_and_a_source_at_zero", || {
            // Our own stdin closed: the next descriptor opened is 0. A source
            // there must still arrive at its target, and stdin be /dev/null.
            let saved = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 200) };
            assert!(saved >= 0);
            unsafe { libc::close(0) };
            let (r, _w) = pipe_pair();
            let r_name = ident(r.as_raw_fd());
            let zero = r.as_raw_fd() == 0;
            // stdin first: set one at a time, /dev/null would overwrite the
            // pipe at 0 before it is copied to 3.
            let h = Handover::new()
                .stdin_null()
                .unwrap()
                .borrowed(3, r.as_fd_b())
                .unwrap();
            let fds = child_fds(&h, false);
            drop(h);
            drop(r);
            unsafe {
                libc::dup2(saved, 0);
                libc::close(saved);
            }
            assert!(zero, "the pipe should have taken descriptor 0");
            assert_eq!(fds.get(&3), Some(&r_name), "{fds:?}");
            assert_eq!(fds.get(&0).map(String::as_str), Some("/dev/null"));
        });
    }

    #[test]
    fn hundreds_open_and_none_leaks() {
        isolated("hundreds_open_and_none_leaks", || {
            // Hundreds of descriptors open, some of them inheritable (as a
            // Python program's os.set_inheritable ones are): only the mapped
            // ones and stdio reach the child.
            let mut open = Vec::new();
            for i in 0..300 {
                let (r, w) = pipe_pair();
                if i % 2 == 0 {
                    for fd in [&r, &w] {
                        unsafe {
                            let f = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
                            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, f & !libc::FD_CLOEXEC);
                        }
                    }
                }
                open.push((r, w));
            }
            let (held, _x) = &open[250];
            let (life, _y) = &open[7];
            let h = Handover::new()
                .stdin_null()
                .unwrap()
                .borrowed(3, held.as_fd_b())
                .unwrap()
                .borrowed(4, life.as_fd_b())
                .unwrap();
            let fds = child_fds(&h, false);
            let beyond: Vec<_> = fds.keys().filter(|n| **n > 4).collect();
            assert!(beyond.is_empty(), "leaked: {beyond:?} of {fds:?}");
            assert_eq!(fds.get(&3), Some(&ident(held.as_raw_fd())));
            assert_eq!(fds.get(&4), Some(&ident(life.as_raw_fd())));
            // Our own inheritable descriptors below the floor (3, 4) are not
            // given either when unmapped.
            let only_stdio = child_fds(&Handover::new(), false);
            assert!(only_stdio.keys().all(|n| *n <= 2), "{only_stdio:?}");
        });
    }

    #[test]
    fn output_files_replace_stdout_and_stderr() {
        isolated("output_files_replace_stdout_and_stderr", || {
            let dir = std::env::temp_dir().join(format!("usm-handover-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let o = File::create(dir.join("o")).unwrap();
            let e = File::create(dir.join("e")).unwrap();
            let h = Handover::new().output(Some((o, e))).unwrap();
            let fds = child_fds(&h, true);
            assert!(fds[&1].ends_with("/o"), "{fds:?}");
            assert!(fds[&2].ends_with("/e"), "{fds:?}");
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn a_target_twice_is_refused() {
        let (r, _w) = pipe_pair();
        let h = Handover::new().borrowed(3, r.as_fd_b()).unwrap();
        assert!(h.borrowed(3, r.as_fd_b()).is_err());
    }

    #[test]
    fn place_here_in_a_forked_child() {
        isolated("place_here_in_a_forked_child", || {
            // As `_preload.py` does: fork, then place and close the rest. The
            // child reports through its exit code whether 3 and 4 are right.
            let (a, _a2) = high_pipe();
            let (b, _b2) = high_pipe();
            let (a, b) = (at(a, 4), at(b, 3));
            let (a_ino, b_ino) = (ident(4), ident(3));
            let keep_open: Vec<_> = (0..50).map(|_| pipe_pair()).collect();
            match unsafe { libc::fork() } {
                0 => {
                    let ok = place_here(&[(3, a.as_raw_fd()), (4, b.as_raw_fd())]).is_ok()
                        && ident(3) == a_ino
                        && ident(4) == b_ino
                        && (5..200).all(|fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0);
                    unsafe { libc::_exit(if ok { 0 } else { 1 }) };
                }
                pid => {
                    let mut status = 0;
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                }
            }
            drop(keep_open);
        });
    }
}
