//! The two views the namespace logic works through: [`KvRead`] (a point-in-time snapshot
//! of the database, for queries) and [`KvWrite`] (a RocksDB optimistic transaction, for applying a Raft entry: it reads
//! its own writes, and a savepoint per operation undoes a refused operation whole).

use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, Transaction};

use crate::error::FsError;

/// The namespace database: one RocksDB instance holding the Raft log and the state machine.
pub type Db = rocksdb::OptimisticTransactionDB<rocksdb::SingleThreaded>;

/// Callback for scans: return `Ok(false)` to stop.
pub type ScanFn<'f> = dyn FnMut(&[u8], &[u8]) -> Result<bool, FsError> + 'f;

pub trait KvRead {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, FsError>;
    /// Visits keys in `[start, end)` in order until `f` returns `false`.
    fn scan(&self, cf: &str, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<(), FsError>;
}

pub trait KvWrite: KvRead {
    fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), FsError>;
    fn delete(&self, cf: &str, key: &[u8]) -> Result<(), FsError>;
}

pub(crate) fn cf<'a>(db: &'a Db, name: &str) -> Result<&'a ColumnFamily, FsError> {
    db.cf_handle(name).ok_or_else(|| FsError::Storage(format!("missing column family {name}")))
}

fn read_opts(end: Option<&[u8]>) -> ReadOptions {
    let mut o = ReadOptions::default();
    if let Some(end) = end {
        o.set_iterate_upper_bound(end.to_vec());
    }
    o
}

type KvItem = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// Hands each key and value of `it` to `f` until it returns `false`.
fn visit(it: impl Iterator<Item = KvItem>, f: &mut ScanFn<'_>) -> Result<(), FsError> {
    for item in it {
        let (k, v) = item?;
        if !f(&k, &v)? {
            break;
        }
    }
    Ok(())
}

/// Reads from a point-in-time view of the database: a query sees one state even while
/// the state machine goes on applying entries.
pub struct SnapView<'a> {
    pub db: &'a Db,
    pub snap: rocksdb::SnapshotWithThreadMode<'a, Db>,
}

impl<'a> SnapView<'a> {
    pub fn new(db: &'a Db) -> Self {
        SnapView { db, snap: db.snapshot() }
    }
}

impl KvRead for SnapView<'_> {
    fn get(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, FsError> {
        Ok(self.snap.get_pinned_cf(cf(self.db, cf_name)?, key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, cf_name: &str, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<(), FsError> {
        let it = self.snap.iterator_cf_opt(
            cf(self.db, cf_name)?,
            read_opts(end),
            IteratorMode::From(start, Direction::Forward),
        );
        visit(it, f)
    }
}

/// A transaction applying one Raft entry.
pub struct TxView<'a> {
    pub db: &'a Db,
    pub tx: &'a Transaction<'a, Db>,
}

impl KvRead for TxView<'_> {
    fn get(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, FsError> {
        Ok(self.tx.get_pinned_cf(cf(self.db, cf_name)?, key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, cf_name: &str, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<(), FsError> {
        let it = self.tx.iterator_cf_opt(
            cf(self.db, cf_name)?,
            read_opts(end),
            IteratorMode::From(start, Direction::Forward),
        );
        visit(it, f)
    }
}

impl KvWrite for TxView<'_> {
    fn put(&self, cf_name: &str, key: &[u8], value: &[u8]) -> Result<(), FsError> {
        Ok(self.tx.put_cf(cf(self.db, cf_name)?, key, value)?)
    }

    fn delete(&self, cf_name: &str, key: &[u8]) -> Result<(), FsError> {
        Ok(self.tx.delete_cf(cf(self.db, cf_name)?, key)?)
    }
}
