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
//! - [`blocks`]: the block manager: datanodes, replica locations, placement (leader soft state).
//! - [`state`]: what the services and background tasks share; the leader's typed error.
//! - [`safe_mode`]: no changes after a start until enough blocks have a reported replica.
//! - [`monitor`]: the block monitor (replication, deletion, draining, block recovery).
//! - [`report`]: the datanode report, fsck, readers' corrupt-replica reports.
//! - [`tokens`]: block access tokens.
//! - [`service`], [`dn_service`]: the gRPC client, admin and datanode services (the RPC
//!   edge: the only modules besides [`network`] that make gRPC statuses).
//! - [`node`]: configuration, start-up and shutdown.

pub mod blocks;
pub mod dn_service;
pub mod error;
pub mod format;
pub mod kv;
pub mod leases;
pub mod monitor;
pub mod namespace;
pub mod network;
pub mod node;
pub mod path;
pub mod proposer;
pub mod records;
pub mod report;
pub mod safe_mode;
pub mod service;
pub mod state;
pub mod store;
pub mod tokens;
pub mod topology;
pub mod types;
pub mod upgrade;

pub use error::{FsError, NamenodeError};
pub use node::{start, NamenodeConfig, NamenodeHandle, SmallFiles};
pub use types::NodeId;
