//! The resource manager (YARN's ResourceManager): the one place that knows the cluster's
//! compute. Workers on core and task nodes register with their capacity and heartbeat;
//! a worker silent past the expiry is declared lost. (Applications, their masters and
//! containers are placed here next.)
//!
//! - `cluster.rs`: the pure core, what the resource manager knows and decides (no I/O, no
//!   clock of its own: time is passed in), unit-tested.
//! - `service.rs`: the gRPC services (the RPC edge; the only place that makes statuses).
//! - `state.rs`: what the services and the monitor share.
//! - `node.rs`: configuration, start-up, the expiry monitor and shutdown.
//! - `ha.rs`: high availability: the active resource manager's lease, the applications'
//!   records in the file system, and the takeover.
//! - `queues.rs`: the queues' tree (capacity scheduler), parsed and checked.
//! - `retention.rs`: deletes applications' logs past their retention.
//! - `rest.rs`: the REST/JSON API (YARN's `/ws/v1/cluster/...`), read only.

pub mod cluster;
pub mod error;
pub mod ha;
pub mod node;
pub mod queues;
pub mod rest;
pub mod retention;
pub mod service;
pub mod state;

pub use error::RmError;
pub use node::{start, ResourceManagerConfig, RmHandle};
