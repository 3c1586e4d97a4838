//! Whose process is this? One decision, made from facts, with no /proc read
//! inside: the callers gather what the system says (through a `Facts`) and
//! act on the answer. Also the one rule for whether we may signal a process.
//!
//! A PID record and a port holder are each classified into a `Claim`:
//!
//! | claim            | record                                   | port holder                                  |
//! |------------------|------------------------------------------|----------------------------------------------|
//! | `Ours`           | our server, alive: adopt, stop it        | a process of our recorded launch: replace it |
//! | `OtherConfig`    | another app/port's live server: keep     | another manager's launch: never replace      |
//! | `Orphaned`       | our launch, leader dead: sweep its rest  | a straggler of our dead launch: replace it   |
//! | `ForeignUvicorn` | a bare PID file naming a live uvicorn of another app (the original may track it): keep | a uvicorn of this app with no launch marker (a leftover instance): replace it |
//! | `Stale`          | nothing alive is tracked: remove         | (not produced)                               |
//! | `Foreign`        | (not produced)                           | anyone else's: with `force` only if `signalable` (same user, not PID 1, not the caller) |

use crate::cmdline::Uvicorn;
use crate::record::Identity;

/// The caller's own identity, against which ownership is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub pid: i32,
    pub uid: u32,
    pub pgid: i32,
    /// This boot's identifier (empty if unknown).
    pub boot_id: String,
}

/// What one read of /proc/PID/stat says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Not a zombie and not being torn down.
    pub alive: bool,
    pub start_ticks: u64,
}

/// Where facts come from: the live system, or a test's made-up world.
/// Each is asked for only when a decision needs it.
pub trait Facts {
    /// Who is asking.
    fn me(&self) -> &Me;
    /// State and start time of `pid`, or `None` if there is no such process.
    fn stat(&self, pid: i32) -> Option<Stat>;
    /// The owner of `pid`.
    fn owner(&self, pid: i32) -> Option<u32>;
    /// The command line of `pid`.
    fn cmdline(&self, pid: i32) -> Option<Vec<String>>;
    /// The launch marker in `pid`'s environment (readable for our own processes).
    fn launch_marker(&self, pid: i32) -> Option<String>;
    /// Whether process group `pgid` still has members.
    fn group_has_members(&self, pgid: i32) -> bool;
}

/// Whose a process (or the process a record names) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The server this manager describes; `legacy` when known only from a
    /// bare PID file (upsonic's original format) and its command line.
    Ours { legacy: bool },
    /// A live server under this name with another app or port, or a holder
    /// that carries another launch's marker: somebody's tracked server.
    OtherConfig,
    /// Our launch whose leader is gone; `lingering` when its process group
    /// still has members (e.g. workers of a SIGKILLed master).
    Orphaned { lingering: bool },
    /// A uvicorn of ours that carries no launch marker.
    ForeignUvicorn,
    /// The record tracks nothing alive.
    Stale,
    /// Not ours; `signalable` when `may_signal` allows it all the same (a
    /// program of the same user), which `force` may stop.
    Foreign { signalable: bool },
}

impl Claim {
    /// Whether a record with this claim must stay on disk.
    pub fn keeps_record(self) -> bool {
        match self {
            Claim::Ours { .. } | Claim::OtherConfig | Claim::ForeignUvicorn => true,
            Claim::Orphaned { lingering } => lingering,
            Claim::Stale | Claim::Foreign { .. } => false,
        }
    }

    /// Whether `start()` may stop a port holder with this claim to take the
    /// port back (with `force`, any holder we may signal).
    pub fn replaceable(self, force: bool) -> bool {
        match self {
            Claim::Ours { .. } | Claim::Orphaned { .. } | Claim::ForeignUvicorn => true,
            Claim::OtherConfig | Claim::Foreign { signalable: true } => force,
            Claim::Stale | Claim::Foreign { signalable: false } => false,
        }
    }
}

/// The configuration a record or holder is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub app_path: &'a str,
    pub port: u16,
}

impl Wanted<'_> {
    /// Whether a recorded identity describes this configuration.
    /// Port 0 ("the kernel picks") matches whatever port was picked.
    pub fn matches(&self, id: &Identity) -> bool {
        (self.port == 0 || id.port == self.port) && id.app_path == self.app_path
    }
}

/// The one rule for signalling a single process: never PID 0 or 1, never the
/// caller, never a process of another user (even as root).
pub fn may_signal(pid: i32, owner: Option<u32>, me: &Me) -> bool {
    pid > 1 && pid != me.pid && owner == Some(me.uid)
}

/// The rule for signalling a whole process group: its leader passes
/// `may_signal`, and it is not the caller's own group.
pub fn may_signal_group(pgid: i32, leader_owner: Option<u32>, me: &Me) -> bool {
    may_signal(pgid, leader_owner, me) && pgid != me.pgid
}

/// Whether the process that started at `start_ticks` is the one `id`
/// describes: same start tick, and the same boot when one was recorded.
pub fn launched_as(id: &Identity, start_ticks: u64, me: &Me) -> bool {
    let same_boot = id.boot_id.is_empty() || me.boot_id.is_empty() || id.boot_id == me.boot_id;
    id.start_ticks == start_ticks && same_boot
}

/// Classifies the PID record (`pid`, with our identity file when it names
/// that PID). A PID, start tick and boot that match what we recorded are the
/// process we launched; a bare PID file is believed only for a live uvicorn
/// of ours serving this app on this port.
pub fn of_record(pid: i32, identity: Option<&Identity>, want: Wanted<'_>, f: &dyn Facts) -> Claim {
    let me = f.me();
    if pid == me.pid {
        return Claim::Stale;
    }
    let stat = f.stat(pid);
    match identity {
        Some(id) => {
            let launched = stat.is_some_and(|s| launched_as(id, s.start_ticks, me));
            let alive = launched && stat.is_some_and(|s| s.alive);
            if !want.matches(id) {
                return if alive {
                    Claim::OtherConfig
                } else {
                    Claim::Stale
                };
            }
            if alive {
                return Claim::Ours { legacy: false };
            }
            // The leader is gone (or a zombie). While no live process has
            // taken its PID, a group with members can only be what is left
            // of this launch.
            let pid_free = stat.is_none_or(|s| !s.alive);
            Claim::Orphaned {
                lingering: pid_free && f.group_has_members(pid),
            }
        }
        None => {
            if !stat.is_some_and(|s| s.alive) || f.owner(pid) != Some(me.uid) {
                return Claim::Stale;
            }
            match f.cmdline(pid).as_deref().and_then(Uvicorn::parse) {
                Some(u) if u.serves(want.app_path, Some(want.port)) => Claim::Ours { legacy: true },
                Some(_) => Claim::ForeignUvicorn,
                None => Claim::Stale,
            }
        }
    }
}

/// A process holding a listening socket, as the port table reports it.
#[derive(Debug, Clone, Copy)]
pub struct HolderFacts {
    pub pid: i32,
    pub uid: u32,
    pub pgid: i32,
}

/// Classifies a holder of our port. `recorded` is our record's identity
/// (only when it names the recorded PID). The marker and command line are
/// read from the holder's group leader when we may signal it (a worker's
/// own command line is multiprocessing's, not uvicorn's).
pub fn of_holder(
    h: HolderFacts,
    recorded: Option<&Identity>,
    app_path: &str,
    f: &dyn Facts,
) -> Claim {
    let me = f.me();
    if !may_signal(h.pid, Some(h.uid), me) {
        return Claim::Foreign { signalable: false };
    }
    let leader_alive = |id: &Identity| {
        f.stat(id.pid)
            .is_some_and(|s| s.start_ticks == id.start_ticks)
    };
    if let Some(id) = recorded {
        if h.pgid == id.pid && leader_alive(id) {
            return Claim::Ours { legacy: false };
        }
    }
    let leader = if h.pgid > 1 { h.pgid } else { h.pid };
    let subject = if f.stat(leader).is_some() && may_signal(leader, f.owner(leader), me) {
        leader
    } else {
        h.pid
    };
    if let Some(marker) = f.launch_marker(subject) {
        return match recorded {
            Some(id) if id.launch_id == marker && leader_alive(id) => Claim::Ours { legacy: false },
            Some(id) if id.launch_id == marker => Claim::Orphaned { lingering: true },
            _ => Claim::OtherConfig,
        };
    }
    match f.cmdline(subject).as_deref().and_then(Uvicorn::parse) {
        Some(u) if u.serves(app_path, None) => Claim::ForeignUvicorn,
        _ => Claim::Foreign { signalable: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[derive(Default, Clone)]
    struct P {
        alive: bool,
        ticks: u64,
        uid: u32,
        cmd: Option<&'static str>,
        marker: Option<&'static str>,
    }

    struct World {
        me: Me,
        procs: HashMap<i32, P>,
        groups: HashSet<i32>,
    }

    impl World {
        fn new() -> Self {
            World {
                me: Me {
                    pid: 100,
                    uid: 1000,
                    pgid: 100,
                    boot_id: "boot".into(),
                },
                procs: HashMap::new(),
                groups: HashSet::new(),
            }
        }
        fn with(mut self, pid: i32, p: P) -> Self {
            self.procs.insert(pid, p);
            self
        }
    }

    impl Facts for World {
        fn me(&self) -> &Me {
            &self.me
        }
        fn stat(&self, pid: i32) -> Option<Stat> {
            self.procs.get(&pid).map(|p| Stat {
                alive: p.alive,
                start_ticks: p.ticks,
            })
        }
        fn owner(&self, pid: i32) -> Option<u32> {
            self.procs.get(&pid).map(|p| p.uid)
        }
        fn cmdline(&self, pid: i32) -> Option<Vec<String>> {
            let cmd = self.procs.get(&pid)?.cmd?;
            Some(cmd.split(' ').map(str::to_owned).collect())
        }
        fn launch_marker(&self, pid: i32) -> Option<String> {
            self.procs.get(&pid)?.marker.map(str::to_owned)
        }
        fn group_has_members(&self, pgid: i32) -> bool {
            self.groups.contains(&pgid)
        }
    }

    fn live(ticks: u64, uid: u32) -> P {
        P {
            alive: true,
            ticks,
            uid,
            ..P::default()
        }
    }

    fn id(pid: i32, ticks: u64, app: &str, port: u16) -> Identity {
        Identity {
            pid,
            start_ticks: ticks,
            boot_id: "boot".into(),
            launch_id: "L1".into(),
            app_path: app.into(),
            port,
            ..Identity::default()
        }
    }

    const WANT: Wanted<'static> = Wanted {
        app_path: "m:app",
        port: 8000,
    };

    #[test]
    fn record_with_identity() {
        let w = World::new().with(500, live(7, 1000));
        let rec = id(500, 7, "m:app", 8000);
        assert_eq!(
            of_record(500, Some(&rec), WANT, &w),
            Claim::Ours { legacy: false }
        );
        // Same PID, other start tick: the PID was reused.
        let reused = id(500, 6, "m:app", 8000);
        assert_eq!(
            of_record(500, Some(&reused), WANT, &w),
            Claim::Orphaned { lingering: false }
        );
        // Another boot.
        let mut other_boot = rec.clone();
        other_boot.boot_id = "old".into();
        assert_eq!(
            of_record(500, Some(&other_boot), WANT, &w),
            Claim::Orphaned { lingering: false }
        );
        // Another configuration under this name, alive / dead.
        let other = id(500, 7, "m:app", 9000);
        assert_eq!(of_record(500, Some(&other), WANT, &w), Claim::OtherConfig);
        // A manager for port 0 recognises the port the kernel picked.
        let any = Wanted { port: 0, ..WANT };
        assert_eq!(
            of_record(500, Some(&other), any, &w),
            Claim::Ours { legacy: false }
        );
        assert_eq!(
            of_record(501, Some(&id(501, 7, "x:y", 1)), WANT, &w),
            Claim::Stale
        );
        // A record naming the caller is never a server it manages.
        let w2 = World::new().with(100, live(1, 1000));
        assert_eq!(
            of_record(100, Some(&id(100, 1, "m:app", 8000)), WANT, &w2),
            Claim::Stale
        );
    }

    #[test]
    fn dead_leader_with_lingering_group() {
        let mut w = World::new();
        w.groups.insert(500);
        let rec = id(500, 7, "m:app", 8000);
        assert_eq!(
            of_record(500, Some(&rec), WANT, &w),
            Claim::Orphaned { lingering: true }
        );
        assert!(Claim::Orphaned { lingering: true }.keeps_record());
        // A live stranger took the PID: the group cannot be ours any more.
        let w = w.with(500, live(9, 1000));
        assert_eq!(
            of_record(500, Some(&rec), WANT, &w),
            Claim::Orphaned { lingering: false }
        );
        assert!(!Claim::Orphaned { lingering: false }.keeps_record());
        // A zombie leader whose group lives on.
        let mut w = World::new().with(
            500,
            P {
                alive: false,
                ..live(7, 1000)
            },
        );
        w.groups.insert(500);
        assert_eq!(
            of_record(500, Some(&rec), WANT, &w),
            Claim::Orphaned { lingering: true }
        );
    }

    #[test]
    fn bare_pid_file() {
        let uv = |cmd| P {
            cmd: Some(cmd),
            ..live(3, 1000)
        };
        let w = World::new()
            .with(10, uv("python -m uvicorn m:app --port 8000"))
            .with(11, uv("python -m uvicorn other:app --port 8000"))
            .with(12, uv("python -m http.server"))
            .with(
                13,
                P {
                    uid: 0,
                    ..uv("python -m uvicorn m:app --port 8000")
                },
            )
            .with(
                14,
                P {
                    alive: false,
                    ..uv("python -m uvicorn m:app --port 8000")
                },
            );
        assert_eq!(of_record(10, None, WANT, &w), Claim::Ours { legacy: true });
        assert_eq!(of_record(11, None, WANT, &w), Claim::ForeignUvicorn);
        assert_eq!(of_record(12, None, WANT, &w), Claim::Stale);
        assert_eq!(
            of_record(13, None, WANT, &w),
            Claim::Stale,
            "another user's"
        );
        assert_eq!(of_record(14, None, WANT, &w), Claim::Stale, "a zombie");
        assert_eq!(of_record(15, None, WANT, &w), Claim::Stale, "gone");
        assert!(Claim::ForeignUvicorn.keeps_record() && !Claim::Stale.keeps_record());
    }

    #[test]
    fn holders() {
        let rec = id(500, 7, "m:app", 8000);
        let w = World::new()
            .with(
                500,
                P {
                    marker: Some("L1"),
                    ..live(7, 1000)
                },
            )
            .with(
                501,
                P {
                    marker: Some("L1"),
                    ..live(8, 1000)
                },
            )
            .with(
                600,
                P {
                    marker: Some("L2"),
                    ..live(8, 1000)
                },
            )
            .with(
                700,
                P {
                    cmd: Some("python -m uvicorn m:app --port 1"),
                    ..live(8, 1000)
                },
            )
            .with(
                800,
                P {
                    cmd: Some("perl -e listen"),
                    ..live(8, 1000)
                },
            )
            .with(900, live(8, 0));
        let h = |pid, pgid, uid| HolderFacts { pid, uid, pgid };
        // The recorded server's worker.
        assert_eq!(
            of_holder(h(501, 500, 1000), Some(&rec), "m:app", &w),
            Claim::Ours { legacy: false }
        );
        // Another manager's launch.
        assert_eq!(
            of_holder(h(600, 600, 1000), Some(&rec), "m:app", &w),
            Claim::OtherConfig
        );
        assert_eq!(
            of_holder(h(600, 600, 1000), None, "m:app", &w),
            Claim::OtherConfig
        );
        // A uvicorn of this app without a marker, and an unrelated program.
        assert_eq!(
            of_holder(h(700, 700, 1000), None, "m:app", &w),
            Claim::ForeignUvicorn
        );
        let unrelated = Claim::Foreign { signalable: true };
        let untouchable = Claim::Foreign { signalable: false };
        assert_eq!(of_holder(h(800, 800, 1000), None, "m:app", &w), unrelated);
        // Another user's process, the caller, PID 1.
        assert_eq!(
            of_holder(h(900, 900, 0), Some(&rec), "m:app", &w),
            untouchable
        );
        assert_eq!(
            of_holder(h(100, 100, 1000), Some(&rec), "m:app", &w),
            untouchable
        );
        assert_eq!(of_holder(h(1, 1, 1000), None, "m:app", &w), untouchable);
        // A straggler of our launch whose leader died.
        let w2 = World::new().with(
            501,
            P {
                marker: Some("L1"),
                ..live(8, 1000)
            },
        );
        assert_eq!(
            of_holder(h(501, 501, 1000), Some(&rec), "m:app", &w2),
            Claim::Orphaned { lingering: true }
        );
        assert!(Claim::ForeignUvicorn.replaceable(false));
        assert!(!unrelated.replaceable(false) && unrelated.replaceable(true));
        assert!(
            !untouchable.replaceable(true),
            "force never reaches another user"
        );
        assert!(!Claim::OtherConfig.replaceable(false));
    }

    #[test]
    fn signalling_rules() {
        let me = World::new().me;
        assert!(may_signal(200, Some(1000), &me));
        assert!(!may_signal(200, Some(0), &me));
        assert!(!may_signal(200, None, &me));
        assert!(!may_signal(100, Some(1000), &me));
        assert!(!may_signal(1, Some(1000), &me));
        assert!(!may_signal(0, Some(1000), &me));
        assert!(!may_signal(-5, Some(1000), &me));
        assert!(may_signal_group(200, Some(1000), &me));
        let mut me2 = me.clone();
        me2.pgid = 200;
        assert!(!may_signal_group(200, Some(1000), &me2));
    }
}
