//! The supervisor's event loop. It sleeps in one `poll()` on the server's
//! pidfd and the control pipe (signal numbers written by Python's wakeup
//! fd: SIGTERM/SIGINT stop, SIGHUP replaces the run), with a timeout only
//! for what is periodic by nature: the next health probe, the next memory
//! reading, the end of a backoff wait.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::platform::{self, PidFd};
use crate::record::End;
use crate::server::Server;

pub use super::channels::Events;
use super::channels::{Ask, Control};
use super::policy::{self, Decision, Failures, RunEnd};
use super::state::{self, Phase, SupState};
use super::{health, MEMORY_EVERY};
use crate::protocol::events::Event;
/// How long a server replaced for failing health checks or memory gets to
/// exit before SIGKILL.
const REPLACE_GRACE: Duration = Duration::from_secs(1);

/// One run of the server, as the supervisor sees it.
struct Run {
    pidfd: Arc<PidFd>,
    since: Instant,
    health_fails: u32,
    next_health: Option<Instant>,
    next_memory: Option<Instant>,
}

/// Supervises `server` until it is stopped, the policy is done with it, or
/// it gives up. `attach`: a running server of ours to supervise instead of
/// starting one. Returns an exit status for the process that supervised:
/// 0 after a stop, the last run's status (as a shell reports it) when the
/// policy was done with it, 1 after giving up; the error if the first run
/// never became ready (nothing is left running then).
pub fn run(
    server: &Server,
    redirect_output: bool,
    attach: Option<i32>,
    control_fd: RawFd,
    mut ev: Events,
) -> crate::Result<i32> {
    let ctl = Control(control_fd);
    // SAFETY: as in `Control::take`. Reads must never block the loop.
    let _ = rustix::fs::fcntl_setfl(
        unsafe { BorrowedFd::borrow_raw(control_fd) },
        rustix::fs::OFlags::NONBLOCK,
    );
    let cfg = server.config().clone();
    let sup = cfg.supervision.clone();
    let paths = server.paths().clone();
    let mut st = SupState::for_self();
    let mut failures = Failures::default();
    let mut stop_asked = false;
    let _ = state::write(&paths, &st);
    // ---- logs (issue 20): this process writes the server's output; the
    // guard drains the pipes when supervision ends.
    let _logs = redirect_output
        .then(|| super::logwriter::begin(&server.log_paths(), (&sup).into(), ev.log_sink()));

    // The first run: started here (the caller waits for the report), or
    // the running server we were asked to take over.
    let first = match attach {
        Some(pid) => server.attach_run(pid).ok_or_else(|| Error::NotRunning {
            name: cfg.name.clone(),
        }),
        None => {
            let mut tick = || check(&ctl, &mut stop_asked);
            server.supervisor_launch(redirect_output, &mut tick)
        }
    };
    ev.warm_notes();
    let mut current = match first {
        Ok(pidfd) => {
            // The state first: whoever reads it after the report sees it running.
            st.phase = Phase::Running;
            st.server_pid = pidfd.pid();
            let _ = state::write(&paths, &st);
            ev.report(&Event::Ready {
                server_pid: pidfd.pid(),
                port: server.port(),
            });
            Some(new_run(pidfd, &sup, Instant::now()))
        }
        Err(e) => {
            state::remove_if_names(&paths, st.pid);
            return Err(e);
        }
    };
    let mut backoff_until: Option<Instant> = None;

    loop {
        // ---- waiting: for the server, the control pipe, or a timer -------
        let now = Instant::now();
        let due = [
            current.as_ref().and_then(|r| r.next_health),
            current.as_ref().and_then(|r| r.next_memory),
            backoff_until,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = due.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(now)
        });
        let (ctl_ready, exited) = ctl.wait(current.as_ref().map(|r| &*r.pidfd), timeout);
        let ask = if ctl_ready { ctl.take() } else { Ask::Nothing };
        if ask == Ask::Stop || stop_asked {
            return Ok(stop_everything(server, current.take(), &mut st, &mut ev));
        }
        // ---- SIGHUP: a new generation on the held socket, then the old one
        // stops (zero downtime); without a held socket, stop then start.
        if ask == Ask::Replace && !exited && cfg.hold_socket {
            if let Some(r) = current.as_mut() {
                let mut tick = || check(&ctl, &mut stop_asked);
                let reloaded =
                    server.supervisor_reload(redirect_output, cfg.stop_timeout, &mut tick);
                ev.warm_notes();
                match reloaded {
                    Ok(pidfd) => {
                        // Asked for, not a failure: `restarts` counts the
                        // supervisor's own restarts only.
                        st.server_pid = pidfd.pid();
                        st.health = None;
                        st.replaced += 1;
                        st.replace_error.clear();
                        let _ = state::write(&paths, &st);
                        ev.say(
                            "info",
                            &format!("{} reloaded: now pid {}", cfg.name, pidfd.pid()),
                        );
                        *r = new_run(pidfd, &sup, Instant::now());
                    }
                    Err(Error::Interrupted) => {}
                    Err(e) => {
                        // Whoever asked learns it at once, with the reason.
                        st.replaced += 1;
                        st.replace_error = first_line(&e.to_string()).to_owned();
                        let _ = state::write(&paths, &st);
                        ev.say(
                            "warning",
                            &format!(
                                "{} reload failed, the old generation keeps serving: {}",
                                cfg.name, st.replace_error
                            ),
                        );
                    }
                }
                continue;
            }
        }
        let now = Instant::now();
        // ---- what ended the run, if anything -----------------------------
        let mut ended: Option<(RunEnd, String)> = None;
        let mut unhealthy = false;
        if let Some(r) = current.as_mut() {
            if exited {
                let code = server.run_exit_code(&r.pidfd);
                let words = match code {
                    Some(c) => End::Exited(c).describe(),
                    None => "died (exit status unknown: it was not our child)".to_owned(),
                };
                st.last_exit = code;
                ended = Some((RunEnd::Exited(code), words));
            } else if ask == Ask::Replace {
                ended = Some((
                    RunEnd::Replaced,
                    "a replacement was asked for (SIGHUP)".into(),
                ));
            } else if let Some(why) = check_memory(server, r, &sup, now) {
                ended = Some((RunEnd::Replaced, why));
            } else if let Some(why) = check_health(server, r, &sup, &mut st, now) {
                ended = Some((RunEnd::Replaced, why));
                unhealthy = true;
            }
        }
        // A server failing its health checks, on a held socket: the next
        // generation starts beside it and takes over the socket's queue, and
        // the hung one is stopped once that is ready (`reload`), so the time
        // to replaced is the checks plus one start.
        let mut decided = None;
        if let (Some((_, words)), true, true, Some(r)) =
            (&ended, unhealthy, cfg.hold_socket, current.as_ref())
        {
            let ran = now.saturating_duration_since(r.since);
            let decision =
                policy::decide(&sup.policy, &mut failures, RunEnd::Replaced, ran, jitter());
            decided = Some(decision);
            if let Decision::Restart(_) = decision {
                let mut tick = || check(&ctl, &mut stop_asked);
                let grace = cfg.stop_timeout.min(REPLACE_GRACE);
                // Counted before the new generation serves: status() must
                // never show a replacement serving with the old count.
                st.restarts += 1;
                let _ = state::write(&paths, &st);
                let reloaded = server.supervisor_reload(redirect_output, grace, &mut tick);
                ev.warm_notes();
                if reloaded.is_err() {
                    // Not replaced: the restart below (after its wait) counts.
                    st.restarts -= 1;
                }
                if let Ok(pidfd) = reloaded {
                    st.server_pid = pidfd.pid();
                    st.health = None;
                    st.reason = words.clone();
                    let _ = state::write(&paths, &st);
                    ev.say(
                        "warning",
                        &format!(
                            "{} {words}: replaced by a new generation, pid {} (restart {})",
                            cfg.name,
                            pidfd.pid(),
                            st.restarts
                        ),
                    );
                    current = Some(new_run(pidfd, &sup, Instant::now()));
                    continue;
                }
            }
        }
        if let Some((end, words)) = ended {
            let r = current.take().expect("a run ended");
            let ran = now.saturating_duration_since(r.since);
            if end == RunEnd::Replaced {
                let mut tick = || Ok(());
                // A hung or bloated server gets a short grace, not the full
                // stop_timeout: it is being replaced because it does not
                // serve (or is about to meet the OOM killer).
                let grace = if ask == Ask::Replace {
                    cfg.stop_timeout
                } else {
                    cfg.stop_timeout.min(REPLACE_GRACE)
                };
                st.last_exit = server.stop_run(&r.pidfd, grace, &mut tick).1;
            }
            server.end_run(&r.pidfd, st.last_exit);
            let jitter = jitter();
            let decision = if ask == Ask::Replace {
                Decision::Restart(Duration::ZERO)
            } else if let Some(d) = decided {
                d // already counted (the replacement beside it failed)
            } else {
                policy::decide(&sup.policy, &mut failures, end, ran, jitter)
            };
            if let Some(code) = finish(server, decision, &words, &mut st, &mut ev) {
                return Ok(code);
            }
            if let Decision::Restart(wait) = decision {
                backoff_until = Some(now + wait);
                st.phase = Phase::Backoff;
                st.server_pid = 0;
                st.reason = words;
                let _ = state::write(&paths, &st);
            }
            continue;
        }
        // ---- the end of a backoff wait: the next run ----------------------
        if backoff_until.is_some_and(|t| now >= t) {
            backoff_until = None;
            st.restarts += 1;
            st.phase = Phase::Starting;
            st.health = None;
            let _ = state::write(&paths, &st);
            let mut tick = || check(&ctl, &mut stop_asked);
            let launched = server.supervisor_launch(redirect_output, &mut tick);
            ev.warm_notes();
            match launched {
                Ok(pidfd) => {
                    st.phase = Phase::Running;
                    st.server_pid = pidfd.pid();
                    let _ = state::write(&paths, &st);
                    ev.say(
                        "info",
                        &format!(
                            "{} serving again as pid {} (restart {})",
                            cfg.name,
                            pidfd.pid(),
                            st.restarts
                        ),
                    );
                    current = Some(new_run(pidfd, &sup, Instant::now()));
                }
                Err(Error::Interrupted) => {
                    return Ok(stop_everything(server, None, &mut st, &mut ev));
                }
                Err(e) => {
                    let words = format!("failed to start ({})", first_line(&e.to_string()));
                    if let Error::StartFailed { exit_code, .. } = &e {
                        st.last_exit = *exit_code;
                    }
                    let decision = policy::decide(
                        &sup.policy,
                        &mut failures,
                        RunEnd::NeverReady,
                        Duration::ZERO,
                        jitter(),
                    );
                    if let Some(code) = finish(server, decision, &words, &mut st, &mut ev) {
                        return Ok(code);
                    }
                    if let Decision::Restart(wait) = decision {
                        backoff_until = Some(Instant::now() + wait);
                        st.phase = Phase::Backoff;
                        st.reason = words;
                        let _ = state::write(&paths, &st);
                    }
                }
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn new_run(pidfd: Arc<PidFd>, sup: &super::Supervision, now: Instant) -> Run {
    Run {
        pidfd,
        since: now,
        health_fails: 0,
        next_health: sup.health.as_ref().map(|h| now + h.interval),
        next_memory: sup.max_memory.map(|_| now + MEMORY_EVERY),
    }
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

/// A number in [0, 1) for the backoff's jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    platform::random_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Reads the memory of the server and its workers when due; why to
/// replace it, if over the limit.
fn check_memory(
    server: &Server,
    r: &mut Run,
    sup: &super::Supervision,
    now: Instant,
) -> Option<String> {
    let (limit, due) = (sup.max_memory?, r.next_memory?);
    if now < due {
        return None;
    }
    r.next_memory = Some(now + MEMORY_EVERY);
    let used = server.tree_rss(r.pidfd.pid());
    (used > limit).then(|| {
        format!(
            "its memory ({}) went over max_memory ({})",
            mib(used),
            mib(limit)
        )
    })
}

/// Probes health when due; why to replace it, after enough failures in a row.
fn check_health(
    server: &Server,
    r: &mut Run,
    sup: &super::Supervision,
    st: &mut SupState,
    now: Instant,
) -> Option<String> {
    let (h, due) = (sup.health.as_ref()?, r.next_health?);
    if now < due {
        return None;
    }
    let to = health::target(server.addr(), server.port());
    let tls = server.config().speaks().tls;
    let result = health::probe(to, &server.config().host, &h.path, h.timeout, tls);
    // A fixed cadence from when each probe was due (its timeout included),
    // so that failures in a row take `failures x interval`, not more.
    r.next_health = Some((due + h.interval).max(Instant::now()));
    let word = if result.is_ok() { "ok" } else { "failing" };
    if st.health.as_deref() != Some(word) {
        st.health = Some(word.to_owned());
        let _ = state::write(server.paths(), st);
    }
    match result {
        Ok(_) => {
            r.health_fails = 0;
            None
        }
        Err(why) => {
            r.health_fails += 1;
            (r.health_fails >= h.failures).then(|| {
                format!(
                    "{} health checks of {} failed in a row (last: {why})",
                    r.health_fails, h.path
                )
            })
        }
    }
}

/// Acts on a decision that ends supervision; Some(exit code) if it did.
fn finish(
    server: &Server,
    decision: Decision,
    words: &str,
    st: &mut SupState,
    ev: &mut Events,
) -> Option<i32> {
    let name = &server.config().name;
    match decision {
        Decision::Restart(wait) => {
            ev.say(
                "warning",
                &format!(
                    "{name} {words}: restarting (restart {}, next wait {:.1} s)",
                    st.restarts + 1,
                    wait.as_secs_f64()
                ),
            );
            None
        }
        Decision::Done => {
            ev.say(
                "info",
                &format!("{name} {words}: not restarted (its restart policy)"),
            );
            server.note_final(End::Exited(st.last_exit.unwrap_or(0)), st.restarts);
            state::remove_if_names(server.paths(), st.pid);
            ev.report(&Event::Done);
            // As a shell reports it: 128 + N for signal N.
            Some(st.last_exit.map_or(1, |c| if c < 0 { 128 - c } else { c }))
        }
        Decision::GiveUp => {
            ev.say(
                "warning",
                &format!(
                    "{name} {words}: giving up after {} failed runs in a row; state is failed",
                    server.config().supervision.policy.limit.unwrap_or(0)
                ),
            );
            server.note_final(End::GaveUp(st.last_exit), st.restarts);
            state::remove_if_names(server.paths(), st.pid);
            ev.report(&Event::Failed);
            Some(1)
        }
    }
}

/// A deliberate stop: the run (if any) goes, nothing comes back.
fn stop_everything(
    server: &Server,
    current: Option<Run>,
    st: &mut SupState,
    ev: &mut Events,
) -> i32 {
    let mut tick = || Ok(());
    let result = match &current {
        Some(r) => {
            server
                .stop_run(&r.pidfd, server.config().stop_timeout, &mut tick)
                .0
        }
        None => Ok(()),
    };
    if let Some(r) = &current {
        server.end_run(&r.pidfd, None);
    }
    server.note_final(End::Stopped, st.restarts);
    state::remove_if_names(server.paths(), st.pid);
    match result {
        Ok(()) => {
            ev.report(&Event::Stopped);
            0
        }
        Err(e) => {
            ev.say("warning", &e.to_string());
            1
        }
    }
}
