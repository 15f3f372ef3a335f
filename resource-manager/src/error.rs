//! The resource manager's errors: what keeps it from starting, and the refusals its core
//! gives (which the RPC edge turns into statuses).

use tarn_proto::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// A request the core refused, with the kind a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Refusal { kind, message: message.into() }
    }
}
