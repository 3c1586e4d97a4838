//! Native core of `upsonic-server-manager`: start, watch and stop uvicorn
//! servers without ever touching a process that is not ours.
//!
//! Plain Rust throughout; only `python` knows PyO3. `docs/ARCHITECTURE.md`
//! maps the modules.

pub mod claim;
pub mod cmdline;
pub mod error;
pub mod facts;
pub mod handover;
pub mod lifeline;
pub mod lock;
pub mod platform;
pub mod port;
pub mod protocol;
pub mod record;
pub mod server;
pub mod spawn;
pub mod spec;
pub mod supervise;
pub mod supervision;
pub mod terminate;
pub mod validate;
pub mod warm;
pub mod why;

mod fuzz;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};

/// A cancellation hook called every few tens of milliseconds during waits.
pub type Tick<'a> = &'a mut dyn FnMut() -> Result<()>;
pub use server::{Config, Server, State, Status};
pub use spec::ServerSpec;
