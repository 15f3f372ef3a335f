//! Replica files on local disks: one data file and one checksum file per replica.
//!
//! Layout under each data directory `D`:
//!
//! | path                                 | what                                         |
//! |--------------------------------------|----------------------------------------------|
//! | `D/tarn-datanode/STORAGE`            | this directory's storage id, written once    |
//! | `D/tarn-datanode/rbw/blk_<id>`       | data of a replica being written              |
//! | `D/tarn-datanode/rbw/blk_<id>.meta`  | its checksum file                            |
//! | `D/tarn-datanode/finalized/<xx>/...` | the same two files once finalized (`xx`: bits 8..16 of the id, hex) |
//!
//! The data file holds the block's bytes and nothing else, so a positional read at
//! offset `o` of the block reads offset `o` of the file. The checksum file has a 32-byte
//! header (magic `TARNBLK1`, chunk size, generation stamp, finalized length) and then one
//! CRC32C (u32, little-endian) per chunk of [`CHUNK_BYTES`]; the last chunk may be short.
//!
//! **Durability.** A replica is finalized by writing its length into the header, fsyncing
//! both files, renaming them into `finalized/` and fsyncing both directories; until then it
//! lives in `rbw/`, and at start-up a replica found there is cut back to the longest prefix
//! whose checksums hold (a crash may leave data without its checksum).
//!
//! **Checks on both sides.** Writers checksum what they store; readers verify every chunk
//! they return and fail with [`DatanodeError::Corrupt`] rather than hand out bad bytes. A
//! data file shorter than its recorded length (truncated or deleted underneath) is corrupt.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tarn_security::MasterKey;

use crate::error::{DatanodeError, Result};
use crate::seal::{DataKey, SealHeader, TAG_BYTES, WRAPPED_BYTES};

/// Bytes covered by one checksum.
pub const CHUNK_BYTES: usize = 64 * 1024;
const META_MAGIC: &[u8; 8] = b"TARNBLK1";
const META_HEADER_BYTES: u64 = 32;
/// The header's length field while a replica is being written.
const LENGTH_OPEN: u64 = u64::MAX;
const STORE_DIR: &str = "tarn-datanode";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Finalized,
    /// Being written, or left unfinished by a writer that went away (awaits recovery).
    BeingWritten,
}

impl ReplicaState {
    fn name(self) -> &'static str {
        match self {
            ReplicaState::Finalized => "finalized",
            ReplicaState::BeingWritten => "being written",
        }
    }
}

/// What the datanode reports to the namenode about one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub block_id: u64,
    pub gen_stamp: u64,
    /// Bytes readable with valid checksums.
    pub length: u64,
    pub state: ReplicaState,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dir: usize,
    info: ReplicaInfo,
    /// A writer currently holds the replica.
    open: bool,
}

/// Space on one data directory's file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

/// The replicas on this datanode's data directories.
pub struct BlockStore {
    roots: Vec<PathBuf>,
    storage_ids: Vec<String>,
    /// A directory takes no new replica when its free space is below this.
    reserved_bytes: u64,
    replicas: Mutex<HashMap<u64, Entry>>,
    /// Encrypts new replicas and opens encrypted ones; `None` only in insecure dev mode
    /// (new replicas are then stored in the clear).
    master: Option<MasterKey>,
}

fn data_name(block_id: u64) -> String {
    format!("blk_{block_id}")
}

fn meta_name(block_id: u64) -> String {
    format!("blk_{block_id}.meta")
}

fn parse_block_file(name: &str) -> Option<u64> {
    name.strip_prefix("blk_")?.parse().ok()
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| DatanodeError::Config(format!("{}: path contains NUL", path.display())))?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(DatanodeError::io("statvfs", path)(std::io::Error::last_os_error()));
    }
    let frag = s.f_frsize as u64;
    Ok(DiskUsage { capacity_bytes: s.f_blocks as u64 * frag, free_bytes: s.f_bavail as u64 * frag })
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(DatanodeError::io("fsync directory", dir))
}

#[derive(Debug, Clone, Copy)]
struct MetaHeader {
    gen_stamp: u64,
    length: u64,
    /// How the replica's data key is kept, when the replica is encrypted.
    seal: Option<SealHeader>,
}

/// Encrypted replicas (`seal.rs`): a 128-byte header (the plain one's fields, the session
/// at bytes 12..16, the master key id at 32..40, the sealed data key at 40..100) and one
/// record per chunk: CRC32C of the stored (encrypted) bytes, the chunk's length, the
/// session it was encrypted in, and its AES-GCM tag.
const SEALED_MAGIC: &[u8; 8] = b"TARNBLK2";
const SEALED_HEADER_BYTES: u64 = 128;
const SEALED_RECORD_BYTES: u64 = 12 + TAG_BYTES as u64;

fn header_bytes(sealed: bool) -> u64 {
    if sealed {
        SEALED_HEADER_BYTES
    } else {
        META_HEADER_BYTES
    }
}

fn encode_header(h: MetaHeader) -> Vec<u8> {
    let mut b = vec![0u8; header_bytes(h.seal.is_some()) as usize];
    b[..8].copy_from_slice(if h.seal.is_some() { SEALED_MAGIC } else { META_MAGIC });
    b[8..12].copy_from_slice(&(CHUNK_BYTES as u32).to_le_bytes());
    b[16..24].copy_from_slice(&h.gen_stamp.to_le_bytes());
    b[24..32].copy_from_slice(&h.length.to_le_bytes());
    if let Some(seal) = h.seal {
        b[12..16].copy_from_slice(&seal.session.to_le_bytes());
        b[32..40].copy_from_slice(&seal.key_id);
        b[40..40 + WRAPPED_BYTES].copy_from_slice(&seal.wrapped);
    }
    b
}

fn read_header(block_id: u64, meta: &File) -> Result<MetaHeader> {
    let corrupt = |e: String| DatanodeError::Corrupt { block_id, detail: format!("checksum file header: {e}") };
    let mut b = vec![0u8; META_HEADER_BYTES as usize];
    meta.read_exact_at(&mut b, 0).map_err(|e| corrupt(e.to_string()))?;
    let sealed = &b[..8] == SEALED_MAGIC;
    let chunk = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    if !(sealed || &b[..8] == META_MAGIC) || chunk != CHUNK_BYTES {
        return Err(corrupt("not Tarn's".into()));
    }
    if sealed {
        b.resize(SEALED_HEADER_BYTES as usize, 0);
        meta.read_exact_at(&mut b, 0).map_err(|e| corrupt(e.to_string()))?;
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap_or([0; 8]));
    let seal = sealed.then(|| {
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&b[32..40]);
        let mut wrapped = [0u8; WRAPPED_BYTES];
        wrapped.copy_from_slice(&b[40..40 + WRAPPED_BYTES]);
        SealHeader { key_id, session: u32::from_le_bytes([b[12], b[13], b[14], b[15]]), wrapped }
    });
    Ok(MetaHeader { gen_stamp: word(16..24), length: word(24..32), seal })
}

fn crc_offset(chunk: u64) -> u64 {
    META_HEADER_BYTES + chunk * 4
}

fn record_offset(chunk: u64) -> u64 {
    SEALED_HEADER_BYTES + chunk * SEALED_RECORD_BYTES
}

/// Reads the checksums of chunks `[first, first + n)`.
fn read_crcs(block_id: u64, meta: &File, first: u64, n: usize) -> Result<Vec<u32>> {
    let mut b = vec![0u8; n * 4];
    meta.read_exact_at(&mut b, crc_offset(first))
        .map_err(|e| DatanodeError::Corrupt { block_id, detail: format!("checksums of chunks {first}+{n}: {e}") })?;
    Ok(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// One encrypted chunk's record.
#[derive(Debug, Clone, Copy)]
struct Record {
    crc: u32,
    len: u32,
    session: u32,
    tag: [u8; TAG_BYTES],
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&self.tag);
    }
}

/// Reads the records of encrypted chunks `[first, first + n)`.
fn read_records(block_id: u64, meta: &File, first: u64, n: usize) -> Result<Vec<Record>> {
    let mut b = vec![0u8; n * SEALED_RECORD_BYTES as usize];
    meta.read_exact_at(&mut b, record_offset(first))
        .map_err(|e| DatanodeError::Corrupt { block_id, detail: format!("records of chunks {first}+{n}: {e}") })?;
    let u = |c: &[u8], i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
    Ok(b.chunks_exact(SEALED_RECORD_BYTES as usize)
        .map(|c| {
            let mut tag = [0u8; TAG_BYTES];
            tag.copy_from_slice(&c[12..]);
            Record { crc: u(c, 0), len: u(c, 4), session: u(c, 8), tag }
        })
        .collect())
}

/// Encrypts `buf` as chunk `chunk` in place and returns its record.
fn seal_chunk(key: &DataKey, chunk: u64, session: u32, buf: &mut [u8]) -> Record {
    let tag = key.seal(chunk, session, buf);
    Record { crc: crc32c::crc32c(buf), len: buf.len() as u32, session, tag }
}

impl BlockStore {
    /// Opens (creating if needed) the store on `dirs` and finds the replicas already there.
    pub fn open(dirs: &[PathBuf], reserved_bytes: u64, master: Option<MasterKey>) -> Result<Arc<BlockStore>> {
        if dirs.is_empty() {
            return Err(DatanodeError::Config("datanode.data_dirs is empty".into()));
        }
        let mut roots = Vec::new();
        let mut storage_ids = Vec::new();
        for d in dirs {
            let root = d.join(STORE_DIR);
            for sub in ["rbw", "finalized"] {
                fs::create_dir_all(root.join(sub))
                    .map_err(DatanodeError::io("create data directory", root.join(sub)))?;
            }
            // Replicas are the datanode's (and its short-circuit readers', the same OS
            // user's) alone: an encrypted one's file could be read with a data key a reader
            // once held, a plain one's by anyone.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
                .map_err(DatanodeError::io("make private", root.clone()))?;
            storage_ids.push(storage_id(&root)?);
            roots.push(root);
        }
        let store = BlockStore { roots, storage_ids, reserved_bytes, replicas: Mutex::new(HashMap::new()), master };
        store.scan()?;
        Ok(Arc::new(store))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn storage_ids(&self) -> &[String] {
        &self.storage_ids
    }

    fn rbw_dir(&self, dir: usize) -> PathBuf {
        self.roots[dir].join("rbw")
    }

    fn finalized_dir(&self, dir: usize, block_id: u64) -> PathBuf {
        self.roots[dir].join("finalized").join(format!("{:02x}", (block_id >> 8) & 0xff))
    }

    fn files_of(&self, e: &Entry) -> (PathBuf, PathBuf) {
        let id = e.info.block_id;
        let d = match e.info.state {
            ReplicaState::Finalized => self.finalized_dir(e.dir, id),
            ReplicaState::BeingWritten => self.rbw_dir(e.dir),
        };
        (d.join(data_name(id)), d.join(meta_name(id)))
    }

    /// Finds the replicas on every directory: finalized ones as recorded, unfinished ones cut
    /// back to their longest checksummed prefix.
    fn scan(&self) -> Result<()> {
        let mut found = HashMap::new();
        for dir in 0..self.roots.len() {
            let fin = self.roots[dir].join("finalized");
            for sub in fs::read_dir(&fin).map_err(DatanodeError::io("list", &fin))? {
                let sub = sub.map_err(DatanodeError::io("list", &fin))?.path();
                if sub.is_dir() {
                    self.scan_dir(dir, &sub, ReplicaState::Finalized, &mut found)?;
                }
            }
            self.scan_dir(dir, &self.rbw_dir(dir), ReplicaState::BeingWritten, &mut found)?;
        }
        *self.lock() = found;
        Ok(())
    }

    fn scan_dir(&self, dir: usize, path: &Path, state: ReplicaState, found: &mut HashMap<u64, Entry>) -> Result<()> {
        for f in fs::read_dir(path).map_err(DatanodeError::io("list", path))? {
            let f = f.map_err(DatanodeError::io("list", path))?;
            let name = f.file_name();
            let Some(block_id) = name.to_str().and_then(parse_block_file) else { continue };
            if state == ReplicaState::BeingWritten {
                if let Some(prev) = found.get(&block_id).filter(|p| p.info.state == ReplicaState::Finalized) {
                    let (fin_data, _) = self.files_of(prev);
                    if same_file(&fin_data, &path.join(data_name(block_id))) {
                        // Two names of one file (a rename cut short by a crash on a file
                        // system without a journal): recovering the rbw/ name would cut
                        // the finalized replica. Only the names go.
                        tracing::info!(block_id, "rbw/ names of a finalized replica; removing them");
                        let _ = fs::remove_file(path.join(data_name(block_id)));
                        let _ = fs::remove_file(path.join(meta_name(block_id)));
                        continue;
                    }
                }
            }
            let loaded = match state {
                ReplicaState::Finalized => load_finalized(block_id, path, self.master.as_ref()),
                ReplicaState::BeingWritten => recover_rbw(block_id, path, self.master.as_ref()),
            };
            match loaded {
                // Data sealed under another master key is not corrupt: refuse to start
                // rather than have the namenode drop every replica here.
                Err(e @ DatanodeError::WrongMasterKey { .. }) => {
                    return Err(DatanodeError::Config(format!(
                        "{e} (in {}); start this datanode with the master key its data was written with",
                        path.display()
                    )))
                }
                Ok(info) => {
                    if let Some(prev) = found.get(&block_id) {
                        if prev.info.gen_stamp >= info.gen_stamp {
                            if state == ReplicaState::BeingWritten && prev.info.state == ReplicaState::Finalized {
                                // Left in rbw/ by a finalize whose removal there did not last.
                                tracing::info!(block_id, "an rbw copy of a finalized replica; removing it");
                                let _ = fs::remove_file(path.join(data_name(block_id)));
                                let _ = fs::remove_file(path.join(meta_name(block_id)));
                            } else {
                                tracing::warn!(block_id, first = ?prev.info, second = ?info, "two replicas of one block; keeping the newer");
                            }
                            continue;
                        }
                        tracing::warn!(block_id, first = ?prev.info, second = ?info, "two replicas of one block; keeping the newer");
                    }
                    found.insert(block_id, Entry { dir, info, open: false });
                }
                // Kept on disk for a human to look at; the namenode sees the replica missing
                // and restores it from another one.
                Err(e) => tracing::warn!(block_id, dir = %path.display(), error = %e, "replica not loaded"),
            }
        }
        Ok(())
    }

    /// Every replica, for a full block report.
    pub fn report(&self) -> Vec<ReplicaInfo> {
        let mut v: Vec<ReplicaInfo> = self.lock().values().map(|e| e.info).collect();
        v.sort_by_key(|r| r.block_id);
        v
    }

    pub fn get(&self, block_id: u64) -> Option<ReplicaInfo> {
        self.lock().get(&block_id).map(|e| e.info)
    }

    /// Space per data directory.
    pub fn usage(&self) -> Result<Vec<DiskUsage>> {
        self.roots.iter().map(|r| disk_usage(r)).collect()
    }

    /// Bytes held by replicas.
    pub fn used_bytes(&self) -> u64 {
        self.lock().values().map(|e| e.info.length).sum()
    }

    /// Whether a new replica of up to `expected_bytes` fits on some directory.
    pub fn has_room_for(&self, expected_bytes: u64) -> bool {
        self.pick_dir(expected_bytes).is_ok()
    }

    /// The directory with the most free space that still has room for `expected_bytes`.
    fn pick_dir(&self, expected_bytes: u64) -> Result<usize, String> {
        let mut best: Option<(usize, u64)> = None;
        for (i, r) in self.roots.iter().enumerate() {
            let free = disk_usage(r).map_err(|e| e.to_string())?.free_bytes;
            if free >= self.reserved_bytes.saturating_add(expected_bytes) && best.is_none_or(|(_, f)| free > f) {
                best = Some((i, free));
            }
        }
        best.map(|(i, _)| i).ok_or_else(|| {
            format!(
                "every data directory has less than {} bytes free (reserved {} + block {})",
                self.reserved_bytes.saturating_add(expected_bytes),
                self.reserved_bytes,
                expected_bytes
            )
        })
    }

    /// Starts a new replica. `expected_bytes` (the block size) picks a directory with room.
    pub fn create(self: &Arc<Self>, block_id: u64, gen_stamp: u64, expected_bytes: u64) -> Result<ReplicaWriter> {
        let dir = self.pick_dir(expected_bytes).map_err(|reason| DatanodeError::DiskFull { block_id, reason })?;
        {
            let mut map = self.lock();
            if let Some(e) = map.get(&block_id) {
                return Err(DatanodeError::ReplicaExists { block_id, state: e.info.state.name() });
            }
            let info = ReplicaInfo { block_id, gen_stamp, length: 0, state: ReplicaState::BeingWritten };
            map.insert(block_id, Entry { dir, info, open: true });
        }
        let rbw = self.rbw_dir(dir);
        // A fresh data key per replica (session 0); no fsync needed before using it: a
        // header lost in a crash takes the only copy of the key, so nothing sealed under
        // it survives to be confused with later writes.
        let sealing = self.master.as_ref().map(|m| DataKey::generate(m, block_id));
        let seal_header = sealing.as_ref().map(|(_, h)| *h);
        let made = (|| {
            let data = create_new(&rbw.join(data_name(block_id)))?;
            let meta = create_new(&rbw.join(meta_name(block_id)))?;
            meta.write_all_at(&encode_header(MetaHeader { gen_stamp, length: LENGTH_OPEN, seal: seal_header }), 0)
                .map_err(DatanodeError::io("write checksum header", rbw.join(meta_name(block_id))))?;
            Ok((data, meta))
        })();
        match made {
            Ok((data, meta)) => {
                let mut w = ReplicaWriter::new(self.clone(), block_id, gen_stamp, dir, data, meta, 0, 0);
                w.seal = sealing.map(|(key, header)| WriterSeal { key, header, buf: Vec::new() });
                Ok(w)
            }
            Err(e) => {
                self.lock().remove(&block_id);
                let _ = fs::remove_file(rbw.join(data_name(block_id)));
                let _ = fs::remove_file(rbw.join(meta_name(block_id)));
                Err(disk_full_or(block_id, e))
            }
        }
    }

    /// Reopens a replica being written for pipeline recovery: cuts it to `length` (which must
    /// not exceed what it holds), gives it `new_gen_stamp` and returns a writer at its end.
    pub fn recover(self: &Arc<Self>, block_id: u64, new_gen_stamp: u64, length: u64) -> Result<ReplicaWriter> {
        let e = {
            let mut map = self.lock();
            let e = map.get_mut(&block_id).ok_or(DatanodeError::ReplicaNotFound { block_id })?;
            if e.open {
                return Err(DatanodeError::ReplicaBusy { block_id });
            }
            // A finalized replica is reopened too: the pipeline failed while closing the
            // block, after this node had finalized it but before every node acknowledged.
            // Recovery always comes with a new generation stamp: a finalized replica is
            // never reopened at its own (an old writer's token cannot rewrite it).
            let finalized = e.info.state == ReplicaState::Finalized;
            if e.info.gen_stamp > new_gen_stamp || (finalized && e.info.gen_stamp == new_gen_stamp) {
                return Err(DatanodeError::StaleGeneration {
                    block_id,
                    expected: new_gen_stamp,
                    found: e.info.gen_stamp,
                });
            }
            if length > e.info.length {
                return Err(DatanodeError::OutOfRange { block_id, offset: length, len: 0, length: e.info.length });
            }
            e.open = true;
            *e
        };
        let mut e = e;
        if e.info.state == ReplicaState::Finalized {
            if let Err(err) = self.unfinalize(&e) {
                self.release(block_id, None);
                return Err(err);
            }
            e.info.state = ReplicaState::BeingWritten;
            if let Some(m) = self.lock().get_mut(&block_id) {
                m.info.state = ReplicaState::BeingWritten;
            }
        }
        let (dp, mp) = self.files_of(&e);
        let reopened = (|| {
            let data = OpenOptions::new().read(true).write(true).open(&dp).map_err(DatanodeError::io("open", &dp))?;
            let meta = OpenOptions::new().read(true).write(true).open(&mp).map_err(DatanodeError::io("open", &mp))?;
            let h = read_header(block_id, &meta)?;
            if let Some(seal) = h.seal {
                let ws = cut_sealed(block_id, &data, &meta, length, new_gen_stamp, seal, self.master.as_ref())?;
                return Ok((data, meta, 0, 0, Some(ws)));
            }
            let (partial_crc, partial_len) = cut_to(block_id, &data, &meta, length)?;
            meta.write_all_at(
                &encode_header(MetaHeader { gen_stamp: new_gen_stamp, length: LENGTH_OPEN, seal: None }),
                0,
            )
            .map_err(DatanodeError::io("write checksum header", &mp))?;
            Ok((data, meta, partial_crc, partial_len, None))
        })();
        match reopened {
            Ok((data, meta, crc, plen, seal)) => {
                if let Some(e) = self.lock().get_mut(&block_id) {
                    e.info.gen_stamp = new_gen_stamp;
                    e.info.length = length;
                }
                let mut w = ReplicaWriter::new(self.clone(), block_id, new_gen_stamp, e.dir, data, meta, crc, plen);
                w.length = length;
                w.seal = seal;
                Ok(w)
            }
            Err(err) => {
                if let Some(e) = self.lock().get_mut(&block_id) {
                    e.open = false;
                }
                Err(err)
            }
        }
    }

    /// Moves a finalized replica back to `rbw/` (pipeline recovery while closing a block).
    fn unfinalize(&self, e: &Entry) -> Result<()> {
        let id = e.info.block_id;
        let fin = self.finalized_dir(e.dir, id);
        let rbw = self.rbw_dir(e.dir);
        for name in [data_name(id), meta_name(id)] {
            fs::rename(fin.join(&name), rbw.join(&name)).map_err(DatanodeError::io("rename", fin.join(&name)))?;
        }
        fsync_dir(&rbw)?;
        fsync_dir(&fin)
    }

    /// Opens a replica for reading. `min_gen_stamp` refuses an older version of the block.
    pub fn open_reader(&self, block_id: u64, min_gen_stamp: u64) -> Result<ReplicaReader> {
        let e = *self.lock().get(&block_id).ok_or(DatanodeError::ReplicaNotFound { block_id })?;
        if e.info.gen_stamp < min_gen_stamp {
            return Err(DatanodeError::StaleGeneration { block_id, expected: min_gen_stamp, found: e.info.gen_stamp });
        }
        let (dp, mp) = self.files_of(&e);
        let missing = |what: &str, err: std::io::Error| DatanodeError::Corrupt {
            block_id,
            detail: format!("{what} {}: {err}", dp.display()),
        };
        let data = File::open(&dp).map_err(|err| missing("open data file", err))?;
        let meta = File::open(&mp).map_err(|err| missing("open checksum file", err))?;
        let on_disk = data.metadata().map_err(|err| missing("stat data file", err))?.len();
        if on_disk < e.info.length {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("data file holds {on_disk} bytes, {} recorded", e.info.length),
            });
        }
        let key = match read_header(block_id, &meta)?.seal {
            Some(h) => Some(DataKey::open(self.master.as_ref(), block_id, &h)?),
            None => None,
        };
        Ok(ReplicaReader { block_id, gen_stamp: e.info.gen_stamp, length: e.info.length, data, meta, key })
    }

    /// What a reader on this host needs to read a finalized replica itself
    /// (short-circuit reads): its data file, its data key, and one record per chunk.
    pub fn local_replica(&self, block_id: u64, min_gen_stamp: u64) -> Result<LocalReplica> {
        let e = *self.lock().get(&block_id).ok_or(DatanodeError::ReplicaNotFound { block_id })?;
        if e.info.gen_stamp < min_gen_stamp {
            return Err(DatanodeError::StaleGeneration { block_id, expected: min_gen_stamp, found: e.info.gen_stamp });
        }
        if e.info.state != ReplicaState::Finalized || e.open {
            return Err(DatanodeError::ReplicaBusy { block_id });
        }
        let (dp, mp) = self.files_of(&e);
        let meta = File::open(&mp)
            .map_err(|err| DatanodeError::Corrupt { block_id, detail: format!("open {}: {err}", mp.display()) })?;
        let chunks = e.info.length.div_ceil(CHUNK_BYTES as u64) as usize;
        let (data_key, records) = match read_header(block_id, &meta)?.seal {
            Some(h) => {
                let key = DataKey::open(self.master.as_ref(), block_id, &h)?;
                let mut b = vec![0u8; chunks * SEALED_RECORD_BYTES as usize];
                meta.read_exact_at(&mut b, record_offset(0)).map_err(|err| DatanodeError::Corrupt {
                    block_id,
                    detail: format!("records of {chunks} chunks: {err}"),
                })?;
                (Some(*key.raw()), b)
            }
            None => {
                // The same record layout, with no session and no tag.
                let mut b = Vec::with_capacity(chunks * SEALED_RECORD_BYTES as usize);
                for (i, crc) in read_crcs(block_id, &meta, 0, chunks)?.into_iter().enumerate() {
                    let len = (e.info.length - (i * CHUNK_BYTES) as u64).min(CHUNK_BYTES as u64) as u32;
                    Record { crc, len, session: 0, tag: [0; TAG_BYTES] }.encode(&mut b);
                }
                (None, b)
            }
        };
        Ok(LocalReplica { data_path: dp, length: e.info.length, gen_stamp: e.info.gen_stamp, data_key, records })
    }

    /// Deletes a replica on the namenode's command, only if nobody writes it and its
    /// generation stamp is at most `max_gen_stamp` (a command about an older version never
    /// deletes a newer one). `Ok(None)`: nothing to delete.
    pub fn delete_if(&self, block_id: u64, max_gen_stamp: u64) -> Result<Option<ReplicaInfo>> {
        {
            let map = self.lock();
            match map.get(&block_id) {
                None => return Ok(None),
                Some(e) if e.open => return Err(DatanodeError::ReplicaBusy { block_id }),
                Some(e) if e.info.gen_stamp > max_gen_stamp => {
                    tracing::info!(block_id, have = e.info.gen_stamp, max_gen_stamp, "newer replica kept");
                    return Ok(None);
                }
                Some(_) => {}
            }
        }
        self.delete(block_id)
    }

    /// Deletes a replica unconditionally (an abandoned write; tests).
    pub fn delete(&self, block_id: u64) -> Result<Option<ReplicaInfo>> {
        let Some(e) = self.lock().remove(&block_id) else { return Ok(None) };
        let (dp, mp) = self.files_of(&e);
        for p in [&dp, &mp] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(DatanodeError::io("delete", p)(err)),
            }
        }
        Ok(Some(e.info))
    }

    fn set_length(&self, block_id: u64, length: u64) {
        if let Some(e) = self.lock().get_mut(&block_id) {
            e.info.length = length;
        }
    }

    fn release(&self, block_id: u64, finalized: Option<ReplicaInfo>) {
        if let Some(e) = self.lock().get_mut(&block_id) {
            e.open = false;
            if let Some(info) = finalized {
                e.info = info;
            }
        }
    }
}

/// Whether two paths name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn create_new(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(DatanodeError::io("create", p))
}

fn disk_full_or(block_id: u64, e: DatanodeError) -> DatanodeError {
    match e {
        DatanodeError::Io { ref source, .. } if is_enospc(source) => {
            DatanodeError::DiskFull { block_id, reason: e.to_string() }
        }
        e => e,
    }
}

fn storage_id(root: &Path) -> Result<String> {
    let p = root.join("STORAGE");
    match fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(DatanodeError::io("read", &p)(e)),
    }
    let id = format!("DS-{:016x}", rand::random::<u64>());
    let tmp = root.join("STORAGE.tmp");
    fs::write(&tmp, &id).map_err(DatanodeError::io("write", &tmp))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(DatanodeError::io("fsync", &tmp))?;
    fs::rename(&tmp, &p).map_err(DatanodeError::io("rename", &p))?;
    fsync_dir(root)?;
    Ok(id)
}

/// What [`rewrap_master_key`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// Replicas whose data key is now sealed by the new master key.
    pub rewrapped: u64,
    /// Replicas already under the new key (an earlier, interrupted run).
    pub already: u64,
    /// Replicas stored in the clear (nothing to do).
    pub clear: u64,
}

/// Master key rotation on a stopped datanode's directories: seals every replica's data
/// key with `new` instead of `old`, rewriting only the 128-byte header of each checksum
/// file (one write within the first sector, then fsync); the data is not touched. Safe to
/// run again after an interruption (replicas already under `new` are skipped). A replica
/// under a third key stops the run with an error naming it.
pub fn rewrap_master_key(dirs: &[PathBuf], old: &MasterKey, new: &MasterKey) -> Result<Rewrapped> {
    let mut done = Rewrapped::default();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.join(STORE_DIR)).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for f in rd {
            let f = f.map_err(DatanodeError::io("list", &d))?;
            let path = f.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(block_id) = name.strip_suffix(".meta").and_then(parse_block_file) else { continue };
            let meta =
                OpenOptions::new().read(true).write(true).open(&path).map_err(DatanodeError::io("open", &path))?;
            let h = read_header(block_id, &meta)?;
            let Some(seal) = h.seal else {
                done.clear += 1;
                continue;
            };
            if seal.key_id == new.id() {
                done.already += 1;
                continue;
            }
            let wrong = |why: &str| DatanodeError::WrongMasterKey {
                block_id,
                detail: format!("{}: {why} (sealed by {})", path.display(), crate::seal::hex_id(&seal.key_id)),
            };
            if seal.key_id != old.id() {
                return Err(wrong("sealed by neither the old nor the new master key"));
            }
            let rewrapped =
                DataKey::rewrap(old, new, block_id, &seal).ok_or_else(|| wrong("the old key does not open it"))?;
            meta.write_all_at(&encode_header(MetaHeader { seal: Some(rewrapped), ..h }), 0)
                .map_err(DatanodeError::io("write header", &path))?;
            meta.sync_data().map_err(DatanodeError::io("fsync", &path))?;
            done.rewrapped += 1;
        }
    }
    Ok(done)
}

/// Refuses a replica sealed under another master key than `master`.
fn check_key(block_id: u64, h: &MetaHeader, master: Option<&MasterKey>) -> Result<()> {
    match (&h.seal, master) {
        (Some(seal), Some(m)) if seal.key_id != m.id() => Err(DatanodeError::WrongMasterKey {
            block_id,
            detail: format!(
                "sealed by master key {}, this datanode has {}",
                crate::seal::hex_id(&seal.key_id),
                m.id_hex()
            ),
        }),
        (Some(seal), None) => Err(DatanodeError::WrongMasterKey {
            block_id,
            detail: format!("sealed by master key {}, this datanode has none", crate::seal::hex_id(&seal.key_id)),
        }),
        _ => Ok(()),
    }
}

fn load_finalized(block_id: u64, dir: &Path, master: Option<&MasterKey>) -> Result<ReplicaInfo> {
    let dp = dir.join(data_name(block_id));
    let mp = dir.join(meta_name(block_id));
    let meta = File::open(&mp).map_err(DatanodeError::io("open", &mp))?;
    let h = read_header(block_id, &meta)?;
    check_key(block_id, &h, master)?;
    let on_disk = fs::metadata(&dp).map_err(DatanodeError::io("stat", &dp))?.len();
    if h.length == LENGTH_OPEN || on_disk != h.length {
        return Err(DatanodeError::Corrupt {
            block_id,
            detail: format!("data file holds {on_disk} bytes, {} recorded", h.length),
        });
    }
    Ok(ReplicaInfo { block_id, gen_stamp: h.gen_stamp, length: h.length, state: ReplicaState::Finalized })
}

/// A replica left in `rbw/`: keeps the longest prefix whose checksums hold.
fn recover_rbw(block_id: u64, dir: &Path, master: Option<&MasterKey>) -> Result<ReplicaInfo> {
    let dp = dir.join(data_name(block_id));
    let mp = dir.join(meta_name(block_id));
    let data = OpenOptions::new().read(true).write(true).open(&dp).map_err(DatanodeError::io("open", &dp))?;
    let meta = OpenOptions::new().read(true).write(true).open(&mp).map_err(DatanodeError::io("open", &mp))?;
    let h = read_header(block_id, &meta)?;
    check_key(block_id, &h, master)?;
    let data_len = data.metadata().map_err(DatanodeError::io("stat", &dp))?.len();
    let meta_len = meta.metadata().map_err(DatanodeError::io("stat", &mp))?.len();
    if h.seal.is_some() {
        let length = longest_sealed_prefix(block_id, &data, &meta, data_len, meta_len)?;
        let chunks = length.div_ceil(CHUNK_BYTES as u64);
        let io = |e: std::io::Error| DatanodeError::Corrupt { block_id, detail: format!("truncate replica: {e}") };
        data.set_len(length).map_err(io)?;
        meta.set_len(record_offset(chunks)).map_err(io)?;
        return Ok(ReplicaInfo { block_id, gen_stamp: h.gen_stamp, length, state: ReplicaState::BeingWritten });
    }
    let chunks = meta_len.saturating_sub(META_HEADER_BYTES) / 4;
    let mut length = data_len.min(chunks * CHUNK_BYTES as u64);
    // The last chunk's checksum may cover fewer bytes than the file holds (an hflush or
    // hsync mid-chunk, then more data before a crash): keep the longest prefix of the chunk
    // the stored checksum matches, and drop back a chunk only if none does.
    while length > 0 {
        let last = (length - 1) / CHUNK_BYTES as u64;
        let start = last * CHUNK_BYTES as u64;
        let mut buf = vec![0u8; (length - start) as usize];
        data.read_exact_at(&mut buf, start).map_err(DatanodeError::io("read", &dp))?;
        let stored = read_crcs(block_id, &meta, last, 1)?[0];
        if let Some(n) = longest_matching_prefix(&buf, stored) {
            length = start + n as u64;
            break;
        }
        length = start;
    }
    cut_to(block_id, &data, &meta, length)?;
    Ok(ReplicaInfo { block_id, gen_stamp: h.gen_stamp, length, state: ReplicaState::BeingWritten })
}

/// An encrypted replica left in `rbw/`: the length up to the last chunk whose record
/// matches the bytes on disk (whole chunks only: a chunk is encrypted as one piece).
/// Known gap: a partial chunk that was flushed, then rewritten longer when more data came,
/// and cut short by a crash mid-rewrite, falls back to the previous chunk boundary.
fn longest_sealed_prefix(block_id: u64, data: &File, meta: &File, data_len: u64, meta_len: u64) -> Result<u64> {
    let chunk = CHUNK_BYTES as u64;
    let mut n = meta_len.saturating_sub(SEALED_HEADER_BYTES) / SEALED_RECORD_BYTES;
    while n > 0 {
        let last = n - 1;
        let r = read_records(block_id, meta, last, 1)?[0];
        let start = last * chunk;
        let len = u64::from(r.len);
        if len > 0 && len <= chunk && start + len <= data_len {
            let mut buf = vec![0u8; len as usize];
            data.read_exact_at(&mut buf, start)
                .map_err(|e| DatanodeError::Corrupt { block_id, detail: format!("read chunk {last}: {e}") })?;
            if crc32c::crc32c(&buf) == r.crc {
                return Ok(start + len);
            }
        }
        n -= 1;
    }
    Ok(0)
}

/// Reopens an encrypted replica for a new writer: takes the next session (made durable
/// before anything is encrypted under it), cuts data and records to `length`, and
/// re-encrypts the kept part of a partial last chunk under the new session; returns the
/// writer's state with that chunk's plaintext in its buffer.
fn cut_sealed(
    block_id: u64,
    data: &File,
    meta: &File,
    length: u64,
    new_gen_stamp: u64,
    seal: SealHeader,
    master: Option<&MasterKey>,
) -> Result<WriterSeal> {
    let key = DataKey::open(master, block_id, &seal)?;
    let io = |e: std::io::Error| DatanodeError::Corrupt { block_id, detail: format!("reopen replica: {e}") };
    let session = seal
        .session
        .checked_add(1)
        .ok_or_else(|| DatanodeError::Corrupt { block_id, detail: "writer sessions exhausted".into() })?;
    let header = SealHeader { session, ..seal };
    meta.write_all_at(
        &encode_header(MetaHeader { gen_stamp: new_gen_stamp, length: LENGTH_OPEN, seal: Some(header) }),
        0,
    )
    .map_err(io)?;
    meta.sync_data().map_err(io)?;
    let chunk = CHUNK_BYTES as u64;
    let full = length / chunk;
    let partial_len = (length % chunk) as usize;
    let mut buf = Vec::new();
    if partial_len > 0 {
        let r = read_records(block_id, meta, full, 1)?[0];
        if (r.len as usize) < partial_len || r.len as usize > CHUNK_BYTES {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("chunk {full} holds {} bytes, {partial_len} to keep", r.len),
            });
        }
        buf = vec![0u8; r.len as usize];
        data.read_exact_at(&mut buf, full * chunk).map_err(io)?;
        if crc32c::crc32c(&buf) != r.crc {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("chunk {full} does not match its checksum"),
            });
        }
        key.open_chunk(full, r.session, &mut buf, &r.tag)?;
        buf.truncate(partial_len);
    }
    data.set_len(length).map_err(io)?;
    meta.set_len(record_offset(full)).map_err(io)?;
    let mut ws = WriterSeal { key, header, buf };
    if partial_len > 0 {
        // The kept bytes, encrypted again under the new session and their new length.
        let mut c = ws.buf.clone();
        let r = seal_chunk(&ws.key, full, session, &mut c);
        data.write_all_at(&c, full * chunk).map_err(io)?;
        let mut rec = Vec::new();
        r.encode(&mut rec);
        meta.write_all_at(&rec, record_offset(full)).map_err(io)?;
    }
    ws.buf.reserve(CHUNK_BYTES);
    Ok(ws)
}

/// The longest prefix of `buf` (at least one byte) whose CRC32C is `stored`.
fn longest_matching_prefix(buf: &[u8], stored: u32) -> Option<usize> {
    let mut crc = 0;
    let mut best = None;
    for (i, b) in buf.iter().enumerate() {
        crc = crc32c::crc32c_append(crc, std::slice::from_ref(b));
        if crc == stored {
            best = Some(i + 1);
        }
    }
    best
}

/// Truncates data and checksums to `length`; returns the running checksum and length of the
/// last partial chunk. The bytes kept of that chunk are verified against its stored
/// checksum first (over the chunk's stored extent), so a rotted byte is never re-blessed
/// with a fresh checksum.
fn cut_to(block_id: u64, data: &File, meta: &File, length: u64) -> Result<(u32, usize)> {
    let chunk = CHUNK_BYTES as u64;
    let partial_len = (length % chunk) as usize;
    let full = length / chunk;
    let mut partial_crc = 0;
    if partial_len > 0 {
        let on_disk = data.metadata().map(|m| m.len()).unwrap_or(length);
        let extent = (on_disk.min((full + 1) * chunk) - full * chunk) as usize;
        let mut buf = vec![0u8; extent.max(partial_len)];
        data.read_exact_at(&mut buf, full * chunk)
            .map_err(|e| DatanodeError::Corrupt { block_id, detail: format!("read last chunk: {e}") })?;
        let stored = read_crcs(block_id, meta, full, 1)?[0];
        if longest_matching_prefix(&buf, stored).is_none_or(|n| n < partial_len) {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("chunk {full} does not match its checksum over the {partial_len} bytes kept"),
            });
        }
        partial_crc = crc32c::crc32c(&buf[..partial_len]);
    }
    let io = |e: std::io::Error| DatanodeError::Corrupt { block_id, detail: format!("truncate replica: {e}") };
    data.set_len(length).map_err(io)?;
    let chunks = full + u64::from(partial_len > 0);
    meta.set_len(crc_offset(chunks)).map_err(io)?;
    if partial_len > 0 {
        meta.write_all_at(&partial_crc.to_le_bytes(), crc_offset(full)).map_err(io)?;
    }
    Ok((partial_crc, partial_len))
}

/// Appends to a replica being written. Dropping it without [`ReplicaWriter::finalize`] leaves
/// the replica in `rbw/` with what was flushed (for recovery); [`ReplicaWriter::abandon`]
/// deletes it.
pub struct ReplicaWriter {
    store: Arc<BlockStore>,
    block_id: u64,
    gen_stamp: u64,
    dir: usize,
    data: File,
    meta: File,
    length: u64,
    partial_crc: u32,
    partial_len: usize,
    done: bool,
    /// Encryption state of an encrypted replica.
    seal: Option<WriterSeal>,
    /// A write of an encrypted replica failed: the chunk buffer no longer matches what is
    /// on disk, so nothing more is encrypted (sealing it again could reuse a nonce for
    /// other bytes); the replica is left for recovery as the disk has it.
    failed: bool,
}

/// A writer's encryption state: the data key, the header naming it (with the session), and
/// the plaintext of the chunk being filled (encrypted when it fills up or is flushed).
struct WriterSeal {
    key: DataKey,
    header: SealHeader,
    buf: Vec<u8>,
}

impl ReplicaWriter {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: Arc<BlockStore>,
        block_id: u64,
        gen_stamp: u64,
        dir: usize,
        data: File,
        meta: File,
        partial_crc: u32,
        partial_len: usize,
    ) -> Self {
        let length = 0;
        ReplicaWriter {
            store,
            block_id,
            gen_stamp,
            dir,
            data,
            meta,
            length,
            partial_crc,
            partial_len,
            done: false,
            seal: None,
            failed: false,
        }
    }

    pub fn block_id(&self) -> u64 {
        self.block_id
    }

    pub fn gen_stamp(&self) -> u64 {
        self.gen_stamp
    }

    /// Bytes written so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    fn paths(&self) -> (PathBuf, PathBuf) {
        let rbw = self.store.rbw_dir(self.dir);
        (rbw.join(data_name(self.block_id)), rbw.join(meta_name(self.block_id)))
    }

    fn io_err(&self, context: &'static str, meta: bool, e: std::io::Error) -> DatanodeError {
        let (dp, mp) = self.paths();
        disk_full_or(self.block_id, DatanodeError::io(context, if meta { mp } else { dp })(e))
    }

    /// Appends `buf` to an encrypted replica: completed chunks are encrypted and written
    /// (data and records in one write each), the rest waits in the chunk buffer.
    fn write_sealed(&mut self, buf: &[u8]) -> Result<()> {
        let r = self.write_sealed_inner(buf);
        self.failed |= r.is_err();
        r
    }

    fn write_sealed_inner(&mut self, mut buf: &[u8]) -> Result<()> {
        if self.failed {
            return Err(self.poisoned());
        }
        let Some(ws) = self.seal.as_mut() else { return Ok(()) };
        let chunk = CHUNK_BYTES as u64;
        let first = self.length / chunk;
        let mut idx = first;
        let mut out: Vec<u8> = Vec::new();
        let mut recs = Vec::new();
        let total = buf.len();
        while !buf.is_empty() {
            let take = (CHUNK_BYTES - ws.buf.len()).min(buf.len());
            if ws.buf.is_empty() && take == CHUNK_BYTES {
                // A whole chunk straight from the packet.
                if out.capacity() == 0 {
                    out.reserve(buf.len() - buf.len() % CHUNK_BYTES);
                }
                let at = out.len();
                out.extend_from_slice(&buf[..CHUNK_BYTES]);
                seal_chunk(&ws.key, idx, ws.header.session, &mut out[at..]).encode(&mut recs);
                idx += 1;
            } else {
                ws.buf.extend_from_slice(&buf[..take]);
                if ws.buf.len() == CHUNK_BYTES {
                    let at = out.len();
                    out.extend_from_slice(&ws.buf);
                    ws.buf.clear();
                    seal_chunk(&ws.key, idx, ws.header.session, &mut out[at..]).encode(&mut recs);
                    idx += 1;
                }
            }
            buf = &buf[take..];
        }
        if !out.is_empty() {
            self.data.write_all_at(&out, first * chunk).map_err(|e| self.io_err("write", false, e))?;
            self.meta.write_all_at(&recs, record_offset(first)).map_err(|e| self.io_err("write", true, e))?;
        }
        self.length += total as u64;
        Ok(())
    }

    fn poisoned(&self) -> DatanodeError {
        DatanodeError::Corrupt { block_id: self.block_id, detail: "an earlier write to this replica failed".into() }
    }

    /// Encrypts and writes the partial chunk being filled (hflush, hsync, finalize).
    fn flush_sealed(&mut self) -> Result<()> {
        if self.seal.is_some() && self.failed {
            return Err(self.poisoned());
        }
        let r = self.flush_sealed_inner();
        self.failed |= r.is_err();
        r
    }

    fn flush_sealed_inner(&mut self) -> Result<()> {
        let Some(ws) = self.seal.as_ref() else { return Ok(()) };
        if ws.buf.is_empty() {
            return Ok(());
        }
        let idx = self.length / CHUNK_BYTES as u64;
        let mut c = ws.buf.clone();
        let r = seal_chunk(&ws.key, idx, ws.header.session, &mut c);
        let mut rec = Vec::with_capacity(SEALED_RECORD_BYTES as usize);
        r.encode(&mut rec);
        self.data.write_all_at(&c, idx * CHUNK_BYTES as u64).map_err(|e| self.io_err("write", false, e))?;
        self.meta.write_all_at(&rec, record_offset(idx)).map_err(|e| self.io_err("write", true, e))?;
        Ok(())
    }

    /// Appends `buf`, checksumming every completed chunk.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        if self.seal.is_some() {
            return self.write_sealed(buf);
        }
        self.data.write_all_at(buf, self.length).map_err(|e| self.io_err("write", false, e))?;
        let first_chunk = self.length / CHUNK_BYTES as u64;
        let mut full = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let take = (CHUNK_BYTES - self.partial_len).min(rest.len());
            self.partial_crc = crc32c::crc32c_append(self.partial_crc, &rest[..take]);
            self.partial_len += take;
            rest = &rest[take..];
            if self.partial_len == CHUNK_BYTES {
                full.extend_from_slice(&self.partial_crc.to_le_bytes());
                self.partial_crc = 0;
                self.partial_len = 0;
            }
        }
        if !full.is_empty() {
            self.meta.write_all_at(&full, crc_offset(first_chunk)).map_err(|e| self.io_err("write", true, e))?;
        }
        self.length += buf.len() as u64;
        Ok(())
    }

    /// Makes what was written readable (`hflush`); with `sync`, also durable (`hsync`).
    pub fn flush(&mut self, sync: bool) -> Result<()> {
        self.flush_sealed()?;
        if self.seal.is_none() && self.partial_len > 0 {
            let chunk = self.length / CHUNK_BYTES as u64;
            self.meta
                .write_all_at(&self.partial_crc.to_le_bytes(), crc_offset(chunk))
                .map_err(|e| self.io_err("write", true, e))?;
        }
        if sync {
            self.data.sync_data().map_err(|e| self.io_err("fsync", false, e))?;
            self.meta.sync_data().map_err(|e| self.io_err("fsync", true, e))?;
        }
        self.store.set_length(self.block_id, self.length);
        Ok(())
    }

    /// Records the final length, makes the replica durable and moves it to `finalized/`.
    pub fn finalize(mut self) -> Result<ReplicaInfo> {
        self.flush(false)?;
        let seal = self.seal.as_ref().map(|w| w.header);
        let header = encode_header(MetaHeader { gen_stamp: self.gen_stamp, length: self.length, seal });
        self.meta.write_all_at(&header, 0).map_err(|e| self.io_err("write checksum header", true, e))?;
        // The two files' fsyncs at once: a small replica's finalize waits for the disk
        // twice (files, then directory), not four times.
        let (data, meta) = (&self.data, &self.meta);
        let (d, m) = std::thread::scope(|s| {
            let m = s.spawn(|| meta.sync_all());
            (data.sync_all(), m.join())
        });
        d.map_err(|e| self.io_err("fsync", false, e))?;
        m.unwrap_or_else(|_| Err(std::io::Error::other("the fsync thread panicked")))
            .map_err(|e| self.io_err("fsync", true, e))?;
        let (dp, mp) = self.paths();
        let fin = self.store.finalized_dir(self.dir, self.block_id);
        fs::create_dir_all(&fin).map_err(DatanodeError::io("create", &fin))?;
        // The checksum file moves last: a data file in finalized/ without one is never loaded,
        // and rbw/ recovery needs both.
        fs::rename(&dp, fin.join(data_name(self.block_id))).map_err(DatanodeError::io("rename", &dp))?;
        fs::rename(&mp, fin.join(meta_name(self.block_id))).map_err(DatanodeError::io("rename", &mp))?;
        // Durable in finalized/. The entries' removal from rbw/ goes with it on a journaling
        // file system (one transaction); should it not, the replica found in both at
        // start-up is kept as finalized and the rbw/ copy removed.
        fsync_dir(&fin)?;
        let info = ReplicaInfo {
            block_id: self.block_id,
            gen_stamp: self.gen_stamp,
            length: self.length,
            state: ReplicaState::Finalized,
        };
        self.done = true;
        self.store.release(self.block_id, Some(info));
        Ok(info)
    }

    /// Deletes the replica (a write that will not be completed here).
    pub fn abandon(mut self) {
        self.done = true;
        if let Err(e) = self.store.delete(self.block_id) {
            tracing::warn!(block_id = self.block_id, error = %e, "could not delete an abandoned replica");
        }
    }
}

impl Drop for ReplicaWriter {
    fn drop(&mut self) {
        if !self.done && self.failed {
            self.store.release(self.block_id, None);
        } else if !self.done {
            // Left for recovery with whatever was flushed.
            if let Err(e) = self.flush(false) {
                tracing::warn!(block_id = self.block_id, error = %e, "could not flush a replica left unfinished");
            }
            self.store.release(self.block_id, None);
        }
    }
}

/// Positional reads of one replica, verified chunk by chunk.
/// A finalized replica as a reader on this host reads it (see
/// [`BlockStore::local_replica`]).
pub struct LocalReplica {
    pub data_path: PathBuf,
    pub length: u64,
    pub gen_stamp: u64,
    /// The data key of an encrypted replica.
    pub data_key: Option<[u8; 32]>,
    /// Per 64 KiB chunk, 28 bytes: CRC32C of the stored bytes, length, writer session and
    /// AES-GCM tag (little-endian; session and tag zero for a plain replica).
    pub records: Vec<u8>,
}

pub struct ReplicaReader {
    block_id: u64,
    gen_stamp: u64,
    length: u64,
    data: File,
    meta: File,
    /// The data key of an encrypted replica.
    key: Option<DataKey>,
}

impl ReplicaReader {
    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn gen_stamp(&self) -> u64 {
        self.gen_stamp
    }

    /// Tells the kernel `len` bytes at `offset` will be read soon, so it reads them ahead
    /// (a reader opened per request starts with no read-ahead history).
    pub fn will_read(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        // SAFETY: an advisory call on a file descriptor we own; errors are harmless.
        unsafe {
            libc::posix_fadvise(self.data.as_raw_fd(), offset as i64, len as i64, libc::POSIX_FADV_WILLNEED);
        }
    }

    /// Reads `len` bytes at `offset`, verifying every chunk the range touches.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let block_id = self.block_id;
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.length);
        let Some(end) = end else {
            return Err(DatanodeError::OutOfRange { block_id, offset, len: len as u64, length: self.length });
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let chunk = CHUNK_BYTES as u64;
        let first = offset / chunk;
        let last = (end - 1) / chunk;
        let start = first * chunk;
        if let Some(key) = &self.key {
            return self.read_sealed(key, offset, len, first, last);
        }
        let stop = ((last + 1) * chunk).min(self.length);
        let mut buf = tarn_client::fileio::read_exact_at(&self.data, (stop - start) as usize, start).map_err(|e| {
            DatanodeError::Corrupt { block_id, detail: format!("read {}+{}: {e}", start, stop - start) }
        })?;
        let crcs = read_crcs(block_id, &self.meta, first, (last - first + 1) as usize)?;
        for (i, (piece, want)) in buf.chunks(CHUNK_BYTES).zip(crcs).enumerate() {
            let got = crc32c::crc32c(piece);
            if got != want {
                return Err(DatanodeError::Corrupt {
                    block_id,
                    detail: format!(
                        "checksum mismatch in chunk {} (stored {want:08x}, computed {got:08x})",
                        first + i as u64
                    ),
                });
            }
        }
        let skip = (offset - start) as usize;
        buf.drain(..skip);
        buf.truncate(len);
        Ok(buf)
    }

    /// [`ReplicaReader::read_at`] of an encrypted replica: decrypts only the chunks the
    /// range touches, each checked against its CRC and its tag.
    fn read_sealed(&self, key: &DataKey, offset: u64, len: usize, first: u64, last: u64) -> Result<Vec<u8>> {
        let block_id = self.block_id;
        let chunk = CHUNK_BYTES as u64;
        let start = first * chunk;
        let recs = read_records(block_id, &self.meta, first, (last - first + 1) as usize)?;
        if let Some((i, r)) = recs.iter().enumerate().find(|(_, r)| r.len == 0 || r.len as usize > CHUNK_BYTES) {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("chunk {} records {} bytes", first + i as u64, r.len),
            });
        }
        // Every chunk is whole but the replica's last, which a writer may have grown since
        // this reader looked: its record says how long it is now.
        let stored: u64 = recs.iter().map(|r| u64::from(r.len)).sum();
        let mut buf = tarn_client::fileio::read_exact_at(&self.data, stored as usize, start)
            .map_err(|e| DatanodeError::Corrupt { block_id, detail: format!("read {start}+{stored}: {e}") })?;
        let mut at = 0usize;
        for (i, r) in recs.iter().enumerate() {
            let idx = first + i as u64;
            let n = r.len as usize;
            let whole = idx < last || (idx + 1) * chunk <= self.length;
            if n == 0 || n > CHUNK_BYTES || (whole && n != CHUNK_BYTES) {
                return Err(DatanodeError::Corrupt { block_id, detail: format!("chunk {idx} records {n} bytes") });
            }
            let piece = &mut buf[at..at + n];
            let got = crc32c::crc32c(piece);
            if got != r.crc {
                return Err(DatanodeError::Corrupt {
                    block_id,
                    detail: format!("checksum mismatch in chunk {idx} (stored {:08x}, computed {got:08x})", r.crc),
                });
            }
            key.open_chunk(idx, r.session, piece, &r.tag)?;
            at += n;
        }
        let skip = (offset - start) as usize;
        if skip + len > buf.len() {
            return Err(DatanodeError::Corrupt {
                block_id,
                detail: format!("chunks hold {} bytes from {start}, {} asked for", buf.len(), skip + len),
            });
        }
        buf.drain(..skip);
        buf.truncate(len);
        Ok(buf)
    }
}
