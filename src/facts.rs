//! The live `Facts`: what the system says now, read on demand through
//! `platform`, for the decisions in `claim`.

use crate::claim::{Facts, Me, Stat};
use crate::platform;
use crate::protocol::LAUNCH_ENV;

/// Facts read from the running system.
#[derive(Debug)]
pub struct Live {
    me: Me,
}

impl Live {
    /// Facts as this process sees them.
    pub fn new() -> Self {
        Self { me: me() }
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's identity.
pub fn me() -> Me {
    Me {
        pid: platform::own_pid(),
        uid: platform::euid(),
        pgid: platform::own_pgid(),
        boot_id: platform::boot_id().cloned().unwrap_or_default(),
    }
}

impl Facts for Live {
    fn me(&self) -> &Me {
        &self.me
    }
    fn stat(&self, pid: i32) -> Option<Stat> {
        platform::state_and_start(pid).map(|(state, start_ticks)| Stat {
            alive: !matches!(state, 'Z' | 'X' | 'x'),
            start_ticks,
        })
    }
    fn owner(&self, pid: i32) -> Option<u32> {
        platform::owner_uid(pid)
    }
    fn cmdline(&self, pid: i32) -> Option<Vec<String>> {
        platform::cmdline(pid)
    }
    fn launch_marker(&self, pid: i32) -> Option<String> {
        platform::environ_value(pid, LAUNCH_ENV)
    }
    fn group_has_members(&self, pgid: i32) -> bool {
        platform::group_has_members(pgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_itself() {
        let f = Live::new();
        let me = f.me().clone();
        assert_eq!(me.pid, std::process::id() as i32);
        let s = f.stat(me.pid).unwrap();
        assert!(s.alive && s.start_ticks > 0);
        assert_eq!(f.owner(me.pid), Some(me.uid));
        assert!(f.cmdline(me.pid).is_some_and(|c| !c.is_empty()));
        assert!(f.stat(-1).is_none());
    }
}
