//! Every name and descriptor number shared between our processes: the
//! manager (this crate), the launcher (`_launch.py`), the warm-start
//! preloader and the children it forks (`_preload.py`), and the supervisor.
//! Python imports these from `_core` and never spells them. The messages
//! themselves are serde types beside their names: `events` (supervisor ->
//! caller).

use std::os::fd::RawFd;

pub mod events;

// ---- descriptor numbers ---------------------------------------------------------

/// The held listening socket, in a server (read by `_launch.py`) and in a
/// supervisor.
pub const HELD_FD: RawFd = 3;
/// The lifeline's read end in a server: `_launch.py` stops the server's
/// whole group when it reads end-of-file (the owner is gone).
pub const LIFELINE_FD: RawFd = 4;
/// The events pipe (supervisor -> the caller that spawned it), in a supervisor.
pub const EVENTS_FD: RawFd = 4;
/// The lifeline's read end in a supervisor: at end-of-file it ends
/// supervision and stops the server.
pub const SUPERVISOR_LIFELINE_FD: RawFd = 5;

/// What the manager calls each descriptor it sends a warm-start preloader
/// (`warm/request.rs`), and the number it has in the server forked.
pub const WARM_FDS: [(&str, RawFd); 4] = [
    ("stdout", 1),
    ("stderr", 2),
    ("held", HELD_FD),
    ("lifeline", LIFELINE_FD),
];

// ---- environment variables ------------------------------------------------------

/// Marks every process of one launch (its value: the launch id), so that
/// descendants which leave the process group can still be found at stop.
pub const LAUNCH_ENV: &str = "UPSONIC_SERVER_LAUNCH_ID";
/// The abstract unix datagram socket a launcher reports readiness on.
pub const READY_ENV: &str = "UPSONIC_READY_SOCKET";
/// Set (to `LIFELINE_FD`) when the server has a lifeline to watch.
pub const LIFELINE_ENV: &str = "UPSONIC_LIFELINE_FD";
/// The PID file of a server with a lifeline: its launcher removes the record
/// there when the caller is gone (`lifeline::release_record`).
pub const RECORD_ENV: &str = "UPSONIC_PID_FILE";
/// The log files of a server whose output goes through its supervisor's
/// pipes (`supervise::logwriter`): should the supervisor die (the pipes
/// break), our launcher in the server writes there directly instead.
pub const LOG_OUT_ENV: &str = "UPSONIC_LOG_STDOUT";
pub const LOG_ERR_ENV: &str = "UPSONIC_LOG_STDERR";

// ---- the launcher -----------------------------------------------------------------

/// The module a server runs as when the manager needs our launcher (a held
/// socket, a lifeline): `python -m LAUNCHER_MODULE FD -- APP [options]`.
pub const LAUNCHER_MODULE: &str = "upsonic_server_manager._launch";
/// The launcher's FD argument when there is no held socket (uvicorn binds).
pub const NO_HELD_FD: &str = "-";

// ---- log files --------------------------------------------------------------------

/// How the supervisor stamps each line of a server's log with
/// `log_timestamps` (`supervise::logwriter::stamp`), as a regular expression
/// matched at the line's start: ISO 8601 UTC with milliseconds, then one
/// space (`2026-12-01T03:04:05.123Z `). Stamps sort as text in time order.
pub const LOG_STAMP_PATTERN: &str = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z ";

/// Every (name, value) above, for the binding to export as module
/// attributes of `_core`.
pub const NUMBERS: [(&str, RawFd); 4] = [
    ("HELD_FD", HELD_FD),
    ("LIFELINE_FD", LIFELINE_FD),
    ("EVENTS_FD", EVENTS_FD),
    ("SUPERVISOR_LIFELINE_FD", SUPERVISOR_LIFELINE_FD),
];
/// The environment names and other words, as (attribute, value).
pub const NAMES: [(&str, &str); 9] = [
    ("LAUNCH_ENV", LAUNCH_ENV),
    ("LOG_OUT_ENV", LOG_OUT_ENV),
    ("LOG_ERR_ENV", LOG_ERR_ENV),
    ("RECORD_ENV", RECORD_ENV),
    ("READY_ENV", READY_ENV),
    ("LIFELINE_ENV", LIFELINE_ENV),
    ("LAUNCHER_MODULE", LAUNCHER_MODULE),
    ("NO_HELD_FD", NO_HELD_FD),
    ("LOG_STAMP_PATTERN", LOG_STAMP_PATTERN),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_a_child_gets_are_distinct_and_above_stdio() {
        // A server gets HELD_FD and LIFELINE_FD; a supervisor HELD_FD,
        // EVENTS_FD and SUPERVISOR_LIFELINE_FD: each set must not collide.
        for set in [
            &[HELD_FD, LIFELINE_FD][..],
            &[HELD_FD, EVENTS_FD, SUPERVISOR_LIFELINE_FD][..],
        ] {
            for (i, a) in set.iter().enumerate() {
                assert!(*a > 2);
                assert!(!set[i + 1..].contains(a));
            }
        }
        let names: Vec<_> = NAMES.iter().map(|(n, _)| *n).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len());
    }
}
