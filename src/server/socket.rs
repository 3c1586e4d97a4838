//! Holding the listening socket on the manager's side: port 0 without
//! races, restarts during which connections wait in the kernel's queue
//! instead of being refused, and `reload()`, a new generation on the same
//! socket before the old one stops. The server gets the socket through our
//! launcher (`spawn`), which reports readiness itself (`launch::wait_ready`).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::platform;
use crate::protocol::HELD_FD;
use crate::record;

use super::{Server, Tick};

/// uvicorn's own default backlog: connections that arrive while no
/// generation accepts (a restart) wait here.
const BACKLOG: i32 = 2048;

/// The listening socket this manager holds for its server.
#[derive(Debug, Clone)]
pub(super) struct Held {
    fd: Arc<OwnedFd>,
    port: u16,
}

impl Held {
    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Server {
    /// The port the server listens on: the held socket's (the kernel's
    /// choice for port 0), else the configured one.
    pub fn port(&self) -> u16 {
        let handed = self.handed_port.load(std::sync::atomic::Ordering::Relaxed);
        let fallback = if handed != 0 { handed } else { self.cfg.port };
        self.held.lock().as_ref().map_or(fallback, |h| h.port)
    }

    /// A port-0 manager that finds its server already running (started by
    /// another process, or before this manager existed) learns the port
    /// the kernel picked from the record, so `port`, `url` and `status()`
    /// say where the server answers.
    pub(super) fn learn_port(&self, recorded: u16) {
        if self.cfg.port == 0 && recorded != 0 && !self.holds_socket() {
            let _ = self.handed_port.compare_exchange(
                0,
                recorded,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Whether this manager holds the listening socket right now.
    pub fn holds_socket(&self) -> bool {
        self.held.lock().is_some()
    }

    /// The held socket, bound now if not yet held.
    pub(super) fn held_socket(&self) -> Result<Held> {
        let mut guard = self.held.lock();
        if let Some(h) = guard.as_ref() {
            return Ok(h.clone());
        }
        let addr = self.addrs[0];
        // The port a supervisor held before (port 0: the kernel's earlier
        // choice), else the configured one.
        // (Not `self.port()`: it takes the lock we hold.)
        let handed = self.handed_port.load(std::sync::atomic::Ordering::Relaxed);
        let port = if handed != 0 { handed } else { self.cfg.port };
        let fd = platform::listen_tcp(addr, port, BACKLOG)
            .map_err(|e| Error::os("binding the server's socket", e))?;
        let port = platform::local_port(&fd).map_err(|e| Error::os("reading the bound port", e))?;
        let held = Held {
            fd: Arc::new(fd),
            port,
        };
        *guard = Some(held.clone());
        Ok(held)
    }

    /// Holds `fd` (a listening socket on `port` handed to us).
    pub(super) fn hold(&self, fd: OwnedFd, port: u16) {
        *self.held.lock() = Some(Held {
            fd: Arc::new(fd),
            port,
        });
    }

    /// Lets go of the held socket (after a stop: the port is free again).
    pub(super) fn release_socket(&self) {
        *self.held.lock() = None;
        self.handed_port
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes the socket a running server of ours was started on (another
    /// process started it: the CLI, a previous run) so that a new generation
    /// can share it.
    pub(super) fn adopt_socket(&self, leader: &platform::PidFd, port: u16) -> Result<Held> {
        let fd = platform::take_fd(leader, HELD_FD)
            .map_err(|e| Error::os("taking the server's socket (pidfd_getfd)", e))?;
        if !platform::is_tcp_listener_on(&fd, port) {
            return Err(Error::NoHeldSocket {
                name: self.cfg.name.clone(),
            });
        }
        let held = Held {
            fd: Arc::new(fd),
            port,
        };
        *self.held.lock() = Some(held.clone());
        Ok(held)
    }

    /// Stops the server and starts it again. With a held socket, the socket
    /// stays open in between: connections that arrive wait in its queue.
    pub fn restart(&self, redirect_output: bool, force: bool, tick: Tick<'_>) -> Result<bool> {
        if self.replace_supervised(tick)? {
            return Ok(true);
        }
        self.stop_keeping_socket(tick)?;
        self.start(redirect_output, force, tick)
    }

    /// Starts a new generation on the same socket, waits until it is
    /// ready, then stops the old one gracefully (it finishes its in-flight
    /// requests). If the new generation fails, it is stopped and the old one
    /// keeps serving.
    pub fn reload(&self, redirect_output: bool, tick: Tick<'_>) -> Result<()> {
        // Supervised: the supervisor reloads (it is the server's parent).
        if self.replace_supervised(tick)? {
            return Ok(());
        }
        self.reload_with_grace(redirect_output, self.cfg.stop_timeout, &mut || true, tick)
            .map(|_| ())
    }

    /// `reload()`, the old generation getting `grace` to finish (a hung
    /// one, replaced by its supervisor, gets little: it answers nothing).
    /// `confirm` is asked once the new generation is ready: false stops
    /// the new one and keeps the old (returns false); true replaces it.
    pub(super) fn reload_with_grace(
        &self,
        redirect_output: bool,
        grace: std::time::Duration,
        confirm: &mut dyn FnMut() -> bool,
        tick: Tick<'_>,
    ) -> Result<bool> {
        let _lock = crate::lock::acquire(&self.paths.lock_file, self.lock_deadline(), tick)?;
        let old = self
            .find()
            .filter(|f| f.info.is_alive() && !f.pidfd.has_exited())
            .ok_or_else(|| Error::NotRunning {
                name: self.cfg.name.clone(),
            })?;
        let held_by_server = old
            .identity
            .as_ref()
            .and_then(|id| id.config.as_ref())
            .is_some_and(|c| c.spec.hold_socket);
        if !self.holds_socket() {
            if !held_by_server {
                return Err(Error::NoHeldSocket {
                    name: self.cfg.name.clone(),
                });
            }
            self.adopt_socket(&old.pidfd, old.identity.as_ref().map_or(0, |i| i.port))?;
        }
        let generation = self.spawn_generation_ticking(redirect_output, tick)?;
        let new_pidfd = generation.launched.pidfd.clone();
        let identity = generation.launched.identity.clone();
        let previous = self.launched.lock().replace(generation.launched);
        let waited = self.wait_ready(
            &new_pidfd,
            &generation.logs,
            generation.err_offset,
            generation.ready.as_ref(),
            tick,
        );
        if let Err(e) = waited {
            // The new generation failed: it goes, the old one stays ours.
            let grace = if matches!(e, Error::Interrupted) {
                std::time::Duration::ZERO
            } else {
                self.never_ready_grace()
            };
            // The record still names the old generation: stopping the new one
            // leaves it alone.
            let _ = self.stop_launched(grace, &mut || Ok(()));
            *self.launched.lock() = previous;
            return Err(e);
        }
        if !confirm() {
            // Not needed after all: the new generation goes (it may have
            // taken requests from the queue: its full stop timeout).
            let _ = self.stop_launched(self.cfg.stop_timeout, &mut || Ok(()));
            *self.launched.lock() = previous;
            return Ok(false);
        }
        record::write(&self.paths, &identity)?;
        let result = self.terminate_server(old.pidfd.clone(), old.identity.as_ref(), grace, tick);
        if let Some(mut p) = previous {
            p.reap();
        }
        result.map(|_| true)
    }
}
