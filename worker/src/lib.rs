//! The worker (YARN's NodeManager): offers a node's compute to the resource manager. It
//! registers with its capacity (configured, or detected from the host), host, rack and
//! label (`core` where a datanode runs beside it, `task` otherwise) and heartbeats; the
//! resource manager declares it lost when it falls silent. (Containers come next.)
//!
//! - `node.rs`: configuration, capacity detection, start-up and shutdown.
//! - `link.rs`: the conversation with the resource manager.

pub mod link;
pub mod node;

pub use node::{start, WorkerConfig, WorkerError, WorkerHandle};
