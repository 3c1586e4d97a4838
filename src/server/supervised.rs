//! A supervised server, from both sides. The caller's side: `start()`
//! hands the launch to a supervisor process (`supervise::client`) and
//! waits for its report, `stop()` ends supervision before anything else,
//! and a server whose supervisor died gets a new one attached. The
//! supervisor's side: the steps its loop (`supervise::daemon`) takes on
//! this server: launch a run, reap it, replace it, note how it ended.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform::PidFd;
use crate::record::{self, End, Identity};
use crate::supervise::{client, state, wire::Order};
use crate::terminate::{self, Victims};

use super::{Server, Tick};

/// Where the running extension lives (set when Python imports it): the
/// supervisor process loads the same file.
pub static EXTENSION: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The supervisor this manager spawned: its PID and the read end of its
/// events pipe, until Python's logging thread takes them.
#[derive(Debug)]
pub struct SupervisorLink {
    pub pid: i32,
    pub events: File,
}

impl Server {
    // ---- the caller's side ----------------------------------------------------

    /// Spawns a supervisor that starts the server (or, with `attach`, takes
    /// over the running one) and waits for its report. Caller holds the lock.
    pub(super) fn start_supervised(
        &self,
        redirect_output: bool,
        attach: Option<i32>,
        tick: Tick<'_>,
    ) -> Result<()> {
        let extension = EXTENSION.get().ok_or_else(|| Error::Supervisor {
            name: self.cfg.name.clone(),
            message:
                "supervision needs the Python extension (a restart policy was set outside Python)"
                    .into(),
        })?;
        let held = if self.cfg.hold_socket && attach.is_none() {
            Some(self.held_socket()?)
        } else {
            None
        };
        let mut cfg = self.cfg.clone();
        cfg.port = self.port();
        // The supervisor may run in another directory one day: absolute paths.
        cfg.log_dir = self
            .log_paths()
            .stdout
            .parent()
            .map(Into::into)
            .unwrap_or_default();
        if let Some(d) = &cfg.cwd {
            cfg.cwd = Some(std::env::current_dir().unwrap_or_default().join(d));
        }
        // The supervisor and its server outlive this process: they keep
        // nothing of ours, so their output goes to the log files whatever
        // `redirect_output` says (a caller whose output is captured by a
        // pipe must not wait for them: docs/OWNER.md).
        let _ = redirect_output;
        let lifeline = if cfg.stop_with_caller {
            Some(crate::lifeline::read_end()?)
        } else {
            None
        };
        let order = Order {
            cfg,
            redirect_output: true,
            attach,
            socket_fd: held.is_some(),
            lifeline: lifeline.is_some(),
        };
        let socket: Option<OwnedFd> = match &held {
            Some(h) => Some(
                rustix::io::fcntl_dupfd_cloexec(
                    // SAFETY: the held socket outlives this call.
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(h.raw_fd()) },
                    10,
                )
                .map_err(|e| Error::os("duplicating the held socket", e.into()))?,
            ),
            None => None,
        };
        let log = {
            let dir = &order.cfg.log_dir;
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::path("cannot create the log directory", dir, e))?;
            let path = dir.join(format!("{}_supervisor.log", self.cfg.name));
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| Error::path("cannot open the log file", &path, e))?
        };
        let spawned = client::spawn(&order, extension, socket.as_ref(), lifeline, log);
        drop(socket);
        if held.is_some() {
            // The supervisor holds the socket now; our copy must not keep
            // the port taken after supervision ends (gave up, stopped).
            self.handed_port
                .store(self.port(), std::sync::atomic::Ordering::Relaxed);
            *self.held.lock() = None;
        }
        let mut sp = spawned?;
        let deadline = Instant::now()
            + self.cfg.start_timeout
            + self.cfg.stop_timeout
            + Duration::from_secs(10);
        client::await_ready(&mut sp, &self.cfg.name, deadline, tick)?;
        *self.supervisor.lock() = Some(SupervisorLink {
            pid: sp.pidfd.pid(),
            events: sp.events,
        });
        Ok(())
    }

    /// The events pipe of the supervisor this manager spawned, for the
    /// caller's logger; taken once.
    pub fn take_supervisor_link(&self) -> Option<SupervisorLink> {
        self.supervisor.lock().take()
    }

    /// Ends supervision (any process's supervisor of this name): it stops
    /// its server and exits. One that does not exit in time is killed and
    /// the caller's stop goes on with what is left. Caller holds the lock.
    pub(super) fn end_supervision(&self, tick: Tick<'_>) -> Result<()> {
        let Some(sup) = state::live(&self.paths) else {
            return Ok(());
        };
        let Some(fd) = sup.pin() else {
            return Ok(());
        };
        let limit = self.cfg.stop_timeout * 2 + Duration::from_secs(5);
        if !client::stop(&fd, limit, tick)? {
            state::remove_if_names(&self.paths, sup.pid);
        }
        Ok(())
    }

    /// Supervises the server from this very process (`upsonic-server run`
    /// with a restart policy): the checks of `start()`, then the
    /// supervisor's loop until a stop (SIGTERM/SIGINT written to
    /// `control_fd`), the policy's end or giving up. Returns the exit status.
    pub fn supervise_here(
        &self,
        redirect_output: bool,
        force: bool,
        control_fd: i32,
        events: OwnedFd,
        tick: Tick<'_>,
    ) -> Result<i32> {
        {
            let lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
            if let Some(s) = state::live(&self.paths) {
                return Err(Error::Supervisor {
                    name: self.cfg.name.clone(),
                    message: format!("it is supervised already, by process {}", s.pid),
                });
            }
            if self
                .find()
                .is_some_and(|f| f.info.is_alive() && !f.pidfd.has_exited())
            {
                return Err(Error::Supervisor {
                    name: self.cfg.name.clone(),
                    message: "it runs already; stop it first (or `start` it with a restart policy to attach a supervisor)".into(),
                });
            }
            self.stop_recorded_orphans(tick)?;
            self.remove_stale_record();
            if !(self.holds_socket() || self.cfg.hold_socket && self.cfg.port == 0) {
                self.clear_port_for_start(force, tick)?;
            }
            // Claimed before the lock goes: a start elsewhere now sees us.
            state::write(&self.paths, &state::SupState::for_self())?;
            drop(lock);
        }
        let ev = crate::supervise::daemon::Events::new(Some(events), None);
        let code = crate::supervise::daemon::run(self, redirect_output, None, control_fd, ev);
        // Supervision is over and nothing of it is recorded any more: the
        // name's lock file goes too, as after `stop()` (`run` left it).
        if let Ok(Some(lock)) = crate::lock::try_acquire(&self.paths.lock_file) {
            if !self.paths.pid_file.exists() && state::read(&self.paths).is_none() {
                lock.release_and_remove();
            }
        }
        code
    }

    /// `restart()` of a supervised server: its supervisor replaces the run
    /// (SIGHUP), keeping the socket it holds; waits for the new run. False
    /// when no supervisor runs.
    pub(super) fn replace_supervised(&self, tick: Tick<'_>) -> Result<bool> {
        let Some(sup) = state::live(&self.paths) else {
            return Ok(false);
        };
        if sup.pid == crate::platform::own_pid() {
            return Ok(false); // we are the supervisor: do it ourselves
        }
        let Some(fd) = sup.pin() else {
            return Ok(false);
        };
        if !fd.signal(libc::SIGHUP).unwrap_or(false) {
            return Ok(false);
        }
        let deadline = Instant::now() + self.cfg.start_timeout + self.cfg.stop_timeout * 2;
        loop {
            let now = state::read(&self.paths);
            match now {
                Some(s) if s.pid == sup.pid => {
                    if s.replaced > sup.replaced && !s.replace_error.is_empty() {
                        // The new generation failed; the supervisor kept
                        // the old one serving.
                        return Err(Error::Supervisor {
                            name: self.cfg.name.clone(),
                            message: format!(
                                "not reloaded, the old generation (pid {}) still serves: {}",
                                s.server_pid, s.replace_error
                            ),
                        });
                    }
                    let replaced = s.server_pid != sup.server_pid && s.server_pid != 0;
                    if replaced && s.phase == state::Phase::Running {
                        return Ok(true);
                    }
                }
                // The supervisor ended (its new run failed and it gave up).
                _ => {
                    return Err(Error::Supervisor {
                        name: self.cfg.name.clone(),
                        message: "its supervisor ended during the restart; see status()".into(),
                    })
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Supervisor {
                    name: self.cfg.name.clone(),
                    message: "the restarted server did not become ready in time; see status()"
                        .into(),
                });
            }
            if fd.wait_exit(Duration::from_millis(10)).unwrap_or(false) {
                continue; // re-read: it may have written its end first
            }
            tick()?;
        }
    }

    /// A live supervisor of this name runs (serving, starting or between runs).
    pub fn supervised_now(&self) -> bool {
        state::live(&self.paths).is_some()
    }

    /// Restarts counted by this name's supervisor (live, or gone without
    /// cleaning up), so a run noted after it died keeps the count.
    pub(super) fn supervisor_restarts(&self) -> u32 {
        state::read(&self.paths).map_or(0, |s| s.restarts)
    }

    /// Removes the state file of a supervisor that died without removing it
    /// (SIGKILL): it tracks nothing, and a name listed only by it could be
    /// neither stopped nor forgotten.
    pub(super) fn remove_dead_supervisor_state(&self) {
        if let Some(s) = state::read(&self.paths).filter(|s| !s.is_alive()) {
            state::remove_if_names(&self.paths, s.pid);
        }
    }

    // ---- the supervisor's side ------------------------------------------------------

    /// Takes the held socket the caller handed over as descriptor 3.
    pub fn adopt_inherited_socket(&self, fd: OwnedFd) -> Result<()> {
        let port = crate::platform::local_port(&fd)
            .map_err(|e| Error::os("reading the handed-over socket's port", e))?;
        self.hold(fd, port);
        Ok(())
    }

    /// Replaces the run with a new generation on the held socket, the old
    /// one stopping once the new one is ready (`reload`); the new pidfd.
    pub fn supervisor_reload(
        &self,
        redirect_output: bool,
        grace: Duration,
        confirm: &mut dyn FnMut() -> bool,
        tick: Tick<'_>,
    ) -> Result<Option<Arc<PidFd>>> {
        if !self.reload_with_grace(redirect_output, grace, confirm, tick)? {
            return Ok(None);
        }
        self.own_child()
            .map(|(fd, _, _)| Some(fd))
            .ok_or_else(|| Error::NotRunning {
                name: self.cfg.name.clone(),
            })
    }

    /// Launches a run and waits until it is ready; its pidfd.
    pub fn supervisor_launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<Arc<PidFd>> {
        self.launch(redirect_output, tick)?;
        record::remove_last(&self.paths);
        self.own_child()
            .map(|(fd, _, _)| fd)
            .ok_or_else(|| Error::NotRunning {
                name: self.cfg.name.clone(),
            })
    }

    /// Takes over the running server `pid` (its supervisor died).
    pub fn attach_run(&self, pid: i32) -> Option<Arc<PidFd>> {
        let found = self.find_recorded().filter(|f| f.pid == pid)?;
        if self.cfg.hold_socket && !self.holds_socket() {
            let port = found.identity.as_ref().map_or(0, |i| i.port);
            self.adopt_socket(&found.pidfd, port).ok()?;
        }
        Some(found.pidfd)
    }

    /// The exit code of a run that ended: known when it was our child.
    pub fn run_exit_code(&self, pidfd: &PidFd) -> Option<i32> {
        let mut guard = self.launched.lock();
        let l = guard.as_mut().filter(|l| l.pidfd.pid() == pidfd.pid())?;
        Some(l.reap())
    }

    /// Stops a run (its whole group, marked stragglers too); with its exit
    /// code when it was our child.
    pub fn stop_run(
        &self,
        pidfd: &Arc<PidFd>,
        grace: Duration,
        tick: Tick<'_>,
    ) -> (Result<()>, Option<i32>) {
        let identity = self.run_identity(pidfd);
        let result = self
            .terminate_server(pidfd.clone(), identity.as_ref(), grace, tick)
            .map(|_| ());
        let code = if pidfd.has_exited() {
            self.run_exit_code(pidfd)
        } else {
            None
        };
        if self
            .own_child()
            .is_some_and(|(fd, _, _)| fd.pid() == pidfd.pid())
        {
            self.settle_child(pidfd, result.is_ok());
        }
        (result, code)
    }

    fn run_identity(&self, pidfd: &PidFd) -> Option<Identity> {
        if let Some((fd, id, _)) = self.own_child() {
            if fd.pid() == pidfd.pid() {
                return Some(id);
            }
        }
        record::read_identity(&self.paths).filter(|id| id.pid == pidfd.pid())
    }

    /// After a run ended: whatever of its launch outlived it (workers of a
    /// killed master) is stopped, how it ended is kept, its record goes.
    pub fn end_run(&self, pidfd: &PidFd, exit: Option<i32>) {
        // Its last lines in the logs first (a partial one completed).
        crate::supervise::logwriter::settle();
        let identity = self.run_identity(pidfd);
        if let Some(id) = &identity {
            let mut victims = Victims::default();
            for p in terminate::marked_processes(&id.launch_id, id.start_ticks) {
                victims.add(p);
            }
            if !victims.members.is_empty() {
                let _ = victims.terminate(self.cfg.stop_timeout, &mut |_| {}, &mut || Ok(()));
            }
            self.note_end(id, exit.map_or(End::Died, End::Exited));
        }
        record::remove_if_names(&self.paths, pidfd.pid(), self.pid_max);
        self.forget_exited_child();
    }

    /// Rewrites how the last run ended once supervision is over.
    pub fn note_final(&self, end: End, restarts: u32) {
        if let Some(mut last) = record::read_last(&self.paths) {
            last.end = end;
            last.restarts = restarts;
            last.ended_ms = super::launch::now_ms();
            let _ = record::write_last(&self.paths, &last);
        }
    }

    /// Resident memory of a run and all its descendants (its workers).
    pub fn tree_rss(&self, pid: i32) -> u64 {
        super::status::tree_usage(pid).map_or(0, |(rss, _)| rss)
    }

    /// The first address the host resolves to.
    pub fn addr(&self) -> std::net::IpAddr {
        self.addrs[0]
    }
}

impl crate::supervise::Supervised for Server {
    fn log_paths(&self) -> crate::spawn::LogPaths {
        Server::log_paths(self)
    }

    fn settings(&self) -> crate::supervise::Settings {
        crate::supervise::Settings {
            name: self.cfg.name.clone(),
            supervision: self.cfg.supervision.clone(),
            hold_socket: self.cfg.hold_socket,
            stop_timeout: self.cfg.stop_timeout,
        }
    }
    fn paths(&self) -> &record::Paths {
        Server::paths(self)
    }
    fn port(&self) -> u16 {
        Server::port(self)
    }
    fn launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<Arc<PidFd>> {
        self.supervisor_launch(redirect_output, tick)
    }
    fn attach(&self, pid: i32) -> Option<Arc<PidFd>> {
        self.attach_run(pid)
    }
    fn reload(
        &self,
        redirect_output: bool,
        grace: Duration,
        confirm: &mut dyn FnMut() -> bool,
        tick: Tick<'_>,
    ) -> Result<Option<Arc<PidFd>>> {
        self.supervisor_reload(redirect_output, grace, confirm, tick)
    }
    fn stop_run(
        &self,
        run: &Arc<PidFd>,
        grace: Duration,
        tick: Tick<'_>,
    ) -> (Result<()>, Option<i32>) {
        Server::stop_run(self, run, grace, tick)
    }
    fn end_run(&self, run: &PidFd, exit: Option<i32>) {
        Server::end_run(self, run, exit)
    }
    fn exit_code(&self, run: &PidFd) -> Option<i32> {
        self.run_exit_code(run)
    }
    fn note_final(&self, end: End, restarts: u32) {
        Server::note_final(self, end, restarts)
    }
    fn memory(&self, pid: i32) -> u64 {
        self.tree_rss(pid)
    }
    fn probe(&self, check: &crate::supervise::HealthCheck) -> std::result::Result<(), String> {
        let to = crate::supervise::health::target(self.addr(), Server::port(self));
        let tls = self.cfg.speaks().tls;
        crate::supervise::health::probe(to, &self.cfg.host, &check.path, check.timeout, tls)
            .map(|_| ())
    }
    fn release_socket(&self) {
        Server::release_socket(self)
    }
}

/// With `stop_with_caller`: a thread that waits for end-of-file on the
/// caller's lifeline (the caller is gone, however it ended) and then asks
/// this supervisor to stop as `stop()` does, with SIGTERM (which the
/// bootstrap turns into a byte on the control pipe): the server is stopped
/// and supervision ends.
fn watch_lifeline(fd: OwnedFd) {
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    let spawned = std::thread::Builder::new()
        .name("lifeline".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match rustix::io::read(&fd, &mut buf) {
                    Ok(0) => break,
                    Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break,
                }
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGTERM);
        });
    if spawned.is_err() {
        // Without the thread the caller's end would go unnoticed: refuse
        // to outlive it silently.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGTERM);
    }
}

/// Runs as the supervisor process: reads the orders from stdin, builds
/// the server and supervises it until the end; the process exit code.
pub fn supervisor_main(control_fd: i32) -> i32 {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        return 2;
    }
    // SAFETY: the caller handed descriptor 4 to us as the events pipe; we own it now.
    let events_fd = unsafe { OwnedFd::from_raw_fd(client::EVENTS_FD) };
    // Neither it nor the socket goes to the servers we spawn by accident
    // (the socket is handed over explicitly, `spawn::HELD_FD`).
    let _ = rustix::io::fcntl_setfd(&events_fd, rustix::io::FdFlags::CLOEXEC);
    let bad = |events_fd: OwnedFd, e: Error| {
        let mut ev = crate::supervise::daemon::Events::new(Some(events_fd), None);
        ev.report_error(&e);
        1
    };
    let order = match Order::parse(&text) {
        Ok(o) => o,
        Err(msg) => {
            return bad(
                events_fd,
                Error::Supervisor {
                    name: String::new(),
                    message: msg,
                },
            );
        }
    };
    let server = match Server::new(order.cfg.clone()) {
        Ok(s) => s,
        Err(e) => return bad(events_fd, e),
    };
    if order.socket_fd {
        // SAFETY: descriptor 3 is the held socket the caller handed over.
        let fd = unsafe { OwnedFd::from_raw_fd(crate::protocol::HELD_FD) };
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        if let Err(e) = server.adopt_inherited_socket(fd) {
            return bad(events_fd, e);
        }
    }
    if order.lifeline {
        // SAFETY: the caller handed its lifeline over as this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(crate::protocol::SUPERVISOR_LIFELINE_FD) };
        watch_lifeline(fd);
    }
    // Redirected: our stderr is the supervisor log (see `client::spawn`).
    let log = if order.redirect_output {
        rustix::io::dup(std::io::stderr()).ok().map(File::from)
    } else {
        None
    };
    let ev = crate::supervise::daemon::Events::new(Some(events_fd), log);
    let reporter = ev.clone_pipe();
    match crate::supervise::daemon::run(
        &server,
        order.redirect_output,
        order.attach,
        control_fd,
        ev,
    ) {
        Ok(code) => code,
        Err(e) => {
            if let Some(fd) = reporter {
                crate::supervise::daemon::Events::new(Some(fd), None).report_error(&e);
            }
            1
        }
    }
}
