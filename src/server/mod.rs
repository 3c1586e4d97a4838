//! One managed server: the `Server` type, finding our server through our
//! child or the PID record, and the start/stop orchestration. Each step has
//! its own file: `launch` (spawn and readiness), `conflict` (the port's
//! holders), `stop` (ending a launch), `status`, `child` (the process we
//! spawned) and `compat` (the original's helpers). Whose a process is, is
//! decided in `crate::claim`.

mod child;
mod compat;
mod conflict;
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

/// A cancellation hook called every few tens of milliseconds during waits.
pub type Tick<'a> = &'a mut dyn FnMut() -> Result<()>;

/// Everything a server is launched with.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_path: String,
    pub host: String,
    pub port: u16,
    pub name: String,
    pub workers: u32,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub uvicorn_args: Vec<String>,
    pub python: PathBuf,
    /// Bind and hold the listening socket here and hand it to the server
    /// (required for port 0; makes `reload()` possible).
    pub hold_socket: bool,
    /// The server (and its supervisor, if any) stops when the process that
    /// started it ends, however it ends (`crate::lifeline`).
    pub stop_with_caller: bool,
    /// Restart policy, health check, memory limit (`crate::supervise`);
    /// the default means no supervisor at all.
    pub supervision: crate::supervise::Supervision,
    /// Fork servers from a preloader (`crate::warm`) instead of starting
    /// an interpreter; falls back to a cold start, never fails because of it.
    pub warm: bool,
    /// Modules the preloader imports besides its defaults.
    pub preload: Vec<String>,
}

impl Config {
    /// Checks every field (the one validation every entry point shares) and
    /// returns the addresses the host resolves to.
    pub fn validate(&self) -> Result<Vec<IpAddr>> {
        validate::name(&self.name)?;
        validate::app_path(&self.app_path)?;
        let addrs = validate::host(&self.host)?;
        if self.port == 0 && !self.hold_socket {
            return Err(Error::invalid(
                "port",
                Some("0".into()),
                "needs hold_socket=True (the manager binds the socket and the kernel picks the port)",
            ));
        }
        if self.port != 0 {
            validate::port(i64::from(self.port))?;
        }
        validate::supervision(&self.supervision)?;
        validate::workers(i64::from(self.workers))?;
        validate::seconds("start_timeout", self.start_timeout.as_secs_f64())?;
        validate::seconds("stop_timeout", self.stop_timeout.as_secs_f64())?;
        for (k, v) in &self.env {
            validate::env_entry(k, v)?;
        }
        validate::preload(&self.preload)?;
        Ok(addrs)
    }
}

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
}

impl Server {
    /// Validates the configuration; fails fast, touching nothing on disk.
    pub fn new(cfg: Config) -> Result<Self> {
        let addrs = cfg.validate()?;
        if cfg.stop_with_caller {
            // Made now, so that a process that cannot have one learns it here.
            crate::lifeline::read_end()?;
        }
        let paths = Paths::new(&cfg.pid_dir, &cfg.name);
        Ok(Self {
            cfg,
            addrs,
            paths,
            pid_max: platform::pid_max(),
            launched: Mutex::new(None),
            held: Mutex::new(None),
            supervisor: Mutex::new(None),
            handed_port: std::sync::atomic::AtomicU16::new(0),
        })
    }

    /// The configuration this server was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The record files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Where redirected output goes, resolved against the current directory.
    pub fn log_paths(&self) -> LogPaths {
        let dir = if self.cfg.log_dir.is_absolute() {
            self.cfg.log_dir.clone()
        } else {
            std::env::current_dir()
                .unwrap_or_else(|_| PathBuf::from("."))
                .join(&self.cfg.log_dir)
        };
        LogPaths::new(&dir, &self.cfg.name)
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
        let rec = self.read_record()?;
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

    /// Keeps how a run of ours ended (`record::write_last`); failing to
    /// write it loses only history, never a server.
    fn note_end(&self, identity: &Identity, end: End) {
        let last = LastRun {
            identity: identity.clone(),
            end,
            ended_ms: launch::now_ms(),
            restarts: 0,
        };
        let _ = record::write_last(&self.paths, &last);
    }

    /// Forgets a server that is not running: its stale record and how its
    /// last run ended. False if it runs (stop it first).
    pub fn forget(&self, tick: Tick<'_>) -> Result<bool> {
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        if self.find().is_some_and(|f| f.info.is_alive()) {
            return Ok(false);
        }
        self.remove_stale_record();
        record::remove_last(&self.paths);
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
        let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        // A supervisor of this name runs (serving, or between two runs):
        // the server is managed already.
        if self.supervised_now() {
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
        self.stop_launched(self.cfg.stop_timeout, tick)?;
        if let Some((_, id, exit)) = &own {
            // A child that had already exited ended on its own.
            self.note_end(id, exit.map_or(End::Stopped, End::Exited));
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
                result?;
                if let Some(id) = &found.identity {
                    self.note_end(id, End::Stopped);
                }
            }
        }
        self.stop_recorded_orphans(tick)?;
        self.remove_stale_record();
        // Nothing of it is recorded any more: its lock file goes too.
        if !self.paths.pid_file.exists() {
            lock.release_and_remove();
        }
        Ok(())
    }
}
