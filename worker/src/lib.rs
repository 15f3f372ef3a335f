//! The worker (YARN's NodeManager): offers a node's compute to the resource manager and
//! runs the containers it places. It registers with its capacity (configured, or detected
//! from the host), host, rack and label (`core` where a datanode runs beside it, `task`
//! otherwise) and heartbeats with its containers' statuses; the resource manager declares
//! it lost when it falls silent.
//!
//! - `node.rs`: configuration, capacity detection, start-up and shutdown.
//! - `link.rs`: the conversation with the resource manager.
//! - `containers.rs`: the containers (processes, users, directories, the memory check).
//! - `logs.rs`: ended applications' logs, kept in the file system as their user.

pub mod containers;
pub mod link;
pub mod logs;
pub mod node;

pub use node::{start, WorkerConfig, WorkerError, WorkerHandle};
