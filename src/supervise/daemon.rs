//! The supervisor's driver: the I/O around the pure `machine`. It sleeps
//! in one `poll()` on the server's pidfd and the control pipe (signal
//! numbers written by Python's wakeup fd: SIGTERM/SIGINT stop, SIGHUP
//! replaces the run), with a timeout only for what is periodic by nature
//! (the machine's `deadline`: the next health probe, the next memory
//! reading, the end of a backoff wait), feeds what happened to the
//! machine and performs the actions it returns on a `Supervised` server.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::platform::{self, PidFd};

pub use super::channels::Events;
use super::channels::{Ask, Control};
use super::machine::{Action, Event, Machine};
use super::state::{self, SupState};
use super::Supervised;

/// Supervises `server` until it is stopped, the policy is done with it, or
/// it gives up. `attach`: a running server of ours to supervise instead of
/// starting one. Returns an exit status for the process that supervised:
/// 0 after a stop, the last run's status (as a shell reports it) when the
/// policy was done with it, 1 after giving up; the error if the first run
/// never became ready (nothing is left running then).
pub fn run<S: Supervised + Sync + ?Sized>(
    server: &S,
    redirect_output: bool,
    attach: Option<i32>,
    control_fd: RawFd,
    ev: Events,
) -> crate::Result<i32> {
    // SAFETY: as in `Control::take`. Reads must never block the loop.
    let _ = rustix::fs::fcntl_setfl(
        unsafe { BorrowedFd::borrow_raw(control_fd) },
        rustix::fs::OFlags::NONBLOCK,
    );
    let mut me = SupState::for_self();
    if let Some(pid) = attach {
        // Taking over from a supervisor that died (SIGKILL): the run it
        // watched is this one, so its count and how the last run ended go on.
        if let Some(old) = state::read(server.paths())
            .filter(|o| o.server_pid == pid && o.pid != me.pid && !o.is_alive())
        {
            me.restarts = old.restarts;
            me.last_exit = old.last_exit;
            me.reason = old.reason;
        }
    }
    // ---- logs (issue 20): this process writes the server's output; the
    // guard drains the pipes when supervision ends.
    let _logs = redirect_output.then(|| {
        let sup = &server.settings().supervision;
        super::logwriter::begin(&server.log_paths(), sup.into(), ev.log_sink())
    });
    let mut d = Driver {
        server,
        ctl: Control(control_fd),
        ev,
        redirect_output,
        own_pid: me.pid,
        run: None,
        stop_asked: false,
        stop_sent: false,
        error: None,
    };
    let mut m = Machine::new(server.settings(), me, seed());
    let mut pending = VecDeque::from([Event::Begin { attach }]);
    loop {
        let event = match pending.pop_front() {
            Some(e) => e,
            None => d.wait(&m),
        };
        for action in m.step(Instant::now(), event) {
            match d.act(action) {
                Flow::Go => {}
                Flow::Then(e) => {
                    let interrupted = e == Event::Interrupted;
                    pending.push_back(e);
                    // A stop asked for during an operation that finished
                    // anyway: it comes next (once).
                    if d.stop_asked && !std::mem::replace(&mut d.stop_sent, true) && !interrupted {
                        pending.push_back(Event::AskStop);
                    }
                }
                Flow::Exit(code) => return Ok(code),
                Flow::Fail => {
                    return Err(d.error.take().unwrap_or(Error::Interrupted));
                }
            }
        }
    }
}

/// What came of an action.
enum Flow {
    Go,
    Then(Event),
    Exit(i32),
    Fail,
}

/// The driver's side: the server, the pipes, the run's pidfd.
struct Driver<'a, S: Supervised + ?Sized> {
    server: &'a S,
    ctl: Control,
    ev: Events,
    redirect_output: bool,
    own_pid: i32,
    run: Option<Arc<PidFd>>,
    /// A stop was read from the control pipe during a launch or reload.
    stop_asked: bool,
    stop_sent: bool,
    /// Why the first launch failed (returned by `run`).
    error: Option<Error>,
}

impl<S: Supervised + Sync + ?Sized> Driver<'_, S> {
    /// Waits for the run's exit, the control pipe or the machine's deadline.
    fn wait(&mut self, m: &Machine) -> Event {
        let mut timeout = m.deadline().map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        let init = self.own_pid == 1;
        if init {
            timeout = timeout.min(Duration::from_secs(1)); // orphans to reap
        }
        let run = self.run.clone().filter(|_| m.has_run());
        let (ctl_ready, exited) = self.ctl.wait(run.as_deref(), timeout);
        if init {
            // `run` as a container's PID 1: orphans become our children.
            platform::reap_orphans(run.as_ref().map_or(0, |r| r.pid()));
        }
        let ask = if ctl_ready {
            self.ctl.take()
        } else {
            Ask::Nothing
        };
        match (ask, run) {
            (Ask::Stop, _) => Event::AskStop,
            (_, Some(r)) if exited => Event::RunExited {
                code: self.server.exit_code(&r),
            },
            (Ask::Replace, _) => Event::AskReplace,
            _ => Event::Timer,
        }
    }

    fn act(&mut self, action: Action) -> Flow {
        let s = self.server;
        match action {
            Action::WriteState(st) => {
                let _ = state::write(s.paths(), &st);
            }
            Action::RemoveState => {
                // Supervision ends: whoever sees the state gone finds the port free.
                s.release_socket();
                state::remove_if_names(s.paths(), self.own_pid);
            }
            Action::Say(level, msg) => self.ev.say(level, &msg),
            Action::Report(event) => self.ev.report(&event),
            Action::ReportReady { pid } => self.ev.report(&crate::protocol::events::Event::Ready {
                server_pid: pid,
                port: s.port(),
            }),
            Action::Launch | Action::Attach(_) | Action::Reload { .. } => {
                return Flow::Then(self.start(action))
            }
            Action::StopRun { grace } => {
                let Some(r) = self.run.clone() else {
                    return Flow::Then(Event::RunStopped {
                        code: None,
                        error: None,
                    });
                };
                let (result, code) = s.stop_run(&r, grace, &mut || Ok(()));
                let error = result.err().map(|e| e.to_string());
                return Flow::Then(Event::RunStopped { code, error });
            }
            Action::EndRun { exit } => {
                if let Some(r) = self.run.take() {
                    s.end_run(&r, exit);
                }
            }
            Action::NoteFinal { end, restarts } => s.note_final(end, restarts),
            Action::Probe => {
                let settings = s.settings();
                let result = match &settings.supervision.health {
                    Some(h) => s.probe(h),
                    None => Ok(()),
                };
                return Flow::Then(Event::Health(result));
            }
            Action::ReadMemory => {
                let used = self.run.as_ref().map_or(0, |r| s.memory(r.pid()));
                return Flow::Then(Event::Memory(used));
            }
            Action::Exit(code) => return Flow::Exit(code),
            Action::Fail => return Flow::Fail,
        }
        Flow::Go
    }

    /// Launches, attaches or reloads; what came of it.
    fn start(&mut self, action: Action) -> Event {
        let s = self.server;
        let (ctl, stop_asked) = (&self.ctl, &mut self.stop_asked);
        let mut tick = || check(ctl, stop_asked);
        let (result, reload) = match action {
            Action::Attach(pid) => {
                let found = s.attach(pid).ok_or_else(|| Error::NotRunning {
                    name: s.settings().name,
                });
                (found, false)
            }
            Action::Reload { grace, confirm, .. } if confirm.is_empty() => {
                let r = s.reload(self.redirect_output, grace, &mut || true, &mut tick);
                (r.map(|p| p.expect("confirmed")), true)
            }
            Action::Reload {
                grace,
                confirm,
                counted,
            } => return self.reload_confirmed(grace, &confirm, counted.as_ref()),
            _ => (s.launch(self.redirect_output, &mut tick), false),
        };
        self.ev.warm_notes();
        match result {
            Ok(pidfd) => {
                let pid = pidfd.pid();
                self.run = Some(pidfd);
                if reload {
                    Event::ReloadDone { pid }
                } else {
                    Event::RunReady { pid }
                }
            }
            Err(Error::Interrupted) => Event::Interrupted,
            Err(e) => {
                let why = first_line(&e.to_string()).to_owned();
                let exit = match &e {
                    Error::StartFailed { exit_code, .. } => *exit_code,
                    _ => None,
                };
                self.error = Some(e);
                if reload {
                    Event::ReloadFailed { why }
                } else {
                    Event::StartFailed { why, exit }
                }
            }
        }
    }
    /// A replacement that the health checks still due (`confirm`) decide:
    /// the new generation starts at once beside the failing one and takes
    /// over only if every one of them fails; else it is dropped.
    fn reload_confirmed(
        &mut self,
        grace: Duration,
        confirm: &[Instant],
        counted: Option<&SupState>,
    ) -> Event {
        let s = self.server;
        let (ctl, stop_asked) = (&self.ctl, &mut self.stop_asked);
        let mut tick = || check(ctl, stop_asked);
        let redirect = self.redirect_output;
        let done = std::sync::atomic::AtomicBool::new(false);
        let (result, all_failed) = std::thread::scope(|sc| {
            let mut checks = Some(sc.spawn(|| probe_at(s, confirm, &done)));
            let mut verdict = None;
            let result = s.reload(
                redirect,
                grace,
                &mut || {
                    let all_failed = joined(&mut checks);
                    verdict = Some(all_failed);
                    if let Some(st) = counted.filter(|_| all_failed) {
                        // Counted before the new generation takes over.
                        let _ = state::write(s.paths(), st);
                    }
                    all_failed
                },
                &mut tick,
            );
            // The new generation failed or a stop came: the checks
            // still say whether the old one answers.
            done.store(
                matches!(result, Err(Error::Interrupted)),
                std::sync::atomic::Ordering::Relaxed,
            );
            let all_failed = verdict.unwrap_or_else(|| joined(&mut checks));
            (result, all_failed)
        });
        self.ev.warm_notes();
        match result {
            Ok(Some(pidfd)) => {
                let pid = pidfd.pid();
                self.run = Some(pidfd);
                Event::ReloadDone { pid }
            }
            Ok(None) => Event::ReloadAbandoned { failed: None },
            Err(Error::Interrupted) => Event::Interrupted,
            Err(e) => {
                let why = first_line(&e.to_string()).to_owned();
                self.error = Some(e);
                if all_failed {
                    Event::ReloadFailed { why }
                } else {
                    Event::ReloadAbandoned { failed: Some(why) }
                }
            }
        }
    }
}

/// The checks' verdict (true: every one failed), once.
fn joined(checks: &mut Option<std::thread::ScopedJoinHandle<'_, bool>>) -> bool {
    checks.take().is_none_or(|c| c.join().unwrap_or(true))
}

/// Probes the run's health at each instant of `at` (a `Reload`'s
/// `confirm`); true when every probe failed, false at the first that
/// answered. `done`: give up waiting (a stop came), counted as failed.
fn probe_at<S: Supervised + ?Sized>(
    s: &S,
    at: &[Instant],
    done: &std::sync::atomic::AtomicBool,
) -> bool {
    let Some(h) = s.settings().supervision.health else {
        return true;
    };
    for t in at {
        while Instant::now() < *t {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                return true;
            }
            let left = t.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        if s.probe(&h).is_ok() {
            return false;
        }
    }
    true
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The launch wait's tick: a stop asked for meanwhile interrupts it.
fn check(ctl: &Control, stop_asked: &mut bool) -> crate::Result<()> {
    if ctl.take() == Ask::Stop {
        *stop_asked = true;
    }
    if *stop_asked {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// A seed for the backoff's jitter.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    platform::random_bytes(&mut b);
    u64::from_le_bytes(b)
}
