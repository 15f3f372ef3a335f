//! The namenode: Tarn's namespace (directories, files, block lists, leases, quotas) as an
//! openraft state machine whose log and state live in RocksDB, served over gRPC.
//!
//! Module map:
//! - [`path`]: path validation.
//! - [`records`]: what is stored and the RocksDB key layout.
//! - [`format`]: format versions of everything stored or sent to peers; store upgrades.
//! - [`namespace`]: path resolution, queries and the operations (no I/O beyond the store).
//! - [`kv`]: the database and transaction views the namespace works through.
//! - [`store`]: openraft's log store and state machine, snapshots.
//! - [`network`]: the Raft transport between namenodes.
//! - [`proposer`]: write batching and linearizable reads on the leader.
//! - [`leases`]: writer leases (leader soft state).
//! - [`service`]: the gRPC client and admin services.
//! - [`node`]: configuration, start-up and shutdown.

pub mod blocks;
pub mod dn_service;
pub mod error;
pub mod format;
pub mod kv;
pub mod leases;
pub mod namespace;
pub mod network;
pub mod node;
pub mod path;
pub mod proposer;
pub mod records;
pub mod service;
pub mod store;
pub mod tokens;
pub mod topology;
pub mod types;

pub use error::{FsError, NamenodeError};
pub use node::{start, NamenodeConfig, NamenodeHandle, SmallFiles};
pub use types::NodeId;
