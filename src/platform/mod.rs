//! Everything that asks the operating system something. The rest of the crate
//! only sees the functions re-exported here, so a port to another system adds
//! a sibling of `linux` rather than touching the lifecycle logic.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!(
    "upsonic-server-manager supports Linux only for now; add a platform module to port it"
);
