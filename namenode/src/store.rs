//! openraft's storage traits on RocksDB: the log store ([`LogStore`]) and the namespace state
//! machine ([`StateMachine`]) share one database with separate column families.
//!
//! Durability: a log append is reported complete only after the WAL is fsynced (a group
//! commit thread fsyncs once for every append that arrived meanwhile). State machine writes
//! are not fsynced: after a crash they are replayed from the log, and `last_applied` is
//! written in the same atomic transaction as the data it covers. Before a snapshot lets the
//! log be purged, the WAL is fsynced so the snapshot's state is durable.
//!
//! Snapshots are files: a checksummed stream of every state-machine key and value, read
//! from a RocksDB snapshot, so neither building, sending nor installing one holds the
//! namespace in memory.

// openraft's traits fix the error type (`StorageError`, large); helpers return it too.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteOptions};
use tokio::io::AsyncWriteExt;

use crate::error::{FsError, NamenodeError};
use crate::format::{
    decode_snapshot_meta, is_versioned, upgrade_v0, META_CLUSTER_FORMAT, RECORD_MAGIC, SNAPSHOT_MAGIC,
    SNAPSHOT_MAGIC_V0,
};
use crate::kv::{cf, Db, TxView};
use crate::namespace::Namespace;
use crate::records::*;
use crate::types::{CommandResponse, NodeId, Op, OpResult, RequestId, TypeConfig};
use crate::upgrade::Formats;

type SErr = StorageError<NodeId>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;
type RecordFn<'f> = dyn FnMut(u8, &[u8], &[u8]) -> Result<(), NamenodeError> + 'f;

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_LAST_PURGED: &[u8] = b"last_purged";
/// Set while a snapshot is being loaded into the state machine: if present at start-up, the
/// state machine is half-loaded and is loaded again from the current snapshot.
const META_INSTALLING: &[u8] = b"sm_installing";
const SM_LAST_APPLIED: &[u8] = b"last_applied";
const SM_MEMBERSHIP: &[u8] = b"membership";
const SM_RETRY_EXPIRED_BEFORE: &[u8] = b"retry_expired_before";
/// The state machine's clock: the largest leader timestamp applied so far. Leaders' clocks
/// differ; the state machine's time never goes backwards.
const SM_CLOCK_MS: &[u8] = b"clock_ms";
/// Snapshot records larger than this are corrupt (an inode with its xattrs is far smaller).
const SNAPSHOT_KEY_BYTES_MAX: usize = 1 << 20;
const SNAPSHOT_VALUE_BYTES_MAX: usize = 64 << 20;

/// Retry-cache entries are kept for this many whole minutes.
const RETRY_MINUTES: u64 = 3;
/// Bytes written per batch while loading a snapshot.
const SNAPSHOT_LOAD_BATCH_BYTES: usize = 4 << 20;
const RECORD_END: u8 = 0xff;

/// Memory the database may use for block cache and write buffers (bounded RSS).
#[derive(Debug, Clone, Copy)]
pub struct DbMemory {
    pub block_cache_bytes: usize,
    pub write_buffer_bytes: usize,
}

impl Default for DbMemory {
    fn default() -> Self {
        DbMemory { block_cache_bytes: 128 << 20, write_buffer_bytes: 128 << 20 }
    }
}

/// Opens (or creates) the namenode's database under `dir`.
pub fn open_db(dir: &Path, mem: DbMemory) -> Result<Arc<Db>, NamenodeError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_db_write_buffer_size(mem.write_buffer_bytes);
    opts.set_max_background_jobs(2);
    opts.set_max_open_files(1024);
    let cache = Cache::new_lru_cache(mem.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks live in the (bounded) block cache, partitioned into small
    // blocks with a pinned top level: a lookup loads only the 4 KiB partitions it needs.
    // Whole-file filters of a large namespace are megabytes each; evicted and re-read (and
    // checksummed) on every lookup, they took nearly all of the namenode's CPU.
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Optimistic transactions make every column family keep a history of flushed memtables
    // (max_write_buffer_number x write_buffer_size) for conflict checks; with 11 column
    // families the per-family buffer must stay small for the whole to fit the budget.
    cf_opts.set_write_buffer_size((mem.write_buffer_bytes / 16).max(1 << 20));
    cf_opts.set_max_write_buffer_number(2);
    let names = SM_CFS.iter().chain([CF_RAFT_META, CF_RAFT_LOG].iter());
    let cfs: Vec<_> = names.map(|n| ColumnFamilyDescriptor::new(*n, cf_opts.clone())).collect();
    let db = Db::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|source| NamenodeError::OpenStore { path: dir.display().to_string(), source })?;
    crate::format::migrate_store(&db, dir)?;
    Ok(Arc::new(db))
}

fn io_err(e: impl std::error::Error + 'static) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn sync_opts() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// The Raft log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(db: Arc<Db>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // Weak: the thread must not keep the database open after the node shuts down.
        let fdb = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || group_commit(fdb, rx))
            .expect("spawn the raft log fsync thread");
        LogStore { db, flusher: tx }
    }

    fn get_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, SErr> {
        let cf = cf(&self.db, CF_RAFT_META).map_err(|e| StorageIOError::read(&e))?;
        match self.db.get_pinned_cf(cf, key).map_err(|e| StorageIOError::read(&e))? {
            Some(v) => Ok(Some(decode("raft metadata", &v).map_err(|e| StorageIOError::read(&e))?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), rocksdb::Error> {
        let cf = self.db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
        self.db.put_cf_opt(cf, key, encode(v), &sync_opts())
    }

    /// Like [`LogStore::put_meta`] without waiting for the disk: for what may be lost in a
    /// crash (it is rebuilt), written in order with everything else in the one WAL.
    fn put_meta_lazy<T: serde::Serialize>(&self, key: &[u8], v: &T) -> Result<(), rocksdb::Error> {
        let cf = self.db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
        self.db.put_cf(cf, key, encode(v))
    }
}

/// Fsyncs the WAL once for every append that is waiting, then reports them in order.
fn group_commit(db: std::sync::Weak<Db>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let res = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(io_err),
            None => Err(std::io::Error::other("the namenode's database is closed")),
        };
        for cb in waiting {
            cb.log_io_completed(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        use std::ops::Bound::*;
        let start = match range.start_bound() {
            Included(&s) => s,
            Excluded(&s) => s + 1,
            Unbounded => 0,
        };
        let cf = cf(&self.db, CF_RAFT_LOG).map_err(|e| StorageIOError::read_logs(&e))?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&log_key(start), Direction::Forward)) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let idx = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StorageIOError::read_logs(&io_err(FsError::Storage("bad log key".into()))))?,
            );
            if !range.contains(&idx) {
                break;
            }
            out.push(decode("log entry", &v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta(META_LAST_PURGED)?;
        let cf = cf(&self.db, CF_RAFT_LOG).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let e: Entry<TypeConfig> = decode("log entry", &v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.put_meta(META_VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.get_meta(META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // Not synced: openraft calls this in its core loop at every commit, and an fsync
        // there held up the whole write path (one disk flush per commit, on a runtime
        // thread). Losing it in a crash is harmless: the committed id is an optimisation
        // of restart (entries up to it are applied at once) and is learned again from the
        // leader or, on a leader, by committing anew. It can never survive a crash that
        // the entries it names do not: `append` wrote them to the same WAL before it, and
        // the WAL replays a prefix.
        self.put_meta_lazy(META_COMMITTED, &committed).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = cf(&self.db, CF_RAFT_LOG).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut batch = rocksdb::WriteBatchWithTransaction::<true>::default();
        for e in entries {
            batch.put_cf(cf, log_key(e.log_id.index), encode(&e));
        }
        // Written (readable) now; durable when the group-commit thread has fsynced the WAL.
        // Raft counts this node towards a quorum only after the callback, so an entry
        // acknowledged to a client is on disk on a majority.
        self.db.write(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher
            .send(callback)
            .map_err(|_| StorageIOError::write_logs(&io_err(FsError::Storage("log fsync thread is gone".into()))))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let cf = cf(&self.db, CF_RAFT_LOG).map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .delete_range_cf_opt(cf, log_key(log_id.index), log_key(u64::MAX), &sync_opts())
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.put_meta(META_LAST_PURGED, &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        let cf = cf(&self.db, CF_RAFT_LOG).map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .delete_range_cf(cf, log_key(0), log_key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

/// The namespace state machine.
pub struct StateMachine {
    db: Arc<Db>,
    snapshot_dir: PathBuf,
    incoming: Option<PathBuf>,
    /// Serializes building and installing snapshots (both publish `current`).
    snapshot_lock: Arc<std::sync::Mutex<()>>,
    /// The cluster's format, kept current as entries and snapshots change it.
    formats: Arc<Formats>,
}

/// The cluster format the state in `db` names (absent: 0).
pub fn cluster_format(db: &Db) -> Result<u8, NamenodeError> {
    let sm_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family");
    Ok(db.get_cf(sm_meta, META_CLUSTER_FORMAT)?.and_then(|v| v.first().copied()).unwrap_or(0))
}

impl StateMachine {
    /// Opens the state machine, creating the root directory of an empty namespace and
    /// finishing a snapshot load that a crash interrupted.
    pub fn open(db: Arc<Db>, snapshot_dir: PathBuf, formats: Arc<Formats>) -> Result<Self, NamenodeError> {
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| NamenodeError::io(format!("create {}", snapshot_dir.display()), e))?;
        remove_leftovers(&snapshot_dir)?;
        let sm = StateMachine { db, snapshot_dir, incoming: None, snapshot_lock: Default::default(), formats };
        let meta = sm.db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
        let interrupted = sm.db.get_cf(meta, META_INSTALLING)?.is_some();
        let current = read_current(&sm.snapshot_dir)?;
        let sm_meta = sm.db.cf_handle(CF_SM_META).expect("sm_meta column family");
        let applied: Option<LogId<NodeId>> = match sm.db.get_cf(sm_meta, SM_LAST_APPLIED)? {
            Some(v) => decode("last_applied", &v).map_err(|e| corrupt("last_applied", e.to_string()))?,
            None => None,
        };
        // A snapshot received from the leader is published before it is loaded, and the log
        // is purged up to it: if the state machine is behind it, load it (again).
        if let Some((name, m)) = current.filter(|(_, m)| interrupted || m.last_log_id > applied) {
            tracing::warn!(snapshot = %m.snapshot_id, "state machine is behind the current snapshot; loading it");
            load_snapshot_file(&sm.db, &sm.snapshot_dir.join(format!("{name}.snap")))?;
        } else if interrupted {
            return Err(NamenodeError::Raft("interrupted snapshot load but no current snapshot".into()));
        }
        let tx = sm.db.transaction();
        let view = TxView { db: &sm.db, tx: &tx };
        Namespace::new(&view, 0).init_root().map_err(|e| NamenodeError::Raft(e.to_string()))?;
        tx.commit()?;
        sm.formats.set_cluster(cluster_format(&sm.db)?);
        Ok(sm)
    }

    fn sm_get<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, SErr> {
        let cf = cf(&self.db, CF_SM_META).map_err(|e| StorageIOError::read_state_machine(&e))?;
        match self.db.get_pinned_cf(cf, key).map_err(|e| StorageIOError::read_state_machine(&e))? {
            Some(v) => {
                Ok(Some(decode("state machine metadata", &v).map_err(|e| StorageIOError::read_state_machine(&e))?))
            }
            None => Ok(None),
        }
    }

    /// Applies one entry, again if RocksDB asks for the transaction to be retried (its
    /// conflict check lacked memtable history): nothing was committed, and applying the same
    /// entry to the same state gives the same result.
    fn apply_entry(&self, entry: &Entry<TypeConfig>) -> Result<(CommandResponse, Option<u64>), FsError> {
        const ATTEMPTS_MAX: usize = 10;
        for attempt in 1.. {
            match self.apply_entry_once(entry) {
                Err(ApplyError::Retry(e)) if attempt < ATTEMPTS_MAX => {
                    tracing::warn!(error = %e, attempt, "applying an entry: transaction to be retried");
                }
                Err(ApplyError::Retry(e)) => return Err(FsError::Storage(e.to_string())),
                Err(ApplyError::Fs(e)) => return Err(e),
                Ok(r) => return Ok(r),
            }
        }
        unreachable!("the loop returns")
    }

    /// Applies one entry in one transaction.
    fn apply_entry_once(&self, entry: &Entry<TypeConfig>) -> Result<(CommandResponse, Option<u64>), ApplyError> {
        let tx = self.db.transaction();
        let view = TxView { db: &self.db, tx: &tx };
        let mut resp = CommandResponse::default();
        let mut expire_minute = None;
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                let stored = Membership::new(Some(entry.log_id), m.clone());
                view_put(&view, CF_SM_META, SM_MEMBERSHIP, &encode(&stored))?;
            }
            EntryPayload::Normal(cmd) => {
                let clock: u64 = match view_get(&view, CF_SM_META, SM_CLOCK_MS)? {
                    Some(v) => parse_u64("clock", &v)?,
                    None => 0,
                };
                let now_ms = cmd.now_ms.max(clock);
                if now_ms > clock {
                    view_put(&view, CF_SM_META, SM_CLOCK_MS, &now_ms.to_be_bytes())?;
                }
                let expired: u64 = match view_get(&view, CF_SM_META, SM_RETRY_EXPIRED_BEFORE)? {
                    Some(v) => parse_u64("retry expiry", &v)?,
                    None => 0,
                };
                let ns = Namespace::new(&view, now_ms);
                let minute = now_ms / 60_000;
                for (rid, op) in &cmd.ops {
                    if let Some(prev) = rid.map(|r| retry_lookup(&view, r, minute, expired)).transpose()?.flatten() {
                        resp.results.push(prev);
                        continue;
                    }
                    let saved = ns.save_counters();
                    tx.set_savepoint();
                    let res = ns.apply(op);
                    if let Err(e) = &res {
                        if let FsError::Storage(_) = e {
                            return Err(ApplyError::Fs(e.clone()));
                        }
                        tx.rollback_to_savepoint()?;
                        ns.restore_counters(saved);
                    }
                    if let Some(r) = rid {
                        view_put(&view, CF_RETRY, &retry_key(minute, r), &encode(&res))?;
                    }
                    resp.results.push(res);
                }
                ns.flush_counters()?;
                let before = minute.saturating_sub(RETRY_MINUTES);
                if before > expired {
                    view_put(&view, CF_SM_META, SM_RETRY_EXPIRED_BEFORE, &before.to_be_bytes())?;
                    expire_minute = Some(before);
                }
            }
        }
        view_put(&view, CF_SM_META, SM_LAST_APPLIED, &encode(&Some(entry.log_id)))?;
        tx.commit().map_err(|e| match e.kind() {
            rocksdb::ErrorKind::TryAgain | rocksdb::ErrorKind::Busy => ApplyError::Retry(e),
            _ => ApplyError::Fs(e.into()),
        })?;
        Ok((resp, expire_minute))
    }
}

/// Why applying an entry stopped.
enum ApplyError {
    Fs(FsError),
    /// RocksDB could not validate the transaction; nothing was committed.
    Retry(rocksdb::Error),
}

impl From<FsError> for ApplyError {
    fn from(e: FsError) -> Self {
        ApplyError::Fs(e)
    }
}

impl From<rocksdb::Error> for ApplyError {
    fn from(e: rocksdb::Error) -> Self {
        ApplyError::Fs(e.into())
    }
}

fn view_put(v: &TxView<'_>, cf_name: &str, key: &[u8], value: &[u8]) -> Result<(), FsError> {
    use crate::kv::KvWrite;
    v.put(cf_name, key, value)
}

fn view_get(v: &TxView<'_>, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, FsError> {
    use crate::kv::KvRead;
    v.get(cf_name, key)
}

fn retry_key(minute: u64, r: &RequestId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&minute.to_be_bytes());
    k[8..16].copy_from_slice(&r.client_id.to_be_bytes());
    k[16..].copy_from_slice(&r.call_id.to_be_bytes());
    k
}

/// The recorded result of a request seen in the last [`RETRY_MINUTES`] minutes. Minutes
/// before `expired` are never consulted, whether or not their records were removed yet, so
/// every replica answers alike.
fn retry_lookup(view: &TxView<'_>, r: RequestId, minute: u64, expired: u64) -> Result<Option<OpResult>, FsError> {
    for m in (minute.saturating_sub(RETRY_MINUTES - 1).max(expired)..=minute).rev() {
        if let Some(v) = view_get(view, CF_RETRY, &retry_key(m, &r))? {
            return Ok(Some(decode("retry cache", &v)?));
        }
    }
    Ok(None)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), SErr> {
        let applied = self.sm_get::<Option<LogId<NodeId>>>(SM_LAST_APPLIED)?.flatten();
        let membership = self.sm_get::<Membership>(SM_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let (resp, expire) =
                self.apply_entry(&entry).map_err(|e| StorageIOError::apply(entry.log_id, &io_err(e)))?;
            fn raises(op: &Op) -> bool {
                match op {
                    Op::SetClusterFormat { .. } => true,
                    Op::As { op, .. } => raises(op),
                    _ => false,
                }
            }
            let raises_format = match &entry.payload {
                EntryPayload::Normal(c) => c.ops.iter().any(|(_, op)| raises(op)),
                _ => false,
            };
            if raises_format {
                let f = cluster_format(&self.db).map_err(|e| StorageIOError::read_state_machine(&io_err(e)))?;
                tracing::info!(cluster_format = f, "the cluster's format was raised");
                self.formats.set_cluster(f);
            }
            if let Some(before) = expire {
                // Entries older than the retry window are never looked up again; removing
                // them outside the transaction changes no result.
                let cf = cf(&self.db, CF_RETRY).map_err(|e| StorageIOError::write_state_machine(&e))?;
                self.db
                    .delete_range_cf(cf, 0u64.to_be_bytes(), before.to_be_bytes())
                    .map_err(|e| StorageIOError::write_state_machine(&e))?;
            }
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), dir: self.snapshot_dir.clone(), lock: self.snapshot_lock.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let path = self.snapshot_dir.join(format!("incoming-{}.snap", unique()));
        // Read-write: install_snapshot reads back what openraft wrote into it.
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.incoming = Some(path);
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        use tokio::io::AsyncSeekExt;
        let werr = |e: &dyn std::fmt::Display| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                &io_err(FsError::Storage(e.to_string())),
            ))
        };
        // Copy from the handle we are given (not a path we remember): it is the data
        // openraft received, whichever file it is.
        let name = snapshot_name(meta);
        let tmp = self.snapshot_dir.join(format!("{name}.snap.tmp"));
        snapshot.flush().await.map_err(|e| werr(&e))?;
        snapshot.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| werr(&e))?;
        let mut out = tokio::fs::File::create(&tmp).await.map_err(|e| werr(&e))?;
        tokio::io::copy(&mut *snapshot, &mut out).await.map_err(|e| werr(&e))?;
        out.sync_all().await.map_err(|e| werr(&e))?;
        drop((out, snapshot));
        if let Some(incoming) = self.incoming.take() {
            let _ = tokio::fs::remove_file(incoming).await;
        }
        let (db, dir, m, lock) = (self.db.clone(), self.snapshot_dir.clone(), meta.clone(), self.snapshot_lock.clone());
        tokio::task::spawn_blocking(move || -> Result<(), NamenodeError> {
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let data = dir.join(format!("{name}.snap"));
            verify_snapshot_file(&tmp)?;
            std::fs::rename(&tmp, &data).map_err(|e| NamenodeError::io("rename received snapshot", e))?;
            sync_dir(&dir)?;
            publish_snapshot(&dir, &name, &m, true)?;
            load_snapshot_file(&db, &data)
        })
        .await
        .map_err(|e| werr(&e))?
        .map_err(|e| werr(&e.chain()))?;
        self.formats.set_cluster(cluster_format(&self.db).map_err(|e| werr(&e.chain()))?);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        open_current(&self.snapshot_dir).await
    }
}

async fn open_current(dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
    let rerr =
        |e: &dyn std::fmt::Display| StorageIOError::read_snapshot(None, &io_err(FsError::Storage(e.to_string())));
    let Some((name, meta)) = read_current(dir).map_err(|e| rerr(&e.chain()))? else { return Ok(None) };
    let f = tokio::fs::File::open(dir.join(format!("{name}.snap"))).await.map_err(|e| rerr(&e))?;
    Ok(Some(Snapshot { meta, snapshot: Box::new(f) }))
}

/// Builds snapshots from a point-in-time view of the database.
pub struct SnapshotBuilder {
    db: Arc<Db>,
    dir: PathBuf,
    lock: Arc<std::sync::Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (db, dir, lock) = (self.db.clone(), self.dir.clone(), self.lock.clone());
        let serr =
            |e: &dyn std::fmt::Display| StorageIOError::write_snapshot(None, &io_err(FsError::Storage(e.to_string())));
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            build_snapshot_file(&db, &dir)
        })
        .await
        .map_err(|e| serr(&e))?
        .map_err(|e| serr(&e.chain()))?;
        let snap = open_current(&self.dir).await?;
        snap.ok_or_else(|| serr(&"snapshot vanished after it was built").into())
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn snapshot_name(meta: &SnapshotMeta<NodeId, openraft::BasicNode>) -> String {
    let id: String = meta.snapshot_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("snapshot-{id}")
}

fn corrupt(what: &str, reason: impl Into<String>) -> NamenodeError {
    NamenodeError::Corrupt { what: what.to_string(), reason: reason.into() }
}

/// A digest of the whole state machine and the log id it has applied, read from one
/// consistent view: two replicas that applied the same entries have equal digests.
pub fn state_digest(db: &Db) -> Result<(Option<LogId<NodeId>>, u32), NamenodeError> {
    let snap = db.snapshot();
    let sm_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family");
    let applied: Option<LogId<NodeId>> = match snap.get_cf(sm_meta, SM_LAST_APPLIED)? {
        Some(v) => decode("last_applied", &v).map_err(|e| corrupt("last_applied", e.to_string()))?,
        None => None,
    };
    let mut crc = 0u32;
    for (tag, name) in SM_CFS.iter().enumerate() {
        let handle = db.cf_handle(name).expect("state machine column family");
        for item in snap.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item?;
            crc = crc32c::crc32c_append(crc, &[tag as u8]);
            crc = crc32c::crc32c_append(crc, &(k.len() as u32).to_be_bytes());
            crc = crc32c::crc32c_append(crc, &k);
            crc = crc32c::crc32c_append(crc, &(v.len() as u32).to_be_bytes());
            crc = crc32c::crc32c_append(crc, &v);
        }
    }
    Ok((applied, crc))
}

/// Writes the snapshot file and makes it current.
fn build_snapshot_file(db: &Db, dir: &Path) -> Result<(), NamenodeError> {
    let snap = db.snapshot();
    // The snapshot lets the log before it be purged, so what it holds must be durable: the
    // WAL is synced after the view is taken, covering everything the view contains.
    db.flush_wal(true)?;
    let sm_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family");
    let applied: Option<LogId<NodeId>> = match snap.get_cf(sm_meta, SM_LAST_APPLIED)? {
        Some(v) => decode("last_applied", &v).map_err(|e| corrupt("last_applied", e.to_string()))?,
        None => None,
    };
    let membership: Membership = match snap.get_cf(sm_meta, SM_MEMBERSHIP)? {
        Some(v) => decode("membership", &v).map_err(|e| corrupt("membership", e.to_string()))?,
        None => Membership::default(),
    };
    let snapshot_id = match applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, unique()),
        None => format!("0-0-{}", unique()),
    };
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
    // Built in the cluster's format, so that any member can install it: until an upgrade
    // is finalized, format 0 (records without headers) for members on the old binary.
    let cluster = snap.get_cf(sm_meta, META_CLUSTER_FORMAT)?.and_then(|v| v.first().copied()).unwrap_or(0);
    let name = snapshot_name(&meta);
    let tmp = dir.join(format!("{name}.snap.tmp"));
    let file = std::fs::File::create(&tmp).map_err(|e| NamenodeError::io("create snapshot file", e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut crc = 0u32;
    let mut put = |w: &mut BufWriter<std::fs::File>, bytes: &[u8]| -> Result<(), NamenodeError> {
        crc = crc32c::crc32c_append(crc, bytes);
        w.write_all(bytes).map_err(|e| NamenodeError::io("write snapshot", e))
    };
    put(&mut w, if cluster == 0 { SNAPSHOT_MAGIC_V0 } else { SNAPSHOT_MAGIC })?;
    let mut records = 0u64;
    for (tag, name) in SM_CFS.iter().enumerate() {
        let handle = db.cf_handle(name).expect("state machine column family");
        for item in snap.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item?;
            // Format 1 is format 0 behind a header.
            let v = match (cluster, v.first()) {
                (0, Some(&RECORD_MAGIC)) if is_versioned(name, &k) => &v[2..],
                _ => &v[..],
            };
            put(&mut w, &[tag as u8])?;
            put(&mut w, &(k.len() as u32).to_be_bytes())?;
            put(&mut w, &(v.len() as u32).to_be_bytes())?;
            put(&mut w, &k)?;
            put(&mut w, v)?;
            records += 1;
        }
    }
    put(&mut w, &[RECORD_END])?;
    put(&mut w, &records.to_be_bytes())?;
    let sum = crc;
    w.write_all(&sum.to_be_bytes()).map_err(|e| NamenodeError::io("write snapshot", e))?;
    let file = w.into_inner().map_err(|e| NamenodeError::io("flush snapshot", e.into_error()))?;
    file.sync_all().map_err(|e| NamenodeError::io("fsync snapshot", e))?;
    std::fs::rename(&tmp, dir.join(format!("{name}.snap"))).map_err(|e| NamenodeError::io("rename snapshot", e))?;
    sync_dir(dir)?;
    publish_snapshot(dir, &name, &meta, false)?;
    tracing::info!(snapshot = %meta.snapshot_id, records, format = cluster, "built snapshot");
    Ok(())
}

/// Writes the snapshot's metadata and points `current` at it (atomically), then removes
/// older snapshots. A built snapshot never replaces a newer current one; a snapshot
/// installed from the leader always does (its data is loaded next).
fn publish_snapshot(dir: &Path, name: &str, meta: &Meta, installed: bool) -> Result<(), NamenodeError> {
    if !installed {
        if let Some((cur, cur_meta)) = read_current(dir)? {
            if cur_meta.last_log_id > meta.last_log_id {
                tracing::info!(current = %cur, built = %name, "a newer snapshot is current; dropping the one just built");
                let _ = std::fs::remove_file(dir.join(format!("{name}.snap")));
                return Ok(());
            }
        }
    }
    let write_synced = |path: &Path, bytes: &[u8]| -> Result<(), NamenodeError> {
        let tmp = path.with_extension("tmp");
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| NamenodeError::io(format!("create {}", tmp.display()), e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| NamenodeError::io("write snapshot metadata", e))?;
        std::fs::rename(&tmp, path).map_err(|e| NamenodeError::io("rename snapshot metadata", e))?;
        // A rename is durable only once the directory holding it is.
        sync_dir(dir)
    };
    write_synced(&dir.join(format!("{name}.meta")), &encode(meta))?;
    write_synced(&dir.join("current"), name.as_bytes())?;
    let entries = std::fs::read_dir(dir).map_err(|e| NamenodeError::io("list snapshots", e))?;
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().to_string();
        // In-progress files (.tmp) belong to whoever writes them.
        if fname.starts_with("snapshot-") && !fname.starts_with(&format!("{name}.")) && !fname.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Removes what a crash left half-done in the snapshot directory: snapshots being received
/// (`incoming-*`) and files being written (`*.tmp`); no one writes them before the state
/// machine is open.
fn remove_leftovers(dir: &Path) -> Result<(), NamenodeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| NamenodeError::io("list snapshots", e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("incoming-") || name.ends_with(".tmp") {
            tracing::info!(file = %name, "removing a snapshot file a crash left unfinished");
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Times each directory was fsynced (tests check that every published snapshot file was).
static DIR_SYNCS: std::sync::Mutex<BTreeMap<PathBuf, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// Makes the renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), NamenodeError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| NamenodeError::io(format!("fsync directory {}", dir.display()), e))?;
    *DIR_SYNCS.lock().unwrap_or_else(|p| p.into_inner()).entry(dir.to_path_buf()).or_default() += 1;
    Ok(())
}

/// How many times the snapshot directory `dir` was fsynced in this process.
pub fn dir_syncs(dir: &Path) -> u64 {
    DIR_SYNCS.lock().unwrap_or_else(|p| p.into_inner()).get(dir).copied().unwrap_or(0)
}

fn read_current(dir: &Path) -> Result<Option<(String, Meta)>, NamenodeError> {
    let name = match std::fs::read_to_string(dir.join("current")) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NamenodeError::io("read current snapshot pointer", e)),
    };
    let bytes =
        std::fs::read(dir.join(format!("{name}.meta"))).map_err(|e| NamenodeError::io("read snapshot metadata", e))?;
    let meta = decode_snapshot_meta(&bytes).map_err(|e| corrupt("snapshot metadata", e.to_string()))?;
    Ok(Some((name, meta)))
}

/// Reads a snapshot file's records, checking structure and checksum.
fn read_records(path: &Path, f: &mut RecordFn<'_>) -> Result<u64, NamenodeError> {
    let file = std::fs::File::open(path).map_err(|e| NamenodeError::io(format!("open {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut crc = 0u32;
    let mut read = |r: &mut BufReader<std::fs::File>, buf: &mut [u8]| -> Result<(), NamenodeError> {
        r.read_exact(buf).map_err(|e| corrupt("snapshot", format!("truncated: {e}")))?;
        crc = crc32c::crc32c_append(crc, buf);
        Ok(())
    };
    let mut magic = [0u8; 8];
    read(&mut r, &mut magic)?;
    let v0 = match &magic {
        m if m == SNAPSHOT_MAGIC => false,
        m if m == SNAPSHOT_MAGIC_V0 => true,
        m => return Err(corrupt("snapshot", format!("unknown format (magic {:?})", String::from_utf8_lossy(m)))),
    };
    let mut records = 0u64;
    let (mut key, mut val) = (Vec::new(), Vec::new());
    loop {
        let mut tag = [0u8; 1];
        read(&mut r, &mut tag)?;
        if tag[0] == RECORD_END {
            break;
        }
        if tag[0] as usize >= SM_CFS.len() {
            return Err(corrupt("snapshot", format!("unknown column family tag {}", tag[0])));
        }
        let mut lens = [0u8; 8];
        read(&mut r, &mut lens)?;
        let klen = u32::from_be_bytes(lens[..4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_be_bytes(lens[4..].try_into().expect("4 bytes")) as usize;
        if klen > SNAPSHOT_KEY_BYTES_MAX || vlen > SNAPSHOT_VALUE_BYTES_MAX {
            return Err(corrupt("snapshot", format!("record of {klen}+{vlen} bytes")));
        }
        key.resize(klen, 0);
        val.resize(vlen, 0);
        read(&mut r, &mut key)?;
        read(&mut r, &mut val)?;
        if v0 && is_versioned(SM_CFS[tag[0] as usize], &key) {
            f(tag[0], &key, &upgrade_v0(&val))?;
        } else {
            f(tag[0], &key, &val)?;
        }
        records += 1;
    }
    let mut count = [0u8; 8];
    read(&mut r, &mut count)?;
    let expected_crc = crc;
    let mut sum = [0u8; 4];
    r.read_exact(&mut sum).map_err(|e| corrupt("snapshot", format!("truncated checksum: {e}")))?;
    if u32::from_be_bytes(sum) != expected_crc {
        return Err(corrupt("snapshot", "checksum mismatch"));
    }
    if u64::from_be_bytes(count) != records {
        return Err(corrupt("snapshot", "record count mismatch"));
    }
    Ok(records)
}

fn verify_snapshot_file(path: &Path) -> Result<(), NamenodeError> {
    read_records(path, &mut |_, _, _| Ok(())).map(|_| ())
}

/// Replaces the state machine with the snapshot at `path`, in bounded memory.
fn load_snapshot_file(db: &Db, path: &Path) -> Result<(), NamenodeError> {
    verify_snapshot_file(path)?;
    let meta = db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
    db.put_cf_opt(meta, META_INSTALLING, b"1", &sync_opts())?;
    let upper = vec![0xffu8; 64];
    for name in SM_CFS {
        db.delete_range_cf(db.cf_handle(name).expect("state machine column family"), [].as_slice(), upper.as_slice())?;
    }
    let handles: Vec<_> = SM_CFS.iter().map(|n| db.cf_handle(n).expect("state machine column family")).collect();
    let mut batch = rocksdb::WriteBatchWithTransaction::<true>::default();
    read_records(path, &mut |tag, k, v| {
        batch.put_cf(handles[tag as usize], k, v);
        if batch.size_in_bytes() >= SNAPSHOT_LOAD_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    db.write(batch)?;
    db.flush_wal(true)?;
    db.delete_cf_opt(meta, META_INSTALLING, &sync_opts())?;
    Ok(())
}
