//! Block I/O against datanodes: files written through replication pipelines and read
//! from the first replica that answers with good bytes.
//!
//! **Writes.** A block goes to a pipeline (client → DN1 → DN2 → DN3) in packets of at most
//! [`PACKET_BYTES`], each with its CRC32C, with up to [`WINDOW_PACKETS`] unacknowledged.
//! When a datanode fails mid-block, the writer asks the namenode for a new generation
//! stamp, reopens the pipeline with the survivors at the length all of them acknowledged,
//! and sends the unacknowledged packets again; the write completes as long as one datanode
//! of the pipeline survives (the namenode re-replicates afterwards).
//!
//! `hflush` ([`FileWriter::hflush`]) returns once every datanode of the pipeline holds the
//! bytes written so far, so new readers of those datanodes see them; `hsync` also has each
//! datanode fsync them. Neither makes the namenode's recorded length grow: that happens
//! when the block or the file completes.
//!
//! **Reads.** Each block is read from its replicas in the namenode's order; a replica that
//! is unreachable, missing, or fails a checksum (the datanode verifies its stored
//! checksums, the client verifies each piece's CRC32C) is skipped and, if corrupt, reported
//! to the namenode through the client API's `ReportBadBlocks` (open to every caller, as
//! HDFS's `reportBadBlocks`), which has it replaced. Positional reads fetch only the blocks
//! and bytes they cover.
//!
//! **Short-circuit reads** (HDFS's): a finalized replica on a datanode of this host is read
//! from its file directly. The datanode, shown a read token over mutual TLS from this host,
//! answers with the file's path, the replica's data key and its chunk records; the reader
//! opens the file itself (it must be allowed to: same OS user, else it falls back), checks
//! every chunk (the AES-GCM tag of an encrypted replica, the CRC32C of a plain one) and
//! decrypts. That saves the datanode's decrypt and re-checksum, TLS both ways and three
//! copies. A chunk that fails sends the read over the network (where the datanode checks
//! the replica itself, and the reader reports it if it is corrupt).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tarn_proto::datanode as dpb;
use tarn_proto::datanode::data_transfer_client::DataTransferClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::{
    Block, ClientError, CreateOptions, DatanodeLocation, FileStatus, LocatedBlock, NamenodeClient, Result, Transport,
};

/// Times a reader asks the namenode again for a block no datanode has reported yet
/// (0.2, 0.4, 0.8 s apart) before it gives up.
const NO_REPLICA_RETRIES: u32 = 3;

/// Data bytes per write packet.
pub const PACKET_BYTES: usize = 1 << 20;
/// Packets in flight (sent, not yet acknowledged by the whole pipeline).
pub const WINDOW_PACKETS: usize = 16;
/// Waiting for a datanode's ack or read data before declaring it failed.
const DATANODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest block data message accepted from a datanode.
const READ_MESSAGE_BYTES_MAX: usize = 8 << 20;

fn data_endpoint(addr: &str) -> std::result::Result<tonic::transport::Endpoint, String> {
    let e = Transport::endpoint(addr).map_err(|e| e.to_string())?;
    // Large HTTP/2 windows: h2's default 64 KiB would cap a block stream at one window per
    // round trip.
    Ok(e.connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20))
}

/// A block transfer client of the datanode at `addr`, on the transport's one channel per
/// datanode: a read or a pipeline reuses the connection (and its HTTP/2 windows).
fn transfer_client(transport: &Transport, addr: &str) -> std::result::Result<DataTransferClient<Channel>, String> {
    let ch = transport.cached_channel(&format!("datanode {addr}"), || data_endpoint(addr))?;
    Ok(DataTransferClient::new(ch)
        .max_decoding_message_size(READ_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(READ_MESSAGE_BYTES_MAX))
}

/// Why a pipeline stopped: which node (index into its targets) failed, if known.
#[derive(Debug, Clone)]
pub struct PipelineFailure {
    pub failed: Option<usize>,
    pub message: String,
}

impl PipelineFailure {
    fn at(i: usize, message: impl Into<String>) -> Self {
        PipelineFailure { failed: Some(i), message: message.into() }
    }
}

struct Packet {
    seqno: u64,
    offset: u64,
    data: Bytes,
    flush: bool,
    sync: bool,
    last: bool,
}

/// A write pipeline for one block.
pub struct Pipeline {
    pub targets: Vec<dpb::DatanodeLocation>,
    tx: mpsc::Sender<dpb::WritePacket>,
    acks: Streaming<dpb::WriteAck>,
    unacked: VecDeque<Packet>,
    next_seqno: u64,
    /// Bytes of the block sent.
    sent: u64,
    /// Bytes of the block every node acknowledged.
    acked: u64,
}

/// The first failed node named by an ack, or `None` if every status is a success.
fn first_failure(a: &dpb::WriteAck) -> Option<usize> {
    a.statuses.iter().position(|s| *s != dpb::AckStatus::Success as i32)
}

impl Pipeline {
    /// Opens a pipeline to `targets` for `block`, starting at byte `start` (0 for a new
    /// block; the recovered length for `Recover`). The arguments are the write header's
    /// fields.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        block: dpb::ExtendedBlock,
        targets: Vec<dpb::DatanodeLocation>,
        stage: dpb::WriteStage,
        start: u64,
        expected_bytes: u64,
        client: &str,
        token: &[u8],
        transport: &Transport,
    ) -> std::result::Result<Pipeline, PipelineFailure> {
        let first = targets.first().ok_or_else(|| PipelineFailure { failed: None, message: "no datanodes".into() })?;
        let mut dn = transfer_client(transport, &first.addr).map_err(|e| PipelineFailure::at(0, e))?;
        let (tx, rx) = mpsc::channel(WINDOW_PACKETS + 1);
        let header = dpb::WriteHeader {
            block: Some(block),
            downstream: targets[1..].to_vec(),
            stage: stage as i32,
            recover_length: start,
            expected_bytes,
            client: client.to_string(),
            token: token.to_vec(),
        };
        let _ = tx.send(dpb::WritePacket { header: Some(header), ..Default::default() }).await;
        let call = tokio::time::timeout(DATANODE_TIMEOUT, dn.write_block(ReceiverStream::new(rx)));
        let mut acks = match call.await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(PipelineFailure::at(0, format!("datanode {}: {}", first.addr, s.message()))),
            Err(_) => return Err(PipelineFailure::at(0, format!("datanode {}: no answer", first.addr))),
        };
        let setup = match tokio::time::timeout(DATANODE_TIMEOUT, acks.message()).await {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => return Err(PipelineFailure::at(0, format!("datanode {}: stream ended", first.addr))),
            Ok(Err(s)) => return Err(PipelineFailure::at(0, format!("datanode {}: {}", first.addr, s.message()))),
            Err(_) => return Err(PipelineFailure::at(0, format!("datanode {}: no setup ack", first.addr))),
        };
        if let Some(i) = first_failure(&setup) {
            return Err(PipelineFailure::at(i, setup.error));
        }
        Ok(Pipeline { targets, tx, acks, unacked: VecDeque::new(), next_seqno: 1, sent: start, acked: start })
    }

    /// Bytes of the block every node acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    async fn recv_ack(&mut self) -> std::result::Result<(), PipelineFailure> {
        let head = self.unacked.front().map(|p| p.seqno).unwrap_or(0);
        let first = self.targets[0].addr.clone();
        let a = match tokio::time::timeout(DATANODE_TIMEOUT, self.acks.message()).await {
            Ok(Ok(Some(a))) => a,
            // The first node's stream broke or went silent: it is the one that failed.
            Ok(Ok(None)) => return Err(PipelineFailure::at(0, format!("datanode {first}: stream ended"))),
            Ok(Err(s)) => return Err(PipelineFailure::at(0, format!("datanode {first}: {}", s.message()))),
            Err(_) => return Err(PipelineFailure::at(0, format!("datanode {first}: no ack in {DATANODE_TIMEOUT:?}"))),
        };
        if let Some(i) = first_failure(&a) {
            return Err(PipelineFailure::at(i, a.error));
        }
        if a.seqno != head {
            return Err(PipelineFailure::at(0, format!("datanode {first}: ack {} where {head} was due", a.seqno)));
        }
        if let Some(p) = self.unacked.pop_front() {
            self.acked = p.offset + p.data.len() as u64;
        }
        Ok(())
    }

    /// Queues one packet and sends it once the window has room. Whatever happens, the
    /// packet belongs to the pipeline afterwards: on failure it is among
    /// [`Pipeline::take_unacked`] (sent or not) for recovery to send again.
    async fn send(
        &mut self,
        data: Bytes,
        flush: bool,
        sync: bool,
        last: bool,
    ) -> std::result::Result<(), PipelineFailure> {
        let p = Packet { seqno: self.next_seqno, offset: self.sent, data, flush, sync, last };
        self.next_seqno += 1;
        self.sent += p.data.len() as u64;
        let msg = dpb::WritePacket {
            header: None,
            seqno: p.seqno,
            offset: p.offset,
            crc32c: crc32c::crc32c(&p.data),
            data: p.data.clone(),
            flush,
            sync,
            last,
        };
        self.unacked.push_back(p);
        while self.unacked.len() > WINDOW_PACKETS {
            self.recv_ack().await?;
        }
        if self.tx.send(msg).await.is_err() {
            return Err(PipelineFailure::at(0, format!("datanode {}: stream closed", self.targets[0].addr)));
        }
        Ok(())
    }

    /// Waits for every packet sent to be acknowledged.
    async fn drain(&mut self) -> std::result::Result<(), PipelineFailure> {
        while !self.unacked.is_empty() {
            self.recv_ack().await?;
        }
        Ok(())
    }

    /// Streams `data` into the block (no recovery: for copies between datanodes, which
    /// start over on failure).
    pub async fn write(&mut self, mut data: Bytes) -> std::result::Result<(), PipelineFailure> {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(PACKET_BYTES));
            self.send(piece, false, false, false).await?;
        }
        Ok(())
    }

    /// Finalizes the block on every node; returns its length.
    pub async fn finish(&mut self) -> std::result::Result<u64, PipelineFailure> {
        self.send(Bytes::new(), false, false, true).await?;
        self.drain().await?;
        Ok(self.acked)
    }

    /// The packets not acknowledged by every node, to send again after recovery.
    fn take_unacked(&mut self) -> Vec<Packet> {
        self.unacked.drain(..).collect()
    }
}

/// The namenode client a reader or writer works through: borrowed, or shared (so that a
/// writer can outlive the caller's stack frame, as an object-store upload does).
#[derive(Clone)]
pub enum Nn<'a> {
    Ref(&'a NamenodeClient),
    Shared(std::sync::Arc<NamenodeClient>),
}

impl std::ops::Deref for Nn<'_> {
    type Target = NamenodeClient;
    fn deref(&self) -> &NamenodeClient {
        match self {
            Nn::Ref(r) => r,
            Nn::Shared(a) => a,
        }
    }
}

impl<'a> From<&'a NamenodeClient> for Nn<'a> {
    fn from(r: &'a NamenodeClient) -> Self {
        Nn::Ref(r)
    }
}

impl From<std::sync::Arc<NamenodeClient>> for Nn<'static> {
    fn from(a: std::sync::Arc<NamenodeClient>) -> Self {
        Nn::Shared(a)
    }
}

/// The block being written and its pipeline.
struct OpenBlock {
    block: Block,
    pipeline: Pipeline,
}

/// Writes one file: blocks are allocated as the data grows; `close` completes the file.
pub struct FileWriter<'a> {
    nn: Nn<'a>,
    pub status: FileStatus,
    block_size: u64,
    current: Option<OpenBlock>,
    /// Length of the last block allocated (passed to the namenode with the next call).
    last_block_length: Option<u64>,
    written: u64,
    /// The datanode this client runs on (favored for the first replica).
    favored: String,
    /// The first block, allocated with the file and not opened yet.
    pending: Option<LocatedBlock>,
    /// Bytes written and not sent yet: writes are gathered into packets of up to
    /// [`PACKET_BYTES`] (an S3 body arrives in frames of a few KiB), and the block's last
    /// bytes go in the packet that finalizes it.
    buf: Vec<u8>,
}

impl<'a> FileWriter<'a> {
    /// Creates `path` (see [`NamenodeClient::create`]) and returns a writer for it.
    pub async fn create(nn: impl Into<Nn<'a>>, path: &str, opts: &CreateOptions) -> Result<FileWriter<'a>> {
        Self::create_with(nn, path, opts, false).await
    }

    /// Like [`FileWriter::create`], with the first block allocated in the same namenode
    /// operation: a small file (one block) then costs two namenode calls, create and
    /// complete. For files that will hold bytes (an empty file still gets its block,
    /// with empty replicas).
    pub async fn create_with_block(nn: impl Into<Nn<'a>>, path: &str, opts: &CreateOptions) -> Result<FileWriter<'a>> {
        Self::create_with(nn, path, opts, true).await
    }

    async fn create_with(
        nn: impl Into<Nn<'a>>,
        path: &str,
        opts: &CreateOptions,
        first: bool,
    ) -> Result<FileWriter<'a>> {
        let nn = nn.into();
        let favored = nn.local_datanode().to_string();
        let (status, pending) = nn.create_with(path, opts, first, &favored).await?;
        let block_size = status.block_size;
        if block_size == 0 {
            return Err(ClientError::InvalidArgument(format!("{path}: block size 0")));
        }
        Ok(FileWriter {
            nn,
            status,
            block_size,
            current: None,
            last_block_length: None,
            written: 0,
            favored,
            pending,
            buf: Vec::new(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn path(&self) -> &str {
        &self.status.path
    }

    /// Allocates the next block and opens its pipeline (the current one must be ended).
    async fn next_block(&mut self) -> Result<()> {
        let LocatedBlock { block, locations, token, .. } = match self.pending.take() {
            Some(first) => first,
            None => {
                self.nn
                    .allocate_block(self.path(), self.status.file_id, self.last_block_length, Vec::new(), &self.favored)
                    .await?
            }
        };
        let targets: Vec<dpb::DatanodeLocation> = locations.iter().map(dpb::DatanodeLocation::from).collect();
        self.last_block_length = Some(0);
        let eb = dpb::ExtendedBlock::from(&block);
        let client = self.nn.client_name().to_string();
        let t = self.nn.transport();
        let stage = dpb::WriteStage::Create;
        match Pipeline::open(eb, targets.clone(), stage, 0, self.block_size, &client, &token, t).await {
            Ok(pipeline) => self.current = Some(OpenBlock { block, pipeline }),
            Err(f) => {
                // Carry on with the nodes that did answer.
                tracing::warn!(block_id = block.block_id, error = %f.message, "pipeline setup failed; recovering");
                let ob = self.recover(block, survivors(&targets, &f), 0, Vec::new()).await?;
                self.current = Some(ob);
            }
        }
        Ok(())
    }

    /// Rebuilds the pipeline of `block` with `nodes` from byte `from`, sends `resend` again
    /// and waits until all of it is acknowledged.
    async fn recover(
        &self,
        block: Block,
        mut nodes: Vec<dpb::DatanodeLocation>,
        from: u64,
        resend: Vec<Packet>,
    ) -> Result<OpenBlock> {
        let path = self.path().to_string();
        loop {
            if nodes.is_empty() {
                return Err(ClientError::WriteFailed {
                    path,
                    block_id: block.block_id,
                    reason: "every datanode of the pipeline failed".into(),
                });
            }
            let uuids: Vec<String> = nodes.iter().map(|n| n.uuid.clone()).collect();
            let (updated, token) = self.nn.update_pipeline(&path, self.status.file_id, block.block_id, uuids).await?;
            let eb = dpb::ExtendedBlock::from(&updated);
            let stage = dpb::WriteStage::Recover;
            let client = self.nn.client_name();
            let t = self.nn.transport();
            let mut p = match Pipeline::open(eb, nodes.clone(), stage, from, self.block_size, client, &token, t).await {
                Ok(p) => p,
                Err(f) => {
                    tracing::warn!(block_id = block.block_id, error = %f.message, "pipeline recovery failed; retrying");
                    nodes = survivors(&nodes, &f);
                    continue;
                }
            };
            let mut r = Ok(());
            for pk in &resend {
                r = p.send(pk.data.clone(), pk.flush, pk.sync, pk.last).await;
                if r.is_err() {
                    break;
                }
            }
            if r.is_ok() {
                r = p.drain().await;
            }
            match r {
                Ok(()) => {
                    tracing::info!(block_id = block.block_id, nodes = nodes.len(), "pipeline recovered");
                    return Ok(OpenBlock { block: updated, pipeline: p });
                }
                Err(f) => {
                    tracing::warn!(block_id = block.block_id, error = %f.message, "pipeline failed again; retrying");
                    nodes = survivors(&nodes, &f);
                }
            }
        }
    }

    /// Sends one packet on the current pipeline; with `wait`, until all is acknowledged.
    /// A failed datanode is dropped from the pipeline and the block carries on.
    async fn send(&mut self, data: Bytes, flush: bool, sync: bool, last: bool) -> Result<()> {
        let cur = self.current.as_mut().ok_or_else(|| ClientError::InvalidArgument("no block is open".into()))?;
        let mut r = cur.pipeline.send(data, flush, sync, last).await;
        if r.is_ok() && (flush || sync || last) {
            r = cur.pipeline.drain().await;
        }
        let Err(f) = r else { return Ok(()) };
        let mut cur = self.current.take().expect("checked above");
        tracing::warn!(
            block_id = cur.block.block_id,
            failed = ?f.failed.map(|i| cur.pipeline.targets[i].addr.clone()),
            error = %f.message,
            "datanode failed mid-write; recovering"
        );
        let nodes = survivors(&cur.pipeline.targets, &f);
        let from = cur.pipeline.acked();
        let resend = cur.pipeline.take_unacked();
        let OpenBlock { block, pipeline } = cur;
        // Close the broken pipeline first: until its streams end, the survivors' writers
        // hold their replicas and cannot be reopened for recovery.
        drop(pipeline);
        self.current = Some(self.recover(block, nodes, from, resend).await?);
        Ok(())
    }

    /// Finalizes the current block; its length goes to the namenode with the next call.
    async fn end_block(&mut self) -> Result<()> {
        if self.current.is_none() {
            return Ok(());
        }
        let rest = Bytes::from(std::mem::take(&mut self.buf));
        self.send(rest, false, false, true).await?;
        let cur = self.current.take().expect("checked above");
        self.last_block_length = Some(cur.pipeline.acked());
        Ok(())
    }

    /// Appends `data` to the file.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let in_block = self.current.as_ref().map(|c| c.pipeline.sent + self.buf.len() as u64);
            let room = match in_block {
                Some(n) if n < self.block_size => self.block_size - n,
                Some(_) => {
                    self.end_block().await?;
                    continue;
                }
                None => {
                    self.next_block().await?;
                    continue;
                }
            };
            let take = data.len().min(PACKET_BYTES - self.buf.len()).min(room as usize);
            self.buf.extend_from_slice(&data[..take]);
            self.written += take as u64;
            data = &data[take..];
            if take as u64 == room {
                // The block is full: its last bytes finalize it.
                self.end_block().await?;
            } else if self.buf.len() == PACKET_BYTES {
                self.send_buffered(false, false).await?;
            }
        }
        Ok(())
    }

    /// Sends the gathered bytes as one packet.
    async fn send_buffered(&mut self, flush: bool, sync: bool) -> Result<()> {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.send(data, flush, sync, false).await
    }

    /// Returns once every datanode of the pipeline holds what was written (new readers
    /// that go to those datanodes see it).
    pub async fn hflush(&mut self) -> Result<()> {
        if self.current.is_some() {
            self.send_buffered(true, false).await?;
        }
        Ok(())
    }

    /// Like [`FileWriter::hflush`], and every datanode has the bytes on disk.
    pub async fn hsync(&mut self) -> Result<()> {
        if self.current.is_some() {
            self.send_buffered(true, true).await?;
        }
        Ok(())
    }

    /// Finalizes the last block: a first block allocated with the file and never written
    /// gets empty replicas, so no block of the file is without one.
    async fn finish(&mut self) -> Result<()> {
        if self.pending.is_some() {
            self.next_block().await?;
        }
        self.end_block().await
    }

    /// Finalizes the last block and completes the file (with `xattrs` set atomically).
    pub async fn close_with(mut self, xattrs: std::collections::BTreeMap<String, Vec<u8>>) -> Result<FileStatus> {
        self.finish().await?;
        let path = self.status.path.clone();
        self.nn.complete(&path, self.status.file_id, self.last_block_length, xattrs).await
    }

    /// Finalizes the last block, completes the file and makes it `dst` in the same
    /// namenode operation, under `o`'s conditions (see [`NamenodeClient::complete_publish`]).
    /// If a condition fails, the file stays open and unpublished.
    pub async fn close_publish(mut self, dst: &str, o: &crate::ConcatOptions) -> Result<FileStatus> {
        self.finish().await?;
        let path = self.status.path.clone();
        self.nn.complete_publish(&path, self.status.file_id, self.last_block_length, dst, o).await
    }

    pub async fn close(self) -> Result<FileStatus> {
        self.close_with(Default::default()).await
    }
}

fn survivors(targets: &[dpb::DatanodeLocation], f: &PipelineFailure) -> Vec<dpb::DatanodeLocation> {
    // Unknown culprit: the first node is the one the client talks to; drop it.
    let bad = f.failed.unwrap_or(0);
    targets.iter().enumerate().filter(|(i, _)| *i != bad).map(|(_, t)| t.clone()).collect()
}

/// Reports a replica that failed verification to the namenode leader (the client API's
/// `ReportBadBlocks`, open to every caller); `true` if the namenode marked it.
async fn report_bad(nn: &NamenodeClient, node: &DatanodeLocation, block: &Block, reason: &str) -> bool {
    match nn.report_bad_blocks(&[(*block, node.clone())], reason).await {
        Ok(marked) => marked > 0,
        Err(e) => {
            tracing::warn!(block_id = block.block_id, error = %e, "could not report a corrupt replica");
            false
        }
    }
}

/// Reads `[offset, offset + len)` of one replica, verifying every piece; returns the
/// pieces as they arrived (no copy).
async fn read_replica(
    transport: &Transport,
    node: &DatanodeLocation,
    block: &dpb::ExtendedBlock,
    token: &[u8],
    offset: u64,
    len: u64,
) -> std::result::Result<Vec<Bytes>, (bool, String)> {
    let mut dn = transfer_client(transport, &node.addr).map_err(|e| (false, e))?;
    let req = dpb::ReadBlockRequest { block: Some(*block), offset, length: len, token: token.to_vec() };
    let call = tokio::time::timeout(DATANODE_TIMEOUT, dn.read_block(req));
    let mut stream = match call.await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Err((s.code() == tonic::Code::DataLoss, s.message().to_string())),
        Err(_) => return Err((false, "no answer".into())),
    };
    let mut out = Vec::new();
    let mut got = 0u64;
    while got < len {
        let piece = match tokio::time::timeout(DATANODE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return Err((false, format!("stream ended after {got} of {len} bytes"))),
            Ok(Err(s)) => return Err((s.code() == tonic::Code::DataLoss, s.message().to_string())),
            Err(_) => return Err((false, "no data".into())),
        };
        if piece.offset != offset + got {
            return Err((false, format!("piece at {} where {} was due", piece.offset, offset + got)));
        }
        if crc32c::crc32c(&piece.data) != piece.crc32c {
            // Corrupted between the datanode's check and here: the replica may be fine.
            return Err((false, format!("piece at {} failed its checksum in transit", piece.offset)));
        }
        got += piece.data.len() as u64;
        out.push(piece.data);
    }
    if got != len {
        return Err((false, format!("{got} bytes where {len} were asked for")));
    }
    Ok(out)
}

fn concat(pieces: Vec<Bytes>) -> Vec<u8> {
    if pieces.len() == 1 {
        return Vec::from(pieces.into_iter().next().expect("one piece"));
    }
    let mut out = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
    for p in pieces {
        out.extend_from_slice(&p);
    }
    out
}

/// Bytes of a local replica record: CRC32C, length, session, tag.
const LOCAL_RECORD_BYTES: usize = 28;

/// A replica read from its file on this host (see the module docs).
struct LocalReplica {
    node: DatanodeLocation,
    file: std::fs::File,
    length: u64,
    chunk: u64,
    key: Option<tarn_security::chunk_cipher::ChunkKey>,
    records: Vec<u8>,
}

/// Whether the datanode at `node` is on this host: a loopback address, or the datanode
/// this process runs beside (`NamenodeClient::with_local_datanode`, as for write placement).
fn on_this_host(node: &DatanodeLocation, local_uuid: &str) -> bool {
    (!local_uuid.is_empty() && node.uuid == local_uuid)
        || node.addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

impl LocalReplica {
    async fn open(
        transport: &Transport,
        node: &DatanodeLocation,
        block: &dpb::ExtendedBlock,
        token: &[u8],
    ) -> std::result::Result<LocalReplica, String> {
        let mut dn = transfer_client(transport, &node.addr)?;
        let req = dpb::LocalReplicaRequest { block: Some(*block), token: token.to_vec() };
        let r = match tokio::time::timeout(DATANODE_TIMEOUT, dn.open_local(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(s.message().to_string()),
            Err(_) => return Err("no answer".into()),
        };
        let chunk = u64::from(r.chunk_bytes);
        let chunks = r.length.div_ceil(chunk.max(1)) as usize;
        if chunk == 0 || r.chunks.len() != chunks * LOCAL_RECORD_BYTES || r.length < block.length {
            return Err(format!("{} bytes of records for {} bytes", r.chunks.len(), r.length));
        }
        let key = match r.data_key.len() {
            0 => None,
            _ => Some(
                tarn_security::chunk_cipher::ChunkKey::new(&r.data_key, block.block_id)
                    .ok_or_else(|| "the data key is not an AES-256 key".to_string())?,
            ),
        };
        let file = std::fs::File::open(&r.data_path).map_err(|e| format!("open {}: {e}", r.data_path))?;
        Ok(LocalReplica { node: node.clone(), file, length: r.length, chunk, key, records: r.chunks })
    }

    /// Reads `[offset, offset + len)`, checking (and decrypting) every chunk it touches.
    fn read(&self, offset: u64, len: u64) -> std::result::Result<Bytes, String> {
        let end = offset.checked_add(len).filter(|&e| e <= self.length).ok_or_else(|| "out of range".to_string())?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (first, last) = (offset / self.chunk, (end - 1) / self.chunk);
        let start = first * self.chunk;
        let stop = ((last + 1) * self.chunk).min(self.length);
        let mut buf = crate::fileio::read_exact_at(&self.file, (stop - start) as usize, start)
            .map_err(|e| format!("read {start}+{}: {e}", stop - start))?;
        for (i, piece) in buf.chunks_mut(self.chunk as usize).enumerate() {
            let idx = first + i as u64;
            let at = idx as usize * LOCAL_RECORD_BYTES;
            let rec = &self.records[at..at + LOCAL_RECORD_BYTES];
            let u = |j: usize| u32::from_le_bytes([rec[j], rec[j + 1], rec[j + 2], rec[j + 3]]);
            if u(4) as usize != piece.len() {
                return Err(format!("chunk {idx} records {} bytes, {} expected", u(4), piece.len()));
            }
            match &self.key {
                Some(k) => {
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(&rec[12..]);
                    k.open(idx, u(8), piece, &tag)
                        .map_err(|_| format!("chunk {idx} fails authentication (tampered ciphertext)"))?;
                }
                None => {
                    let got = crc32c::crc32c(piece);
                    if got != u(0) {
                        return Err(format!(
                            "checksum mismatch in chunk {idx} (stored {:08x}, computed {got:08x})",
                            u(0)
                        ));
                    }
                }
            }
        }
        let skip = (offset - start) as usize;
        Ok(Bytes::from(buf).slice(skip..skip + len as usize))
    }
}

/// Replica files a reader keeps open (a long sequential read opens one per block).
const LOCAL_OPEN_MAX: usize = 8;

/// The local replicas a reader has looked up, by block id (`None`: none can be read
/// locally), the most recently used last; at most [`LOCAL_OPEN_MAX`] kept.
#[derive(Default)]
struct LocalReplicas {
    by_block: HashMap<u64, Option<Arc<LocalReplica>>>,
    order: VecDeque<u64>,
}

impl LocalReplicas {
    fn get(&mut self, block_id: u64) -> Option<Option<Arc<LocalReplica>>> {
        let found = self.by_block.get(&block_id).cloned()?;
        self.order.retain(|b| *b != block_id);
        self.order.push_back(block_id);
        Some(found)
    }

    fn put(&mut self, block_id: u64, l: Option<Arc<LocalReplica>>) {
        self.by_block.insert(block_id, l);
        self.order.retain(|b| *b != block_id);
        self.order.push_back(block_id);
        while self.order.len() > LOCAL_OPEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_block.remove(&old);
            }
        }
    }
}

/// Positional reads of one file.
pub struct FileReader<'a> {
    nn: Nn<'a>,
    path: String,
    blocks: Vec<LocatedBlock>,
    /// Start offset of each block in the file.
    starts: Vec<u64>,
    length: u64,
    file_id: u64,
    /// A small file's bytes, kept by the namenodes (the file has no blocks).
    inline: Option<Bytes>,
    /// Replicas read from their files on this host, by block id (`None`: none can be).
    local: std::sync::Mutex<LocalReplicas>,
    /// Bytes read that way.
    local_bytes: std::sync::atomic::AtomicU64,
    /// Corrupt replicas this reader reported and the namenode accepted.
    reported: std::sync::atomic::AtomicU64,
}

impl<'a> FileReader<'a> {
    /// Looks up `path`'s blocks and where their replicas are.
    pub async fn open(nn: impl Into<Nn<'a>>, path: &str) -> Result<FileReader<'a>> {
        let nn = nn.into();
        let mut blocks = Vec::new();
        let mut file_id = None;
        let mut inline = None;
        loop {
            let r = nn.get_blocks(path, blocks.len() as u32, 1000).await?;
            if let Some(data) = r.inline_data {
                if data.len() as u64 != r.length {
                    return Err(ClientError::InvalidArgument(format!(
                        "{path}: the namenode sent {} bytes of a {}-byte small file",
                        data.len(),
                        r.length
                    )));
                }
                file_id = Some(r.file_id);
                inline = Some(data);
                break;
            }
            // Pages of two different files (replaced in between) must not be spliced.
            if file_id.is_some_and(|id| id != r.file_id) {
                return Err(ClientError::InvalidArgument(format!("{path} was replaced while its blocks were listed")));
            }
            file_id = Some(r.file_id);
            blocks.extend(r.blocks);
            if !r.has_more {
                break;
            }
        }
        let mut starts = Vec::with_capacity(blocks.len());
        let mut length = 0u64;
        for b in &blocks {
            starts.push(length);
            length += b.block.length;
        }
        if let Some(data) = &inline {
            length = data.len() as u64;
        }
        Ok(FileReader {
            nn,
            path: path.to_string(),
            blocks,
            starts,
            length,
            file_id: file_id.unwrap_or(0),
            inline,
            local: Default::default(),
            local_bytes: Default::default(),
            reported: Default::default(),
        })
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// The file read (its id at the time of `open`).
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Bytes this reader read from replica files on this host (short-circuit reads).
    pub fn short_circuit_bytes(&self) -> u64 {
        self.local_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Corrupt replicas this reader found and the namenode accepted its report of (it marks
    /// them, and has them replaced).
    pub fn corrupt_replicas_reported(&self) -> u64 {
        self.reported.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads `[offset, offset + len)` in order as pieces of `piece` bytes, with `depth`
    /// reads in flight (read-ahead for sequential readers such as `get` and `cat`).
    pub fn read_pieces(
        &self,
        offset: u64,
        len: u64,
        piece: u64,
        depth: usize,
    ) -> impl futures::Stream<Item = Result<Vec<Bytes>>> + '_ {
        use futures::StreamExt;
        let end = offset.saturating_add(len).min(self.length);
        let piece = piece.max(1);
        let starts = (offset..end).step_by(piece as usize);
        futures::stream::iter(starts).map(move |o| self.read_at_bytes(o, piece.min(end - o))).buffered(depth.max(1))
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        Ok(concat(self.read_at_bytes(offset, len).await?))
    }

    /// Like [`FileReader::read_at`], as the pieces the datanodes sent (no copy).
    pub async fn read_at_bytes(&self, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        let end = offset.saturating_add(len).min(self.length);
        if let Some(data) = &self.inline {
            return Ok(if offset < end { vec![data.slice(offset as usize..end as usize)] } else { Vec::new() });
        }
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let i = self.starts.partition_point(|&s| s <= pos) - 1;
            let lb = &self.blocks[i];
            let b = &lb.block;
            let in_block = pos - self.starts[i];
            let take = (b.length - in_block).min(end - pos);
            out.extend(self.read_block(lb, in_block, take).await?);
            pos += take;
        }
        Ok(out)
    }

    /// The replica of `lb` this host can read from its file, opened on first use.
    async fn local_replica(&self, lb: &LocatedBlock, eb: &dpb::ExtendedBlock) -> Option<Arc<LocalReplica>> {
        if !self.nn.short_circuit() || lb.under_construction {
            return None;
        }
        if let Some(l) = self.lock_local().get(eb.block_id) {
            return l;
        }
        // Not under the lock: read-ahead of other blocks goes on meanwhile (two reads of
        // one block may both look; the second answer wins, the same either way).
        let local_uuid = self.nn.local_datanode();
        let mut found = None;
        for node in lb.locations.iter().filter(|n| on_this_host(n, local_uuid)) {
            match LocalReplica::open(self.nn.transport(), node, eb, &lb.token).await {
                Ok(l) => {
                    found = Some(Arc::new(l));
                    break;
                }
                Err(why) => {
                    tracing::debug!(block_id = eb.block_id, datanode = %node.addr, error = %why, "no short-circuit read")
                }
            }
        }
        self.lock_local().put(eb.block_id, found.clone());
        found
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, LocalReplicas> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_block(&self, lb: &LocatedBlock, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        let b = &lb.block;
        let eb = dpb::ExtendedBlock::from(b);
        if let Some(l) = self.local_replica(lb, &eb).await {
            let r = {
                let l = l.clone();
                tokio::task::spawn_blocking(move || l.read(offset, len)).await
            };
            match r {
                Ok(Ok(bytes)) => {
                    self.local_bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return Ok(vec![bytes]);
                }
                // Not reported from here: the file opened by path may not be the replica the
                // datanode described (replaced meanwhile, or another mount namespace). The
                // read over the network checks the replica on the datanode, and a replica
                // it finds corrupt is reported below.
                Ok(Err(why)) => {
                    tracing::warn!(block_id = b.block_id, datanode = %l.node.addr, error = %why, "local replica read failed; reading over the network");
                }
                Err(e) => tracing::warn!(block_id = b.block_id, error = %e, "local replica read failed"),
            }
            self.lock_local().put(eb.block_id, None);
        }
        let mut tried = Vec::new();
        let mut fresh = None;
        let mut waits = 0;
        let mut token_retried = false;
        loop {
            let lb = fresh.as_ref().unwrap_or(lb);
            if lb.locations.is_empty() && waits < NO_REPLICA_RETRIES {
                // No datanode has reported a replica yet (after a restart the block reports
                // follow the registrations): ask the namenode again shortly, as HDFS's
                // client does before it gives up on a block.
                tokio::time::sleep(Duration::from_millis(200 << waits)).await;
                waits += 1;
                match self.nn.get_blocks(&self.path, b.index, 1).await {
                    Ok(r) if r.file_id == self.file_id => fresh = r.blocks.into_iter().next(),
                    _ => break,
                }
                if fresh.is_none() {
                    break;
                }
                continue;
            }
            let mut token_refused = false;
            for node in &lb.locations {
                match read_replica(self.nn.transport(), node, &eb, &lb.token, offset, len).await {
                    Ok(data) => return Ok(data),
                    Err((corrupt, why)) => {
                        tracing::warn!(block_id = b.block_id, datanode = %node.addr, error = %why, "replica read failed; trying the next");
                        if corrupt && report_bad(&self.nn, node, b, &why).await {
                            self.reported.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        token_refused |= why.contains("block access token");
                        tried.push(format!("{}: {why}", node.addr));
                    }
                }
            }
            // A token that expired (a reader open for hours) or whose key a datanode does
            // not know: ask the namenode for the block again, once.
            if token_retried || !token_refused {
                break;
            }
            token_retried = true;
            match self.nn.get_blocks(&self.path, b.index, 1).await {
                Ok(r) if r.file_id == self.file_id => fresh = r.blocks.into_iter().next(),
                _ => break,
            }
            if fresh.is_none() {
                break;
            }
        }
        if tried.is_empty() {
            tried.push("no live datanode holds a replica".into());
        }
        Err(ClientError::BlockUnavailable { path: self.path.clone(), block_id: b.block_id, tried: tried.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_few_replica_files_open_the_most_recent() {
        let mut l = LocalReplicas::default();
        for b in 0..(LOCAL_OPEN_MAX as u64 + 3) {
            l.put(b, None);
        }
        assert_eq!(l.by_block.len(), LOCAL_OPEN_MAX);
        assert!(l.get(0).is_none() && l.get(2).is_none(), "the oldest went");
        // Using one keeps it: block 3 is now the newest, so 4 goes next.
        assert!(l.get(3).is_some());
        l.put(100, None);
        assert!(l.get(3).is_some() && l.get(4).is_none());
    }
}
