//! The Tarn client library: the namenode API with leader discovery and transparent retries.
//!
//! A [`NamenodeClient`] knows the addresses of some namenodes. It sends each call to the
//! node it believes leads; a follower answers `Unavailable` with the leader's address in
//! `x-tarn-leader`, and the client follows it. Unreachable nodes and elections are retried
//! with backoff until the call's deadline. Every mutating call carries a request id
//! (client id, call number), so a retried call that had in fact committed returns its
//! original result rather than, say, `AlreadyExists`.
//!
//! **Architecture invariant:** protobuf types do not leak out of this crate's API except
//! through the `pb` re-export for callers that need raw access.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub mod blocks;
pub mod conn;
pub mod fileio;
pub mod rm;
pub mod store;
mod types;

use bytes::Bytes;
pub use conn::{endpoint, LeaderConn, RetryPolicy};
pub use tarn_proto::datanode as dpb;
pub use tarn_proto::namenode as pb;
use tarn_proto::namenode::namenode_admin_client::NamenodeAdminClient;
use tarn_proto::namenode::namenode_client::NamenodeClient as RawClient;
pub use tarn_security::Transport;
use tonic::transport::Channel;
use tonic::{Request, Status};
pub use types::*;

/// Calls `$method` on a fresh stub per attempt (tonic stubs borrow themselves for a call).
macro_rules! rpc {
    ($self:ident, $stub:ident, $method:ident, $msg:expr) => {{
        $self
            .call(|c| {
                let mut stub = Self::$stub(c);
                let req = $self.request($msg);
                async move { stub.$method(req).await }
            })
            .await
    }};
}

/// Lookups carried by one `GetFileInfos` call at most.
const INFO_BATCH_MAX: usize = 1024;
/// `GetFileInfos` calls one client has in flight at most; lookups that arrive meanwhile
/// wait and leave together in the next call.
const INFO_BATCHES_IN_FLIGHT_MAX: usize = 4;

type InfoReply = tokio::sync::oneshot::Sender<Result<Option<FileStatus>>>;
type InfoWaiter = (pb::GetFileInfoRequest, InfoReply);

/// Largest file [`NamenodeClient::put_small`] offers the namenode (its limit too); larger
/// files are written to blocks.
pub const INLINE_MAX: usize = 64 * 1024;

/// Largest response accepted (a listing page).
const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// What kind of refusal an error is: the vocabulary the namenode names in its statuses
/// (`x-tarn-error`), shared through `tarn-proto`.
pub use tarn_proto::ErrorKind;
use tarn_proto::ERROR_KIND_HEADER;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The namenode refused the operation.
    #[error("{message}")]
    Refused { kind: ErrorKind, code: tonic::Code, message: String },
    /// No node of the service answered before the deadline.
    #[error("no {service} could serve the request within {waited:?} (tried {addrs}): {last}")]
    Unavailable { service: &'static str, waited: Duration, addrs: String, last: String },
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    /// No replica of a block could be read.
    #[error("block {block_id} of {path}: no replica could be read ({tried})")]
    BlockUnavailable { path: String, block_id: u64, tried: String },
    /// A block write failed on every datanode of its pipeline.
    #[error("block {block_id} of {path}: write failed: {reason}")]
    WriteFailed { path: String, block_id: u64, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Refused { kind, .. } => *kind,
            ClientError::Unavailable { .. } => ErrorKind::Unavailable,
            ClientError::BadAddress { .. } | ClientError::InvalidArgument(_) => ErrorKind::Other,
            ClientError::BlockUnavailable { .. } | ClientError::WriteFailed { .. } => ErrorKind::Unavailable,
        }
    }

    /// The refusal a gRPC status names (its kind from `x-tarn-error`).
    pub fn from_status(s: &Status) -> ClientError {
        let kind = s.metadata().get(ERROR_KIND_HEADER).and_then(|v| v.to_str().ok()).map(ErrorKind::parse);
        let kind = match (kind, s.code()) {
            (Some(k), _) => k,
            (None, tonic::Code::PermissionDenied) => ErrorKind::PermissionDenied,
            (None, _) => ErrorKind::Other,
        };
        ClientError::Refused { kind, code: s.code(), message: s.message().to_string() }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub namespace_quota: Option<u64>,
    pub space_quota: Option<u64>,
    pub namespace_used: u64,
    pub space_used: u64,
}

/// A file or directory's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// Full path, or the name in a directory listing.
    pub path: String,
    pub kind: FileKind,
    pub file_id: u64,
    pub length: u64,
    pub replication: u32,
    pub block_size: u64,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub mtime_ms: u64,
    /// The lease holder while the file is being written.
    pub writer: Option<String>,
    pub block_count: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub quota: Option<Quota>,
}

impl FileStatus {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
}

impl From<pb::FileStatus> for FileStatus {
    fn from(s: pb::FileStatus) -> Self {
        FileStatus {
            path: s.path,
            kind: if s.kind == pb::FileKind::Directory as i32 { FileKind::Directory } else { FileKind::File },
            file_id: s.file_id,
            length: s.length,
            replication: s.replication,
            block_size: s.block_size,
            mode: s.mode,
            owner: s.owner,
            group: s.group,
            mtime_ms: s.mtime_ms,
            writer: Some(s.writer).filter(|w| !w.is_empty()),
            block_count: s.block_count,
            xattrs: s.xattrs.into_iter().collect(),
            quota: s.quota.map(Quota::from),
        }
    }
}

fn status_of(s: Option<pb::FileStatus>) -> FileStatus {
    s.map(FileStatus::from).unwrap_or_else(|| FileStatus {
        path: String::new(),
        kind: FileKind::File,
        file_id: 0,
        length: 0,
        replication: 0,
        block_size: 0,
        mode: 0,
        owner: String::new(),
        group: String::new(),
        mtime_ms: 0,
        writer: None,
        block_count: 0,
        xattrs: BTreeMap::new(),
        quota: None,
    })
}

/// Options of [`NamenodeClient::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub overwrite: bool,
    pub expected_file_id: Option<u64>,
    pub create_parent: bool,
    /// 0: the namenode's default.
    pub replication: u32,
    /// 0: the namenode's default.
    pub block_size: u64,
    /// 0: 0644.
    pub mode: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Options of [`NamenodeClient::mkdir_exclusive`].
#[derive(Debug, Clone, Default)]
pub struct MkdirOptions {
    /// 0: 0755.
    pub mode: u32,
    /// The owner of the directory and of the missing ones above it (None: the caller; only
    /// the superuser may name another user).
    pub owner: Option<String>,
    /// None: the parent's group.
    pub group: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory that must exist for the mkdir to happen (else `NotFound`).
    pub require_dir: Option<String>,
}

/// Options of [`NamenodeClient::rename`].
#[derive(Debug, Clone, Default)]
pub struct RenameOptions {
    pub overwrite: bool,
    pub dst_must_be_absent: bool,
    pub dst_expected_file_id: Option<u64>,
    pub src_expected_file_id: Option<u64>,
}

/// How [`NamenodeClient::concat`] treats its destination and what the new file gets.
#[derive(Debug, Clone, Default)]
pub struct ConcatOptions {
    pub overwrite: bool,
    pub dst_must_be_absent: bool,
    pub dst_expected_file_id: Option<u64>,
    pub create_parent: bool,
    pub mode: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory that must exist for the operation to happen (checked atomically).
    pub require_dir: Option<String>,
    /// The new file's owner (only the superuser may name one).
    pub owner: Option<String>,
}

/// What [`NamenodeClient::list_tree`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Directories too (with a trailing '/' in their path).
    pub include_directories: bool,
    /// Each directory once, without its contents (S3's delimiter '/').
    pub collapse_directories: bool,
    pub with_xattrs: bool,
}

/// A client of the namenode group.
pub struct NamenodeClient {
    conn: Arc<LeaderConn>,
    client_id: u64,
    calls: AtomicU64,
    client_name: String,
    /// Feeds the lookup batcher, started on the first `get_file_info`.
    infos: OnceLock<tokio::sync::mpsc::UnboundedSender<InfoWaiter>>,
    /// Read replicas on this host straight from their files (see `blocks`).
    short_circuit: bool,
    /// The uuid of the datanode this process runs beside, if any: writes place their first
    /// replica there, reads of its replicas go short-circuit.
    local_datanode: String,
}

/// Whom a client without a certificate (dev mode) acts as unless told (`with_user`).
pub const DEV_USER: &str = "tarn";

impl NamenodeClient {
    /// A client of the namenodes at `addrs` (`host:port`, comma-separated lists allowed),
    /// connecting over `transport`.
    pub fn new(addrs: &[String], transport: &Transport) -> Result<Self> {
        let addrs: Vec<String> =
            addrs.iter().flat_map(|a| a.split(',')).map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let client_id: u64 = rand::random();
        // With a certificate the namenode knows who this is: a person is their certificate's
        // name, a daemon itself, unless told otherwise (`with_user`). Without one (dev
        // mode) the client names its user.
        let user = if transport.is_tls() { String::new() } else { DEV_USER.to_string() };
        Ok(NamenodeClient {
            conn: Arc::new(LeaderConn::new("namenode", addrs, user, RetryPolicy::default(), transport.clone())?),
            client_id,
            calls: AtomicU64::new(1),
            client_name: format!("tarn-client-{client_id:016x}"),
            infos: OnceLock::new(),
            short_circuit: true,
            local_datanode: String::new(),
        })
    }

    /// Whether replicas on this host are read straight from their files (on by default;
    /// off, every byte comes over TLS from the datanode).
    pub fn with_short_circuit(mut self, on: bool) -> Self {
        self.short_circuit = on;
        self
    }

    /// The datanode this process runs beside (its uuid): first replicas of writes go there
    /// and its replicas are read short-circuit.
    pub fn with_local_datanode(mut self, uuid: impl Into<String>) -> Self {
        self.local_datanode = uuid.into();
        self
    }

    pub fn local_datanode(&self) -> &str {
        &self.local_datanode
    }

    pub fn short_circuit(&self) -> bool {
        self.short_circuit
    }

    fn reconnect(mut self, user: String, retry: RetryPolicy) -> Self {
        match LeaderConn::new("namenode", self.conn.addrs().to_vec(), user, retry, self.conn.transport().clone()) {
            Ok(c) => {
                self.conn = Arc::new(c);
                self.infos = OnceLock::new();
            }
            Err(e) => tracing::warn!(error = %e, "client settings not applied"),
        }
        self
    }

    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        let user = self.conn.user().to_string();
        self.reconnect(user, retry)
    }

    /// Acts as `user`. The namenode holds a person to the name in their certificate;
    /// daemons (the S3 gateway, workers) act for the users they serve.
    pub fn with_user(self, user: impl Into<String>) -> Self {
        let retry = self.conn.retry();
        self.reconnect(user.into(), retry)
    }

    /// A client on the same connections that acts for `user` (a daemon serving users,
    /// such as the S3 gateway, writes as each request's user). It has a client id of its
    /// own, so its request ids and lease-holder name never collide with this one's.
    pub fn for_user(&self, user: impl Into<String>) -> NamenodeClient {
        let client_id: u64 = rand::random();
        // An empty name would mean "no claim" (the daemon itself): send an invalid one.
        let user = Some(user.into()).filter(|u| !u.is_empty()).unwrap_or_else(|| "?".into());
        NamenodeClient {
            conn: Arc::new(self.conn.as_user(user)),
            client_id,
            calls: AtomicU64::new(1),
            client_name: format!("tarn-client-{client_id:016x}"),
            infos: OnceLock::new(),
            short_circuit: self.short_circuit,
            local_datanode: self.local_datanode.clone(),
        }
    }

    /// How this client connects (block I/O to datanodes uses the same).
    pub fn transport(&self) -> &Transport {
        self.conn.transport()
    }

    /// This client's lease-holder name.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    fn next_request_id(&self) -> Option<pb::RequestId> {
        Some(pb::RequestId { client_id: self.client_id, call_id: self.calls.fetch_add(1, Ordering::Relaxed) })
    }

    /// A request to the namenodes, with this client's timeout and user.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        self.conn.request(msg)
    }

    /// Runs `f` against the namenode leader, following redirects and retrying: for other
    /// services on the namenodes (the datanode protocol) that want the same behaviour.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.conn.call(f).await
    }

    fn nn(c: Channel) -> RawClient<Channel> {
        RawClient::new(c).max_decoding_message_size(MESSAGE_BYTES_MAX)
    }

    pub async fn mkdirs(&self, path: &str) -> Result<FileStatus> {
        let msg = pb::MkdirsRequest { path: path.into(), request_id: self.next_request_id(), ..Default::default() };
        let r = rpc!(self, nn, mkdirs, msg.clone())?;
        Ok(status_of(r.status))
    }

    /// Makes the directory `path` only if nothing is there, with its owner, group, mode and
    /// attributes (and any missing directories above it), in one namespace operation.
    /// Refused with [`ErrorKind::AlreadyOwned`] if a directory of the same owner is there,
    /// else [`ErrorKind::AlreadyExists`] if anything is; either way nothing changes.
    pub async fn mkdir_exclusive(&self, path: &str, o: &MkdirOptions) -> Result<FileStatus> {
        let msg = pb::MkdirsRequest {
            path: path.into(),
            mode: o.mode,
            request_id: self.next_request_id(),
            exclusive: true,
            owner: o.owner.clone(),
            group: o.group.clone(),
            xattrs: o.xattrs.clone().into_iter().collect(),
            require_dir: o.require_dir.clone(),
        };
        let r = rpc!(self, nn, mkdirs, msg.clone())?;
        Ok(status_of(r.status))
    }

    /// Creates a file for writing; this client holds its lease until `complete`.
    pub async fn create(&self, path: &str, o: &CreateOptions) -> Result<FileStatus> {
        Ok(self.create_with(path, o, false, "").await?.0)
    }

    /// Creates a file for writing and, with `allocate_block`, its first block in the same
    /// operation (the block, its pipeline and write token; `None` from a namenode that
    /// does not do that: the writer then adds the block itself).
    pub(crate) async fn create_with(
        &self,
        path: &str,
        o: &CreateOptions,
        allocate_block: bool,
        favored: &str,
    ) -> Result<(FileStatus, Option<LocatedBlock>)> {
        let msg = pb::CreateRequest {
            path: path.into(),
            overwrite: o.overwrite,
            expected_file_id: o.expected_file_id,
            create_parent: o.create_parent,
            replication: o.replication,
            block_size: o.block_size,
            mode: o.mode,
            client_name: self.client_name.clone(),
            xattrs: o.xattrs.clone().into_iter().collect(),
            request_id: self.next_request_id(),
            allocate_block,
            favored: favored.to_string(),
        };
        let r = rpc!(self, nn, create, msg.clone())?;
        let first = r.first_block.and_then(|b| {
            let block = Block::from(b.block?);
            Some(LocatedBlock { block, locations: locations(b.targets), under_construction: true, token: b.token })
        });
        Ok((status_of(r.status), first))
    }

    /// Allocates the next block of a file being written, finalizing the previous one.
    pub async fn add_block(&self, path: &str, file_id: u64, previous_block_length: Option<u64>) -> Result<Block> {
        Ok(self.allocate_block(path, file_id, previous_block_length, Vec::new(), "").await?.block)
    }

    /// Adds a block to a file being written and returns it with its write pipeline (the
    /// datanodes to write, in order) and write token. `excluded`: datanodes (uuids) not to
    /// use; `favored`: the datanode this client runs on.
    pub async fn allocate_block(
        &self,
        path: &str,
        file_id: u64,
        previous_block_length: Option<u64>,
        excluded: Vec<String>,
        favored: &str,
    ) -> Result<LocatedBlock> {
        let msg = pb::AddBlockRequest {
            path: path.into(),
            file_id,
            client_name: self.client_name.clone(),
            previous_block_length,
            request_id: self.next_request_id(),
            excluded,
            favored: favored.to_string(),
        };
        let r = rpc!(self, nn, add_block, msg.clone())?;
        let block = r.block.ok_or_else(|| ClientError::Refused {
            kind: ErrorKind::Other,
            code: tonic::Code::Internal,
            message: "add_block returned no block".into(),
        })?;
        Ok(LocatedBlock {
            block: Block::from(block),
            locations: locations(r.targets),
            under_construction: true,
            token: r.token,
        })
    }

    /// Gives the block being written a new generation stamp after a pipeline lost a node;
    /// `nodes` (uuids) carry on.
    pub async fn update_pipeline(
        &self,
        path: &str,
        file_id: u64,
        block_id: u64,
        nodes: Vec<String>,
    ) -> Result<(Block, Vec<u8>)> {
        let msg = pb::UpdatePipelineRequest {
            path: path.into(),
            file_id,
            client_name: self.client_name.clone(),
            block_id,
            nodes,
            request_id: self.next_request_id(),
        };
        let r = rpc!(self, nn, update_pipeline, msg.clone())?;
        let block = r.block.ok_or_else(|| ClientError::Refused {
            kind: ErrorKind::Other,
            code: tonic::Code::Internal,
            message: "update_pipeline returned no block".into(),
        })?;
        Ok((Block::from(block), r.token))
    }

    pub async fn complete(
        &self,
        path: &str,
        file_id: u64,
        last_block_length: Option<u64>,
        xattrs: BTreeMap<String, Vec<u8>>,
    ) -> Result<FileStatus> {
        let msg = pb::CompleteRequest {
            path: path.into(),
            file_id,
            client_name: self.client_name.clone(),
            last_block_length,
            xattrs: xattrs.into_iter().collect(),
            request_id: self.next_request_id(),
            publish: None,
        };
        let r = rpc!(self, nn, complete, msg.clone())?;
        Ok(status_of(r.status))
    }

    /// Completes a file and, in the same operation, makes it the file `dst` (a concat of
    /// this one file, with `o`'s conditions, attributes and owner). Returns `dst`'s status.
    pub async fn complete_publish(
        &self,
        path: &str,
        file_id: u64,
        last_block_length: Option<u64>,
        dst: &str,
        o: &ConcatOptions,
    ) -> Result<FileStatus> {
        let msg = pb::CompleteRequest {
            path: path.into(),
            file_id,
            client_name: self.client_name.clone(),
            last_block_length,
            xattrs: Default::default(),
            request_id: self.next_request_id(),
            publish: Some(publish_pb(dst, o)),
        };
        let r = rpc!(self, nn, complete, msg.clone())?;
        let st = status_of(r.status);
        // A namenode that does not publish answers with the completed file itself.
        if st.path == path && path != dst {
            return Err(ClientError::InvalidArgument(format!(
                "the namenode completed {path} but did not publish it as {dst} (an older namenode?)"
            )));
        }
        Ok(st)
    }

    /// A small file (at most [`INLINE_MAX`] bytes) in one namespace operation: `data`
    /// becomes the closed file `dst` under `o`'s conditions, attributes and owner, its bytes
    /// kept by the namenode group (sealed under the cluster master key). `replication` 0:
    /// the default. Refused with [`ErrorKind::InlineUnavailable`] when the group cannot
    /// keep it (fewer namenodes than replicas, no master key, an older namenode): then
    /// write blocks ([`crate::FileWriter`]); nothing was written.
    pub async fn put_small(&self, dst: &str, data: Bytes, replication: u32, o: &ConcatOptions) -> Result<FileStatus> {
        let msg = pb::PutSmallRequest {
            data,
            replication,
            request_id: self.next_request_id(),
            publish: Some(publish_pb(dst, o)),
        };
        match rpc!(self, nn, put_small, msg.clone()) {
            Ok(r) => Ok(status_of(r.status)),
            // A namenode from before small files: the same as "not here".
            Err(ClientError::Refused { code: tonic::Code::Unimplemented, message, .. }) => Err(ClientError::Refused {
                kind: ErrorKind::InlineUnavailable,
                code: tonic::Code::Unimplemented,
                message,
            }),
            Err(e) => Err(e),
        }
    }

    /// The status of `path`, or `None` if it does not exist. Concurrent calls on one client
    /// share `GetFileInfos` calls.
    pub async fn get_file_info(&self, path: &str, with_xattrs: bool) -> Result<Option<FileStatus>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let q = pb::GetFileInfoRequest { path: path.into(), with_xattrs };
        let batcher = self.infos.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(batch_infos(self.conn.clone(), rx));
            tx
        });
        if batcher.send((q, tx)).is_err() {
            return self.get_file_info_unary(path, with_xattrs).await;
        }
        match rx.await {
            Ok(r) => r,
            // The batcher went away (its runtime shut down): ask alone.
            Err(_) => self.get_file_info_unary(path, with_xattrs).await,
        }
    }

    async fn get_file_info_unary(&self, path: &str, with_xattrs: bool) -> Result<Option<FileStatus>> {
        let msg = pb::GetFileInfoRequest { path: path.into(), with_xattrs };
        match rpc!(self, nn, get_file_info, msg.clone()) {
            Ok(r) => Ok(Some(status_of(r.status))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` blocks of file `path` from block `start_index`, with their replicas
    /// (0: the namenode's page size).
    pub async fn get_blocks(&self, path: &str, start_index: u32, limit: u32) -> Result<FileBlocks> {
        let msg = pb::GetBlocksRequest { path: path.into(), start_index, limit };
        rpc!(self, nn, get_blocks, msg.clone()).map(FileBlocks::from)
    }

    /// One page of a directory's children (by name), and whether more follow.
    pub async fn list_dir(&self, path: &str, start_after: &str, limit: u32) -> Result<(Vec<FileStatus>, bool)> {
        let msg = pb::ListDirectoryRequest { path: path.into(), start_after: start_after.into(), limit };
        let r = rpc!(self, nn, list_directory, msg.clone())?;
        Ok((r.entries.into_iter().map(FileStatus::from).collect(), r.has_more))
    }

    /// Every child of a directory, page by page.
    pub async fn list_dir_all(&self, path: &str) -> Result<Vec<FileStatus>> {
        let mut out: Vec<FileStatus> = Vec::new();
        loop {
            let after = out.last().map(|s| s.path.clone()).unwrap_or_default();
            let (page, more) = self.list_dir(path, &after, 1000).await?;
            out.extend(page);
            if !more {
                return Ok(out);
            }
        }
    }

    /// One page of every entry under `prefix` in byte order of the full path.
    pub async fn list_recursive(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
        include_directories: bool,
    ) -> Result<(Vec<FileStatus>, bool)> {
        let o = ListOptions { include_directories, ..Default::default() };
        self.list_tree(prefix, start_after, limit, &o).await
    }

    /// One page of entries under `prefix` in byte order of the full path, directories with a
    /// trailing '/' (S3's listing order), shaped by `o`.
    pub async fn list_tree(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
        o: &ListOptions,
    ) -> Result<(Vec<FileStatus>, bool)> {
        let msg = pb::ListRecursiveRequest {
            prefix: prefix.into(),
            start_after: start_after.into(),
            limit,
            include_directories: o.include_directories,
            collapse_directories: o.collapse_directories,
            with_xattrs: o.with_xattrs,
        };
        let r = rpc!(self, nn, list_recursive, msg.clone())?;
        Ok((r.entries.into_iter().map(FileStatus::from).collect(), r.has_more))
    }

    /// Every entry under `prefix`, page by page.
    pub async fn list_recursive_all(&self, prefix: &str, include_directories: bool) -> Result<Vec<FileStatus>> {
        let mut out: Vec<FileStatus> = Vec::new();
        loop {
            let after = out.last().map(|s| s.path.clone()).unwrap_or_default();
            let (page, more) = self.list_recursive(prefix, &after, 5000, include_directories).await?;
            out.extend(page);
            if !more {
                return Ok(out);
            }
        }
    }

    /// Deletes `path`; `Ok(false)` if it did not exist.
    pub async fn delete(&self, path: &str, recursive: bool, expected_file_id: Option<u64>) -> Result<bool> {
        let msg =
            pb::DeleteRequest { path: path.into(), recursive, expected_file_id, request_id: self.next_request_id() };
        Ok(rpc!(self, nn, delete, msg.clone())?.deleted)
    }

    pub async fn rename(&self, src: &str, dst: &str, o: &RenameOptions) -> Result<FileStatus> {
        let msg = pb::RenameRequest {
            src: src.into(),
            dst: dst.into(),
            overwrite: o.overwrite,
            dst_must_be_absent: o.dst_must_be_absent,
            dst_expected_file_id: o.dst_expected_file_id,
            src_expected_file_id: o.src_expected_file_id,
            request_id: self.next_request_id(),
        };
        let r = rpc!(self, nn, rename, msg.clone())?;
        Ok(status_of(r.status))
    }

    /// Makes `dst` one closed file of `sources` (path, file id), in order, by moving their
    /// blocks; the sources disappear. No data is copied.
    pub async fn concat(&self, sources: &[(String, u64)], dst: &str, o: &ConcatOptions) -> Result<FileStatus> {
        let msg = pb::ConcatRequest {
            sources: sources
                .iter()
                .map(|(path, file_id)| pb::concat_request::Source { path: path.clone(), file_id: *file_id })
                .collect(),
            dst: dst.into(),
            overwrite: o.overwrite,
            dst_must_be_absent: o.dst_must_be_absent,
            dst_expected_file_id: o.dst_expected_file_id,
            create_parent: o.create_parent,
            mode: o.mode,
            xattrs: o.xattrs.clone().into_iter().collect(),
            request_id: self.next_request_id(),
            require_dir: o.require_dir.clone(),
            owner: o.owner.clone(),
        };
        Ok(status_of(rpc!(self, nn, concat, msg.clone())?.status))
    }

    pub async fn set_replication(&self, path: &str, replication: u32) -> Result<FileStatus> {
        let msg = pb::SetReplicationRequest { path: path.into(), replication, request_id: self.next_request_id() };
        Ok(status_of(rpc!(self, nn, set_replication, msg.clone())?.status))
    }

    /// Sets quotas: -1 clears, 0 keeps, > 0 sets.
    pub async fn set_quota(&self, path: &str, namespace_quota: i64, space_quota: i64) -> Result<FileStatus> {
        let msg =
            pb::SetQuotaRequest { path: path.into(), namespace_quota, space_quota, request_id: self.next_request_id() };
        Ok(status_of(rpc!(self, nn, set_quota, msg.clone())?.status))
    }

    /// Changes the mode, owner, group, modification time or attributes of `path`.
    pub async fn set_attributes(&self, path: &str, a: SetAttributes) -> Result<FileStatus> {
        let req = pb::SetAttributesRequest {
            path: path.into(),
            mode: a.mode,
            owner: a.owner,
            group: a.group,
            mtime_ms: a.mtime_ms,
            set_xattrs: a.set_xattrs.into_iter().collect(),
            remove_xattrs: a.remove_xattrs,
            expected_file_id: a.expected_file_id,
            request_id: self.next_request_id(),
        };
        Ok(status_of(rpc!(self, nn, set_attributes, req.clone())?.status))
    }

    pub async fn content_summary(&self, path: &str) -> Result<ContentSummary> {
        let msg = pb::ContentSummaryRequest { path: path.into() };
        rpc!(self, nn, get_content_summary, msg.clone()).map(ContentSummary::from)
    }

    pub async fn renew_lease(&self) -> Result<()> {
        let msg = pb::RenewLeaseRequest { client_name: self.client_name.clone() };
        rpc!(self, nn, renew_lease, msg.clone()).map(|_| ())
    }

    /// Closes a file whose writer is gone; `true` once it is closed.
    pub async fn recover_lease(&self, path: &str) -> Result<bool> {
        let msg = pb::RecoverLeaseRequest { path: path.into(), request_id: self.next_request_id() };
        Ok(rpc!(self, nn, recover_lease, msg.clone())?.closed)
    }

    /// Reports replicas a read found corrupt (HDFS's `reportBadBlocks`): the leader marks
    /// them and has them replaced from good ones. Returns how many it marked (it ignores
    /// out-of-date reports, and never marks a block's last live replica on a reader's word).
    pub async fn report_bad_blocks(&self, replicas: &[(Block, DatanodeLocation)], reason: &str) -> Result<u32> {
        let msg = pb::ReportBadBlocksRequest {
            replicas: replicas
                .iter()
                .map(|(b, n)| pb::BadReplica { block: Some(b.into()), node: Some(n.into()) })
                .collect(),
            reason: reason.to_string(),
        };
        Ok(rpc!(self, nn, report_bad_blocks, msg.clone())?.marked)
    }

    fn admin(c: Channel) -> NamenodeAdminClient<Channel> {
        NamenodeAdminClient::new(c)
    }

    /// The group as the node at `addr` sees it (no redirection: any node answers).
    pub async fn cluster_status_of(&self, addr: &str) -> Result<ClusterStatus> {
        let ch = self.conn.channel_for(addr)?;
        Self::admin(ch)
            .cluster_status(self.request(pb::ClusterStatusRequest {}))
            .await
            .map(|r| ClusterStatus::from(r.into_inner()))
            .map_err(|s| ClientError::from_status(&s))
    }

    /// The group as the leader sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        rpc!(self, admin, cluster_status, pb::ClusterStatusRequest {}).map(ClusterStatus::from)
    }

    /// Datanodes and block health, from the leader.
    pub async fn datanode_report(&self) -> Result<DatanodeReport> {
        rpc!(self, admin, datanode_report, pb::DatanodeReportRequest {}).map(DatanodeReport::from)
    }

    /// Starts (`on`) or stops draining datanode `node` (uuid or address); returns its uuid.
    pub async fn decommission(&self, node: &str, on: bool) -> Result<String> {
        let msg = pb::DecommissionRequest { node: node.into(), on };
        Ok(rpc!(self, admin, decommission, msg.clone())?.uuid)
    }

    /// Adds users to and removes users from a group (the admin's).
    pub async fn change_group(&self, group: &str, add: &[String], remove: &[String]) -> Result<()> {
        let msg = pb::ChangeGroupRequest { group: group.into(), add: add.to_vec(), remove: remove.to_vec() };
        rpc!(self, admin, change_group, msg.clone()).map(|_| ())
    }

    /// Groups and their members; with `user`, only that user's groups.
    pub async fn list_groups(&self, user: Option<&str>) -> Result<Vec<(String, Vec<String>)>> {
        let msg = pb::ListGroupsRequest { user: user.unwrap_or_default().into() };
        let r = rpc!(self, admin, list_groups, msg.clone())?;
        Ok(r.groups.into_iter().map(|g| (g.name, g.members)).collect())
    }

    /// Raises the cluster's format to the newest its members' binaries read (the last step
    /// of a rolling upgrade); returns the format before and after. Refused with
    /// [`ErrorKind::UpgradePending`], naming them, while a member runs an older binary or
    /// has not answered the leader lately.
    pub async fn finalize_upgrade(&self) -> Result<(u32, u32)> {
        let r = rpc!(self, admin, finalize_upgrade, pb::FinalizeUpgradeRequest {})?;
        Ok((r.previous_format, r.cluster_format))
    }

    /// Makes the leader leave safe mode now.
    pub async fn leave_safe_mode(&self) -> Result<()> {
        rpc!(self, admin, leave_safe_mode, pb::LeaveSafeModeRequest {}).map(|_| ())
    }

    /// One page of per-file block health under `path`.
    pub async fn fsck(&self, path: &str, start_after: &str, limit: u32) -> Result<FsckPage> {
        let msg = pb::FsckRequest { path: path.into(), start_after: start_after.into(), limit };
        rpc!(self, admin, fsck, msg.clone()).map(FsckPage::from)
    }

    /// Has the leader re-seal, under the master key it now runs with, every small file
    /// kept in the namespace under another key (a master key rotation); all pages. The
    /// counts and the first reasons files could not be re-sealed.
    pub async fn reseal_small_files(&self) -> Result<ResealReport> {
        let mut total = ResealReport::default();
        let mut after = None;
        loop {
            let msg = pb::ResealSmallFilesRequest { after_file_id: after };
            let r = rpc!(self, admin, reseal_small_files, msg)?;
            total.key_id = r.key_id;
            total.resealed += r.resealed;
            total.current += r.current;
            total.unreadable += r.unreadable;
            let room = 10usize.saturating_sub(total.errors.len());
            total.errors.extend(r.errors.into_iter().take(room));
            if !r.has_more || r.last_file_id.is_none() {
                return Ok(total);
            }
            after = r.last_file_id;
        }
    }

    /// Adds namenode `node_id` at `addr` to the group as a learner (it receives the log,
    /// does not vote); the group as the leader then sees it.
    pub async fn add_learner(&self, node_id: u64, addr: &str) -> Result<ClusterStatus> {
        let msg = pb::AddLearnerRequest { node_id, addr: addr.into() };
        let r = rpc!(self, admin, add_learner, msg.clone())?;
        Ok(r.status.map(ClusterStatus::from).unwrap_or_default())
    }

    /// Makes `voters` the group's voters (the others stay as learners if
    /// `retain_as_learners`).
    pub async fn change_membership(&self, voters: Vec<u64>, retain_as_learners: bool) -> Result<ClusterStatus> {
        let msg = pb::ChangeMembershipRequest { voters, retain_as_learners };
        let r = rpc!(self, admin, change_membership, msg.clone())?;
        Ok(r.status.map(ClusterStatus::from).unwrap_or_default())
    }

    /// Builds a snapshot on the node at `addr`; returns its last included log index.
    pub async fn trigger_snapshot_on(&self, addr: &str) -> Result<u64> {
        let ch = self.conn.channel_for(addr)?;
        let mut req = Request::new(pb::TriggerSnapshotRequest {});
        req.set_timeout(Duration::from_secs(120));
        Self::admin(ch)
            .trigger_snapshot(req)
            .await
            .map(|r| r.into_inner().snapshot_index)
            .map_err(|s| ClientError::from_status(&s))
    }
}

fn locations(v: Vec<dpb::DatanodeLocation>) -> Vec<DatanodeLocation> {
    v.into_iter().map(DatanodeLocation::from).collect()
}

/// `o` for a namenode call that publishes a file at `dst`.
fn publish_pb(dst: &str, o: &ConcatOptions) -> pb::Publish {
    pb::Publish {
        dst: dst.into(),
        overwrite: o.overwrite,
        dst_must_be_absent: o.dst_must_be_absent,
        dst_expected_file_id: o.dst_expected_file_id,
        create_parent: o.create_parent,
        mode: o.mode,
        xattrs: o.xattrs.clone().into_iter().collect(),
        require_dir: o.require_dir.clone(),
        owner: o.owner.clone(),
    }
}

/// Sends queued lookups as `GetFileInfos` calls: a lookup never waits for a timer; it
/// leaves at once while a call slot is free, and otherwise with everything that queued
/// while the slots were busy. Ends when the client is dropped.
async fn batch_infos(conn: Arc<LeaderConn>, mut rx: tokio::sync::mpsc::UnboundedReceiver<InfoWaiter>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(INFO_BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < INFO_BATCH_MAX {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let conn = conn.clone();
        tokio::spawn(async move {
            send_infos(&conn, batch).await;
            drop(permit);
        });
    }
}

async fn send_infos(conn: &LeaderConn, batch: Vec<InfoWaiter>) {
    let req = pb::GetFileInfosRequest { requests: batch.iter().map(|(q, _)| q.clone()).collect() };
    let r = conn
        .call(|c| {
            let mut stub = NamenodeClient::nn(c);
            let req = conn.request(req.clone());
            async move { stub.get_file_infos(req).await }
        })
        .await;
    match r {
        Ok(resp) => {
            for ((_, tx), r) in batch.into_iter().zip(resp.results) {
                let v = if r.error_kind.is_empty() {
                    Ok(r.status.map(FileStatus::from))
                } else {
                    // The same error the single call gives: the kind names its status code.
                    let kind = ErrorKind::parse(&r.error_kind);
                    Err(ClientError::Refused { kind, code: kind.code(), message: r.error_message })
                };
                let _ = tx.send(v);
            }
        }
        Err(e) => {
            for (_, tx) in batch {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_naming_each_other_as_leader_are_retried_with_growing_pauses() {
        let policy = RetryPolicy {
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let mut r = conn::RetryState::new(policy);
        // The first redirect is followed at once ...
        assert_eq!(r.after_redirect(), Duration::ZERO);
        // ... but two nodes sending the client back and forth are not asked again at once.
        let pauses: Vec<u128> = (0..8).map(|_| r.after_redirect().as_millis()).collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(r.after_failure(), Duration::from_millis(500));
    }

    #[test]
    fn batched_lookups_refuse_with_the_code_of_a_single_lookup() {
        for kind in ErrorKind::ALL {
            let mut status = Status::new(kind.code(), "refused");
            status.metadata_mut().insert(ERROR_KIND_HEADER, kind.as_str().parse().unwrap());
            let ClientError::Refused { kind: k, code, .. } = ClientError::from_status(&status) else {
                panic!("{kind:?} is a refusal")
            };
            assert_eq!((k, code), (*kind, kind.code()));
        }
    }
}
