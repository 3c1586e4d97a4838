//! Every failure the core can report. The Python layer maps each variant to
//! one exception class in a single place.

use std::path::PathBuf;

use crate::port::Holder;

/// A failure of a lifecycle call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument was rejected; the message names it.
    #[error("{0}")]
    InvalidArgument(String),

    /// Something we may not or cannot stop holds the port.
    #[error("{message}")]
    PortInUse {
        port: u16,
        holders: Vec<Holder>,
        message: String,
    },

    /// The server exited (or could not be spawned) before it was ready.
    #[error("{message}")]
    StartFailed {
        message: String,
        exit_code: Option<i32>,
        stderr_tail: Option<String>,
    },

    /// The server did not listen within `start_timeout`; it was stopped.
    #[error("{message}")]
    StartTimeout {
        message: String,
        stderr_tail: Option<String>,
    },

    /// A file system operation failed on `path`.
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// Any other operating-system failure.
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },

    /// The waiting call was interrupted (Ctrl-C); cleanup already ran.
    #[error("interrupted")]
    Interrupted,

    /// The per-name lock stayed taken past any legitimate start or stop.
    #[error("{0}")]
    LockTimeout(String),

    /// The name is recorded for a different, running server.
    #[error("{0}")]
    NameTaken(String),

    /// A stop could not end every process of the server.
    #[error("{0}")]
    StopFailed(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn path(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Path {
            what,
            path: path.into(),
            source,
        }
    }
    pub(crate) fn os(what: &'static str, source: std::io::Error) -> Self {
        Error::Os { what, source }
    }
}
