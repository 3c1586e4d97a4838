//! The supervisor's watch of a running server: memory read against
//! `max_memory`, health checks on their cadence, and the replacement of a
//! run that fails them (stopped and started, or on a held socket a new
//! generation beside it: started on the first failed check and committed
//! on the last, or abandoned if a check passes). Part of `Machine`, pure.

use std::time::{Duration, Instant};

use super::super::policy::{self, Decision, RunEnd};
use super::{Action, Busy, Event, Machine, StopFor};

impl Machine {
    pub(super) fn probe_if_due(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(due) = self
            .run
            .as_ref()
            .and_then(|r| r.next_health)
            .filter(|d| now >= *d)
        {
            self.busy = Busy::Probe { due };
            out.push(Action::Probe);
        }
    }

    pub(super) fn measured(&mut self, now: Instant, ev: Event, out: &mut Vec<Action>) {
        let Event::Memory(used) = ev else {
            return self.idle(now, ev, out);
        };
        match self.set.supervision.max_memory.filter(|l| used > *l) {
            Some(limit) => {
                let why = format!(
                    "its memory ({}) went over max_memory ({})",
                    mib(used),
                    mib(limit)
                );
                self.replace(now, why, false, None, out);
            }
            None => self.probe_if_due(now, out),
        }
    }

    pub(super) fn probed(&mut self, now: Instant, due: Instant, ev: Event, out: &mut Vec<Action>) {
        let Event::Health(result) = ev else {
            return self.idle(now, ev, out);
        };
        let Some(h) = self.set.supervision.health.clone() else {
            return;
        };
        let Some(r) = self.run.as_mut() else {
            return;
        };
        // A fixed cadence from when each probe was due (its timeout
        // included), so that failures in a row take `failures x interval`.
        r.next_health = Some((due + h.interval).max(now));
        let word = if result.is_ok() { "ok" } else { "failing" };
        if self.st.health.as_deref() != Some(word) {
            self.st.health = Some(word.to_owned());
            out.push(Action::WriteState(self.st.clone()));
        }
        let why = match result {
            Ok(()) => {
                r.health_fails = 0;
                return;
            }
            Err(why) => why,
        };
        r.health_fails += 1;
        if r.health_fails < h.failures {
            if r.health_fails == 1 && self.set.hold_socket {
                let ran = now.saturating_duration_since(r.since);
                // The rest of the checks are made while the next
                // generation starts beside this one (a held socket), so
                // that the time to replaced is the checks, not the checks
                // plus a start (issue 20). Only if the policy would
                // restart it: otherwise it is stopped as before.
                if self.would_restart(ran) {
                    let confirm = (1..h.failures).map(|k| due + h.interval * k).collect();
                    let mut counted = self.st.clone();
                    counted.restarts += 1;
                    counted.health = None;
                    counted.reason = format!(
                        "{} health checks of {} failed in a row (first: {why})",
                        h.failures, h.path
                    );
                    self.busy = Busy::Preparing { why };
                    out.push(Action::Reload {
                        grace: self.replace_grace(),
                        confirm,
                        counted: Some(counted),
                    });
                }
            }
            return;
        }
        let words = format!(
            "{} health checks of {} failed in a row (last: {why})",
            r.health_fails, h.path
        );
        let ran = now.saturating_duration_since(r.since);
        if !self.set.hold_socket {
            return self.replace(now, words, false, None, out);
        }
        // On a held socket the next generation starts beside the hung one
        // and takes over the socket's queue; the hung one is stopped once
        // that is ready: the time to replaced is the checks plus one start.
        let d = self.decide(RunEnd::Replaced, ran);
        if !matches!(d, Decision::Restart(_)) {
            return self.replace(now, words, false, Some(d), out);
        }
        // Counted before the new generation serves: status() must never
        // show a replacement serving with the old count.
        self.st.restarts += 1;
        out.push(Action::WriteState(self.st.clone()));
        self.busy = Busy::ReloadUnhealthy {
            words,
            ran,
            decided: d,
        };
        out.push(Action::Reload {
            grace: self.replace_grace(),
            confirm: Vec::new(),
            counted: None,
        });
    }

    /// Whether the policy would restart the run were it replaced now
    /// (asked without counting anything).
    pub(super) fn would_restart(&self, ran: Duration) -> bool {
        let mut failures = self.failures;
        let d = policy::decide(
            &self.set.supervision.policy,
            &mut failures,
            RunEnd::Replaced,
            ran,
            0.0,
        );
        matches!(d, Decision::Restart(_))
    }

    /// The outcome of a replacement started on the first failed check.
    pub(super) fn prepared(
        &mut self,
        now: Instant,
        ev: Event,
        first: String,
        out: &mut Vec<Action>,
    ) {
        let Some(h) = self.set.supervision.health.clone() else {
            return;
        };
        let Some(since) = self.run.as_ref().map(|r| r.since) else {
            return;
        };
        let ran = now.saturating_duration_since(since);
        let words = format!(
            "{} health checks of {} failed in a row (first: {first})",
            h.failures, h.path
        );
        match ev {
            Event::ReloadDone { pid } => {
                // Every check failed: the failed run is counted now, and
                // the count goes with the new PID in one write.
                let _ = self.decide(RunEnd::Replaced, ran);
                self.st.restarts += 1;
                self.took_over(now, pid, &words, out);
            }
            Event::ReloadAbandoned { failed } => {
                let r = self.run.as_mut().expect("a run");
                r.health_fails = 0;
                r.next_health = Some(now + h.interval);
                self.st.health = Some("ok".to_owned());
                out.push(Action::WriteState(self.st.clone()));
                let also = failed.map_or_else(String::new, |why| {
                    format!(" (the replacement had failed: {why})")
                });
                out.push(Action::Say(
                    "info",
                    format!(
                        "{} answers its health check again: not replaced{also}",
                        self.set.name
                    ),
                ));
            }
            Event::ReloadFailed { why } => {
                // Every check failed and so did the new generation: stop
                // and start, as without a held socket.
                let d = self.decide(RunEnd::Replaced, ran);
                let words = format!("{words}; a new generation beside it failed: {why}");
                self.replace(now, words, false, Some(d), out);
            }
            Event::Interrupted => self.stop_everything(out),
            _ => self.busy = Busy::Preparing { why: first },
        }
    }

    /// A new generation, `pid`, took over from an unhealthy run (already
    /// counted): the state says so in one write, and so does the log.
    fn took_over(&mut self, now: Instant, pid: i32, words: &str, out: &mut Vec<Action>) {
        self.st.server_pid = pid;
        self.st.health = None;
        self.st.reason = words.to_owned();
        out.push(Action::WriteState(self.st.clone()));
        out.push(Action::Say(
            "warning",
            format!(
                "{} {words}: replaced by a new generation, pid {pid} (restart {})",
                self.set.name, self.st.restarts
            ),
        ));
        self.run = Some(self.new_run(pid, now));
    }

    pub(super) fn reloaded_unhealthy(
        &mut self,
        now: Instant,
        ev: Event,
        words: String,
        ran: Duration,
        decided: Decision,
        out: &mut Vec<Action>,
    ) {
        match ev {
            Event::ReloadDone { pid } => self.took_over(now, pid, &words, out),
            Event::ReloadFailed { .. } => {
                // Not replaced: the restart after the wait is this one.
                self.counted_ahead = true;
                self.busy = Busy::Stop(StopFor::Replace {
                    words,
                    asked: false,
                    ran,
                    decided: Some(decided),
                });
                out.push(Action::StopRun {
                    grace: self.replace_grace(),
                });
            }
            Event::Interrupted => self.stop_everything(out),
            _ => {
                self.busy = Busy::ReloadUnhealthy {
                    words,
                    ran,
                    decided,
                }
            }
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}
