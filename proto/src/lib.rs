//! Generated protobuf and gRPC code for every Tarn service, and the wire vocabulary both
//! ends share ([`ErrorKind`]).
//!
//! **Architecture invariant:** this crate holds generated code and the names both ends of
//! a link must agree on, nothing else; prost types stop at the RPC edge (services convert
//! them into their own domain types).

mod error_kind;
pub use error_kind::{ErrorKind, ERROR_KIND_HEADER, LEADER_HEADER};

/// Namenode client and admin APIs.
pub mod namenode {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tarn.namenode.v1");
}

/// Namenode-to-namenode Raft transport.
pub mod raft {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tarn.raft.v1");
}

/// The resource manager: workers, and what clients ask of it.
pub mod rm {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tarn.rm.v1");
}

/// A session application's master: jobs sent to its warm executors.
pub mod jobs {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tarn.jobs.v1");
}

/// Block storage: datanode-to-namenode protocol and block data transfer.
pub mod datanode {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tarn.datanode.v1");
}
