//! One managed server: the `Server` type, finding our server through our
//! child or the PID record, and the start/stop orchestration. Each step has
//! its own file: `launch` (spawn and readiness), `conflict` (the port's
//! holders), `stop` (ending a launch), `status`, `child` (the process we
//! spawned) and `compat` (the original's helpers). Whose a process is, is
//! decided in `crate::claim`.

mod child;
mod compat;
pub mod conflict;
mod launch;
mod socket;
mod status;
mod stop;
mod supervised;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::claim::{self, Claim, Facts, Wanted};
use crate::error::{Error, Result};
use crate::facts::Live;
use crate::platform::{self, PidFd};
use crate::record::{self, End, Identity, LastRun, Paths};
use crate::spawn::LogPaths;
use crate::validate;

use child::Launched;
pub use status::{State, Status};
pub use supervised::{supervisor_main, SupervisorLink, EXTENSION};

pub use crate::Tick;

/// Everything a server is launched with: the spec (`crate::spec`).
pub use crate::spec::ServerSpec as Config;

/// A running server found through our child or the PID record.
#[derive(Debug, Clone)]
pub struct Found {
    pub pid: i32,
    pub pidfd: Arc<PidFd>,
    pub info: platform::ProcInfo,
    /// The recorded identity, if the record had one that matched.
    pub identity: Option<Identity>,
    /// True when accepted from a bare PID file (upsonic's original format).
    pub legacy: bool,
}

/// The PID record read at one moment: the PID, with our identity file
/// when it describes that PID. Read once per decision.
#[derive(Debug)]
struct Recorded {
    pid: i32,
    identity: Option<Identity>,
}

/// One managed server.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    addrs: Vec<IpAddr>,
    paths: Paths,
    pid_max: i32,
    launched: Mutex<Option<Launched>>,
    held: Mutex<Option<socket::Held>>,
    supervisor: Mutex<Option<SupervisorLink>>,
    /// The port of the socket handed to our supervisor (0: none), which
    /// holds it from then on (port 0: the kernel's choice).
    handed_port: std::sync::atomic::AtomicU16,
    /// The PID and exit code of the last child of ours that was reaped
    /// (what `_process.poll()` still answers once it is stopped).
    reaped: Mutex<Option<(i32, i32)>>,
    /// How the last run this manager saw ended, kept on disk or not.
    last_run: Mutex<Option<LastRun>>,
    /// Children the program let go of (`_process = None`): no longer this
    /// manager's `_process`, still ours to reap once they exit.
    released: Mutex<Vec<Launched>>,
}

impl Server {
    /// Validates the configuration; fails fast, touching nothing on disk.
    pub fn new(cfg: Config) -> Result<Self> {
        let addrs = cfg.validate()?;
        if cfg.stop_with_caller {
            // Made now, so that a process that cannot have one learns it here.
            crate::lifeline::read_end()?;
        }
        let paths = match &cfg.pid_file {
            Some(f) => Paths::for_pid_file(f),
            None => Paths::new(&cfg.pid_dir, &cfg.name),
        };
        Ok(Self {
            cfg,
            addrs,
            paths,
            pid_max: platform::pid_max(),
            launched: Mutex::new(None),
            held: Mutex::new(None),
            supervisor: Mutex::new(None),
            handed_port: std::sync::atomic::AtomicU16::new(0),
            reaped: Mutex::new(None),
            last_run: Mutex::new(None),
            released: Mutex::new(Vec::new()),
        })
    }

    /// This server under a new configuration (a program assigned `port`,
    /// `host`, `app_path`, `name` or `_pid_file`, as the original allows),
    /// validated as at construction. Refused while it runs: the new values
    /// take effect at the next `start()`. What this manager knows carries
    /// over: a child that has exited (its exit code), how its last run
    /// ended, and a held socket still bound where the new one listens.
    /// `what` names the change in the error.
    pub fn replaced(&self, cfg: Config, what: &str) -> Result<Self> {
        let new = Self::new(cfg)?;
        let own = self.own_child();
        let running = match &own {
            Some((fd, _, None)) if !fd.has_exited() => Some(fd.pid()),
            _ if self.supervised_now() => Some(0),
            _ => self
                .find_recorded()
                .filter(|f| f.info.is_alive())
                .map(|f| f.pid),
        };
        if let Some(pid) = running {
            return Err(Error::Running {
                name: self.cfg.name.clone(),
                pid: (pid > 0).then_some(pid),
                what: what.to_owned(),
            });
        }
        *new.launched.lock() = self.launched.lock().take();
        *new.reaped.lock() = self.reaped.lock().take();
        *new.released.lock() = std::mem::take(&mut *self.released.lock());
        *new.supervisor.lock() = self.supervisor.lock().take();
        if new.paths.pid_file == self.paths.pid_file {
            *new.last_run.lock() = self.last_run.lock().take();
        }
        let same_socket =
            new.cfg.hold_socket && new.cfg.host == self.cfg.host && new.cfg.port == self.cfg.port;
        if same_socket {
            *new.held.lock() = self.held.lock().take();
        }
        Ok(new)
    }

    /// The configuration this server was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The record files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Where redirected output goes. The one rule for relative paths, in
    /// every entry point (library, CLI, configuration file): a relative
    /// `cwd` is under the caller's working directory, and a relative
    /// `log_dir` is under the server's working directory (`cwd` when given,
    /// else the caller's), where the original's `logs/` is too.
    pub fn log_paths(&self) -> LogPaths {
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        // `join` with an absolute path is that path.
        let server_dir = match &self.cfg.cwd {
            Some(cwd) => here.join(cwd),
            None => here,
        };
        LogPaths::new(&server_dir.join(&self.cfg.log_dir), &self.cfg.name)
    }

    fn wanted(&self) -> Wanted<'_> {
        Wanted {
            app_path: &self.cfg.app_path,
            port: self.port(),
        }
    }

    // ---- finding our server -------------------------------------------------

    fn read_record(&self) -> Option<Recorded> {
        let pid = record::read_pid(&self.paths, self.pid_max)?;
        let identity = record::read_identity(&self.paths).filter(|id| id.pid == pid);
        Some(Recorded { pid, identity })
    }

    fn claim_of(&self, rec: &Recorded, facts: &dyn Facts) -> Claim {
        claim::of_record(rec.pid, rec.identity.as_ref(), self.wanted(), facts)
    }

    /// The server the PID record names, if it is ours and alive, pinned
    /// with a pidfd so that it can be signalled safely.
    pub fn find_recorded(&self) -> Option<Found> {
        self.pin_if_ours(self.read_record()?)
    }

    /// `rec`'s process, if `claim` says it is our server, pinned with a
    /// pidfd (checked to be the process judged).
    fn pin_if_ours(&self, rec: Recorded) -> Option<Found> {
        let facts = Live::new();
        let seen = facts.stat(rec.pid)?;
        let Claim::Ours { legacy } = self.claim_of(&rec, &facts) else {
            return None;
        };
        let pidfd = PidFd::open(rec.pid).ok()?;
        // The pidfd pins a process: make sure it is the one we judged.
        let info = platform::proc_info(rec.pid)?;
        if info.start_ticks != seen.start_ticks {
            return None;
        }
        if let Some(id) = &rec.identity {
            self.learn_port(id.port);
        }
        Some(Found {
            pid: rec.pid,
            pidfd: Arc::new(pidfd),
            info,
            identity: rec.identity,
            legacy,
        })
    }

    /// Our server, alive or not: our child first, then the record.
    pub fn find(&self) -> Option<Found> {
        if let Some((pidfd, identity, None)) = self.own_child() {
            if let Some(info) = platform::proc_info(pidfd.pid()) {
                return Some(Found {
                    pid: pidfd.pid(),
                    pidfd,
                    info,
                    identity: Some(identity),
                    legacy: false,
                });
            }
        }
        self.find_recorded()
    }

    /// True only for our server, alive and not a zombie. Removes a stale
    /// record when no start or stop is under way. With our identity file,
    /// one read of /proc/PID/stat decides.
    pub fn is_running(&self) -> bool {
        if let Some((pidfd, _, None)) = self.own_child() {
            if !pidfd.has_exited() {
                return true;
            }
        }
        let claim = self
            .read_record()
            .map(|rec| self.claim_of(&rec, &Live::new()));
        if matches!(claim, Some(Claim::Ours { .. })) {
            return true;
        }
        if claim.is_some() || self.paths.pid_file.exists() || self.paths.id_file.exists() {
            self.remove_stale_record_if_idle();
        }
        false
    }

    /// How long to wait for the per-name lock: a holder that starts a server
    /// and cleans up after a failure needs at most this long.
    fn lock_deadline(&self) -> Instant {
        Instant::now() + self.cfg.start_timeout + self.cfg.stop_timeout * 2 + Duration::from_secs(5)
    }

    fn remove_stale_record_if_idle(&self) {
        if let Ok(Some(_lock)) = crate::lock::try_acquire(&self.paths.lock_file) {
            self.remove_stale_record();
        }
    }

    /// Under the lock: removes the record unless its claim keeps it (see
    /// `Claim::keeps_record`).
    fn remove_stale_record(&self) {
        if let Some(rec) = self.read_record() {
            let claim = self.claim_of(&rec, &Live::new());
            if claim.keeps_record() {
                return;
            }
            if let (Claim::Orphaned { .. }, Some(id)) = (claim, &rec.identity) {
                // Our launch ended and nobody stopped it: keep how it ended.
                let end = self.child_exit_of(id.pid).map_or(End::Died, End::Exited);
                self.note_end(id, end);
            }
        }
        record::remove(&self.paths);
    }

    /// Keeps how a run of ours ended: in memory for this manager's
    /// `status()`, and on disk (`record::write_last`) when history was asked
    /// for (ours, or the run's own recorded configuration: the CLI's starts,
    /// supervised servers) or the run failed. A clean stop on the library's
    /// default path leaves no file, as the original leaves none. Failing to
    /// write loses only history, never a server.
    fn note_end(&self, identity: &Identity, end: End) {
        let last = LastRun {
            identity: identity.clone(),
            end,
            ended_ms: launch::now_ms(),
            restarts: self.supervisor_restarts(),
        };
        let asked = |c: &record::SavedConfig| c.spec.history || c.spec.supervision.is_supervised();
        let keep = !end.is_clean()
            || self.cfg.history
            || self.cfg.supervision.is_supervised()
            || identity.config.as_ref().is_some_and(asked);
        if keep {
            let _ = record::write_last(&self.paths, &last);
        }
        *self.last_run.lock() = Some(last);
    }

    /// How the last run ended: the newer of what is kept on disk (by any
    /// process) and what this manager saw itself.
    pub(crate) fn last_run(&self) -> Option<LastRun> {
        let disk = record::read_last(&self.paths);
        let mine = self.last_run.lock().clone();
        match (disk, mine) {
            (Some(d), Some(m)) => Some(if m.ended_ms > d.ended_ms { m } else { d }),
            (d, m) => d.or(m),
        }
    }

    /// Forgets a server that is not running: its stale record and how its
    /// last run ended. False if it runs (stop it first).
    pub fn forget(&self, tick: Tick<'_>) -> Result<bool> {
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        if self.find().is_some_and(|f| f.info.is_alive()) {
            return Ok(false);
        }
        self.remove_stale_record();
        self.remove_dead_supervisor_state();
        record::remove_last(&self.paths);
        *self.last_run.lock() = None;
        if !self.paths.pid_file.exists() {
            lock.release_and_remove();
        }
        Ok(true)
    }

    // ---- the lifecycle ------------------------------------------------------------

    /// Starts the server unless ours already runs; returns once it listens.
    /// True if it launched one.
    pub fn start(&self, redirect_output: bool, force: bool, tick: Tick<'_>) -> Result<bool> {
        if !validate::is_app_target(&self.cfg.app_path) {
            return Err(Error::AppTarget {
                name: self.cfg.name.clone(),
                app_path: self.cfg.app_path.clone(),
            });
        }
        if let Some(dir) = &self.cfg.cwd {
            // Checked before anything is made under it (the log directory):
            // a mistyped cwd otherwise read as the app failing to import.
            let here = std::env::current_dir().unwrap_or_default();
            let full = here.join(dir);
            if !full.is_dir() {
                let errno = if full.exists() {
                    libc::ENOTDIR
                } else {
                    libc::ENOENT
                };
                return Err(Error::path(
                    "cannot start the server in its cwd (give the directory the app is imported from)",
                    full,
                    std::io::Error::from_raw_os_error(errno),
                ));
            }
        }
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        // A supervisor of this name runs (serving, or between two runs):
        // the server is managed already.
        if self.supervised_now() {
            if let Some(id) = record::read_identity(&self.paths) {
                // Another app or address under this name: not ours to call
                // started (as for an unsupervised record, `Claim::OtherConfig`).
                let other_port = self.cfg.port != 0 && id.port != self.cfg.port;
                if id.app_path != self.cfg.app_path || id.host != self.cfg.host || other_port {
                    return Err(Error::NameTaken {
                        name: self.cfg.name.clone(),
                        pid: id.pid,
                        app_path: id.app_path,
                        host: id.host,
                        port: id.port,
                    });
                }
                self.learn_port(id.port);
            }
            return Ok(false);
        }
        if let Some(f) = self.find() {
            if f.info.is_alive() && !f.pidfd.has_exited() {
                // Ours, but its supervisor died: a new one takes it over.
                let same_app = f
                    .identity
                    .as_ref()
                    .is_none_or(|i| i.app_path == self.cfg.app_path);
                if self.cfg.supervision.is_supervised() && f.identity.is_some() && same_app {
                    self.start_supervised(redirect_output, Some(f.pid), tick)?;
                }
                return Ok(false);
            }
        }
        if let Some(rec) = self.read_record() {
            if let (Claim::OtherConfig, Some(other)) =
                (self.claim_of(&rec, &Live::new()), &rec.identity)
            {
                return Err(Error::NameTaken {
                    name: self.cfg.name.clone(),
                    pid: other.pid,
                    app_path: other.app_path.clone(),
                    host: other.host.clone(),
                    port: other.port,
                });
            }
        }
        // A previous child of ours that died: reap it before launching anew,
        // and stop whatever of that launch outlived it (orphaned workers).
        self.forget_exited_child();
        self.stop_recorded_orphans(tick)?;
        self.remove_stale_record();
        // A socket we hold (or will bind on port 0) is ours: nothing to clear.
        if !(self.holds_socket() || self.cfg.hold_socket && self.cfg.port == 0) {
            self.clear_port_for_start(force, tick)?;
        }
        let launched = if self.cfg.supervision.is_supervised() {
            self.start_supervised(redirect_output, None, tick)
        } else {
            self.launch(redirect_output, tick)
        };
        if let Err(e) = launched {
            // Nothing of the failed launch is recorded: no lock file stays.
            if !self.paths.pid_file.exists() {
                lock.release_and_remove();
            }
            return Err(e);
        }
        record::remove_last(&self.paths);
        *self.last_run.lock() = None;
        Ok(true)
    }

    /// Stops our server (its whole process group), idempotently and quietly
    /// when nothing runs; removes the record only if it names this server.
    pub fn stop(&self, tick: Tick<'_>) -> Result<()> {
        self.stop_keeping_socket(tick)?;
        // The port is free again: nothing of ours listens on it any more.
        self.release_socket();
        Ok(())
    }

    /// `stop()`, keeping a held socket open (for a restart).
    fn stop_keeping_socket(&self, tick: Tick<'_>) -> Result<()> {
        // No PID directory: nothing can be recorded there, and without a
        // child of ours nothing runs. Quiet, as a stop of nothing is.
        if !self.cfg.pid_dir.is_dir() && self.own_child().is_none() {
            return Ok(());
        }
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        // A deliberate stop is never a crash: supervision ends first, so
        // nothing comes back.
        self.end_supervision(tick)?;
        let own = self.own_child();
        let killed = self.stop_launched(self.cfg.stop_timeout, tick)?;
        let by_stop = if killed {
            End::StoppedKilled
        } else {
            End::Stopped
        };
        if let Some((_, id, exit)) = &own {
            // A child that had already exited ended on its own.
            self.note_end(id, exit.map_or(by_stop, End::Exited));
        }
        let own_pid = own.map(|(fd, _, _)| fd.pid());
        if let Some(found) = self.find_recorded() {
            if Some(found.pid) != own_pid {
                let result = self.terminate_server(
                    found.pidfd.clone(),
                    found.identity.as_ref(),
                    self.cfg.stop_timeout,
                    tick,
                );
                record::remove_if_names(&self.paths, found.pid, self.pid_max);
                let killed = result?;
                if let Some(id) = &found.identity {
                    self.note_end(
                        id,
                        if killed {
                            End::StoppedKilled
                        } else {
                            End::Stopped
                        },
                    );
                }
            }
        }
        self.stop_recorded_orphans(tick)?;
        self.reap_released();
        self.remove_stale_record();
        self.remove_dead_supervisor_state();
        // Nothing of it is recorded any more: its lock file goes too.
        if !self.paths.pid_file.exists() {
            lock.release_and_remove();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            app_path: "m:app".into(),
            host: "127.0.0.1".into(),
            port: 8123,
            name: "api".into(),
            workers: 1,
            log_dir: dir.join("logs"),
            pid_dir: dir.to_path_buf(),
            cwd: None,
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            uvicorn_args: Vec::new(),
            python: "python3".into(),
            hold_socket: false,
            stop_with_caller: false,
            supervision: crate::supervise::Supervision::default(),
            warm: false,
            preload: Vec::new(),
            pid_file: None,
            history: false,
        }
    }

    #[test]
    fn a_replaced_configuration_is_validated_and_keeps_the_last_run() {
        let dir = std::env::temp_dir().join(format!("usm-replaced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = Server::new(config(&dir)).unwrap();
        let last = LastRun {
            identity: Identity::default(),
            end: End::Stopped,
            ended_ms: 1,
            restarts: 0,
        };
        *old.last_run.lock() = Some(last.clone());
        let mut bad = config(&dir);
        bad.port = 0; // without hold_socket
        assert!(matches!(
            old.replaced(bad, crate::spec::key::PORT),
            Err(Error::InvalidArgument {
                arg: crate::spec::key::PORT,
                ..
            })
        ));
        let mut moved = config(&dir);
        moved.port = 8124;
        let new = old.replaced(moved, crate::spec::key::PORT).unwrap();
        assert_eq!(new.port(), 8124);
        assert_eq!(new.last_run(), Some(last));
        // A chosen PID file takes the other files beside it; a supervisor
        // would not find it, so the two are refused together.
        let mut chosen = config(&dir);
        chosen.pid_file = Some(dir.join("api.pid"));
        let moved = new.replaced(chosen.clone(), "_pid_file").unwrap();
        assert_eq!(moved.paths().lock_file, dir.join("api.lock"));
        chosen.supervision.policy.restart = crate::supervise::Restart::Always;
        assert!(Server::new(chosen).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
