//! The original's private helpers (`_read_pid`, `_write_pid`,
//! `_cleanup_pid`, `_process`), with the same names and results.

use crate::error::Result;
use crate::record;

use super::Server;

impl Server {
    /// `_read_pid()`.
    pub fn read_pid(&self) -> Option<i32> {
        record::read_pid(&self.paths, self.pid_max)
    }

    /// `_write_pid()`: records our launched child, if any.
    pub fn write_pid(&self) -> Result<bool> {
        let id = self.launched.lock().as_ref().map(|l| l.identity.clone());
        match id {
            Some(id) => record::write(&self.paths, &id).map(|()| true),
            None => Ok(false),
        }
    }

    /// `_cleanup_pid()`: removes the record.
    pub fn cleanup_pid(&self) {
        record::remove(&self.paths);
    }

    /// `_process.pid`: the PID of our launched child, if any.
    pub fn child_pid(&self) -> Option<i32> {
        self.launched.lock().as_ref().map(|l| l.identity.pid)
    }

    /// `_process.poll()`: reaps our child without blocking; `None` while it runs.
    pub fn child_poll(&self) -> Option<i32> {
        self.launched.lock().as_mut().and_then(|l| l.poll())
    }

    /// `_process = None`: forgets our child; it keeps running, tracked by the record.
    pub fn forget_child(&self) {
        *self.launched.lock() = None;
    }
}
