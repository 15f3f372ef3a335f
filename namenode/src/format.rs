//! Format versions of what the namenode keeps on disk and sends to its peers.
//!
//! - **Records.** Every bincode value it stores (inodes, blocks, retry results, Raft log
//!   entries, Raft metadata, snapshot metadata, the few structured `sm_meta` values) starts
//!   with a two-byte header: [`RECORD_MAGIC`], then the format version it was written in.
//!   bincode is positional, so a field added to a record is a new version: [`decode`] reads
//!   every version this binary knows and refuses a newer one with an error naming both, so
//!   a node never guesses at bytes it does not understand.
//! - **The store.** The database names its format under `raft_meta/store_format`. A store
//!   written before formats had versions (format 0: bare bincode) is converted once, when
//!   it is first opened by a binary that knows versions ([`migrate_store`]); the conversion
//!   can be interrupted and resumed, and records already converted are never converted
//!   twice. A store of a newer format than this binary's is refused.
//! - **Snapshots** say in their magic whether their records carry headers
//!   ([`SNAPSHOT_MAGIC`]) or are format 0 ([`SNAPSHOT_MAGIC_V0`], converted while loading;
//!   built so while the cluster's format is 0, see `crate::upgrade`).
//! - **Raft messages** between namenodes name the format of their content, the cluster's
//!   (`RaftPayload.format`), and the sender binary's; a node refuses messages of a format
//!   newer than its own.
//!
//! Raw values (counters, `paths`, `dentries` and `blockmap` values, a lease holder's name
//! in `uc`, a small file's sealed bytes in `inline`, which carry their own version) are part
//! of the key layout, which the store format versions as a whole.
//!
//! Golden files written by each format live in `namenode/tests/golden/` and
//! `tests/golden/`; tests decode them, so no change can make an existing cluster's data
//! unreadable without a test failing.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{FsError, NamenodeError};
use crate::kv::Db;
use crate::records::{CF_BLOCKS, CF_INODES, CF_RAFT_LOG, CF_RAFT_META, CF_RETRY, CF_SM_META};

/// The format this binary writes. Raise it whenever a stored record's encoding changes, and
/// teach [`decode`] to read the version before.
pub const FORMAT_CURRENT: u8 = 1;
/// First byte of every versioned record. Format-0 records never start with it where the
/// two could meet (snapshot metadata starts with an `Option` tag, 0 or 1).
pub const RECORD_MAGIC: u8 = 0xA7;
/// Snapshot files whose records carry headers.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TARNSNP2";
/// Snapshot files of format 0 (bare bincode records).
pub const SNAPSHOT_MAGIC_V0: &[u8; 8] = b"TARNSNP1";

/// `sm_meta` key of the cluster's format (one byte; absent: 0), see `crate::upgrade`.
pub const META_CLUSTER_FORMAT: &[u8] = b"cluster_format";
/// `raft_meta` key of the store's format (one byte).
pub const META_STORE_FORMAT: &[u8] = b"store_format";
/// `raft_meta` key of an interrupted conversion: the index of the column family in
/// [`VERSIONED_VALUES`] being converted, then the last key converted in it.
const META_MIGRATION: &[u8] = b"format_migration";
/// Records converted per write batch while migrating a store.
const MIGRATION_BATCH_RECORDS: usize = 4096;

/// Which values are versioned records: every value of a column family (`None`), or those
/// of the listed keys. Everything else is fixed-width.
pub const VERSIONED_VALUES: [(&str, Option<&[&[u8]]>); 6] = [
    (CF_INODES, None),
    (CF_BLOCKS, None),
    (CF_RETRY, None),
    (CF_RAFT_LOG, None),
    (CF_SM_META, Some(&[b"decommission", b"block_keys", b"last_applied", b"membership"])),
    (CF_RAFT_META, Some(&[b"vote", b"committed", b"last_purged"])),
];

/// Whether the value under `key` in column family `cf` is a versioned record.
pub fn is_versioned(cf: &str, key: &[u8]) -> bool {
    VERSIONED_VALUES.iter().any(|(name, keys)| *name == cf && keys.is_none_or(|ks| ks.contains(&key)))
}

/// Encodes `v` as a record of the current format.
#[allow(clippy::disallowed_methods)] // the one place stored records meet bincode
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_MAGIC, FORMAT_CURRENT];
    // Serializing these plain structs into a Vec cannot fail.
    bincode::serialize_into(&mut out, v).expect("bincode serialization of an in-memory record");
    out
}

/// Decodes a record of any format this binary knows.
#[allow(clippy::disallowed_methods)] // the one place stored records meet bincode
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, FsError> {
    let corrupt = |reason: String| FsError::Storage(format!("corrupt {what} record: {reason}"));
    match bytes {
        // Format 1 encodes every record as format 0 did, behind the header. A later format
        // that changes a record decodes the older layout here and converts it.
        [RECORD_MAGIC, 1, body @ ..] => bincode::deserialize(body).map_err(|e| corrupt(e.to_string())),
        [RECORD_MAGIC, v, ..] if *v > FORMAT_CURRENT => Err(FsError::Storage(format!(
            "{what} record has format version {v}, but this binary reads formats up to {FORMAT_CURRENT}: \
             run a newer tarn on this node"
        ))),
        [RECORD_MAGIC, v, ..] => Err(corrupt(format!("unknown format version {v}"))),
        _ => Err(corrupt("no format header (a format-0 record that was never converted)".into())),
    }
}

/// A format-0 value as the current format writes it (format 1 only adds the header).
pub fn upgrade_v0(v0: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + v0.len());
    out.extend_from_slice(&[RECORD_MAGIC, FORMAT_CURRENT]);
    out.extend_from_slice(v0);
    out
}

/// The snapshot metadata file: format 0 was bare bincode (starting with 0 or 1).
#[allow(clippy::disallowed_methods)] // the one place stored records meet bincode
pub fn decode_snapshot_meta<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FsError> {
    match bytes.first() {
        Some(&RECORD_MAGIC) => decode("snapshot metadata", bytes),
        _ => bincode::deserialize(bytes).map_err(|e| FsError::Storage(format!("corrupt snapshot metadata: {e}"))),
    }
}

fn store_err(what: &str, reason: impl Into<String>) -> NamenodeError {
    NamenodeError::Corrupt { what: what.to_string(), reason: reason.into() }
}

/// Brings the store at `dir` to [`FORMAT_CURRENT`] before anything reads it: a new store
/// is stamped, a format-0 store converted (resuming an interrupted conversion), a newer one
/// refused. Before the first record is converted, the store is checkpointed (hard links)
/// beside it as `<dir>-format0`: the way back to the old binary (which cannot read
/// converted records) is to put that checkpoint back.
pub fn migrate_store(db: &Db, dir: &std::path::Path) -> Result<(), NamenodeError> {
    migrate(db, dir, MIGRATION_BATCH_RECORDS, None)
}

/// [`migrate_store`] in batches of `batch_records`; `stop_after` batches (tests: an
/// interrupted conversion) it returns without finishing.
fn migrate(
    db: &Db,
    dir: &std::path::Path,
    batch_records: usize,
    stop_after: Option<usize>,
) -> Result<(), NamenodeError> {
    let meta = db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
    match db.get_cf(meta, META_STORE_FORMAT)?.as_deref() {
        Some([v]) if *v == FORMAT_CURRENT => return Ok(()),
        Some([v]) if *v > FORMAT_CURRENT => {
            return Err(NamenodeError::Config(format!(
                "this namenode's store has format {v}, but this binary reads formats up to {FORMAT_CURRENT}: \
                 run a newer tarn on this node"
            )))
        }
        Some(other) => return Err(store_err("store format", format!("{other:?}"))),
        None => {}
    }
    let resume = db.get_cf(meta, META_MIGRATION)?;
    if resume.is_none() && store_is_empty(db)? {
        return stamp(db);
    }
    if resume.is_none() {
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "db".into());
        let backup = dir.with_file_name(format!("{name}-format0"));
        if !backup.exists() {
            rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(&backup)?;
            tracing::info!(backup = %backup.display(), "checkpointed the format-0 store before converting it");
        }
    }
    let (first_cf, mut after) = match resume.as_deref() {
        Some([i, key @ ..]) if (*i as usize) < VERSIONED_VALUES.len() => (*i as usize, Some(key.to_vec())),
        Some(other) => return Err(store_err("format migration progress", format!("{other:?}"))),
        None => (0, None),
    };
    tracing::info!(from = 0, to = FORMAT_CURRENT, "converting the namenode's store to the current format");
    let mut converted = 0u64;
    let mut batches = 0;
    for (i, (cf_name, keys)) in VERSIONED_VALUES.iter().enumerate().skip(first_cf) {
        let handle = db.cf_handle(cf_name).expect("versioned column family");
        loop {
            let mode = match &after {
                Some(k) => rocksdb::IteratorMode::From(k, rocksdb::Direction::Forward),
                None => rocksdb::IteratorMode::Start,
            };
            let mut batch = rocksdb::WriteBatchWithTransaction::<true>::default();
            let mut last = None;
            let mut n = 0;
            for item in db.iterator_cf(handle, mode) {
                let (k, v) = item?;
                if after.as_deref() == Some(&k[..]) {
                    continue;
                }
                if keys.is_none_or(|ks| ks.contains(&&k[..])) {
                    batch.put_cf(handle, &k, upgrade_v0(&v));
                }
                last = Some(k.to_vec());
                n += 1;
                if n == batch_records {
                    break;
                }
            }
            let Some(last) = last else { break };
            let mut progress = vec![i as u8];
            progress.extend_from_slice(&last);
            // The progress goes in the same batch as what it covers: after a crash the
            // conversion resumes exactly after the last key converted.
            batch.put_cf(meta, META_MIGRATION, progress);
            db.write(batch)?;
            converted += n as u64;
            after = Some(last);
            batches += 1;
            if stop_after == Some(batches) {
                return Ok(());
            }
        }
        after = None;
    }
    stamp(db)?;
    tracing::info!(records = converted, format = FORMAT_CURRENT, "converted the namenode's store");
    Ok(())
}

fn stamp(db: &Db) -> Result<(), NamenodeError> {
    let meta = db.cf_handle(CF_RAFT_META).expect("raft_meta column family");
    let mut batch = rocksdb::WriteBatchWithTransaction::<true>::default();
    batch.put_cf(meta, META_STORE_FORMAT, [FORMAT_CURRENT]);
    batch.delete_cf(meta, META_MIGRATION);
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)?;
    Ok(())
}

fn store_is_empty(db: &Db) -> Result<bool, NamenodeError> {
    for name in [CF_RAFT_META, CF_RAFT_LOG, CF_SM_META, CF_INODES] {
        let handle = db.cf_handle(name).expect("column family");
        if db.iterator_cf(handle, rocksdb::IteratorMode::Start).next().transpose()?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // format-0 bytes, as the old binary wrote them
mod tests {
    use super::*;

    /// What a test wrote: column family, key, value.
    type Written = Vec<(&'static str, Vec<u8>, Vec<u8>)>;

    /// A format-0 store: versioned values as bare bincode, with raw ones beside.
    fn legacy_store(dir: &std::path::Path) -> (std::sync::Arc<Db>, Written) {
        let db = crate::store::open_db(dir, crate::store::DbMemory::default()).unwrap();
        let meta = db.cf_handle(CF_RAFT_META).unwrap();
        db.delete_cf(meta, META_STORE_FORMAT).unwrap();
        let mut written = Vec::new();
        let mut put = |cf: &'static str, k: Vec<u8>, v: Vec<u8>| {
            db.put_cf(db.cf_handle(cf).unwrap(), &k, &v).unwrap();
            written.push((cf, k, v));
        };
        for i in 0..2_500u64 {
            put(CF_INODES, i.to_be_bytes().to_vec(), bincode::serialize(&(i, format!("inode {i}"))).unwrap());
        }
        for i in 1..=700u64 {
            put(CF_RAFT_LOG, i.to_be_bytes().to_vec(), bincode::serialize(&(i, "entry")).unwrap());
        }
        put(CF_RAFT_META, b"vote".to_vec(), bincode::serialize(&(3u64, 1u64, true)).unwrap());
        put(CF_SM_META, b"last_applied".to_vec(), bincode::serialize(&Some((2u64, 700u64))).unwrap());
        // Fixed-width: never touched.
        put(CF_SM_META, b"next_inode".to_vec(), 2_501u64.to_be_bytes().to_vec());
        put(CF_RAFT_META, b"sm_installing".to_vec(), b"1".to_vec());
        (db, written)
    }

    #[test]
    fn an_interrupted_conversion_resumes_and_converts_every_record_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (db, written) = legacy_store(&dir);
        // Three batches of 1000, then a "crash".
        migrate(&db, &dir, 1000, Some(3)).unwrap();
        let meta = db.cf_handle(CF_RAFT_META).unwrap();
        assert!(db.get_cf(meta, META_STORE_FORMAT).unwrap().is_none(), "not finished");
        assert!(db.get_cf(meta, META_MIGRATION).unwrap().is_some(), "progress kept");
        assert!(tmp.path().join("db-format0").is_dir(), "the format-0 store was checkpointed first");
        drop(db);
        // Reopening finishes it (open_db converts).
        let db = crate::store::open_db(&dir, crate::store::DbMemory::default()).unwrap();
        let meta = db.cf_handle(CF_RAFT_META).unwrap();
        assert_eq!(db.get_cf(meta, META_STORE_FORMAT).unwrap().as_deref(), Some(&[FORMAT_CURRENT][..]));
        assert!(db.get_cf(meta, META_MIGRATION).unwrap().is_none());
        for (cf, k, v) in &written {
            let now = db.get_cf(db.cf_handle(cf).unwrap(), k).unwrap().unwrap();
            let want = if is_versioned(cf, k) { upgrade_v0(v) } else { v.clone() };
            assert_eq!(now, want, "{cf}/{k:?} converted exactly once (or left alone)");
        }
        // A converted store is not converted again.
        drop(db);
        let db = crate::store::open_db(&dir, crate::store::DbMemory::default()).unwrap();
        let (cf, k, v) = &written[0];
        assert_eq!(db.get_cf(db.cf_handle(cf).unwrap(), k).unwrap().unwrap(), upgrade_v0(v));
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let db = crate::store::open_db(&dir, crate::store::DbMemory::default()).unwrap();
        db.put_cf(db.cf_handle(CF_RAFT_META).unwrap(), META_STORE_FORMAT, [FORMAT_CURRENT + 1]).unwrap();
        drop(db);
        let e = crate::store::open_db(&dir, crate::store::DbMemory::default()).err().unwrap().to_string();
        assert!(e.contains(&format!("format {}", FORMAT_CURRENT + 1)) && e.contains("up to 1"), "{e}");
    }

    #[test]
    fn records_round_trip_and_newer_formats_are_refused_by_name() {
        let bytes = encode(&(7u64, "x".to_string()));
        assert_eq!(&bytes[..2], &[RECORD_MAGIC, FORMAT_CURRENT]);
        assert_eq!(decode::<(u64, String)>("test", &bytes).unwrap(), (7, "x".to_string()));
        let mut newer = bytes.clone();
        newer[1] = FORMAT_CURRENT + 1;
        let e = decode::<(u64, String)>("inode", &newer).unwrap_err().to_string();
        assert!(e.contains(&format!("format version {}", FORMAT_CURRENT + 1)) && e.contains("up to 1"), "{e}");
        let bare = bincode::serialize(&(7u64, "x".to_string())).unwrap();
        let e = decode::<(u64, String)>("inode", &bare).unwrap_err().to_string();
        assert!(e.contains("no format header"), "{e}");
        assert_eq!(upgrade_v0(&bare), bytes);
    }
}
