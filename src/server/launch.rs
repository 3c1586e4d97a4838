//! Launching: spawning uvicorn, recording it, and waiting until a socket of
//! its process group listens (or it exits, or the start timeout passes).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::platform::{self, PidFd};
use crate::port;
use crate::record::{self, End, Identity, SavedConfig};
use crate::spawn::{self, LaunchSpec, LogPaths};
use crate::why::{self, Report};

use super::child::{Launched, Proc};
use super::{Server, Tick};

/// How often a blocking wait gives `tick` (Ctrl-C checks) a chance to run.
const TICK_EVERY: Duration = Duration::from_millis(20);
/// The grace of a server that never became ready (see `never_ready_grace`).
const NEVER_READY_GRACE: Duration = Duration::from_secs(1);
/// One spawned generation of the server, not yet known to be ready.
pub(super) struct Generation {
    pub launched: Launched,
    pub logs: LogPaths,
    pub err_offset: Option<u64>,
    /// Where a launcher on a held socket reports readiness.
    pub ready: Option<platform::ReadySocket>,
}

/// How often readiness looks at the port table while the server starts.
const READY_STEP: Duration = Duration::from_millis(1);

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall clock, in seconds since the epoch.
pub(super) fn now_secs() -> f64 {
    now_ms() as f64 / 1000.0
}

impl Server {
    /// uvicorn's own graceful-shutdown limit, a little inside ours.
    fn graceful_timeout_secs(&self) -> Option<u64> {
        let s = self.cfg.stop_timeout.as_secs_f64();
        (s >= 2.0).then(|| ((s * 0.8).floor() as u64).max(1))
    }

    /// The configuration as recorded: what a restart from the record needs.
    /// The working directory is the one the server really starts in.
    fn saved_config(&self, redirect_output: bool) -> SavedConfig {
        let here = std::env::current_dir().unwrap_or_default();
        let cwd = match &self.cfg.cwd {
            Some(d) => here.join(d),
            None => here,
        };
        SavedConfig {
            spec: crate::spec::ServerSpec {
                cwd: Some(cwd),
                ..self.cfg.clone()
            },
            redirect_output,
        }
    }

    /// Spawns one generation of the server (our child, or forked by the
    /// warm-start preloader), without recording it or waiting for it.
    #[allow(dead_code)] // the supervisor's entry point (no Ctrl-C to check)
    pub(super) fn spawn_generation(&self, redirect_output: bool) -> Result<Generation> {
        self.spawn_generation_ticking(redirect_output, &mut || Ok(()))
    }

    /// `spawn_generation`, calling `tick` (Ctrl-C) while a warm start waits
    /// for its preloader to start.
    pub(super) fn spawn_generation_ticking(
        &self,
        redirect_output: bool,
        tick: Tick<'_>,
    ) -> Result<Generation> {
        let logs = self.log_paths();
        let (files, err_offset) = if redirect_output {
            let (o, e, off) = spawn::open_logs(&logs)?;
            // A supervisor writing the logs (issue 20) hands the run its pipes.
            let files = match crate::supervise::logwriter::stdio() {
                Some(pipes) => {
                    pipes.map_err(|e| Error::os("handing the server its log pipes", e))?
                }
                None => (o, e),
            };
            (Some(files), Some(off))
        } else {
            (None, None)
        };
        // Through the supervisor's pipes: where to write should they break.
        let mut env = self.cfg.env.clone();
        if files.is_some() && crate::supervise::logwriter::is_active() {
            env.push((
                crate::protocol::LOG_OUT_ENV.to_owned(),
                logs.stdout.display().to_string(),
            ));
            env.push((
                crate::protocol::LOG_ERR_ENV.to_owned(),
                logs.stderr.display().to_string(),
            ));
        }
        let launch_id = spawn::new_launch_id();
        let held = if self.cfg.hold_socket {
            Some(self.held_socket()?)
        } else {
            None
        };
        // Where our code inside the server (the launcher, the warm child)
        // reports readiness and, whatever the output mode, why it failed.
        let ready = if held.is_some() || self.cfg.warm {
            Some(
                platform::ReadySocket::bind(&launch_id)
                    .map_err(|e| Error::os("opening the ready socket", e))?,
            )
        } else {
            None
        };
        let port = self.port();
        let spec = LaunchSpec {
            python: &self.cfg.python,
            app_path: &self.cfg.app_path,
            host: &self.cfg.host,
            port,
            workers: self.cfg.workers,
            uvicorn_args: &self.cfg.uvicorn_args,
            graceful_timeout_secs: self.graceful_timeout_secs(),
            cwd: self.cfg.cwd.as_deref(),
            env: &env,
            launch_id: &launch_id,
            held: held
                .as_ref()
                .zip(ready.as_ref())
                .map(|(h, r)| (h.raw_fd(), r.name())),
            report: ready.as_ref().map(|r| r.name()),
            lifeline: if self.cfg.stop_with_caller {
                Some((crate::lifeline::read_end()?, self.paths.pid_file.as_path()))
            } else {
                None
            },
        };
        let started_ms = now_ms();
        let (child, pidfd) = self.spawn_process(&spec, files, tick)?;
        let pid = pidfd.pid();
        // Our unreaped child (or a forked one its parent reaps only once we
        // pinned it) cannot be replaced under its PID: these reads are safe.
        let start_ticks = platform::proc_info(pid).map(|i| i.start_ticks).unwrap_or(0);
        let identity = Identity {
            pid,
            start_ticks,
            boot_id: platform::boot_id().cloned().unwrap_or_default(),
            launch_id,
            host: self.cfg.host.clone(),
            port,
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
            config: Some(self.saved_config(redirect_output)),
        };
        Ok(Generation {
            launched: Launched {
                child,
                pidfd,
                identity,
                exit: None,
            },
            logs,
            err_offset,
            ready,
        })
    }

    /// Starts the process: forked from the preloader when warm (falling
    /// back to a cold spawn, with the reason logged), else spawned.
    fn spawn_process(
        &self,
        spec: &LaunchSpec<'_>,
        files: Option<(std::fs::File, std::fs::File)>,
        tick: Tick<'_>,
    ) -> Result<(Proc, Arc<PidFd>)> {
        if self.cfg.warm {
            let opts = crate::warm::Options {
                preload: &self.cfg.preload,
                start_timeout: self.cfg.start_timeout,
            };
            let stdio = files.as_ref().map(|(o, e)| (o, e));
            match crate::warm::fork(spec, stdio, &opts, tick) {
                Ok((forked, pidfd)) => return Ok((Proc::Warm(forked), pidfd)),
                Err(crate::warm::Failed::Interrupted) => return Err(Error::Interrupted),
                Err(crate::warm::Failed::Reason(r) | crate::warm::Failed::Disabled(r)) => {
                    crate::warm::fell_back(&r)
                }
            }
        }
        let child = spawn::spawn(spec, files)?;
        // Our unreaped child cannot be replaced under its PID.
        let pidfd = PidFd::open(child.id() as i32)
            .map_err(|e| Error::os("opening a pidfd for the server", e))?;
        Ok((Proc::Own(child), Arc::new(pidfd)))
    }

    /// Spawns the server, records it, and waits until it is ready. On any
    /// failure the half-started server is stopped and its record removed.
    pub(super) fn launch(&self, redirect_output: bool, tick: Tick<'_>) -> Result<()> {
        let generation = self.spawn_generation_ticking(redirect_output, tick)?;
        let identity = generation.launched.identity.clone();
        let pidfd = generation.launched.pidfd.clone();
        let Generation {
            launched,
            logs,
            err_offset,
            ready,
        } = generation;
        *self.launched.lock() = Some(launched);
        if let Err(e) = record::write(&self.paths, &identity) {
            self.abort_launch(false, tick);
            return Err(e);
        }
        match self.wait_ready(&pidfd, &logs, err_offset, ready.as_ref(), tick) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort_launch(matches!(e, Error::Interrupted), &mut || Ok(()));
                match &e {
                    Error::StartFailed { exit_code, .. } => {
                        self.note_end(&identity, End::FailedToStart(*exit_code))
                    }
                    Error::StartTimeout { .. } => {
                        self.note_end(&identity, End::FailedToStart(None))
                    }
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// How long a server that never became ready gets to exit: it has no
    /// requests to finish, so a short grace, never more than `stop_timeout`.
    pub(super) fn never_ready_grace(&self) -> Duration {
        self.cfg.stop_timeout.min(NEVER_READY_GRACE)
    }

    /// Stops a half-started server and removes its record. It never served,
    /// so it gets a short grace; after Ctrl-C none: the user is waiting.
    fn abort_launch(&self, interrupted: bool, tick: Tick<'_>) {
        let grace = if interrupted {
            Duration::ZERO
        } else {
            self.never_ready_grace()
        };
        let _ = self.stop_launched(grace, tick);
    }

    /// Whether a socket of our server's process group listens on the port.
    pub(super) fn our_group_listens(&self, leader: i32) -> bool {
        match platform::DiagSocket::new() {
            Ok(mut diag) => self.our_group_listens_with(&mut diag, leader),
            Err(_) => false,
        }
    }

    /// `our_group_listens` on a kept sock_diag socket (the readiness loop).
    fn our_group_listens_with(&self, diag: &mut platform::DiagSocket, leader: i32) -> bool {
        let v4 = self.addrs.iter().any(|a| a.is_ipv4());
        let v6 = self.addrs.iter().any(|a| a.is_ipv6());
        let Ok(ls) = diag.listeners(self.port(), v4, v6) else {
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

    /// Waits until the server is ready: a socket of its process group
    /// listens (polled from the kernel every millisecond), or, on a held
    /// socket (which listens from the start), every serving process has
    /// reported that uvicorn's startup completed (no polling: one wait on
    /// the pidfd and the ready socket). Fails when it exits first or at the
    /// start timeout.
    pub(super) fn wait_ready(
        &self,
        pidfd: &Arc<PidFd>,
        logs: &LogPaths,
        err_offset: Option<u64>,
        ready: Option<&platform::ReadySocket>,
        tick: Tick<'_>,
    ) -> Result<()> {
        let start = Instant::now();
        let deadline = start + self.cfg.start_timeout;
        let mut last_tick = start;
        let mut diag =
            platform::DiagSocket::new().map_err(|e| Error::os("opening a sock_diag socket", e))?;
        let mut reported = std::collections::HashSet::new();
        let token = self
            .launched
            .lock()
            .as_ref()
            .filter(|l| l.pidfd.pid() == pidfd.pid())
            .map(|l| l.identity.launch_id.clone())
            .unwrap_or_default();
        // Readiness comes from the ready socket only with a held socket
        // (which listens from the start); a warm server on its own socket
        // reports there only why it failed.
        let held = ready.filter(|_| self.cfg.hold_socket);
        let mut failure: Option<(i32, String)> = None;
        // uvicorn's workers on its own socket (nothing of ours inside them):
        // one that ends before the server is ready failed (uvicorn would
        // start it again, failing the same way, until start_timeout).
        let mut workers = WorkerWatch::default();
        let watch_workers = held.is_none() && self.cfg.workers > 1;
        loop {
            let exited = match held {
                None => pidfd.wait_exit(READY_STEP),
                Some(r) => platform::pidfd::wait_exit_or_readable(pidfd, r.raw_fd(), TICK_EVERY),
            }
            .map_err(|e| Error::os("waiting for the server", e))?;
            while let Some(msg) = ready.and_then(|r| r.try_recv(crate::why::DATAGRAM_LIMIT)) {
                match Report::parse(&msg) {
                    Some(r) if r.launch() != token => {}
                    Some(Report::Ready { pid, .. }) => {
                        reported.insert(pid);
                    }
                    Some(Report::Failed { pid, text, .. }) => {
                        failure.get_or_insert((pid, text));
                    }
                    None => {}
                }
            }
            let mut dead_worker = None;
            if watch_workers && !exited && failure.is_none() {
                dead_worker = workers.check(pidfd.pid());
            }
            if exited || failure.is_some() || dead_worker.is_some() {
                let leader = pidfd.pid();
                let worker = failure
                    .as_ref()
                    .map(|f| f.0)
                    .filter(|p| *p != leader)
                    .or(dead_worker);
                if !exited && worker.is_none() {
                    // Its main process failed and is exiting: its exit code
                    // completes the story.
                    let _ = pidfd.wait_exit(self.never_ready_grace());
                }
                let exit_code = match worker {
                    Some(_) if !pidfd.has_exited() => None,
                    _ => self.reap_child(),
                };
                crate::supervise::logwriter::settle();
                let (reported_text, log) = (
                    failure.map(|f| f.1),
                    read_stderr(logs, err_offset).unwrap_or_default(),
                );
                // What it reported, else what its log says.
                let reason = reported_text
                    .as_deref()
                    .and_then(why::reason)
                    .or_else(|| why::reason(&log));
                let source = if err_offset.is_some() {
                    log
                } else {
                    reported_text.unwrap_or_default()
                };
                return Err(Error::StartFailed {
                    name: self.cfg.name.clone(),
                    address: port::format_addr(self.addrs[0], self.port()),
                    exit_code,
                    stderr_tail: why::tail_led_by(reason.as_deref(), &source, TAIL_LINES),
                    output_captured: err_offset.is_some(),
                    reason,
                    worker,
                });
            }
            let is_ready = match held {
                None => self.our_group_listens_with(&mut diag, pidfd.pid()),
                Some(_) => reported.len() >= self.cfg.workers as usize,
            };
            if is_ready {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                crate::supervise::logwriter::settle();
                let log = read_stderr(logs, err_offset).unwrap_or_default();
                let reason = why::reason(&log)
                    .filter(|_| log.contains("ERROR") || log.contains("Traceback"));
                return Err(Error::StartTimeout {
                    name: self.cfg.name.clone(),
                    port: self.port(),
                    timeout: self.cfg.start_timeout,
                    grace: self.never_ready_grace(),
                    stderr_tail: stderr_tail(logs, err_offset),
                    reason,
                });
            }
            if now - last_tick >= TICK_EVERY {
                last_tick = now;
                tick()?;
            }
        }
    }
}

/// The worker processes (children) of a uvicorn main process, looked at
/// every `WORKER_STEP` while it starts.
#[derive(Default)]
struct WorkerWatch {
    seen: std::collections::HashSet<i32>,
    last: Option<Instant>,
}

const WORKER_STEP: Duration = Duration::from_millis(50);

impl WorkerWatch {
    /// A worker seen before that has ended (gone, or a zombie), if any.
    fn check(&mut self, leader: i32) -> Option<i32> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < WORKER_STEP) {
            return None;
        }
        self.last = Some(now);
        let alive: std::collections::HashSet<i32> = platform::children(leader)
            .into_iter()
            .filter(|p| platform::state_and_start(*p).is_some_and(|(st, _)| st != 'Z'))
            .collect();
        let dead = self.seen.iter().copied().find(|p| !alive.contains(p));
        self.seen.extend(alive);
        dead
    }
}

/// How many lines of its error output a start failure carries.
const TAIL_LINES: usize = 30;

/// The last lines this run wrote to the stderr log (from `offset`, where the
/// run began), at most 30 lines of the last 8 KiB.
fn stderr_tail(logs: &LogPaths, offset: Option<u64>) -> Option<String> {
    let text = read_stderr(logs, offset)?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// What this run wrote to the stderr log (from `offset`), its last 8 KiB.
fn read_stderr(logs: &LogPaths, offset: Option<u64>) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let offset = offset?;
    let mut f = std::fs::File::open(&logs.stderr).ok()?;
    let len = f.metadata().ok()?.len();
    // Shorter than where the run began: rotated since (the supervisor
    // writes the logs), so this run's lines start the new file.
    let offset = if len < offset { 0 } else { offset };
    let from = offset.max(len.saturating_sub(8192));
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.take(8192).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_this_runs_last_lines() {
        let d = std::env::temp_dir().join(format!("usm-tail-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let logs = LogPaths::new(&d, "t");
        std::fs::write(&logs.stderr, "old run\n").unwrap();
        let offset = std::fs::metadata(&logs.stderr).unwrap().len();
        let lines: String = (0..40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&logs.stderr, format!("old run\n{lines}")).unwrap();
        let tail = stderr_tail(&logs, Some(offset)).unwrap();
        assert!(!tail.contains("old run"));
        assert_eq!(tail.lines().count(), 30);
        assert!(tail.ends_with("line 39"));
        assert_eq!(stderr_tail(&logs, None), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
