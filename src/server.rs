//! One managed server: start, stop, is_running and the helpers, with the
//! lock, the PID record, readiness and port-conflict rules.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::platform::{self, PidFd};
use crate::port::{self, Holder};
use crate::record::{self, Identity, Paths};
use crate::spawn::{self, LaunchSpec, LogPaths};
use crate::terminate::{self, Victims};
use crate::validate;

/// How often a blocking wait gives `tick` (Ctrl-C checks) a chance to run.
const TICK_EVERY: Duration = Duration::from_millis(20);
/// How often readiness looks at the port table while the server starts.
const READY_STEP: Duration = Duration::from_millis(1);

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
}

/// The server process we launched ourselves.
#[derive(Debug)]
struct Launched {
    child: Child,
    pidfd: Arc<PidFd>,
    identity: Identity,
    exit: Option<i32>,
}

impl Launched {
    /// Reaps without blocking; the exit code, negative for a signal.
    fn poll(&mut self) -> Option<i32> {
        if self.exit.is_none() {
            match self.child.try_wait() {
                Ok(Some(st)) => self.exit = Some(exit_code(st)),
                Ok(None) => {}
                // Someone else reaped it (e.g. os.waitpid in the caller): the
                // code is lost; report 0 as subprocess.Popen does.
                Err(_) if self.pidfd.has_exited() => self.exit = Some(0),
                Err(_) => {}
            }
        }
        self.exit
    }
}

impl Launched {
    /// Reaps, blocking: only called once the pidfd says it exited.
    fn reap(&mut self) -> i32 {
        *self.exit.get_or_insert_with(|| {
            // Reaped elsewhere (ECHILD): 0, as subprocess.Popen reports.
            self.child.wait().map(exit_code).unwrap_or(0)
        })
    }
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().or_else(|| st.signal().map(|s| -s)).unwrap_or(-1)
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

/// The PID record read at one moment (see `Server::read_record`).
#[derive(Debug)]
struct Recorded {
    pid: i32,
    identity: Option<Identity>,
}

/// Whether the process that started at `start_ticks` (in this boot) is the
/// one `id` describes: same start tick, and the same boot when recorded.
fn launched_as(id: &Identity, start_ticks: u64) -> bool {
    let same_boot = id.boot_id.is_empty() || platform::boot_id().is_none_or(|b| *b == id.boot_id);
    id.start_ticks == start_ticks && same_boot
}

/// The state reported by `status()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    Starting,
    Dead,
    Stopped,
}

impl State {
    /// The lowercase name used in Python and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Starting => "starting",
            State::Dead => "dead",
            State::Stopped => "stopped",
        }
    }
}

/// A point-in-time view of the server.
#[derive(Debug, Clone)]
pub struct Status {
    pub pid: Option<i32>,
    pub state: State,
    pub started_at: Option<f64>,
    pub uptime: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub workers: Vec<i32>,
    pub exit_code: Option<i32>,
    pub stdout_log: Option<PathBuf>,
    pub stderr_log: Option<PathBuf>,
}

/// One managed server.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    addrs: Vec<IpAddr>,
    paths: Paths,
    pid_max: i32,
    launched: Mutex<Option<Launched>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Server {
    /// Validates the configuration; fails fast, touching nothing on disk.
    pub fn new(cfg: Config) -> Result<Self> {
        validate::name(&cfg.name)?;
        validate::app_path(&cfg.app_path)?;
        let addrs = validate::host(&cfg.host)?;
        if cfg.workers == 0 {
            return Err(Error::InvalidArgument("workers must be at least 1".into()));
        }
        if cfg.start_timeout.is_zero() || cfg.stop_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "start_timeout and stop_timeout must be positive".into(),
            ));
        }
        let paths = Paths::new(&cfg.pid_dir, &cfg.name);
        Ok(Self {
            cfg,
            addrs,
            paths,
            pid_max: platform::pid_max(),
            launched: Mutex::new(None),
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

    // ---- finding our server -------------------------------------------------

    /// Our own child, if we launched one that has not been stopped.
    fn own_child(&self) -> Option<(Arc<PidFd>, Identity, Option<i32>)> {
        let mut guard = self.launched.lock();
        let l = guard.as_mut()?;
        let exit = l.poll();
        Some((l.pidfd.clone(), l.identity.clone(), exit))
    }

    /// The PID record as it is now: the PID, with our identity file when
    /// it describes that PID. Read once per decision.
    fn read_record(&self) -> Option<Recorded> {
        let pid = record::read_pid(&self.paths, self.pid_max)?;
        let identity = record::read_identity(&self.paths).filter(|id| id.pid == pid);
        Some(Recorded { pid, identity })
    }

    /// Verifies that the PID record names a live server of ours, and pins
    /// it with a pidfd so that it can be signalled safely.
    pub fn find_recorded(&self) -> Option<Found> {
        let rec = self.read_record()?;
        let (info, legacy) = self.verify_record(&rec)?;
        let pidfd = PidFd::open(rec.pid).ok()?;
        let again = platform::proc_info(rec.pid)?;
        if again.start_ticks != info.start_ticks {
            return None;
        }
        Some(Found {
            pid: rec.pid,
            pidfd: Arc::new(pidfd),
            info: again,
            identity: rec.identity,
            legacy,
        })
    }

    /// The check behind `find_recorded`, without pinning: the process the
    /// record names, and whether it was accepted from a bare PID file.
    fn verify_record(&self, rec: &Recorded) -> Option<(platform::ProcInfo, bool)> {
        let info = platform::proc_info(rec.pid)?;
        let my_uid = nix::unistd::geteuid().as_raw();
        if info.uid != my_uid || rec.pid == std::process::id() as i32 {
            return None;
        }
        match &rec.identity {
            // Same name, other app or port: a different server shares this
            // name; it is not the one this manager describes.
            Some(id) => {
                (launched_as(id, info.start_ticks) && self.same_config(id)).then_some((info, false))
            }
            None => {
                // A bare PID file, as upsonic's original writes it: accepted only
                // for a uvicorn serving this app on this port.
                let cmd = platform::cmdline(rec.pid)?;
                spawn::is_uvicorn_for(&cmd, &self.cfg.app_path, Some(self.cfg.port))
                    .then_some((info, true))
            }
        }
    }

    /// Our server, alive or not: our child first, then the record.
    pub fn find(&self) -> Option<Found> {
        if let Some((pidfd, identity, exit)) = self.own_child() {
            if exit.is_none() {
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
        }
        self.find_recorded()
    }

    /// True only for our server, alive and not a zombie. Removes a stale
    /// record when no start or stop is under way.
    pub fn is_running(&self) -> bool {
        if let Some((pidfd, _, None)) = self.own_child() {
            if !pidfd.has_exited() {
                return true;
            }
        }
        if self.recorded_alive() {
            return true;
        }
        self.remove_stale_record_if_idle();
        false
    }

    /// The `is_running()` fast path: with our identity file, one read of
    /// /proc/PID/stat decides (same PID, same start tick, same boot: the
    /// process we launched); a bare PID file takes the full check.
    fn recorded_alive(&self) -> bool {
        let Some(rec) = self.read_record() else {
            return false;
        };
        if rec.pid == std::process::id() as i32 {
            return false;
        }
        match &rec.identity {
            Some(id) => {
                self.same_config(id)
                    && platform::state_and_start(rec.pid).is_some_and(|(state, ticks)| {
                        launched_as(id, ticks) && !matches!(state, 'Z' | 'X' | 'x')
                    })
            }
            None => self
                .verify_record(&rec)
                .is_some_and(|(info, _)| info.is_alive()),
        }
    }

    /// How long to wait for the per-name lock: a holder that starts a server
    /// and cleans up after a failure needs at most this long.
    fn lock_deadline(&self) -> Instant {
        Instant::now() + self.cfg.start_timeout + self.cfg.stop_timeout * 2 + Duration::from_secs(5)
    }

    /// Whether a recorded identity describes this manager's server.
    fn same_config(&self, id: &Identity) -> bool {
        id.port == self.cfg.port && id.app_path == self.cfg.app_path
    }

    /// A live server recorded under this name by a manager with another app
    /// or port: still somebody's tracked server, so never stale, never ours.
    fn other_config_alive<'r>(&self, rec: &'r Recorded) -> Option<&'r Identity> {
        let id = rec.identity.as_ref().filter(|id| !self.same_config(id))?;
        let info = platform::proc_info(rec.pid)?;
        (info.is_alive() && launched_as(id, info.start_ticks)).then_some(id)
    }

    /// Our launch's identity when its leader has died (whatever of the
    /// launch lives on is an orphan of ours).
    fn dead_leader_launch<'r>(&self, rec: &'r Recorded) -> Option<&'r Identity> {
        let id = rec.identity.as_ref().filter(|id| self.same_config(id))?;
        let leader_alive = platform::proc_info(rec.pid)
            .is_some_and(|i| i.is_alive() && i.start_ticks == id.start_ticks);
        (!leader_alive).then_some(id)
    }

    fn remove_stale_record_if_idle(&self) {
        if !self.paths.pid_file.exists() && !self.paths.id_file.exists() {
            return;
        }
        let Ok(_lock) = crate::lock::try_acquire(&self.paths.lock_file) else {
            return;
        };
        self.remove_stale_record();
    }

    /// Under the lock: removes the record unless it still tracks something.
    /// Kept are: a live server of ours; a live server of another
    /// configuration under this name; a launch of ours whose leader died but
    /// whose process group still has members (one `kill(-pgid, 0)`: a group
    /// ID stays taken while it has members, so they can only be what is left
    /// of that launch; `stop()` and `start()` sweep them); and a bare PID file
    /// naming a live uvicorn of ours for another app, which may be upsonic's
    /// original tracking its own server.
    fn remove_stale_record(&self) {
        let Some(rec) = self.read_record() else {
            record::remove(&self.paths);
            return;
        };
        let ours_alive = self
            .verify_record(&rec)
            .is_some_and(|(info, _)| info.is_alive());
        // Only while the number is not someone else's: a reused PID means the
        // old group was empty when it was handed out again.
        let group_lingers = self.dead_leader_launch(&rec).is_some()
            && platform::proc_info(rec.pid).is_none_or(|i| !i.is_alive())
            && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(rec.pid), None).is_ok();
        let foreign_uvicorn = rec.identity.is_none()
            && platform::proc_info(rec.pid)
                .is_some_and(|i| i.is_alive() && i.uid == nix::unistd::geteuid().as_raw())
            && platform::cmdline(rec.pid)
                .is_some_and(|c| c.iter().any(|a| a == "uvicorn" || a.ends_with("/uvicorn")));
        if !(ours_alive
            || self.other_config_alive(&rec).is_some()
            || group_lingers
            || foreign_uvicorn)
        {
            record::remove(&self.paths);
        }
    }

    /// Under the lock: stops what is left of a recorded launch whose leader
    /// died (e.g. uvicorn workers whose master was SIGKILLed: they keep
    /// serving), found by the launch marker, so that its record can go and
    /// its port is free again.
    fn stop_recorded_orphans(&self, tick: Tick<'_>) -> Result<()> {
        let Some(rec) = self.read_record() else {
            return Ok(());
        };
        let Some(id) = self.dead_leader_launch(&rec) else {
            return Ok(());
        };
        let mut victims = Victims::default();
        for p in terminate::marked_processes(&id.launch_id, id.start_ticks) {
            victims.add(p);
        }
        if !victims.members.is_empty()
            && !victims.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?
        {
            return Err(Error::StopFailed(format!(
                "Failed to stop {}: processes of its last launch survived SIGKILL",
                self.cfg.name
            )));
        }
        Ok(())
    }

    // ---- the port -------------------------------------------------------------

    /// Listeners that clash with a bind to (host, port).
    pub fn conflicting_listeners(&self) -> Result<Vec<port::Listener>> {
        port::conflicting_listeners(&self.addrs, self.cfg.port)
            .map_err(|e| Error::os("reading the port table", e))
    }

    /// Processes holding a socket that clashes with (host, port).
    pub fn port_holders(&self) -> Result<Vec<Holder>> {
        let ls = self.conflicting_listeners()?;
        let likely: Vec<i32> = self.find().map(|f| vec![f.pid]).unwrap_or_default();
        Ok(port::holders_of(&ls, &likely))
    }

    /// Whether a bind to (host, port) would fail right now.
    pub fn port_in_use(&self) -> Result<bool> {
        Ok(!self.conflicting_listeners()?.is_empty())
    }

    fn port_in_use_error(&self, holders: &[Holder], what: &str) -> Error {
        let names: Vec<String> = holders
            .iter()
            .map(|h| {
                format!(
                    "pid {} ({}, user {}) on {}",
                    h.pid, h.name, h.user, h.address
                )
            })
            .collect();
        let who = if names.is_empty() {
            "an unidentified process".to_owned()
        } else {
            names.join("; ")
        };
        Error::PortInUse {
            port: self.cfg.port,
            holders: holders.to_vec(),
            message: format!("Port {} {what}: held by {who}", self.cfg.port),
        }
    }

    /// Stops the given holders. A process group whose leader holds the
    /// socket is a server (a master and its workers) and is stopped whole;
    /// any other holder is stopped alone with its descendants, since its
    /// group may be a script or shell job doing other work. Returns how many
    /// groups or processes were stopped.
    fn stop_holders(&self, holders: &[Holder], tick: Tick<'_>) -> Result<usize> {
        let my_pgid = nix::unistd::getpgrp().as_raw();
        let holder_pids: std::collections::HashSet<i32> = holders.iter().map(|h| h.pid).collect();
        let mut groups = std::collections::HashSet::new();
        let mut singles = Victims::default();
        for h in holders {
            let server_group = h.pgid > 1 && h.pgid != my_pgid && holder_pids.contains(&h.pgid);
            if server_group {
                if groups.insert(h.pgid) {
                    if let Ok(fd) = PidFd::open(h.pgid) {
                        // One group per terminate call keeps killpg targets exact.
                        let mut group = Victims::default();
                        group.add_group(Arc::new(fd));
                        group.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?;
                    }
                }
                continue;
            }
            singles.add(h.pid);
            for d in platform::descendants(h.pid) {
                singles.add(d);
            }
        }
        let n = groups.len() + singles.members.len();
        if !singles.members.is_empty() {
            singles.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?;
        }
        Ok(n)
    }

    /// Waits briefly for the port to be released after its holders exited.
    fn wait_port_free(&self, tick: Tick<'_>) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            if !self.port_in_use()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tick()?;
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `_kill_process_using_port()`: stops same-user holders of the port.
    /// True if it stopped something; an error names holders it may not stop.
    pub fn kill_port_holders(&self, tick: Tick<'_>) -> Result<bool> {
        let holders = self.port_holders()?;
        if holders.is_empty() {
            return Ok(false);
        }
        let (mine, foreign): (Vec<Holder>, Vec<Holder>) =
            holders.into_iter().partition(|h| self.may_stop_holder(h));
        let stopped = if mine.is_empty() {
            0
        } else {
            self.stop_holders(&mine, tick)?
        };
        if !foreign.is_empty() {
            return Err(
                self.port_in_use_error(&foreign, "is held by processes that may not be stopped")
            );
        }
        if stopped > 0 {
            self.wait_port_free(tick)?;
        }
        Ok(stopped > 0)
    }

    fn may_stop_holder(&self, h: &Holder) -> bool {
        h.same_user && h.pid > 1 && h.pid != std::process::id() as i32
    }

    /// `_force_cleanup_port()`: frees the port or fails naming who holds it.
    pub fn force_cleanup_port(&self, tick: Tick<'_>) -> Result<()> {
        if !self.port_in_use()? {
            return Ok(());
        }
        self.kill_port_holders(tick)?;
        if self.port_in_use()? {
            let holders = self.port_holders()?;
            return Err(self.port_in_use_error(&holders, "is still in use after cleanup"));
        }
        Ok(())
    }

    /// Is this holder a leftover instance of this very server? `recorded` is
    /// the identity file as read once for all holders.
    fn is_stale_instance(&self, h: &Holder, recorded: Option<&Identity>) -> bool {
        if !self.may_stop_holder(h) {
            return false;
        }
        if let Some(id) = recorded {
            if let Some(leader) = platform::proc_info(id.pid) {
                if leader.start_ticks == id.start_ticks && h.pgid == id.pid {
                    return true;
                }
            }
        }
        let leader = if h.pgid > 1 { h.pgid } else { h.pid };
        let cmd_pid = if platform::proc_info(leader).is_some_and(|i| terminate::may_signal(&i)) {
            leader
        } else {
            h.pid
        };
        // A server launched by a manager carries that launch's marker: if it
        // is not our recorded launch, another manager (another name or PID
        // directory) tracks it, and it is not ours to replace.
        if let Some(marker) = platform::environ_value(cmd_pid, spawn::LAUNCH_ENV) {
            return recorded.is_some_and(|id| id.launch_id == marker);
        }
        platform::cmdline(cmd_pid)
            .is_some_and(|c| spawn::is_uvicorn_for(&c, &self.cfg.app_path, None))
    }

    // ---- start ------------------------------------------------------------------

    /// Starts the server unless ours already runs; returns once it listens.
    pub fn start(&self, redirect_output: bool, force: bool, tick: Tick<'_>) -> Result<bool> {
        let _lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        if let Some(f) = self.find() {
            if f.info.is_alive() && !f.pidfd.has_exited() {
                return Ok(false);
            }
        }
        if let Some(other) = self
            .read_record()
            .and_then(|rec| self.other_config_alive(&rec).cloned())
        {
            return Err(Error::NameTaken(format!(
                "Failed to start {name} server: the name {name:?} is taken by a running server \
                 (pid {}, {} on {}:{}); stop it or choose another name",
                other.pid,
                other.app_path,
                other.host,
                other.port,
                name = self.cfg.name,
            )));
        }
        // A previous child of ours that died: reap it before launching anew,
        // and stop whatever of that launch outlived it (orphaned workers).
        self.forget_exited_child();
        self.stop_recorded_orphans(tick)?;
        self.remove_stale_record();

        let listeners = self.conflicting_listeners()?;
        if !listeners.is_empty() {
            let holders = port::holders_of(&listeners, &[]);
            let recorded = record::read_identity(&self.paths);
            let (stoppable, blocking): (Vec<Holder>, Vec<Holder>) =
                holders.into_iter().partition(|h| {
                    self.is_stale_instance(h, recorded.as_ref())
                        || (force && self.may_stop_holder(h))
                });
            if !blocking.is_empty() || stoppable.is_empty() {
                let hint = if force {
                    ""
                } else {
                    " (start(force=True) stops holders owned by you)"
                };
                return Err(self.port_in_use_error(&blocking, &format!("is already in use{hint}")));
            }
            self.stop_holders(&stoppable, tick)?;
            if !self.wait_port_free(tick)? {
                let holders = self.port_holders()?;
                return Err(
                    self.port_in_use_error(&holders, "is still in use after stopping its holders")
                );
            }
        }
        self.launch(redirect_output, tick)?;
        Ok(true)
    }

    fn forget_exited_child(&self) {
        let mut guard = self.launched.lock();
        if let Some(l) = guard.as_mut() {
            if l.poll().is_some() {
                *guard = None;
            }
        }
    }

    fn graceful_timeout_secs(&self) -> Option<u64> {
        let s = self.cfg.stop_timeout.as_secs_f64();
        (s >= 2.0).then(|| ((s * 0.8).floor() as u64).max(1))
    }

    fn launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<()> {
        let logs = self.log_paths();
        let (files, err_offset) = if redirect_output {
            let (o, e, off) = spawn::open_logs(&logs)?;
            (Some((o, e)), Some(off))
        } else {
            (None, None)
        };
        let launch_id = spawn::new_launch_id();
        let spec = LaunchSpec {
            python: &self.cfg.python,
            app_path: &self.cfg.app_path,
            host: &self.cfg.host,
            port: self.cfg.port,
            workers: self.cfg.workers,
            uvicorn_args: &self.cfg.uvicorn_args,
            graceful_timeout_secs: self.graceful_timeout_secs(),
            cwd: self.cfg.cwd.as_deref(),
            env: &self.cfg.env,
            launch_id: &launch_id,
        };
        let started_ms = now_ms();
        let child = spawn::spawn(&spec, files)?;
        let pid = child.id() as i32;
        // Our unreaped child cannot be replaced under its PID: these reads are safe.
        let pidfd =
            Arc::new(PidFd::open(pid).map_err(|e| Error::os("opening a pidfd for the server", e))?);
        let start_ticks = platform::proc_info(pid).map(|i| i.start_ticks).unwrap_or(0);
        let identity = Identity {
            pid,
            start_ticks,
            boot_id: platform::boot_id().cloned().unwrap_or_default(),
            launch_id,
            host: self.cfg.host.clone(),
            port: self.cfg.port,
            app_path: self.cfg.app_path.clone(),
            started_ms,
            log_dir: if redirect_output {
                logs.stdout
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
        };
        *self.launched.lock() = Some(Launched {
            child,
            pidfd: pidfd.clone(),
            identity: identity.clone(),
            exit: None,
        });

        if let Err(e) = record::write(&self.paths, &identity) {
            self.abort_launch(false, tick);
            return Err(e);
        }
        match self.wait_ready(&pidfd, &logs, err_offset, tick) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort_launch(matches!(e, Error::Interrupted), &mut || Ok(()));
                Err(e)
            }
        }
    }

    /// Stops a half-started server and removes its record. After Ctrl-C it
    /// gets no grace period: it was never serving, and the user is waiting.
    fn abort_launch(&self, interrupted: bool, tick: Tick<'_>) {
        let grace = if interrupted {
            Duration::ZERO
        } else {
            self.cfg.stop_timeout
        };
        let _ = self.stop_launched(grace, tick);
    }

    fn stderr_tail(logs: &LogPaths, offset: Option<u64>) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let offset = offset?;
        let mut f = std::fs::File::open(&logs.stderr).ok()?;
        let len = f.metadata().ok()?.len();
        let from = offset.max(len.saturating_sub(8192));
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut buf = Vec::new();
        f.take(8192).read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        (!tail.trim().is_empty()).then_some(tail)
    }

    /// Whether a socket of our server's process group listens on the port.
    fn our_group_listens(&self, leader: i32) -> bool {
        match platform::DiagSocket::new() {
            Ok(mut diag) => self.our_group_listens_with(&mut diag, leader),
            Err(_) => false,
        }
    }

    /// `our_group_listens` on a kept sock_diag socket (the readiness loop).
    fn our_group_listens_with(&self, diag: &mut platform::DiagSocket, leader: i32) -> bool {
        let v4 = self.addrs.iter().any(|a| a.is_ipv4());
        let v6 = self.addrs.iter().any(|a| a.is_ipv6());
        let Ok(ls) = diag.listeners(self.cfg.port, v4, v6) else {
            return false;
        };
        if ls.is_empty() {
            return false;
        }
        let mut pids = vec![leader];
        pids.extend(platform::descendants(leader));
        pids.into_iter().any(|p| {
            let inodes = platform::socket_inodes(p);
            ls.iter().any(|l| inodes.contains(&l.inode))
        })
    }

    fn wait_ready(
        &self,
        pidfd: &Arc<PidFd>,
        logs: &LogPaths,
        err_offset: Option<u64>,
        tick: Tick<'_>,
    ) -> Result<()> {
        let start = Instant::now();
        let deadline = start + self.cfg.start_timeout;
        let mut last_tick = start;
        let mut diag =
            platform::DiagSocket::new().map_err(|e| Error::os("opening a sock_diag socket", e))?;
        loop {
            let exited = pidfd
                .wait_exit(READY_STEP)
                .map_err(|e| Error::os("waiting for the server", e))?;
            if exited {
                let code = self.launched.lock().as_mut().map(Launched::reap);
                let tail = Self::stderr_tail(logs, err_offset);
                let mut message = format!(
                    "Failed to start {} server: uvicorn exited with code {} before listening on {}",
                    self.cfg.name,
                    code.map_or("unknown".to_owned(), |c| c.to_string()),
                    port::format_addr(self.addrs[0], self.cfg.port),
                );
                match &tail {
                    Some(t) => {
                        // The last line is usually the exception: put it first.
                        let last = t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                        message.push_str(&format!(": {}\n--- end of its stderr ---\n{t}", last.trim()));
                    }
                    None if err_offset.is_none() => {
                        message.push_str(" (its output went to the terminal; start(redirect_output=True) captures it)")
                    }
                    None => {}
                }
                return Err(Error::StartFailed {
                    message,
                    exit_code: code,
                    stderr_tail: tail,
                });
            }
            if self.our_group_listens_with(&mut diag, pidfd.pid()) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = Self::stderr_tail(logs, err_offset);
                let message = format!(
                    "Failed to start {} server: not listening on port {} after {:.1} s; it was stopped",
                    self.cfg.name,
                    self.cfg.port,
                    self.cfg.start_timeout.as_secs_f64()
                );
                return Err(Error::StartTimeout {
                    message,
                    stderr_tail: tail,
                });
            }
            if now - last_tick >= TICK_EVERY {
                last_tick = now;
                tick()?;
            }
        }
    }

    // ---- stop -------------------------------------------------------------------

    /// Stops our launched child (if any) and forgets it. Caller holds the lock.
    fn stop_launched(&self, grace: Duration, tick: Tick<'_>) -> Result<()> {
        let Some((pidfd, identity, _)) = self.own_child() else {
            return Ok(());
        };
        let result = self.terminate_server(pidfd.clone(), Some(&identity), grace, tick);
        // Reap: the pidfd said it exited, so this does not block for long.
        let mut guard = self.launched.lock();
        if let Some(l) = guard.as_mut() {
            if pidfd.has_exited() || result.is_ok() {
                l.reap();
            }
            if l.exit.is_some() {
                *guard = None;
            }
        }
        drop(guard);
        record::remove_if_names(&self.paths, identity.pid, self.pid_max);
        result
    }

    fn terminate_server(
        &self,
        leader: Arc<PidFd>,
        identity: Option<&Identity>,
        grace: Duration,
        tick: Tick<'_>,
    ) -> Result<()> {
        let mut victims = Victims::default();
        victims.add_group(leader.clone());
        let launch = identity.map(|i| (i.launch_id.clone(), i.start_ticks));
        let mut sweep = |v: &mut Victims| {
            if let Some((id, since)) = &launch {
                for p in terminate::marked_processes(id, *since) {
                    v.add(p);
                }
            }
        };
        let all_gone = victims.terminate(grace, &mut sweep, tick)?;
        if !all_gone {
            return Err(Error::StopFailed(format!(
                "Failed to stop {} server: some of its processes survived SIGKILL",
                self.cfg.name
            )));
        }
        // Confirm the port is released: a socket still listening there from
        // a process of this launch (one that appeared during the stop) is
        // stopped too. Anyone else's listener is not ours to touch.
        if let Some((id, _)) = &launch {
            let listeners = self.conflicting_listeners()?;
            if !listeners.is_empty() {
                let mut late = Victims::default();
                for h in port::holders_of(&listeners, &[]) {
                    if platform::environ_has(h.pid, spawn::LAUNCH_ENV, id) {
                        late.add(h.pid);
                    }
                }
                if !late.members.is_empty()
                    && !late.terminate(self.cfg.stop_timeout, &mut |_| {}, tick)?
                {
                    return Err(Error::StopFailed(format!(
                        "Failed to stop {}: port {} is still held by its processes",
                        self.cfg.name, self.cfg.port
                    )));
                }
            }
        }
        Ok(())
    }

    /// Stops our server (its whole process group), idempotently and quietly
    /// when nothing runs; removes the record only if it names this server.
    pub fn stop(&self, tick: Tick<'_>) -> Result<()> {
        let _lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        let own_pid = self.own_child().map(|(fd, _, _)| fd.pid());
        self.stop_launched(self.cfg.stop_timeout, tick)?;
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
            }
        }
        self.stop_recorded_orphans(tick)?;
        self.remove_stale_record();
        Ok(())
    }

    // ---- record helpers -----------------------------------------------------------

    /// `_read_pid()`.
    pub fn read_pid(&self) -> Option<i32> {
        record::read_pid(&self.paths, self.pid_max)
    }

    /// `_write_pid()`: records our launched child, if any.
    pub fn write_pid(&self) -> Result<bool> {
        let id = self.launched.lock().as_ref().map(|l| l.identity.clone());
        match id {
            Some(id) => record::write(&self.paths, &id).map(|()| true),
            None => Ok(false),
        }
    }

    /// `_cleanup_pid()`: removes the record.
    pub fn cleanup_pid(&self) {
        record::remove(&self.paths);
    }

    /// The PID of our launched child, if any.
    pub fn child_pid(&self) -> Option<i32> {
        self.launched.lock().as_ref().map(|l| l.identity.pid)
    }

    /// Reaps our child without blocking: `None` while it runs.
    pub fn child_poll(&self) -> Option<i32> {
        self.launched.lock().as_mut().and_then(|l| l.poll())
    }

    /// Forgets our child (`_process = None`); it keeps running, tracked by the record.
    pub fn forget_child(&self) {
        *self.launched.lock() = None;
    }

    // ---- status -------------------------------------------------------------------

    /// A snapshot of the server's state and resources.
    pub fn status(&self) -> Status {
        let found = self
            .find()
            .filter(|f| f.info.is_alive() && !f.pidfd.has_exited());
        let child_exit = self.launched.lock().as_mut().and_then(|l| l.poll());
        let Some(f) = found else {
            let recorded = self.read_pid();
            let dead = recorded.is_some() || child_exit.is_some();
            return Status {
                pid: recorded,
                state: if dead { State::Dead } else { State::Stopped },
                started_at: None,
                uptime: None,
                rss_bytes: None,
                cpu_percent: None,
                workers: Vec::new(),
                exit_code: child_exit,
                stdout_log: None,
                stderr_log: None,
            };
        };
        let descendants = platform::descendants(f.pid);
        // Workers are the descendants that serve; multiprocessing's resource
        // tracker is a helper, counted in memory and CPU but not as a worker.
        let workers: Vec<i32> = descendants
            .iter()
            .copied()
            .filter(|p| {
                !platform::cmdline(*p).is_some_and(|c| {
                    c.iter()
                        .any(|a| a.contains("multiprocessing.resource_tracker"))
                })
            })
            .collect();
        let mut rss = f.info.rss_bytes;
        let mut cpu = f.info.cpu_ticks;
        for w in &descendants {
            if let Some(i) = platform::proc_info(*w) {
                rss += i.rss_bytes;
                cpu += i.cpu_ticks;
            }
        }
        let hz = platform::ticks_per_second().max(1) as f64;
        let age = platform::uptime_secs().map(|up| (up - f.info.start_ticks as f64 / hz).max(0.0));
        let started_at = match (&f.identity, age) {
            (Some(id), _) if id.started_ms > 0 => Some(id.started_ms as f64 / 1000.0),
            (_, Some(a)) => Some(now_ms() as f64 / 1000.0 - a),
            _ => None,
        };
        let cpu_percent = age
            .filter(|a| *a > 0.0)
            .map(|a| 100.0 * (cpu as f64 / hz) / a);
        let (stdout_log, stderr_log) = match f.identity.as_ref().map(|i| i.log_dir.as_str()) {
            Some(d) if !d.is_empty() => {
                let lp = LogPaths::new(Path::new(d), &self.cfg.name);
                (Some(lp.stdout), Some(lp.stderr))
            }
            _ => (None, None),
        };
        let state = if self.our_group_listens(f.pid) {
            State::Running
        } else {
            State::Starting
        };
        Status {
            pid: Some(f.pid),
            state,
            started_at,
            uptime: age,
            rss_bytes: Some(rss),
            cpu_percent,
            workers,
            exit_code: None,
            stdout_log,
            stderr_log,
        }
    }
}
