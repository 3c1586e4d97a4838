//! Linux: sock_diag netlink for the port table, /proc for process identity,
//! pidfds for waiting on and signalling processes without PID-reuse races.

pub mod fdpass;
pub mod handover;
pub mod netlink;
pub mod pidfd;
pub mod pipe;
pub mod procinfo;
pub mod socket;
pub mod system;

pub use fdpass::{connect_unix_now, own_umask, peer_pid, send_with_fds};
pub use handover::{FdMap, Others};
pub use netlink::{tcp_listeners, DiagSocket, Listener};
pub use pidfd::PidFd;
pub use pipe::{output_pipe, pipe_size, read_nonblocking, wait_readable, OUTPUT_PIPE_SIZE};
pub use procinfo::*;
pub use socket::*;
pub use system::*;
