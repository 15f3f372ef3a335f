//! The kinds of refusal a Tarn service names in its gRPC statuses: one vocabulary for the
//! servers that set them and the clients that read them.
//!
//! A refused call carries its kind in the [`ERROR_KIND_HEADER`] metadata (and, for a
//! namenode that is not the leader, the leader's address in [`LEADER_HEADER`]); batched
//! answers carry [`ErrorKind::as_str`] in a field. Clients map a name they do not know to
//! [`ErrorKind::Other`], so a server may add kinds before its clients learn them.

/// Metadata key naming the [`ErrorKind`] of a refusal.
pub const ERROR_KIND_HEADER: &str = "x-tarn-error";
/// Metadata key naming the current leader's address (`host:port`) on a redirect.
pub const LEADER_HEADER: &str = "x-tarn-leader";

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident => $code:ident,)*) => {
        /// What kind of refusal an error is.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorKind {
            /// Every kind, for tests and documentation.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind,)*];

            /// The name sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => stringify!($kind),)*
                }
            }

            /// The kind a wire name stands for (an unknown name is [`ErrorKind::Other`]).
            pub fn parse(s: &str) -> ErrorKind {
                match s {
                    $(stringify!($kind) => ErrorKind::$kind,)*
                    _ => ErrorKind::Other,
                }
            }

            /// A refusal of this kind as it goes on the wire: its status code, and its name
            /// in [`ERROR_KIND_HEADER`].
            pub fn status(self, message: impl Into<String>) -> tonic::Status {
                let mut s = tonic::Status::new(self.code(), message);
                s.metadata_mut().insert(ERROR_KIND_HEADER, tonic::metadata::MetadataValue::from_static(self.as_str()));
                s
            }

            /// The gRPC status code a refusal of this kind is sent with.
            pub fn code(self) -> tonic::Code {
                match self {
                    $(ErrorKind::$kind => tonic::Code::$code,)*
                }
            }
        }
    };
}

kinds! {
    InvalidPath => InvalidArgument,
    InvalidArgument => InvalidArgument,
    RenameIntoSelf => InvalidArgument,
    NotFound => NotFound,
    ParentNotFound => NotFound,
    AlreadyExists => AlreadyExists,
    /// What an exclusive mkdir found at its path is a directory of the owner it asked for
    /// (a kind of `AlreadyExists`: nothing changed).
    AlreadyOwned => AlreadyExists,
    NotADirectory => FailedPrecondition,
    IsADirectory => FailedPrecondition,
    DirectoryNotEmpty => FailedPrecondition,
    ConditionFailed => FailedPrecondition,
    LeaseConflict => FailedPrecondition,
    NotLeaseHolder => FailedPrecondition,
    QuotaExceeded => ResourceExhausted,
    /// The caller may not do this (its certificate's role, or the file's permissions).
    PermissionDenied => PermissionDenied,
    /// This namenode is not the leader (see [`LEADER_HEADER`]); retried at the leader.
    NotLeader => Unavailable,
    /// The leader is in safe mode (too few block replicas reported yet); retried.
    SafeMode => Unavailable,
    /// No namenode could serve the call in time.
    Unavailable => Unavailable,
    /// The namenode does not keep this small file in the namespace: write it to blocks.
    InlineUnavailable => FailedPrecondition,
    /// The operation needs a newer cluster format than the cluster runs: an upgrade is
    /// not finalized yet (`tarn admin finalize-upgrade` once every node runs the new binary).
    UpgradePending => FailedPrecondition,
    /// An application master calls a resource manager that does not know it as registered
    /// (one that took over after a failover): it registers again and sends all its asks
    /// (YARN's ApplicationMasterNotRegisteredException).
    MasterNotRegistered => FailedPrecondition,
    /// The namenode's storage failed: a person should look at that node.
    Storage => Internal,
    /// Anything else (an unknown kind from a newer server among them).
    Other => Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_wire() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), *k);
        }
        assert_eq!(ErrorKind::parse("SomethingNew"), ErrorKind::Other);
    }
}
