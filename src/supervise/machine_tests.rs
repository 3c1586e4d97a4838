//! The supervisor's machine with made-up events: a few stories told step by
//! step, then thousands of random ones from a small deterministic
//! generator, checked against invariants after every action.

use super::*;
use crate::supervise::{HealthCheck, Policy, Restart, Supervision};

const STOP: Duration = Duration::from_secs(5);

fn settings(restart: Restart, limit: Option<u32>) -> Settings {
    Settings {
        name: "api".into(),
        supervision: Supervision {
            policy: Policy {
                restart,
                limit,
                stable_after: Duration::from_secs(36_000),
                ..Policy::default()
            },
            supervise: true,
            ..Supervision::default()
        },
        hold_socket: false,
        stop_timeout: STOP,
    }
}

fn me() -> SupState {
    SupState {
        pid: 4242,
        ..SupState::default()
    }
}

/// The word a final report's JSON carries as its kind.
fn kind(e: &crate::protocol::events::Event) -> &'static str {
    use crate::protocol::events::{self as ev, Event};
    match e {
        Event::Done => ev::DONE,
        Event::Failed => ev::FAILED,
        Event::Stopped => ev::STOPPED,
        other => panic!("not a final report: {other:?}"),
    }
}

fn words(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(w) => Some(kind(w).to_owned()),
            _ => None,
        })
        .collect()
}

/// Begins and gets the first run ready as `pid`.
fn running(set: Settings, pid: i32) -> (Machine, Instant) {
    let t = Instant::now();
    let mut m = Machine::new(set, me(), 7);
    let a = m.step(t, Event::Begin { attach: None });
    assert_eq!(a.last(), Some(&Action::Launch));
    let a = m.step(t, Event::RunReady { pid });
    assert!(a.contains(&Action::ReportReady { pid }));
    assert_eq!(m.state().phase, Phase::Running);
    (m, t)
}

#[test]
fn a_watcher_records_how_the_run_ended_and_exits() {
    let (mut m, t) = running(settings(Restart::No, Some(3)), 100);
    let a = m.step(t, Event::RunExited { code: Some(-9) });
    assert_eq!(a[0], Action::EndRun { exit: Some(-9) });
    assert!(a.contains(&Action::NoteFinal {
        end: End::Exited(-9),
        restarts: 0
    }));
    assert_eq!(words(&a), ["done"]);
    assert_eq!(a.last(), Some(&Action::Exit(137)));
    assert!(m.is_over());
    assert!(m.step(t, Event::AskStop).is_empty());
}

#[test]
fn a_stop_stops_the_run_before_exiting() {
    let (mut m, t) = running(settings(Restart::Always, None), 100);
    assert_eq!(m.step(t, Event::AskStop), [Action::StopRun { grace: STOP }]);
    // Nothing else is taken while the stop goes on.
    assert!(m.step(t, Event::AskReplace).is_empty());
    let a = m.step(
        t,
        Event::RunStopped {
            code: Some(-15),
            error: None,
        },
    );
    assert_eq!(a[0], Action::EndRun { exit: None });
    assert!(a.contains(&Action::RemoveState));
    assert_eq!(words(&a), ["stopped"]);
    assert_eq!(a.last(), Some(&Action::Exit(0)));
}

#[test]
fn a_stop_that_needed_sigkill_is_noted_so() {
    let (mut m, t) = running(settings(Restart::No, None), 100);
    m.step(t, Event::AskStop);
    let a = m.step(
        t,
        Event::RunStopped {
            code: Some(-9),
            error: None,
        },
    );
    assert!(a.contains(&Action::NoteFinal {
        end: End::StoppedKilled,
        restarts: 0
    }));
}

#[test]
fn gives_up_after_exactly_the_limit_of_failures_in_a_row() {
    let (mut m, mut t) = running(settings(Restart::OnFailure, Some(3)), 100);
    let a = m.step(t, Event::RunExited { code: Some(1) });
    assert_eq!(m.state().phase, Phase::Backoff);
    assert!(!a.iter().any(|a| matches!(a, Action::Exit(_))));
    t = m.deadline().expect("a backoff");
    assert_eq!(m.step(t, Event::Timer).last(), Some(&Action::Launch));
    assert_eq!(m.state().restarts, 1);
    m.step(t, Event::RunReady { pid: 101 });
    m.step(t, Event::RunExited { code: Some(-9) });
    t = m.deadline().expect("a backoff");
    m.step(t, Event::Timer);
    let a = m.step(
        t,
        Event::StartFailed {
            why: "boom".into(),
            exit: Some(3),
        },
    );
    assert_eq!(words(&a), ["failed"]);
    assert!(a.contains(&Action::NoteFinal {
        end: End::GaveUp(Some(3)),
        restarts: 2
    }));
    assert_eq!(a.last(), Some(&Action::Exit(1)));
}

#[test]
fn the_first_launch_failing_fails_supervision() {
    let mut m = Machine::new(settings(Restart::Always, None), me(), 1);
    let t = Instant::now();
    m.step(t, Event::Begin { attach: Some(55) });
    let a = m.step(
        t,
        Event::StartFailed {
            why: "gone".into(),
            exit: None,
        },
    );
    assert_eq!(a, [Action::RemoveState, Action::Fail]);
}

fn held_with_health(failures: u32) -> Settings {
    let mut set = settings(Restart::OnFailure, None);
    set.hold_socket = true;
    set.supervision.health = Some(HealthCheck {
        path: "/h".into(),
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        failures,
    });
    set
}

#[test]
fn failing_health_on_a_held_socket_reloads_counted_first() {
    let (mut m, t) = running(held_with_health(1), 100);
    let due = m.deadline().expect("a probe");
    assert_eq!(due, t + Duration::from_millis(500));
    assert_eq!(m.step(due, Event::Timer), [Action::Probe]);
    let a = m.step(due, Event::Health(Err("timed out".into())));
    assert!(
        matches!(&a[..], [Action::WriteState(s), Action::WriteState(c), Action::Reload { grace, confirm, .. }]
        if s.health.as_deref() == Some("failing") && c.restarts == 1
            && *grace == REPLACE_GRACE && confirm.is_empty())
    );
    let a = m.step(due, Event::ReloadDone { pid: 101 });
    assert!(matches!(&a[0], Action::WriteState(s) if s.server_pid == 101 && s.restarts == 1));
    assert_eq!(m.run_pid(), Some(101));
}

/// Fails the first check of a run started at `t`: the actions, and when
/// that check was due.
fn first_check_fails(m: &mut Machine, t: Instant) -> (Vec<Action>, Instant) {
    let due = m.deadline().expect("a probe");
    assert_eq!(due, t + Duration::from_millis(500));
    assert_eq!(m.step(due, Event::Timer), [Action::Probe]);
    // A hung server: the probe fails at its timeout.
    let decided = due + Duration::from_millis(500);
    (m.step(decided, Event::Health(Err("timed out".into()))), due)
}

#[test]
fn the_first_failed_check_starts_the_replacement_beside_the_run() {
    let (mut m, t) = running(held_with_health(3), 100);
    let (a, due) = first_check_fails(&mut m, t);
    // The remaining checks are made while the new generation starts, on
    // the same cadence: the time to replaced is the checks, not the
    // checks plus a start.
    let half = Duration::from_millis(500);
    assert!(
        matches!(&a[..], [Action::WriteState(s), Action::Reload { grace, confirm, .. }]
        if s.health.as_deref() == Some("failing") && s.restarts == 0
            && *grace == REPLACE_GRACE && *confirm == [due + half, due + 2 * half])
    );
    // Nothing is counted before the old one is replaced.
    assert_eq!(m.state().restarts, 0);
    assert_eq!(m.run_pid(), Some(100));
    let end = due + 5 * half;
    let a = m.step(end, Event::ReloadDone { pid: 101 });
    assert!(matches!(&a[0], Action::WriteState(s)
        if s.server_pid == 101 && s.restarts == 1 && s.health.is_none()
            && s.reason.starts_with("3 health checks of /h failed in a row (first: timed out)")));
    assert_eq!(m.run_pid(), Some(101));
    // The new run is probed on its own cadence.
    assert_eq!(m.deadline(), Some(end + half));
}

#[test]
fn a_check_that_answers_keeps_the_run_and_drops_the_replacement() {
    let (mut m, t) = running(held_with_health(2), 100);
    let (a, _) = first_check_fails(&mut m, t);
    // Counted at the moment the checks confirm it, before it takes over.
    assert!(matches!(a.last(),
        Some(Action::Reload { confirm, counted: Some(c), .. }) if confirm.len() == 1 && c.restarts == 1));
    let now = t + Duration::from_millis(1600);
    let a = m.step(now, Event::ReloadAbandoned { failed: None });
    assert!(matches!(&a[0], Action::WriteState(s)
        if s.health.as_deref() == Some("ok") && s.server_pid == 100 && s.restarts == 0));
    assert_eq!(m.run_pid(), Some(100));
    assert_eq!(m.deadline(), Some(now + Duration::from_millis(500)));
    // A failure later starts again from one.
    let due = m.deadline().unwrap();
    m.step(due, Event::Timer);
    let a = m.step(due, Event::Health(Err("timed out".into())));
    assert!(matches!(a.last(), Some(Action::Reload { confirm, .. }) if confirm.len() == 1));
}

#[test]
fn every_check_failing_and_the_replacement_too_stops_and_restarts() {
    let (mut m, t) = running(held_with_health(2), 100);
    first_check_fails(&mut m, t);
    let now = t + Duration::from_millis(2000);
    let a = m.step(now, Event::ReloadFailed { why: "boom".into() });
    assert_eq!(
        a,
        [Action::StopRun {
            grace: REPLACE_GRACE
        }]
    );
    let a = m.step(
        now,
        Event::RunStopped {
            code: Some(-9),
            error: None,
        },
    );
    assert_eq!(a[0], Action::EndRun { exit: Some(-9) });
    assert!(matches!(a.last(), Some(Action::WriteState(s))
        if s.phase == Phase::Backoff && s.reason.contains("a new generation beside it failed: boom")));
    let wake = m.deadline().expect("a backoff");
    let a = m.step(wake, Event::Timer);
    assert!(matches!(&a[..], [Action::WriteState(s), Action::Launch] if s.restarts == 1));
}

#[test]
fn no_replacement_is_started_early_when_the_policy_would_not_restart() {
    let mut set = held_with_health(2);
    set.supervision.policy.restart = Restart::No;
    let (mut m, t) = running(set, 100);
    let (a, _) = first_check_fails(&mut m, t);
    assert!(matches!(&a[..], [Action::WriteState(s)] if s.health.as_deref() == Some("failing")));
}

#[test]
fn a_failed_asked_reload_is_reported_and_the_old_run_serves() {
    let mut set = settings(Restart::No, None);
    set.hold_socket = true;
    let (mut m, t) = running(set, 100);
    assert_eq!(
        m.step(t, Event::AskReplace),
        [Action::Reload {
            grace: STOP,
            confirm: vec![],
            counted: None,
        }]
    );
    let a = m.step(t, Event::ReloadFailed { why: "bad".into() });
    assert!(matches!(&a[0], Action::WriteState(s) if s.replaced == 1 && s.replace_error == "bad"));
    assert_eq!(m.run_pid(), Some(100));
}

#[test]
fn memory_over_the_limit_replaces_the_run_with_a_short_grace() {
    let mut set = settings(Restart::Always, None);
    set.supervision.max_memory = Some(1000);
    let (mut m, _) = running(set, 100);
    let due = m.deadline().expect("a reading");
    assert_eq!(m.step(due, Event::Timer), [Action::ReadMemory]);
    assert!(m.step(due, Event::Memory(999)).is_empty());
    let due = m.deadline().expect("a reading");
    m.step(due, Event::Timer);
    assert_eq!(
        m.step(due, Event::Memory(1001)),
        [Action::StopRun {
            grace: REPLACE_GRACE
        }]
    );
    let a = m.step(
        due,
        Event::RunStopped {
            code: Some(-15),
            error: None,
        },
    );
    assert!(matches!(&a.last(), Some(Action::WriteState(s)) if s.phase == Phase::Backoff));
}

// ---- random stories ---------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_settings(r: &mut Rng) -> Settings {
    let restart = [Restart::No, Restart::OnFailure, Restart::Always][r.below(3) as usize];
    let limit = (r.below(4) != 0).then(|| 1 + r.below(5) as u32);
    let mut set = settings(restart, limit);
    set.hold_socket = r.chance(50);
    if r.chance(50) {
        set.supervision.health = Some(HealthCheck {
            path: "/h".into(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            failures: 1 + r.below(3) as u32,
        });
    }
    if r.chance(30) {
        set.supervision.max_memory = Some(100);
    }
    set
}

/// The world the machine acts on, and what the invariants need.
struct World {
    r: Rng,
    live: Option<i32>,
    next_pid: i32,
    now: Instant,
    restarts: u32,
    /// Failed runs in a row as the generator counts them (every run is
    /// unstable here: `stable_after` is ten hours).
    fails: u32,
    /// The last event may end in a failure-counted replacement.
    counting: bool,
    exited: Option<i32>,
    /// Supervision begins by taking over a running server.
    attaching: bool,
}

impl World {
    /// The outcome of a blocking action, or None.
    fn outcome(&mut self, a: &Action, first: bool) -> Option<Event> {
        let r = &mut self.r;
        Some(match a {
            Action::Launch | Action::Attach(_) => {
                assert!(
                    self.live.is_none() || matches!(a, Action::Attach(_)),
                    "never two runs at once"
                );
                match r.below(10) {
                    0..=6 => {
                        let pid = match a {
                            Action::Attach(p) => *p,
                            _ => self.new_pid(),
                        };
                        self.live = Some(pid);
                        Event::RunReady { pid }
                    }
                    7 | 8 => {
                        self.live = None;
                        self.fails += u32::from(!first);
                        Event::StartFailed {
                            why: "x".into(),
                            exit: Some(1),
                        }
                    }
                    _ => {
                        self.live = None;
                        Event::Interrupted
                    }
                }
            }
            Action::Reload { confirm, .. } if !confirm.is_empty() => {
                assert!(self.live.is_some(), "a reload beside a run");
                match r.below(10) {
                    0..=3 => {
                        let pid = self.new_pid();
                        self.live = Some(pid);
                        self.fails += 1; // every check failed: counted
                        Event::ReloadDone { pid }
                    }
                    4 | 5 => {
                        self.fails += 1;
                        Event::ReloadFailed { why: "y".into() }
                    }
                    6..=8 => Event::ReloadAbandoned {
                        failed: r.chance(50).then(|| "w".into()),
                    },
                    _ => Event::Interrupted,
                }
            }
            Action::Reload { .. } => {
                assert!(self.live.is_some(), "a reload beside a run");
                match r.below(10) {
                    0..=5 => {
                        let pid = self.new_pid();
                        self.live = Some(pid);
                        Event::ReloadDone { pid }
                    }
                    6..=8 => Event::ReloadFailed { why: "y".into() },
                    _ => Event::Interrupted,
                }
            }
            Action::StopRun { .. } => {
                self.live = None;
                Event::RunStopped {
                    code: [Some(-15), Some(-9), None][r.below(3) as usize],
                    error: r.chance(5).then(|| "z".into()),
                }
            }
            Action::Probe => Event::Health(if r.chance(60) {
                Ok(())
            } else {
                Err("no".into())
            }),
            Action::ReadMemory => Event::Memory(if r.chance(70) { 50 } else { 200 }),
            _ => return None,
        })
    }

    fn new_pid(&mut self) -> i32 {
        self.next_pid += 1;
        self.next_pid
    }

    /// What happens while the machine waits.
    fn happen(&mut self, m: &Machine, step: usize) -> Event {
        assert_eq!(m.run_pid(), self.live, "the machine knows which run serves");
        if step > 300 || self.r.chance(3) {
            return Event::AskStop;
        }
        let deadline = m.deadline();
        if self.live.is_some() && (deadline.is_none() || self.r.chance(15)) {
            let code = [Some(0), Some(1), Some(-9), Some(-15), None][self.r.below(5) as usize];
            self.live = None;
            self.fails += 1;
            return Event::RunExited { code };
        }
        if self.r.chance(8) {
            return Event::AskReplace;
        }
        match deadline {
            Some(t) => {
                self.now = self.now.max(t);
                Event::Timer
            }
            None => Event::AskStop,
        }
    }

    /// Checks one action against the invariants.
    fn check(&mut self, set: &Settings, a: &Action, reports: &mut Vec<String>) {
        match a {
            Action::WriteState(s) => {
                assert_eq!(s.pid, 4242);
                assert!(s.restarts >= self.restarts, "restarts never go down");
                self.restarts = s.restarts;
                match s.phase {
                    Phase::Running => assert_eq!(Some(s.server_pid), self.live),
                    Phase::Backoff => {
                        assert_eq!((s.server_pid, self.live), (0, None));
                        if let Some(l) = set.supervision.policy.limit {
                            assert!(self.fails < l, "restarts only below the limit");
                        }
                    }
                    // Launching, or about to take over the running one.
                    Phase::Starting => {
                        assert_eq!(s.server_pid, 0);
                        assert!(self.live.is_none() || self.attaching);
                    }
                }
            }
            Action::EndRun { .. } => assert_eq!(self.live, None, "a run ends first"),
            Action::Report(w) => reports.push(kind(w).to_owned()),
            Action::Exit(code) => {
                assert_eq!(self.live, None, "the run is stopped before exiting");
                self.exited = Some(*code);
            }
            Action::Fail => {
                assert_eq!(self.live, None);
                self.exited = Some(-1);
            }
            _ => {}
        }
    }
}

fn story(seed: u64) {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let set = random_settings(&mut r);
    let attach = r.chance(20).then_some(77);
    let now = Instant::now();
    let mut w = World {
        r,
        live: attach,
        next_pid: 100,
        now,
        restarts: 0,
        fails: 0,
        counting: false,
        exited: None,
        attaching: attach.is_some(),
    };
    let mut m = Machine::new(set.clone(), me(), seed);
    let mut reports = Vec::new();
    let mut next = Some(Event::Begin { attach });
    let mut first = true;
    for step in 0..2000 {
        let ev = next.take().unwrap_or_else(|| w.happen(&m, step));
        w.counting = matches!(ev, Event::Health(Err(_)) | Event::Memory(200));
        let was_ready = matches!(ev, Event::RunReady { .. });
        let actions = m.step(w.now, ev);
        for a in &actions {
            let counted_now = match a {
                Action::StopRun { .. } => true,
                // Started on the first failed check: counted on its outcome.
                Action::Reload { confirm, .. } => confirm.is_empty(),
                _ => false,
            };
            if w.counting && counted_now {
                w.fails += 1; // replaced for health or memory: a failure
            }
            w.check(&set, a, &mut reports);
        }
        if was_ready {
            first = false;
            w.attaching = false;
        }
        if let Some(a) = actions.last() {
            next = w.outcome(a, first);
        }
        if w.exited.is_some() {
            break;
        }
    }
    let code = w
        .exited
        .unwrap_or_else(|| panic!("seed {seed}: never ended"));
    assert!(m.is_over());
    assert!(reports.len() <= 1, "seed {seed}: one final report");
    let limit = set.supervision.policy.limit;
    match reports.first().map(String::as_str) {
        Some("failed") => {
            assert_eq!(
                Some(w.fails),
                limit,
                "seed {seed}: gives up exactly at the limit"
            );
            assert_eq!(code, 1);
        }
        Some("done") => assert_ne!(set.supervision.policy.restart, Restart::Always),
        Some("stopped") => assert_eq!(code, 0),
        None => assert!(code == -1 || code == 1, "seed {seed}: {code}"),
        Some(other) => panic!("{other}"),
    }
}

#[test]
fn thousands_of_random_stories_keep_the_invariants() {
    for seed in 1..=3000 {
        story(seed);
    }
}
