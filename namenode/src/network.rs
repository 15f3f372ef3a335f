//! The Raft transport between namenodes: openraft's `RaftNetwork` over tonic, and the
//! server side that hands incoming messages to the local Raft.
//!
//! Messages are openraft's own types in bincode inside a protobuf envelope that names the
//! format of its content (the cluster's; a message of a newer format is refused, naming
//! both) and the newest format the sender's binary reads, which the leader remembers per
//! member for finalizing upgrades (`crate::upgrade`). Connections
//! are made by the node's [`Transport`] (mutual TLS, namenode certificates only).

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarn_proto::raft::raft_transport_client::RaftTransportClient;
use tarn_proto::raft::raft_transport_server::RaftTransport;
use tarn_proto::raft::RaftPayload;
use tarn_security::Transport;

use std::sync::Arc;

use crate::format::FORMAT_CURRENT;
use crate::upgrade::Formats;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::types::{NodeId, Raft, TypeConfig};

/// Largest message between namenodes (an AppendEntries of many batches, a snapshot chunk).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 256 << 20;

/// The endpoint of a peer at `addr` (`host:port`); channels come from the node's
/// [`Transport`] (mutual TLS: only namenode certificates may send Raft messages).
pub fn endpoint(addr: &str) -> Result<Endpoint, tarn_security::SecurityError> {
    Ok(Transport::endpoint(addr)?.connect_timeout(std::time::Duration::from_secs(2)).tcp_nodelay(true))
}

/// Makes one [`PeerClient`] per peer.
#[derive(Clone)]
pub struct RaftNet {
    pub transport: Transport,
    pub formats: Arc<Formats>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            client: None,
            transport: self.transport.clone(),
            formats: self.formats.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftTransportClient<Channel>>,
    transport: Transport,
    formats: Arc<Formats>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

#[allow(clippy::disallowed_methods)] // messages are not stored: the envelope names their format
fn encode<T: Serialize>(v: &T, formats: &Formats) -> RaftPayload {
    RaftPayload {
        data: bincode::serialize(v).expect("bincode serialization of a raft message"),
        format: formats.cluster() as u32,
        binary_format: FORMAT_CURRENT as u32,
    }
}

/// Format 0 (a binary older than versioned formats) and format 1 encode messages alike.
fn check_format(p: &RaftPayload) -> Result<(), String> {
    if p.format > FORMAT_CURRENT as u32 {
        return Err(format!(
            "raft message of format {}, but this namenode reads formats up to {FORMAT_CURRENT}: \
             upgrade this node before the cluster's format is raised",
            p.format
        ));
    }
    Ok(())
}

impl PeerClient {
    fn client(&mut self) -> Result<RaftTransportClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let ch = self.transport.channel(endpoint(&self.addr).map_err(|e| Unreachable::new(&e))?);
        let c = RaftTransportClient::new(ch)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        self.client = Some(c.clone());
        Ok(c)
    }

    #[allow(clippy::disallowed_methods)] // messages are not stored: the envelope names their format
    async fn call<Req, Resp, E>(&mut self, kind: Kind, req: &Req, option: &RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut c = self.client()?;
        let mut request = Request::new(encode(req, &self.formats));
        request.set_timeout(option.hard_ttl());
        let fut = async {
            match kind {
                Kind::Append => c.append_entries(request).await,
                Kind::Vote => c.vote(request).await,
                Kind::Snapshot => c.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("raft rpc to node {} at {} timed out", self.target, self.addr),
                ))))
            }
            Ok(Err(status)) => {
                // A broken connection is rebuilt on the next call.
                self.client = None;
                let err = std::io::Error::other(format!("node {} at {}: {status}", self.target, self.addr));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        check_format(&reply).map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        // A binary older than this field answers 0.
        let byte = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
        self.formats.heard(self.target, byte(reply.binary_format), byte(reply.format));
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Kind::Vote, &rpc, &option).await
    }

    /// Retry an unreachable peer every 100 ms (openraft's default is 500 ms): a restarted
    /// follower must hear from the leader before its election timeout (200 ms and up) fires,
    /// or it campaigns and disrupts a healthy leader.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(RAFT_UNREACHABLE_RETRY))
    }
}

/// How often the leader retries a peer it cannot reach.
pub const RAFT_UNREACHABLE_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Receives Raft messages from peers.
pub struct RaftTransportService {
    raft: Raft,
    formats: Arc<Formats>,
}

impl RaftTransportService {
    pub fn new(raft: Raft, formats: Arc<Formats>) -> Self {
        RaftTransportService { raft, formats }
    }
}

#[allow(clippy::disallowed_methods)] // messages are not stored: the envelope names their format
fn decode<T: DeserializeOwned>(p: RaftPayload) -> Result<T, Status> {
    check_format(&p).map_err(Status::failed_precondition)?;
    bincode::deserialize(&p.data).map_err(|e| Status::invalid_argument(format!("decode raft message: {e}")))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.into_inner())?;
        Ok(Response::new(encode(&self.raft.append_entries(rpc).await, &self.formats)))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req.into_inner())?;
        Ok(Response::new(encode(&self.raft.vote(rpc).await, &self.formats)))
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.into_inner())?;
        Ok(Response::new(encode(&self.raft.install_snapshot(rpc).await, &self.formats)))
    }
}
