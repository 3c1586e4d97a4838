//! The supervisor as a pure state machine: `Machine::step(now, event)`
//! returns the actions to take, in order. No clock, no processes, no
//! files: the driver (`daemon`) performs the actions and feeds back what
//! came of them (a launch's outcome, a probe's answer, the run's exit), so
//! every path is unit-tested with made-up events, like `claim` (and h11,
//! quinn-proto).
//!
//! An action that blocks in the driver (`Launch`, `Attach`, `Reload`,
//! `StopRun`, `Probe`, `ReadMemory`) is always the last of its batch, and
//! the machine waits for exactly its outcome (`Busy`): the driver sends
//! nothing else meanwhile. Between them the driver waits for the run's
//! exit, the control pipe (`AskStop`, `AskReplace`), or `deadline()`
//! (`Timer`).

use crate::protocol::events::Event as Report;
use std::time::{Duration, Instant};

use super::policy::{self, Decision, Failures, RunEnd};
use super::state::{Phase, SupState};
use super::{Supervision, MEMORY_EVERY};
use crate::record::End;

/// How long a server replaced for failing health checks or memory gets to
/// exit before SIGKILL.
pub const REPLACE_GRACE: Duration = Duration::from_secs(1);

/// What the supervisor is configured with (the server's side of it).
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub supervision: Supervision,
    pub hold_socket: bool,
    pub stop_timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Supervision begins: launch a run, or take over running `attach`.
    Begin { attach: Option<i32> },
    /// The run launched (or attached to) is ready: its PID.
    RunReady { pid: i32 },
    /// The launch failed: why (one line), and the exit code if it exited.
    StartFailed { why: String, exit: Option<i32> },
    /// A stop was asked for while launching or reloading: it was abandoned.
    Interrupted,
    /// The run exited on its own: its code, minus the signal, None if unknown.
    RunExited { code: Option<i32> },
    /// The run was stopped (`StopRun`): its exit code if known, and the
    /// error if the stop failed.
    RunStopped {
        code: Option<i32>,
        error: Option<String>,
    },
    /// A health probe's outcome: Err(why) when it failed.
    Health(Result<(), String>),
    /// Resident memory of the run and its workers, in bytes.
    Memory(u64),
    /// `deadline()` passed.
    Timer,
    /// SIGTERM/SIGINT: stop the run and end supervision.
    AskStop,
    /// SIGHUP: replace the run (reload on a held socket).
    AskReplace,
    /// A new generation on the held socket is ready: its PID (the old
    /// run is gone).
    ReloadDone { pid: i32 },
    /// The new generation failed; the old run keeps serving.
    ReloadFailed { why: String },
    /// A reload with `confirm` checks: one of them answered, so the new
    /// generation was stopped and the old run keeps serving; `failed`: why
    /// the new generation failed first, if it did.
    ReloadAbandoned { failed: Option<String> },
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write the state file with this content.
    WriteState(SupState),
    /// Remove the state file (if it still names us).
    RemoveState,
    /// A log line: level, message.
    Say(&'static str, String),
    /// Report to whoever awaits the supervisor: `Done`, `Failed`, `Stopped`.
    Report(Report),
    /// Report the first run ready: "ready PID PORT".
    ReportReady { pid: i32 },
    /// Launch a run, wait until it is ready: `RunReady` / `StartFailed` / `Interrupted`.
    Launch,
    /// Take over running PID: `RunReady` / `StartFailed`.
    Attach(i32),
    /// A new generation beside the run, the old stopped with this grace
    /// once it is ready: `ReloadDone` / `ReloadFailed` / `Interrupted`.
    /// With `confirm` (not empty), the run is probed at each of these
    /// instants while the new generation starts, and the old is replaced
    /// only if every one fails (the driver stops at the first that
    /// answers: `ReloadAbandoned`); `ReloadFailed` then also means that
    /// every one failed.
    Reload {
        grace: Duration,
        confirm: Vec<Instant>,
        /// With `confirm`: the state to write the moment the checks have
        /// all failed, before the new generation takes over (it is counted
        /// before it serves: `status()` never shows it with the old count).
        counted: Option<SupState>,
    },
    /// Stop the run with this grace: `RunStopped`.
    StopRun { grace: Duration },
    /// Clean up after the run ended (stragglers, its record, how it ended).
    EndRun { exit: Option<i32> },
    /// Rewrite how the last run ended, supervision being over.
    NoteFinal { end: End, restarts: u32 },
    /// Probe health: `Health`.
    Probe,
    /// Read the run's memory: `Memory`.
    ReadMemory,
    /// Supervision is over: the process's exit status.
    Exit(i32),
    /// Supervision is over before it began: the first launch failed (the
    /// driver returns its error).
    Fail,
}

/// One run of the server.
#[derive(Debug, Clone)]
struct Run {
    pid: i32,
    since: Instant,
    health_fails: u32,
    next_health: Option<Instant>,
    next_memory: Option<Instant>,
}

/// Why a run is being stopped.
#[derive(Debug, Clone)]
enum StopFor {
    /// Supervision ends.
    Final,
    /// Replaced (health, memory, SIGHUP without a held socket): then the
    /// policy decides, unless `decided` already did (or it was asked).
    Replace {
        words: String,
        asked: bool,
        ran: Duration,
        decided: Option<Decision>,
    },
}

/// The outcome the machine waits for.
#[derive(Debug, Clone)]
enum Busy {
    Idle,
    Launch {
        first: bool,
    },
    /// A reload asked for (SIGHUP on a held socket).
    ReloadAsked,
    /// A replacement started on the first failed health check on a held
    /// socket, committed if the rest of the checks fail too: `why` the
    /// first failed.
    Preparing {
        why: String,
    },
    /// A replacement for failing health checks on a held socket.
    ReloadUnhealthy {
        words: String,
        ran: Duration,
        decided: Decision,
    },
    Stop(StopFor),
    Probe {
        due: Instant,
    },
    Memory,
    Over,
}

/// The supervisor's state machine.
#[derive(Debug)]
pub struct Machine {
    set: Settings,
    st: SupState,
    failures: Failures,
    run: Option<Run>,
    backoff_until: Option<Instant>,
    /// The restart about to be launched was counted already (a replacement
    /// beside the run was tried for it), so `restarts` never goes down.
    counted_ahead: bool,
    busy: Busy,
    rng: u64,
}

impl Machine {
    /// `st`: the supervisor's own identity (`SupState::for_self`);
    /// `seed`: for the backoff's jitter.
    pub fn new(set: Settings, st: SupState, seed: u64) -> Self {
        Self {
            set,
            st,
            failures: Failures::default(),
            run: None,
            backoff_until: None,
            counted_ahead: false,
            busy: Busy::Idle,
            rng: seed | 1,
        }
    }

    /// The state file's content now.
    pub fn state(&self) -> &SupState {
        &self.st
    }

    /// True once `Exit` or `Fail` was returned.
    pub fn is_over(&self) -> bool {
        matches!(self.busy, Busy::Over)
    }

    /// True while a run is serving (the driver waits on its exit).
    pub fn has_run(&self) -> bool {
        self.run.is_some()
    }

    /// When to send `Timer`: the next probe, memory reading or end of a
    /// backoff wait.
    pub fn deadline(&self) -> Option<Instant> {
        let r = self.run.as_ref();
        [
            r.and_then(|r| r.next_health),
            r.and_then(|r| r.next_memory),
            self.backoff_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes one event; the actions, in order.
    pub fn step(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.busy, Busy::Idle) {
            Busy::Over => self.busy = Busy::Over,
            Busy::Idle => self.idle(now, ev, &mut out),
            Busy::Launch { first } => self.launched(now, first, ev, &mut out),
            Busy::ReloadAsked => self.reloaded_asked(now, ev, &mut out),
            Busy::Preparing { why } => self.prepared(now, ev, why, &mut out),
            Busy::ReloadUnhealthy {
                words,
                ran,
                decided,
            } => self.reloaded_unhealthy(now, ev, words, ran, decided, &mut out),
            Busy::Stop(why) => self.stopped(now, ev, why, &mut out),
            Busy::Probe { due } => self.probed(now, due, ev, &mut out),
            Busy::Memory => self.measured(now, ev, &mut out),
        }
        out
    }

    fn idle(&mut self, now: Instant, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::Begin { attach } => {
                out.push(Action::WriteState(self.st.clone()));
                self.busy = Busy::Launch { first: true };
                out.push(attach.map_or(Action::Launch, Action::Attach));
            }
            Event::AskStop => self.stop_everything(out),
            Event::AskReplace => self.replace_asked(now, out),
            Event::RunExited { code } if self.run.is_some() => {
                let r = self.run.take().expect("a run");
                self.st.last_exit = code;
                let words =
                    code.map_or_else(|| End::Died.describe(), |c| End::Exited(c).describe());
                out.push(Action::EndRun { exit: code });
                let ran = now.saturating_duration_since(r.since);
                let d = self.decide(RunEnd::Exited(code), ran);
                self.finish(now, d, words, out);
            }
            Event::Timer => self.timer(now, out),
            // Nothing else can come while idle; ignored.
            _ => {}
        }
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(r) = self.run.as_mut() {
            if r.next_memory.is_some_and(|d| now >= d) {
                r.next_memory = Some(now + MEMORY_EVERY);
                self.busy = Busy::Memory;
                out.push(Action::ReadMemory);
                return;
            }
            self.probe_if_due(now, out);
            return;
        }
        if self.backoff_until.is_some_and(|t| now >= t) {
            self.backoff_until = None;
            if !std::mem::take(&mut self.counted_ahead) {
                self.st.restarts += 1;
            }
            self.st.phase = Phase::Starting;
            self.st.health = None;
            out.push(Action::WriteState(self.st.clone()));
            self.busy = Busy::Launch { first: false };
            out.push(Action::Launch);
        }
    }

    fn replace_grace(&self) -> Duration {
        self.set.stop_timeout.min(REPLACE_GRACE)
    }

    /// SIGHUP: a new generation on the held socket, then the old one stops
    /// (zero downtime); without a held socket, stop then start.
    fn replace_asked(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.run.is_none() {
            return; // between runs: the next run is the replacement
        }
        if self.set.hold_socket {
            self.busy = Busy::ReloadAsked;
            out.push(Action::Reload {
                grace: self.set.stop_timeout,
                confirm: Vec::new(),
                counted: None,
            });
            return;
        }
        let words = "a replacement was asked for (SIGHUP)".to_owned();
        self.replace(now, words, true, None, out);
    }

    /// Stops the run to replace it.
    fn replace(
        &mut self,
        now: Instant,
        words: String,
        asked: bool,
        decided: Option<Decision>,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.run.as_ref() else {
            return;
        };
        let ran = now.saturating_duration_since(r.since);
        // A hung or bloated server gets a short grace, not the full
        // stop_timeout: it is replaced because it does not serve (or is
        // about to meet the OOM killer).
        let grace = if asked {
            self.set.stop_timeout
        } else {
            self.replace_grace()
        };
        self.busy = Busy::Stop(StopFor::Replace {
            words,
            asked,
            ran,
            decided,
        });
        out.push(Action::StopRun { grace });
    }

    fn launched(&mut self, now: Instant, first: bool, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::RunReady { pid } => {
                self.st.phase = Phase::Running;
                self.st.server_pid = pid;
                // The state first: whoever reads it after the report sees it running.
                out.push(Action::WriteState(self.st.clone()));
                if first {
                    out.push(Action::ReportReady { pid });
                } else {
                    out.push(Action::Say(
                        "info",
                        format!(
                            "{} serving again as pid {pid} (restart {})",
                            self.set.name, self.st.restarts
                        ),
                    ));
                }
                self.run = Some(self.new_run(pid, now));
            }
            Event::StartFailed { .. } | Event::Interrupted if first => {
                out.push(Action::RemoveState);
                out.push(Action::Fail);
                self.busy = Busy::Over;
            }
            Event::Interrupted => self.stop_everything(out),
            Event::StartFailed { why, exit } => {
                if exit.is_some() {
                    self.st.last_exit = exit;
                }
                let d = self.decide(RunEnd::NeverReady, Duration::ZERO);
                self.finish(now, d, format!("failed to start ({why})"), out);
            }
            // Not an outcome of the launch: still waiting for it.
            _ => self.busy = Busy::Launch { first },
        }
    }

    fn reloaded_asked(&mut self, now: Instant, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::ReloadDone { pid } => {
                // Asked for, not a failure: `restarts` counts the
                // supervisor's own restarts only.
                self.st.server_pid = pid;
                self.st.health = None;
                self.st.replaced += 1;
                self.st.replace_error.clear();
                out.push(Action::WriteState(self.st.clone()));
                out.push(Action::Say(
                    "info",
                    format!("{} reloaded: now pid {pid}", self.set.name),
                ));
                self.run = Some(self.new_run(pid, now));
            }
            Event::ReloadFailed { why } => {
                // Whoever asked learns it at once, with the reason.
                self.st.replaced += 1;
                self.st.replace_error = why;
                out.push(Action::WriteState(self.st.clone()));
                out.push(Action::Say(
                    "warning",
                    format!(
                        "{} reload failed, the old generation keeps serving: {}",
                        self.set.name, self.st.replace_error
                    ),
                ));
            }
            Event::Interrupted => self.stop_everything(out),
            _ => self.busy = Busy::ReloadAsked,
        }
    }

    fn stopped(&mut self, now: Instant, ev: Event, why: StopFor, out: &mut Vec<Action>) {
        let Event::RunStopped { code, error } = ev else {
            self.busy = Busy::Stop(why);
            return;
        };
        self.run = None;
        match why {
            StopFor::Final => {
                out.push(Action::EndRun { exit: None });
                // SIGKILL after stop_timeout: the stop says so.
                let end = if code == Some(-9) {
                    End::StoppedKilled
                } else {
                    End::Stopped
                };
                self.over(end, error, out);
            }
            StopFor::Replace {
                words,
                asked,
                ran,
                decided,
            } => {
                self.st.last_exit = code;
                out.push(Action::EndRun { exit: code });
                let d = if asked {
                    Decision::Restart(Duration::ZERO)
                } else if let Some(d) = decided {
                    d // already counted
                } else {
                    self.decide(RunEnd::Replaced, ran)
                };
                self.finish(now, d, words, out);
            }
        }
    }

    /// A deliberate stop: the run (if any) goes, nothing comes back.
    fn stop_everything(&mut self, out: &mut Vec<Action>) {
        self.backoff_until = None;
        if self.run.is_some() {
            self.busy = Busy::Stop(StopFor::Final);
            out.push(Action::StopRun {
                grace: self.set.stop_timeout,
            });
        } else {
            self.over(End::Stopped, None, out);
        }
    }

    fn over(&mut self, end: End, error: Option<String>, out: &mut Vec<Action>) {
        out.push(Action::NoteFinal {
            end,
            restarts: self.st.restarts,
        });
        out.push(Action::RemoveState);
        match error {
            None => {
                out.push(Action::Report(Report::Stopped));
                out.push(Action::Exit(0));
            }
            Some(e) => {
                out.push(Action::Say("warning", e));
                out.push(Action::Exit(1));
            }
        }
        self.busy = Busy::Over;
    }

    /// Acts on the policy's decision after a run ended.
    fn finish(&mut self, now: Instant, d: Decision, words: String, out: &mut Vec<Action>) {
        let name = &self.set.name;
        match d {
            Decision::Restart(wait) => {
                let n = self.st.restarts + u32::from(!self.counted_ahead);
                out.push(Action::Say(
                    "warning",
                    format!(
                        "{name} {words}: restarting (restart {n}, next wait {:.1} s)",
                        wait.as_secs_f64()
                    ),
                ));
                self.backoff_until = Some(now + wait);
                self.st.phase = Phase::Backoff;
                self.st.server_pid = 0;
                self.st.reason = words;
                out.push(Action::WriteState(self.st.clone()));
            }
            Decision::Done => {
                // A watcher (restart "no") just says how the run ended.
                let said = if self.set.supervision.policy.restart == super::Restart::No {
                    format!("{name}: {words}")
                } else {
                    format!("{name} {words}: not restarted (its restart policy)")
                };
                out.push(Action::Say("info", said));
                let last = self.st.last_exit;
                out.push(Action::NoteFinal {
                    end: End::Exited(last.unwrap_or(0)),
                    restarts: self.st.restarts,
                });
                out.push(Action::RemoveState);
                out.push(Action::Report(Report::Done));
                // As a shell reports it: 128 + N for signal N.
                out.push(Action::Exit(last.map_or(1, |c| {
                    if c < 0 {
                        128 - c
                    } else {
                        c
                    }
                })));
                self.busy = Busy::Over;
            }
            Decision::GiveUp => {
                out.push(Action::Say(
                    "warning",
                    format!(
                        "{name} {words}: giving up after {} failed runs in a row; state is failed",
                        self.set.supervision.policy.limit.unwrap_or(0)
                    ),
                ));
                out.push(Action::NoteFinal {
                    end: End::GaveUp(self.st.last_exit),
                    restarts: self.st.restarts,
                });
                out.push(Action::RemoveState);
                out.push(Action::Report(Report::Failed));
                out.push(Action::Exit(1));
                self.busy = Busy::Over;
            }
        }
    }

    fn decide(&mut self, end: RunEnd, ran: Duration) -> Decision {
        let j = self.jitter();
        policy::decide(
            &self.set.supervision.policy,
            &mut self.failures,
            end,
            ran,
            j,
        )
    }

    fn new_run(&self, pid: i32, now: Instant) -> Run {
        let sup = &self.set.supervision;
        Run {
            pid,
            since: now,
            health_fails: 0,
            next_health: sup.health.as_ref().map(|h| now + h.interval),
            next_memory: sup.max_memory.map(|_| now + MEMORY_EVERY),
        }
    }

    /// The PID of the run serving, if any.
    pub fn run_pid(&self) -> Option<i32> {
        self.run.as_ref().map(|r| r.pid)
    }

    /// A number in [0, 1) for the backoff's jitter (xorshift64*).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

mod watch;

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
