//! The block transfer service: pipeline writes, verified reads, replica queries.
//!
//! **A write** is one bidirectional stream per hop. The first packet carries the header;
//! the datanode opens its replica and the stream to the next node of the pipeline, then
//! answers a setup ack (seqno 0) for the whole pipeline below it. Each data packet is
//! checked against its CRC32C, forwarded downstream and written locally; its ack goes
//! upstream once the local write and the downstream ack are both in, carrying one status
//! per node from here down. The first failure ends the stream with an ack that names the
//! failed node, so the client can rebuild the pipeline without it.
//!
//! **A read** streams the range in pieces of at most [`READ_PIECE_BYTES`], each verified
//! against the stored chunk checksums and sent with its own CRC32C.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tarn_proto::datanode as pb;
use tarn_proto::datanode::data_transfer_client::DataTransferClient;
use tarn_proto::datanode::data_transfer_server::DataTransfer;
use tarn_security::block_token;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::DatanodeError;
use crate::store::{BlockStore, ReplicaInfo, ReplicaState, ReplicaWriter, CHUNK_BYTES};

/// Largest piece of a read response.
pub const READ_PIECE_BYTES: usize = 16 * CHUNK_BYTES;
/// Largest data packet accepted in a write.
pub const PACKET_BYTES_MAX: usize = 4 << 20;
/// Packets buffered per hop between receiving and writing or forwarding.
const PACKETS_BUFFERED_MAX: usize = 32;
/// How long a hop waits for its downstream's ack of a packet it already wrote.
const DOWNSTREAM_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to the next datanode of a pipeline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Opening the write stream to the next datanode (connection, TLS, the call's answer,
/// which comes once that node has opened its own downstream) is given this much per node
/// below: the deepest hop gives up first, so the verdict names the node that did not
/// answer, and it reaches the client within its 30 s wait for the first node (three
/// replicas: 16 s at most) instead of the client blaming the first node.
const DOWNSTREAM_SETUP_PER_HOP: Duration = Duration::from_secs(8);

/// What the transfer service tells the rest of the datanode.
#[derive(Debug, Clone)]
pub enum Event {
    /// A replica was finalized (written, recovered or copied here).
    Received(ReplicaInfo),
    /// A replica failed verification on read.
    Corrupt { block_id: u64, gen_stamp: u64, reason: String },
}

/// The datanode's shared state, as the transfer service sees it.
pub struct Shared {
    pub store: Arc<BlockStore>,
    pub events: mpsc::UnboundedSender<Event>,
    /// Writes and reads in progress (reported in heartbeats).
    pub in_flight: AtomicU32,
    /// How this node reaches other datanodes (pipelines, re-replication).
    pub transport: tarn_security::Transport,
    /// The namenode's keys for block access tokens (from registration and heartbeats).
    pub block_keys: tarn_security::BlockKeys,
    /// The address this datanode serves on (besides loopback, where short-circuit readers
    /// connect from when on its host).
    pub ip: Option<std::net::IpAddr>,
}

impl Shared {
    fn event(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

/// Counts a transfer in progress for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(s: &Arc<Shared>) -> InFlight {
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The gRPC status for a datanode error.
pub fn status_of(e: &DatanodeError) -> Status {
    let msg = e.to_string();
    match e {
        DatanodeError::ReplicaNotFound { .. } => Status::not_found(msg),
        DatanodeError::ReplicaExists { .. } => Status::already_exists(msg),
        DatanodeError::ReplicaBusy { .. } => Status::unavailable(msg),
        DatanodeError::StaleGeneration { .. } | DatanodeError::WrongMasterKey { .. } => {
            Status::failed_precondition(msg)
        }
        DatanodeError::Corrupt { .. } => Status::data_loss(msg),
        DatanodeError::OutOfRange { .. } => Status::out_of_range(msg),
        DatanodeError::DiskFull { .. } => Status::resource_exhausted(msg),
        DatanodeError::InvalidArgument(_) => Status::invalid_argument(msg),
        DatanodeError::Io { .. } | DatanodeError::Config(_) => Status::internal(msg),
    }
}

fn ack_status_of(e: &DatanodeError) -> pb::AckStatus {
    match e {
        DatanodeError::DiskFull { .. } => pb::AckStatus::DiskFull,
        _ => pb::AckStatus::Error,
    }
}

/// HTTP/2 flow-control windows for block data: h2's default 64 KiB stream window caps a
/// stream at one window per round trip, far below disk speed.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// HTTP/2 frames of up to 1 MiB: h2's default 16 KiB frames cost a frame header and a
/// bookkeeping round per 16 KiB of block data.
pub const FRAME_BYTES: u32 = 1 << 20;

/// A channel to another datanode at `addr` (`host:port`), one per peer for the life of
/// the process.
pub fn channel_to(transport: &tarn_security::Transport, addr: &str) -> Result<tonic::transport::Channel, Status> {
    transport.cached_channel(&format!("datanode {addr}"), || {
        let e = tarn_security::Transport::endpoint(addr)
            .map_err(|e| Status::invalid_argument(format!("datanode address {addr:?}: {e}")))?;
        Ok(e.connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(FRAME_BYTES))
    })
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::WriteAck, Status>> + Send>>;
type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadChunk, Status>> + Send>>;

pub struct TransferService {
    shared: Arc<Shared>,
}

impl TransferService {
    pub fn new(shared: Arc<Shared>) -> Self {
        TransferService { shared }
    }
}

/// One packet's outcome on this node.
type LocalResult = (u64, Result<(), DatanodeError>);
/// A checked packet for the writer thread, or the reason packet `seqno` was refused.
type ToWriter = Result<pb::WritePacket, (u64, String)>;

/// The stream from this node to the next one of the pipeline.
struct Downstream {
    addr: String,
    tx: mpsc::Sender<pb::WritePacket>,
    acks: Streaming<pb::WriteAck>,
}

/// Why the pipeline below this node could not be opened: one status per node below (the
/// first non-success names the culprit) and what went wrong.
struct SetupFailure {
    statuses: Vec<i32>,
    error: String,
}

/// Opens the pipeline below this node: sends the header and waits for the setup ack.
async fn open_downstream(
    transport: &tarn_security::Transport,
    header: &pb::WriteHeader,
) -> Result<Option<Downstream>, SetupFailure> {
    let Some(next) = header.downstream.first() else { return Ok(None) };
    let fail = |e: String| SetupFailure {
        statuses: vec![pb::AckStatus::Error as i32],
        error: format!("datanode {}: {e}", next.addr),
    };
    let mut client = DataTransferClient::new(channel_to(transport, &next.addr).map_err(|s| fail(s.message().into()))?);
    let (tx, rx) = mpsc::channel(PACKETS_BUFFERED_MAX);
    let mut h = header.clone();
    h.downstream.remove(0);
    tx.send(pb::WritePacket { header: Some(h), ..Default::default() }).await.map_err(|_| fail("closed".into()))?;
    // A downstream that does not answer (its host cut off) is reported as the failed node.
    let setup_timeout = DOWNSTREAM_SETUP_PER_HOP * header.downstream.len() as u32;
    let mut acks = tokio::time::timeout(setup_timeout, client.write_block(ReceiverStream::new(rx)))
        .await
        .map_err(|_| fail("no answer".into()))?
        .map_err(|s| fail(s.message().into()))?
        .into_inner();
    let setup = tokio::time::timeout(DOWNSTREAM_ACK_TIMEOUT, acks.message())
        .await
        .map_err(|_| fail("no setup ack".into()))?
        .map_err(|s| fail(s.message().into()))?
        .ok_or_else(|| fail("stream ended before the setup ack".into()))?;
    if setup.statuses.iter().any(|s| *s != pb::AckStatus::Success as i32) {
        // A node further down failed: pass its verdict up as it is.
        return Err(SetupFailure { statuses: setup.statuses, error: setup.error });
    }
    Ok(Some(Downstream { addr: next.addr.clone(), tx, acks }))
}

fn failure_ack(seqno: u64, mut statuses: Vec<i32>, pipeline_len: usize, error: String) -> pb::WriteAck {
    // Nodes after the failed one did not answer: mark them failed too.
    while statuses.len() < pipeline_len {
        statuses.push(pb::AckStatus::Error as i32);
    }
    pb::WriteAck { seqno, statuses, error }
}

/// How long a recovering pipeline waits for the old one to let go of a replica.
const REPLICA_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Opens the local replica for a write stage. Recovery waits (with a deadline) for the
/// broken pipeline's writer to release the replica, and starts a new replica when this node
/// never got one (the old pipeline failed before reaching it, so nothing was acknowledged).
async fn open_replica(
    store: Arc<BlockStore>,
    stage: pb::WriteStage,
    id: u64,
    gs: u64,
    expected: u64,
    recover_len: u64,
) -> Result<Result<ReplicaWriter, DatanodeError>, Status> {
    let deadline = tokio::time::Instant::now() + REPLICA_BUSY_WAIT;
    loop {
        let s = store.clone();
        let r = tokio::task::spawn_blocking(move || match stage {
            pb::WriteStage::Create => s.create(id, gs, expected),
            // The namenode sends a copy here because this node's replica (if any) is corrupt
            // or stale: the good copy replaces it.
            pb::WriteStage::Transfer => match s.create(id, gs, expected) {
                Err(DatanodeError::ReplicaExists { .. }) => {
                    s.delete_if(id, gs)?;
                    s.create(id, gs, expected)
                }
                r => r,
            },
            pb::WriteStage::Recover => match s.recover(id, gs, recover_len) {
                Err(DatanodeError::ReplicaNotFound { .. }) if recover_len == 0 => s.create(id, gs, expected),
                r => r,
            },
        })
        .await
        .map_err(|e| Status::internal(format!("open replica: {e}")))?;
        match r {
            Err(DatanodeError::ReplicaBusy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return Ok(r),
        }
    }
}

/// The writer thread: applies packets to the local replica, in order.
fn write_locally(
    mut writer: ReplicaWriter,
    mut rx: mpsc::Receiver<ToWriter>,
    results: mpsc::UnboundedSender<LocalResult>,
    shared: Arc<Shared>,
) {
    while let Some(p) = rx.blocking_recv() {
        let p = match p {
            Ok(p) => p,
            Err((seqno, reason)) => {
                let _ = results.send((seqno, Err(DatanodeError::InvalidArgument(reason))));
                return;
            }
        };
        let mut r = writer.write(&p.data);
        if r.is_ok() && (p.flush || p.sync) && !p.last {
            r = writer.flush(p.sync);
        }
        if r.is_ok() && p.last {
            match writer.finalize() {
                Ok(info) => {
                    shared.event(Event::Received(info));
                    let _ = results.send((p.seqno, Ok(())));
                }
                Err(e) => {
                    let _ = results.send((p.seqno, Err(e)));
                }
            }
            return;
        }
        let failed = r.is_err();
        let _ = results.send((p.seqno, r));
        if failed {
            return;
        }
    }
    // The stream ended without `last`: the replica stays in rbw/ for recovery.
}

#[tonic::async_trait]
impl DataTransfer for TransferService {
    type WriteBlockStream = AckStream;
    type ReadBlockStream = ReadStream;

    async fn write_block(
        &self,
        req: Request<Streaming<pb::WritePacket>>,
    ) -> Result<Response<Self::WriteBlockStream>, Status> {
        let peer = req.extensions().get::<tarn_security::Peer>().cloned();
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty write stream"))?;
        let header = first.header.ok_or_else(|| Status::invalid_argument("the first packet must carry the header"))?;
        let block = header.block.ok_or_else(|| Status::invalid_argument("write header without a block"))?;
        let stage = pb::WriteStage::try_from(header.stage)
            .map_err(|_| Status::invalid_argument(format!("unknown write stage {}", header.stage)))?;
        // A transfer replaces an older replica outright: only another datanode (copying on
        // the namenode's command) may start one.
        if stage == pb::WriteStage::Transfer {
            only_roles(peer.as_ref(), &[tarn_security::Role::Datanode], "transfer a replica")?;
        } else {
            check_token(&self.shared, peer.as_ref(), &header.token, &block, block_token::WRITE)?;
        }
        let pipeline_len = 1 + header.downstream.len();
        let guard = InFlight::new(&self.shared);

        let store = self.shared.store.clone();
        let (id, gs, expected, recover_len) =
            (block.block_id, block.gen_stamp, header.expected_bytes, header.recover_length);
        let opened = open_replica(store, stage, id, gs, expected, recover_len).await?;

        let (ack_tx, ack_rx) = mpsc::channel::<Result<pb::WriteAck, Status>>(PACKETS_BUFFERED_MAX * 2);
        let writer = match opened {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(block_id = id, error = %e, "write refused");
                let ack = failure_ack(0, vec![ack_status_of(&e) as i32], pipeline_len, e.to_string());
                let _ = ack_tx.send(Ok(ack)).await;
                return Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))));
            }
        };
        let down = match open_downstream(&self.shared.transport, &header).await {
            Ok(d) => d,
            Err(f) => {
                tracing::warn!(block_id = id, error = %f.error, "pipeline setup failed below this node");
                // Keep the local replica for recovery; the client rebuilds the pipeline.
                drop(writer);
                let mut statuses = vec![pb::AckStatus::Success as i32];
                statuses.extend(f.statuses);
                let ack = failure_ack(0, statuses, pipeline_len, f.error);
                let _ = ack_tx.send(Ok(ack)).await;
                return Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))));
            }
        };
        let setup = pb::WriteAck {
            seqno: 0,
            statuses: vec![pb::AckStatus::Success as i32; pipeline_len],
            error: String::new(),
        };
        let _ = ack_tx.send(Ok(setup)).await;

        let (local_tx, local_rx) = mpsc::channel(PACKETS_BUFFERED_MAX);
        let (result_tx, result_rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let start = writer.length();
        tokio::task::spawn_blocking(move || write_locally(writer, local_rx, result_tx, shared));
        let (down_tx, down_acks, down_addr) = match down {
            Some(d) => (Some(d.tx), Some(d.acks), d.addr),
            None => (None, None, String::new()),
        };
        tokio::spawn(receive_packets(inbound, local_tx, down_tx, block, start));
        tokio::spawn(merge_acks(result_rx, down_acks, down_addr, pipeline_len, ack_tx, guard));
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))))
    }

    async fn read_block(&self, req: Request<pb::ReadBlockRequest>) -> Result<Response<Self::ReadBlockStream>, Status> {
        let peer = req.extensions().get::<tarn_security::Peer>().cloned();
        let r = req.into_inner();
        let block = r.block.ok_or_else(|| Status::invalid_argument("read without a block"))?;
        check_token(&self.shared, peer.as_ref(), &r.token, &block, block_token::READ)?;
        let store = self.shared.store.clone();
        let opened = tokio::task::spawn_blocking(move || store.open_reader(block.block_id, block.gen_stamp))
            .await
            .map_err(|e| Status::internal(format!("open replica: {e}")))?;
        let reader = match opened {
            Ok(r) => r,
            Err(e) => {
                if e.is_corruption() {
                    self.shared.event(Event::Corrupt {
                        block_id: block.block_id,
                        gen_stamp: block.gen_stamp,
                        reason: e.to_string(),
                    });
                }
                return Err(status_of(&e));
            }
        };
        let end = r.offset.checked_add(r.length).filter(|&e| e <= reader.length()).ok_or_else(|| {
            status_of(&DatanodeError::OutOfRange {
                block_id: block.block_id,
                offset: r.offset,
                len: r.length,
                length: reader.length(),
            })
        })?;
        let (tx, rx) = mpsc::channel(4);
        let guard = InFlight::new(&self.shared);
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            reader.will_read(r.offset, end - r.offset);
            let mut off = r.offset;
            while off < end {
                // Pieces end on chunk edges so that each chunk is verified once.
                let piece_end = ((off / READ_PIECE_BYTES as u64) + 1) * READ_PIECE_BYTES as u64;
                let len = (piece_end.min(end) - off) as usize;
                match reader.read_at(off, len) {
                    Ok(data) => {
                        let crc32c = crc32c::crc32c(&data);
                        let chunk = pb::ReadChunk { offset: off, data: Bytes::from(data), crc32c };
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            return; // the reader went away
                        }
                    }
                    Err(e) => {
                        if e.is_corruption() {
                            shared.event(Event::Corrupt {
                                block_id: block.block_id,
                                gen_stamp: reader.gen_stamp(),
                                reason: e.to_string(),
                            });
                        }
                        let _ = tx.blocking_send(Err(status_of(&e)));
                        return;
                    }
                }
                off += len as u64;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_replica(
        &self,
        req: Request<pb::GetReplicaRequest>,
    ) -> Result<Response<pb::GetReplicaResponse>, Status> {
        // Block recovery asks replicas what they hold: the namenode's.
        only_roles(
            req.extensions().get::<tarn_security::Peer>(),
            &[tarn_security::Role::Namenode, tarn_security::Role::Datanode],
            "ask for a replica's state",
        )?;
        let id = req.into_inner().block_id;
        let info =
            self.shared.store.get(id).ok_or_else(|| status_of(&DatanodeError::ReplicaNotFound { block_id: id }))?;
        Ok(Response::new(pb::GetReplicaResponse { replica: Some(report_of(&info)) }))
    }

    async fn open_local(
        &self,
        req: Request<pb::LocalReplicaRequest>,
    ) -> Result<Response<pb::LocalReplicaResponse>, Status> {
        let peer = req.extensions().get::<tarn_security::Peer>().cloned();
        let r = req.into_inner();
        let block = r.block.ok_or_else(|| Status::invalid_argument("open_local without a block"))?;
        check_token(&self.shared, peer.as_ref(), &r.token, &block, block_token::READ)?;
        // The file's path means something only on this host.
        let local = peer.as_ref().is_some_and(|p| {
            let ip = p.addr.ip().to_canonical();
            ip.is_loopback() || Some(ip) == self.shared.ip.map(|i| i.to_canonical())
        });
        if !local {
            return Err(Status::failed_precondition("short-circuit reads are for readers on the datanode's host"));
        }
        let store = self.shared.store.clone();
        let l = tokio::task::spawn_blocking(move || store.local_replica(block.block_id, block.gen_stamp))
            .await
            .map_err(|e| Status::internal(format!("local replica: {e}")))?
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::LocalReplicaResponse {
            data_path: l.data_path.to_string_lossy().into_owned(),
            length: l.length,
            gen_stamp: l.gen_stamp,
            data_key: l.data_key.map(|k| k.to_vec()).unwrap_or_default(),
            chunks: l.records,
            chunk_bytes: CHUNK_BYTES as u32,
        }))
    }

    async fn finalize_recovered(
        &self,
        req: Request<pb::FinalizeRecoveredRequest>,
    ) -> Result<Response<pb::GetReplicaResponse>, Status> {
        // Cutting and finalizing a replica is block recovery, the namenode's.
        only_roles(
            req.extensions().get::<tarn_security::Peer>(),
            &[tarn_security::Role::Namenode],
            "finalize a recovered replica",
        )?;
        let r = req.into_inner();
        let info = finalize_recovered(&self.shared, r).await?;
        tracing::info!(block_id = info.block_id, length = info.length, "replica recovered and finalized");
        Ok(Response::new(pb::GetReplicaResponse { replica: Some(report_of(&info)) }))
    }
}

/// Clients read and write a block only with a block access token for it, which the
/// namenode gives the users whose permissions allow it; datanodes (forwarding a pipeline)
/// and namenodes need none; in dev mode (no certificates) nobody does.
fn check_token(
    shared: &Shared,
    peer: Option<&tarn_security::Peer>,
    token: &[u8],
    block: &pb::ExtendedBlock,
    mode: u8,
) -> Result<(), Status> {
    let block_id = block.block_id;
    let Some(peer) = peer else { return Err(Status::permission_denied("the connection carries no peer identity")) };
    match &peer.identity {
        None => Ok(()),
        Some(id) if matches!(id.role, tarn_security::Role::Datanode | tarn_security::Role::Namenode) => Ok(()),
        Some(id) => match shared.block_keys.verify(token, block_id, block.gen_stamp, mode, block_token::now_ms()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let what = if mode == block_token::WRITE { "write" } else { "read" };
                tracing::warn!(peer = %id, block_id, error = %e, "block access refused");
                let mut s = Status::permission_denied(format!("{id} may not {what} block {block_id}: {e}"));
                s.metadata_mut().insert("x-tarn-error", tonic::metadata::MetadataValue::from_static("BlockToken"));
                Err(s)
            }
        },
    }
}

/// Cuts, restamps and finalizes a replica for block recovery.
/// Refuses a caller whose certificate is not of one of `roles` (dev mode: everyone may).
fn only_roles(peer: Option<&tarn_security::Peer>, roles: &[tarn_security::Role], what: &str) -> Result<(), Status> {
    let Some(peer) = peer else { return Err(Status::permission_denied("the connection carries no peer identity")) };
    match &peer.identity {
        None => Ok(()),
        Some(id) if roles.contains(&id.role) => Ok(()),
        Some(id) => Err(Status::permission_denied(format!("{id} may not {what}"))),
    }
}

async fn finalize_recovered(shared: &Arc<Shared>, r: pb::FinalizeRecoveredRequest) -> Result<ReplicaInfo, Status> {
    let store = shared.store.clone();
    // The dead writer's stream may still hold the replica for a moment.
    let w = open_replica(store, pb::WriteStage::Recover, r.block_id, r.new_gen_stamp, 0, r.length).await?;
    let w = w.map_err(|e| status_of(&e))?;
    if w.length() != r.length {
        return Err(Status::failed_precondition(format!(
            "block {}: replica holds {} bytes, recovery asked for {}",
            r.block_id,
            w.length(),
            r.length
        )));
    }
    let info = tokio::task::spawn_blocking(move || w.finalize())
        .await
        .map_err(|e| Status::internal(format!("finalize: {e}")))?
        .map_err(|e| status_of(&e))?;
    shared.event(Event::Received(info));
    Ok(info)
}

pub fn report_of(r: &ReplicaInfo) -> pb::ReplicaReport {
    pb::ReplicaReport {
        block_id: r.block_id,
        gen_stamp: r.gen_stamp,
        length: r.length,
        state: match r.state {
            ReplicaState::Finalized => pb::ReplicaState::Finalized as i32,
            ReplicaState::BeingWritten => pb::ReplicaState::BeingWritten as i32,
        },
    }
}

/// Checks each packet and hands it to the local writer and the next node.
async fn receive_packets(
    mut inbound: Streaming<pb::WritePacket>,
    local: mpsc::Sender<ToWriter>,
    mut down: Option<mpsc::Sender<pb::WritePacket>>,
    block: pb::ExtendedBlock,
    start: u64,
) {
    // The stream continues the replica where it stands (0, or the recovered length).
    let mut expected_offset = start;
    let mut expected_seqno = 1u64;
    while let Some(p) = inbound.next().await {
        let p = match p {
            Ok(p) => p,
            Err(s) => {
                tracing::info!(block_id = block.block_id, error = %s.message(), "write stream from upstream broke");
                return;
            }
        };
        let bad = if p.seqno != expected_seqno {
            Some(format!("packet {} out of order (expected {expected_seqno})", p.seqno))
        } else if p.offset != expected_offset {
            Some(format!("packet {} at offset {} (expected {expected_offset})", p.seqno, p.offset))
        } else if p.data.len() > PACKET_BYTES_MAX {
            Some(format!("packet {} of {} bytes (at most {PACKET_BYTES_MAX})", p.seqno, p.data.len()))
        } else if crc32c::crc32c(&p.data) != p.crc32c {
            Some(format!("packet {} failed its checksum (corrupted in transit)", p.seqno))
        } else {
            None
        };
        if let Some(reason) = bad {
            tracing::warn!(block_id = block.block_id, %reason, "write packet refused");
            // The writer answers it with a failure after the packets before it, and the
            // replica stays in rbw/ for recovery.
            let _ = local.send(Err((p.seqno, reason))).await;
            return;
        }
        expected_seqno += 1;
        expected_offset += p.data.len() as u64;
        let last = p.last;
        if let Some(d) = &down {
            if d.send(p.clone()).await.is_err() {
                down = None; // the ack merger reports the downstream failure
            }
        }
        if local.send(Ok(p)).await.is_err() || last {
            return;
        }
    }
}

/// Joins local results with downstream acks, in packet order, into acks for upstream.
async fn merge_acks(
    mut local: mpsc::UnboundedReceiver<LocalResult>,
    mut down: Option<Streaming<pb::WriteAck>>,
    down_addr: String,
    pipeline_len: usize,
    up: mpsc::Sender<Result<pb::WriteAck, Status>>,
    _guard: InFlight,
) {
    while let Some((seqno, r)) = local.recv().await {
        if let Err(e) = r {
            tracing::warn!(seqno, error = %e, "local write failed");
            let ack = failure_ack(seqno, vec![ack_status_of(&e) as i32], pipeline_len, e.to_string());
            let _ = up.send(Ok(ack)).await;
            return;
        }
        let mut statuses = vec![pb::AckStatus::Success as i32];
        if let Some(d) = down.as_mut() {
            let next = tokio::time::timeout(DOWNSTREAM_ACK_TIMEOUT, d.message()).await;
            let failure = match next {
                Ok(Ok(Some(a))) if a.seqno == seqno => {
                    let ok = a.statuses.iter().all(|s| *s == pb::AckStatus::Success as i32);
                    statuses.extend(a.statuses);
                    if ok {
                        None
                    } else {
                        Some(a.error)
                    }
                }
                Ok(Ok(Some(a))) => Some(format!("datanode {down_addr}: ack {} where {seqno} was due", a.seqno)),
                Ok(Ok(None)) => Some(format!("datanode {down_addr}: stream ended")),
                Ok(Err(s)) => Some(format!("datanode {down_addr}: {}", s.message())),
                Err(_) => Some(format!("datanode {down_addr}: no ack in {DOWNSTREAM_ACK_TIMEOUT:?}")),
            };
            if let Some(error) = failure {
                let _ = up.send(Ok(failure_ack(seqno, statuses, pipeline_len, error))).await;
                return;
            }
        }
        if up.send(Ok(pb::WriteAck { seqno, statuses, error: String::new() })).await.is_err() {
            return;
        }
    }
}
