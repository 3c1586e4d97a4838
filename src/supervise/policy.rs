//! WHEN TO RESTART: the supervisor's decisions as a pure function of what
//! happened (how a run ended, how long it ran, how many runs failed in a
//! row) and the policy. No clock, no processes: unit-tested with made-up
//! runs, like `claim`.
//!
//! | the run ended by                  | "no"  | "on-failure"     | "always"         |
//! |-----------------------------------|-------|------------------|------------------|
//! | a clean exit (see below)          | done  | done             | restart          |
//! | non-zero exit, a signal           | done  | restart          | restart          |
//! | never ready (start failed)        | done  | restart          | restart          |
//! | replaced (health, memory)         | —     | restart          | restart          |
//!
//! A clean exit is code 0 or, as systemd counts it, death by SIGTERM,
//! SIGINT, SIGHUP or SIGPIPE: uvicorn re-raises the signal that stopped it
//! after its graceful shutdown, so a server told to stop ends that way.
//!
//! A run is a *failure* when it did not end with exit code 0 after running
//! at least `stable_after`, or never became ready. A run that served for
//! `stable_after` resets the count first. After `limit` failures in a row
//! the supervisor gives up. The wait before a restart is `delay * 2^(n-1)`
//! for the n-th failure in a row (capped at `max_delay`), scaled by a jitter
//! in [0.8, 1.2] so that servers that crashed together do not restart in
//! lockstep; after a success it is `delay`.

use std::time::Duration;

pub use crate::supervision::{Policy, Restart};

impl Restart {
    /// The names used in Python, the CLI and the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }

    /// Parses `as_str` output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no" => Restart::No,
            "on-failure" => Restart::OnFailure,
            "always" => Restart::Always,
            _ => return None,
        })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            restart: Restart::No,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            limit: Some(10),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// How one run of the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// It exited: the code, or minus the signal; None when it was not our
    /// child (attached to after its supervisor died) and nobody saw the status.
    Exited(Option<i32>),
    /// It never became ready (exited during start-up, or the start timeout).
    NeverReady,
    /// The supervisor replaced it (health check or memory limit).
    Replaced,
}

impl RunEnd {
    /// Whether it ended as asked (`crate::record::clean_exit`, the rule's
    /// one home: a kept last run is judged by it too).
    pub fn clean(self) -> bool {
        matches!(self, RunEnd::Exited(Some(c)) if crate::record::clean_exit(c))
    }
}

/// What the supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start it again after this wait.
    Restart(Duration),
    /// The policy does not restart this end: supervision ends.
    Done,
    /// Too many failures in a row: nothing is left running, state "failed".
    GiveUp,
}

/// The supervisor's count of failed runs in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures(pub u32);

/// Decides after a run ended. `ran` is how long it served (zero if it
/// never became ready); `jitter` is a number in [0, 1) the caller draws.
/// Updates the failure count.
pub fn decide(
    policy: &Policy,
    failures: &mut Failures,
    end: RunEnd,
    ran: Duration,
    jitter: f64,
) -> Decision {
    let stable = end != RunEnd::NeverReady && ran >= policy.stable_after;
    if stable {
        failures.0 = 0;
    }
    let restart = match policy.restart {
        Restart::No => false,
        Restart::OnFailure => !end.clean(),
        Restart::Always => true,
    };
    // An exit with code 0 is a failure only when it came too soon (a server
    // under "always" that exits at once must not spin forever).
    let failed = !stable || !end.clean();
    if failed && !stable {
        failures.0 = failures.0.saturating_add(1);
    } else if failed {
        failures.0 = 1;
    }
    if !restart {
        return Decision::Done;
    }
    if let Some(limit) = policy.limit {
        if failures.0 >= limit {
            return Decision::GiveUp;
        }
    }
    Decision::Restart(wait(policy, failures.0, jitter))
}

/// The wait before the restart after `n` failures in a row.
pub fn wait(policy: &Policy, n: u32, jitter: f64) -> Duration {
    let doublings = n.saturating_sub(1).min(40);
    let base = policy.delay.as_secs_f64() * 2f64.powi(doublings as i32);
    let capped = base.min(policy.max_delay.as_secs_f64());
    let scaled = capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(scaled.min(policy.max_delay.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restart: Restart) -> Policy {
        Policy {
            restart,
            ..Policy::default()
        }
    }
    const SOON: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn on_failure_restarts_crashes_not_clean_exits() {
        let p = policy(Restart::OnFailure);
        let mut f = Failures::default();
        assert_eq!(
            decide(&p, &mut f, RunEnd::Exited(Some(0)), LONG, 0.5),
            Decision::Done
        );
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Exited(Some(-9)), LONG, 0.5),
            Decision::Restart(_)
        ));
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Exited(None), LONG, 0.5),
            Decision::Restart(_)
        ));
        // uvicorn re-raises SIGTERM after a graceful shutdown: clean.
        assert_eq!(
            decide(&p, &mut f, RunEnd::Exited(Some(-15)), LONG, 0.5),
            Decision::Done
        );
        assert_eq!(
            decide(
                &policy(Restart::No),
                &mut f,
                RunEnd::Exited(Some(1)),
                SOON,
                0.5
            ),
            Decision::Done
        );
    }

    #[test]
    fn always_restarts_a_clean_exit_but_counts_a_quick_one() {
        let p = Policy {
            limit: Some(3),
            ..policy(Restart::Always)
        };
        let mut f = Failures::default();
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Exited(Some(0)), LONG, 0.5),
            Decision::Restart(_)
        ));
        assert_eq!(f, Failures(0));
        decide(&p, &mut f, RunEnd::Exited(Some(0)), SOON, 0.5);
        decide(&p, &mut f, RunEnd::Exited(Some(0)), SOON, 0.5);
        assert_eq!(
            decide(&p, &mut f, RunEnd::Exited(Some(0)), SOON, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn waits_double_with_jitter_up_to_the_cap() {
        let p = Policy {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            limit: None,
            ..policy(Restart::OnFailure)
        };
        let mut f = Failures::default();
        let mut waits = Vec::new();
        for _ in 0..6 {
            match decide(&p, &mut f, RunEnd::Exited(Some(1)), SOON, 0.5) {
                Decision::Restart(d) => waits.push(d.as_millis()),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(wait(&p, 1, 0.0), Duration::from_millis(80));
        assert_eq!(wait(&p, 1, 0.999_999).as_millis(), 119);
        assert_eq!(wait(&p, 30, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn the_limit_counts_failures_in_a_row_and_a_stable_run_resets_it() {
        let p = Policy {
            limit: Some(3),
            ..policy(Restart::OnFailure)
        };
        let mut f = Failures::default();
        assert!(matches!(
            decide(&p, &mut f, RunEnd::NeverReady, Duration::ZERO, 0.0),
            Decision::Restart(_)
        ));
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Exited(Some(1)), SOON, 0.0),
            Decision::Restart(_)
        ));
        // A stable run in between: the count starts again at one.
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Exited(Some(-9)), LONG, 0.0),
            Decision::Restart(d) if d == Duration::from_millis(80)
        ));
        assert_eq!(f, Failures(1));
        assert!(matches!(
            decide(&p, &mut f, RunEnd::Replaced, SOON, 0.0),
            Decision::Restart(_)
        ));
        assert_eq!(
            decide(&p, &mut f, RunEnd::NeverReady, Duration::ZERO, 0.0),
            Decision::GiveUp
        );
        // A run that never became ready is never stable, however long it took.
        let mut f = Failures::default();
        decide(&p, &mut f, RunEnd::NeverReady, LONG, 0.0);
        assert_eq!(f, Failures(1));
    }

    #[test]
    fn names_round_trip() {
        for r in [Restart::No, Restart::OnFailure, Restart::Always] {
            assert_eq!(Restart::parse(r.as_str()), Some(r));
        }
        assert_eq!(Restart::parse("sometimes"), None);
    }
}
