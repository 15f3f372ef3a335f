//! The namespace: path resolution, queries, and the operations the state machine applies.
//!
//! **Architecture invariant:** this module does no network I/O and reads no clock: it sees
//! only the key-value views of `kv` and the leader's timestamp carried in each command, so
//! every replica that applies the same log computes the same namespace.

use std::cell::Cell;

mod permissions;
pub use permissions::{check_principal, Sight, STICKY};

use crate::error::FsError;
use crate::kv::{KvRead, KvWrite};
use crate::path::{self, components, join};
use crate::records::*;
use crate::types::{ConcatOp, CreateOp, MkdirOp, Op, OpOutput, OpResult, PutInlineOp, RenameOp, SetAttributesOp};

/// Keys of `sm_meta`.
pub const META_NEXT_INODE: &[u8] = b"next_inode";
pub const META_NEXT_BLOCK: &[u8] = b"next_block";
/// The datanodes being drained (a bincode set of uuids).
pub const META_DECOMMISSION: &[u8] = b"decommission";
pub const META_NEXT_GENERATION: &[u8] = b"next_generation";
/// Number of directories with a quota: when zero, operations skip the ancestor walk.
pub const META_QUOTA_DIRS: &[u8] = b"quota_dirs";
/// The keys that sign block access tokens (a bincode list, oldest first).
pub const META_BLOCK_KEYS: &[u8] = b"block_keys";

/// The system's own directory (made with the root).
pub const SYSTEM_DIR: &str = "/.tarn";
/// Where clients stage files before publishing them with a rename (mode 1733).
pub const STAGING_DIR: &str = "/.tarn/tmp";
/// Where workers keep applications' logs, one directory per user (mode 1777).
pub const LOGS_DIR: &str = "/.tarn/logs";
/// Where jobs keep their records, one directory per user (mode 1777).
pub const JOBS_DIR: &str = "/.tarn/jobs";
/// The resource managers' lease and applications' records (theirs, mode 0700).
pub const RM_DIR: &str = "/.tarn/rm";
/// The table catalog: a directory per database, one per table in it (mode 1777).
pub const CATALOG_DIR: &str = "/.tarn/catalog";
/// Spark Connect sessions, one private directory per user (mode 1777).
pub const CONNECT_DIR: &str = "/.tarn/connect";
/// The catalog's default database (mode 1777: anyone adds tables, owners drop them).
pub const CATALOG_DEFAULT_DIR: &str = "/.tarn/catalog/default";

/// Rows handled per page when walking a subtree, so that memory stays bounded.
const SUBTREE_PAGE_ROWS: usize = 4096;
/// Extended attributes per inode, in bytes (names plus values).
pub const XATTR_BYTES_MAX: usize = 64 * 1024;
pub const REPLICATION_MAX: u16 = 512;
/// Largest block: keeps every size computation far from overflow.
pub const BLOCK_SIZE_MAX: u64 = 1 << 40;
/// Largest file kept in the namespace (its bytes before sealing); larger ones go to blocks.
pub const INLINE_MAX: u64 = 64 * 1024;
/// An inline file's id and its kept (sealed) bytes.
pub type KeptFile = (u64, Vec<u8>);

/// What sealing may add to an inline file's bytes (header, key material, tag).
pub const INLINE_SEAL_OVERHEAD_MAX: usize = 256;

/// One row of a subtree walk: the `paths` key, the inode id and its kind.
pub type SubtreeRow = (Vec<u8>, u64, Kind);
type PageFn<'f> = dyn FnMut(&[SubtreeRow]) -> Result<(), FsError> + 'f;

/// What may happen to an existing destination (rename, concat).
#[derive(Debug, Clone, Copy)]
struct DstRule {
    overwrite: bool,
    must_be_absent: bool,
    expected_file_id: Option<u64>,
}

/// A file or directory found by path: its normalized path and inode.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: String,
    pub inode: Inode,
}

/// Permission bits asked for (HDFS's model: the owner, group and other triplets of a mode).
pub const READ: u32 = 4;
pub const WRITE: u32 = 2;
pub const EXECUTE: u32 = 1;

/// Who asks, for permission checks.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    /// Passes every check (the cluster's admin, a daemon acting as itself, dev mode).
    pub superuser: bool,
}

impl Caller {
    /// Whether `inode`'s mode gives this caller every bit of `want`.
    pub fn may(&self, inode: &Inode, want: u32) -> bool {
        if self.superuser {
            return true;
        }
        let bits = if inode.owner == self.user {
            inode.mode >> 6
        } else if self.groups.contains(&inode.group) {
            inode.mode >> 3
        } else {
            inode.mode
        } & 7;
        bits & want == want
    }
}

/// Counts of a subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub directories: u64,
    pub length: u64,
    pub space: u64,
}

/// The namespace seen through a key-value view. Counters are cached for one command and
/// written back by [`Namespace::flush_counters`].
pub struct Namespace<'a, K> {
    kv: &'a K,
    now_ms: u64,
    next_inode: Cell<Option<u64>>,
    next_block: Cell<Option<u64>>,
    next_generation: Cell<Option<u64>>,
    quota_dirs: Cell<Option<u64>>,
}

impl<'a, K: KvRead> Namespace<'a, K> {
    pub fn new(kv: &'a K, now_ms: u64) -> Self {
        Namespace {
            kv,
            now_ms,
            next_inode: Cell::new(None),
            next_block: Cell::new(None),
            next_generation: Cell::new(None),
            quota_dirs: Cell::new(None),
        }
    }

    pub fn get_inode(&self, id: u64) -> Result<Option<Inode>, FsError> {
        match self.kv.get(CF_INODES, &id_key(id))? {
            Some(v) => Ok(Some(decode("inode", &v)?)),
            None => Ok(None),
        }
    }

    fn inode(&self, id: u64) -> Result<Inode, FsError> {
        self.get_inode(id)?.ok_or_else(|| FsError::Storage(format!("dangling reference to inode {id}")))
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Option<u64>, FsError> {
        match self.kv.get(CF_DENTRIES, &dentry_key(parent, name))? {
            Some(v) => Ok(Some(parse_u64("dentry", &v)?)),
            None => Ok(None),
        }
    }

    /// Walks `parts` from the root. `Ok(None)` if some component is missing; an error if a
    /// component other than the last is a file.
    pub fn resolve_parts(&self, parts: &[&str]) -> Result<Option<Inode>, FsError> {
        let mut cur = self.inode(ROOT_ID)?;
        for (i, name) in parts.iter().enumerate() {
            if !cur.is_dir() {
                return Err(FsError::NotADirectory { path: join(&parts[..i]) });
            }
            match self.lookup(cur.id, name)? {
                Some(id) => cur = self.inode(id)?,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Checks that `who` may search every directory above `f` and has `want` on `f`
    /// itself (`action` says what was refused). The superuser skips the walk.
    pub fn check_access(&self, f: &Found, who: &Caller, want: u32, action: &str) -> Result<(), FsError> {
        if who.superuser {
            return Ok(());
        }
        let denied = |path: String, action: String| FsError::PermissionDenied { path, user: who.user.clone(), action };
        let parts = components(&f.path)?;
        let mut cur = self.inode(ROOT_ID)?;
        for (i, name) in parts.iter().enumerate() {
            if !who.may(&cur, EXECUTE) {
                return Err(denied(join(&parts[..i]), "search it".into()));
            }
            match self.lookup(cur.id, name)? {
                Some(id) if i + 1 < parts.len() => cur = self.inode(id)?,
                _ => break,
            }
        }
        if !who.may(&f.inode, want) {
            return Err(denied(f.path.clone(), action.into()));
        }
        Ok(())
    }

    pub fn resolve(&self, path_str: &str) -> Result<Option<Found>, FsError> {
        let parts = components(path_str)?;
        let path = join(&parts);
        // The paths index maps a full path to its inode in one read (two point reads in
        // all, instead of two per component).
        for kind in [Kind::File, Kind::Directory] {
            if let Some(v) = self.kv.get(CF_PATHS, &path_key(&path, kind))? {
                let (id, _) = parse_path_value(&v)?;
                return Ok(Some(Found { path, inode: self.inode(id)? }));
            }
        }
        // Absent: the walk tells a missing path from one under a file.
        Ok(self.resolve_parts(&parts)?.map(|inode| Found { path, inode }))
    }

    /// A block by id: the block record, its file's inode, and whether it is the file's open
    /// last block. `None` if no file has it (deleted, or never committed).
    pub fn block_by_id(&self, block_id: u64) -> Result<Option<(BlockRec, Inode, bool)>, FsError> {
        let Some(loc) = self.kv.get(CF_BLOCKMAP, &id_key(block_id))? else { return Ok(None) };
        if loc.len() != 12 {
            return Err(FsError::Storage(format!("blockmap entry of block {block_id} has {} bytes", loc.len())));
        }
        let file = parse_u64("blockmap", &loc[..8])?;
        let index = u32::from_be_bytes([loc[8], loc[9], loc[10], loc[11]]);
        let Some(b) = self.kv.get(CF_BLOCKS, &block_key(file, index))? else { return Ok(None) };
        let b: BlockRec = decode("block", &b)?;
        let inode = self.inode(file)?;
        let open = inode.last_block_open && index + 1 == inode.block_count;
        Ok(Some((b, inode, open)))
    }

    /// The datanodes being drained.
    /// The block keys, oldest first.
    pub fn block_keys(&self) -> Result<Vec<tarn_security::BlockKey>, FsError> {
        match self.kv.get(CF_SM_META, META_BLOCK_KEYS)? {
            Some(v) => decode("block keys", &v),
            None => Ok(Vec::new()),
        }
    }

    /// The format the group writes in (see `crate::upgrade`; absent: 0, a group formed
    /// before formats had versions).
    pub fn cluster_format(&self) -> Result<u8, FsError> {
        match self.kv.get(CF_SM_META, crate::format::META_CLUSTER_FORMAT)? {
            Some(v) => v.first().copied().ok_or_else(|| FsError::Storage("empty cluster format".into())),
            None => Ok(0),
        }
    }

    pub fn decommissioning(&self) -> Result<std::collections::BTreeSet<String>, FsError> {
        match self.kv.get(CF_SM_META, META_DECOMMISSION)? {
            Some(v) => decode("decommission set", &v),
            None => Ok(Default::default()),
        }
    }

    /// Visits every block of every file in (file id, index) order until `f` says stop.
    pub fn visit_blocks(&self, f: &mut dyn FnMut(u64, BlockRec) -> Result<bool, FsError>) -> Result<(), FsError> {
        self.kv.scan(CF_BLOCKS, &[], None, &mut |k, v| {
            let file = parse_u64("block key", k)?;
            f(file, decode("block", v)?)
        })
    }

    /// Up to `limit` block ids queued for replica deletion.
    pub fn invalid_blocks(&self, limit: usize) -> Result<Vec<u64>, FsError> {
        let mut ids = Vec::new();
        self.kv.scan(CF_INVALID, &[], None, &mut |k, _| {
            ids.push(parse_u64("invalid", k)?);
            Ok(ids.len() < limit)
        })?;
        Ok(ids)
    }

    /// The directory at `parts`, which must exist (for the parent of `path`).
    fn resolve_dir(&self, parts: &[&str], path: &str) -> Result<Inode, FsError> {
        match self.resolve_parts(parts)? {
            Some(d) if d.is_dir() => Ok(d),
            Some(_) => Err(FsError::NotADirectory { path: join(parts) }),
            None => Err(FsError::ParentNotFound { path: path.to_string() }),
        }
    }

    /// The full path of an inode, by walking parent pointers (for messages).
    pub fn path_of(&self, mut id: u64) -> Result<String, FsError> {
        let mut names = Vec::new();
        while id != ROOT_ID {
            let inode = self.inode(id)?;
            names.push(inode.name);
            id = inode.parent;
        }
        names.reverse();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(join(&refs))
    }

    pub fn has_children(&self, dir: u64) -> Result<bool, FsError> {
        let start = id_key(dir);
        let end = id_key(dir + 1);
        let mut any = false;
        self.kv.scan(CF_DENTRIES, &start, Some(&end), &mut |_, _| {
            any = true;
            Ok(false)
        })?;
        Ok(any)
    }

    /// Children of `dir` after `start_after`, by name; `limit` of them and whether more remain.
    pub fn list_dir(&self, dir: u64, start_after: &str, limit: usize) -> Result<(Vec<Inode>, bool), FsError> {
        let mut start = dentry_key(dir, start_after);
        if !start_after.is_empty() {
            start.push(0);
        }
        let end = id_key(dir + 1);
        let mut out = Vec::new();
        let mut more = false;
        self.kv.scan(CF_DENTRIES, &start, Some(&end), &mut |_, v| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            out.push(self.inode(parse_u64("dentry", v)?)?);
            Ok(true)
        })?;
        Ok((out, more))
    }

    /// Every entry whose `paths` key starts with `prefix`, after `start_after`, in byte order.
    pub fn list_recursive(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
        include_directories: bool,
    ) -> Result<(Vec<(String, Inode)>, bool), FsError> {
        self.list_tree(prefix, start_after, limit, include_directories, false, None)
    }

    /// Entries whose `paths` key (directories end in '/') starts with `prefix`, after
    /// `start_after`, in byte order: S3's listing order. With `collapse`, a directory is
    /// listed once and its contents skipped (S3's delimiter '/'), and a `start_after` that
    /// names a directory (ends in '/') resumes after its contents. With `sight`, only
    /// entries of directories the caller may list are returned, and the contents of
    /// directories it may not are skipped over.
    pub fn list_tree(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
        include_directories: bool,
        collapse: bool,
        mut sight: Option<&mut Sight<'_>>,
    ) -> Result<(Vec<(String, Inode)>, bool), FsError> {
        let end = prefix_end(prefix.as_bytes());
        let mut start: Vec<u8> = if start_after.as_bytes() > prefix.as_bytes() {
            start_after.as_bytes().to_vec()
        } else {
            prefix.as_bytes().to_vec()
        };
        if collapse && start_after.ends_with('/') && start_after.as_bytes() > prefix.as_bytes() {
            match prefix_end(start_after.as_bytes()) {
                Some(e) => start = e,
                None => return Ok((Vec::new(), false)),
            }
        }
        let mut out = Vec::new();
        let mut more = false;
        loop {
            // Set when a collapsed directory ends this scan: the next one starts past it.
            let mut resume: Option<Vec<u8>> = None;
            self.kv.scan(CF_PATHS, &start, end.as_deref(), &mut |k, v| {
                // The directory being listed is not one of its own entries when collapsing.
                if k == start_after.as_bytes() || (collapse && k == prefix.as_bytes()) {
                    return Ok(true);
                }
                let (id, kind) = parse_path_value(v)?;
                let is_dir = kind == Kind::Directory;
                let mut inode = None;
                // What the caller may not list is passed over: its contents whole.
                let mut hidden_below = false;
                if let Some(sight) = sight.as_deref_mut() {
                    let i = self.inode(id)?;
                    if k == prefix.as_bytes() {
                        // The directory being listed is looked up, not listed in its parent:
                        // search permission above it suffices to see it.
                        if !sight.searchable(self, i.parent)? {
                            return Ok(false);
                        }
                    } else if !sight.listable(self, i.parent)? {
                        // Past everything in the parent directory.
                        let own = if is_dir { &k[..k.len() - 1] } else { k };
                        let cut = own.iter().rposition(|b| *b == b'/').unwrap_or(0);
                        resume = prefix_end(&k[..=cut]);
                        return Ok(false);
                    }
                    hidden_below = is_dir && !sight.listable(self, id)?;
                    inode = Some(i);
                }
                if is_dir && !include_directories && !collapse {
                    if hidden_below {
                        resume = prefix_end(k);
                        return Ok(false);
                    }
                    return Ok(true);
                }
                if out.len() == limit {
                    more = true;
                    return Ok(false);
                }
                let p = String::from_utf8(k.to_vec()).map_err(|_| FsError::Storage("non-UTF-8 path key".into()))?;
                out.push((
                    p,
                    match inode {
                        Some(i) => i,
                        None => self.inode(id)?,
                    },
                ));
                if is_dir && (collapse || hidden_below) {
                    resume = prefix_end(k);
                    return Ok(false);
                }
                Ok(true)
            })?;
            match resume {
                Some(r) if !more => start = r,
                _ => break,
            }
        }
        Ok((out, more))
    }

    /// The kept (sealed) bytes of an inline file.
    pub fn inline_data(&self, file: u64) -> Result<Option<Vec<u8>>, FsError> {
        self.kv.get(CF_INLINE, &id_key(file))
    }

    /// Up to `limit` inline files after file id `after`, in id order, with their kept
    /// bytes; and whether there are more.
    pub fn inline_page(&self, after: Option<u64>, limit: usize) -> Result<(Vec<KeptFile>, bool), FsError> {
        let start = match after {
            Some(u64::MAX) => return Ok((Vec::new(), false)),
            Some(a) => id_key(a + 1),
            None => id_key(0),
        };
        let mut out = Vec::new();
        let mut more = false;
        self.kv.scan(CF_INLINE, &start, None, &mut |k, v| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            let id = u64::from_be_bytes(k.try_into().map_err(|_| FsError::Storage("a bad inline key".into()))?);
            out.push((id, v.to_vec()));
            Ok(true)
        })?;
        Ok((out, more))
    }

    pub fn get_blocks(&self, file: u64, start_index: u32, limit: usize) -> Result<(Vec<BlockRec>, bool), FsError> {
        let start = block_key(file, start_index);
        let end = id_key(file + 1);
        let mut out = Vec::new();
        let mut more = false;
        self.kv.scan(CF_BLOCKS, &start, Some(&end), &mut |_, v| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            out.push(decode("block", v)?);
            Ok(true)
        })?;
        Ok((out, more))
    }

    /// Walks the subtree under the directory `path` (excluding the directory itself) in
    /// pages, handing each page of `(paths key, id, kind)` to `f`.
    fn for_subtree(&self, path: &str, f: &mut PageFn<'_>) -> Result<(), FsError> {
        let prefix = path_key(path, Kind::Directory);
        let end = prefix_end(&prefix);
        let mut cursor = prefix.clone();
        loop {
            let mut page = Vec::new();
            let skip = cursor.clone();
            self.kv.scan(CF_PATHS, &cursor, end.as_deref(), &mut |k, v| {
                if k == skip.as_slice() {
                    return Ok(true);
                }
                let (id, kind) = parse_path_value(v)?;
                page.push((k.to_vec(), id, kind));
                Ok(page.len() < SUBTREE_PAGE_ROWS)
            })?;
            let Some(last) = page.last().map(|p| p.0.clone()) else { return Ok(()) };
            f(&page)?;
            if page.len() < SUBTREE_PAGE_ROWS {
                return Ok(());
            }
            cursor = last;
        }
    }

    /// Files, directories, bytes and quota space under `found` (itself included).
    pub fn summarize(&self, found: &Found) -> Result<Summary, FsError> {
        let mut s = Summary::default();
        let mut add = |inode: &Inode| {
            if inode.is_dir() {
                s.directories += 1;
            } else {
                s.files += 1;
                s.length += inode.length;
                s.space += inode.space_charged;
            }
        };
        add(&found.inode);
        if found.inode.is_dir() {
            self.for_subtree(&found.path, &mut |page| {
                for (_, id, _) in page {
                    add(&self.inode(*id)?);
                }
                Ok(())
            })?;
        }
        Ok(s)
    }

    fn meta_u64(&self, key: &[u8], cache: &Cell<Option<u64>>, default: u64) -> Result<u64, FsError> {
        if let Some(v) = cache.get() {
            return Ok(v);
        }
        let v = match self.kv.get(CF_SM_META, key)? {
            Some(v) => parse_u64("sm_meta counter", &v)?,
            None => default,
        };
        cache.set(Some(v));
        Ok(v)
    }

    /// The cached counters, to restore when an operation is rolled back.
    pub fn save_counters(&self) -> [Option<u64>; 4] {
        [self.next_inode.get(), self.next_block.get(), self.next_generation.get(), self.quota_dirs.get()]
    }

    pub fn restore_counters(&self, c: [Option<u64>; 4]) {
        self.next_inode.set(c[0]);
        self.next_block.set(c[1]);
        self.next_generation.set(c[2]);
        self.quota_dirs.set(c[3]);
    }

    fn quota_dirs(&self) -> Result<u64, FsError> {
        self.meta_u64(META_QUOTA_DIRS, &self.quota_dirs, 0)
    }
}

/// Mutations: only through a transaction.
impl<'a, K: KvWrite> Namespace<'a, K> {
    /// Creates the root directory if the namespace is empty.
    pub fn init_root(&self) -> Result<(), FsError> {
        if self.get_inode(ROOT_ID)?.is_some() {
            return Ok(());
        }
        let root = new_dir(ROOT_ID, ROOT_ID, "", 0o755, "root", "supergroup", 0);
        self.put_inode(&root)?;
        self.kv.put(CF_SM_META, META_NEXT_INODE, &(ROOT_ID + 1).to_be_bytes())?;
        Ok(())
    }

    /// Writes cached counters back; call once after the command's operations.
    pub fn flush_counters(&self) -> Result<(), FsError> {
        for (key, cell) in [
            (META_NEXT_INODE, &self.next_inode),
            (META_NEXT_BLOCK, &self.next_block),
            (META_NEXT_GENERATION, &self.next_generation),
            (META_QUOTA_DIRS, &self.quota_dirs),
        ] {
            if let Some(v) = cell.get() {
                self.kv.put(CF_SM_META, key, &v.to_be_bytes())?;
            }
        }
        Ok(())
    }

    fn next(&self, key: &[u8], cache: &Cell<Option<u64>>) -> Result<u64, FsError> {
        let v = self.meta_u64(key, cache, 1)?;
        cache.set(Some(v + 1));
        Ok(v)
    }

    fn put_inode(&self, inode: &Inode) -> Result<(), FsError> {
        self.kv.put(CF_INODES, &id_key(inode.id), &encode(inode))
    }

    /// Applies one operation. On error the caller rolls the transaction back to the
    /// savepoint it set before, so a refused operation leaves nothing behind.
    pub fn apply(&self, op: &Op) -> OpResult {
        match op {
            Op::Mkdirs { path, mode, owner, group } => {
                let parts = components(path)?;
                let dir = self.mkdirs(&parts, *mode, owner, group, false)?;
                Ok(OpOutput::Inode(Box::new(dir)))
            }
            Op::Create(c) => {
                let created = self.create(c)?;
                if !c.allocate_block {
                    return Ok(created);
                }
                let OpOutput::Inode(file) = created else { return Ok(created) };
                match self.add_block(&c.path, file.id, &c.client_name, None)? {
                    OpOutput::Block(b) => {
                        let file = self.inode(file.id)?;
                        Ok(OpOutput::Created(Box::new(file), b))
                    }
                    other => Ok(other),
                }
            }
            Op::AddBlock { path, file_id, client_name, previous_block_length } => {
                self.add_block(path, *file_id, client_name, *previous_block_length)
            }
            Op::Complete { path, file_id, client_name, last_block_length, xattrs, publish } => {
                let done = self.complete(path, *file_id, client_name, *last_block_length, xattrs)?;
                match publish {
                    None => Ok(done),
                    // The closed file becomes `dst`, under the publish's conditions; if they
                    // fail, the complete is undone with it (one operation).
                    Some(p) => self.concat(&ConcatOp { sources: vec![(path.clone(), *file_id)], ..p.clone() }),
                }
            }
            Op::Delete { path, recursive, expected_file_id } => self.delete(path, *recursive, *expected_file_id),
            Op::Rename(r) => self.rename(r),
            Op::Concat(c) => self.concat(c),
            Op::SetReplication { path, replication } => self.set_replication(path, *replication),
            Op::SetQuota { path, namespace_quota, space_quota } => self.set_quota(path, *namespace_quota, *space_quota),
            Op::SetAttributes(a) => self.set_attributes(a),
            Op::RecoverLease { file_id, holder, last_block_length } => {
                self.recover_lease(*file_id, holder.as_deref(), *last_block_length)
            }
            Op::UpdatePipeline { path, file_id, client_name, block_id } => {
                self.update_pipeline(path, *file_id, client_name, *block_id)
            }
            Op::SetDecommission { uuid, on } => {
                let mut set = self.decommissioning()?;
                if *on {
                    set.insert(uuid.clone());
                } else {
                    set.remove(uuid);
                }
                self.kv.put(CF_SM_META, META_DECOMMISSION, &encode(&set))?;
                Ok(OpOutput::Done)
            }
            Op::ForgetInvalid { block_ids } => {
                for id in block_ids {
                    self.kv.delete(CF_INVALID, &id_key(*id))?;
                }
                Ok(OpOutput::Done)
            }
            Op::As { user, op } => {
                check_principal("user", user)?;
                let who = self.with_groups(&Caller { user: user.clone(), groups: Vec::new(), superuser: false })?;
                self.authorize(&who, op)?;
                self.apply(op)
            }
            Op::ChangeGroup { group, add, remove } => self.change_group(group, add, remove),
            Op::EnsureSystemDirs => {
                // The system's directory, and in it the staging area every user writes to
                // (like /tmp, sticky; others may not list it: a staged file's name is its
                // secret). Made through the log, so every replica has the same inodes.
                for (path, mode) in [(SYSTEM_DIR, 0o755), (STAGING_DIR, 0o1733)] {
                    if self.resolve(path)?.is_none() {
                        self.mkdirs(&components(path)?, mode, "root", "supergroup", false)?;
                    }
                }
                Ok(OpOutput::Done)
            }
            Op::PutInline(p) => self.put_inline(p),
            Op::MkdirExclusive(m) => self.mkdir_exclusive(m),
            Op::SetClusterFormat { format } => {
                if *format > self.cluster_format()? {
                    self.kv.put(CF_SM_META, crate::format::META_CLUSTER_FORMAT, &[*format])?;
                }
                Ok(OpOutput::Done)
            }
            Op::ResealInline { file_id, seal_id, sealed } => self.reseal_inline(*file_id, seal_id, sealed),
            Op::AddBlockKey { key } => {
                let mut keys = self.block_keys()?;
                keys.push(key.clone());
                keys.sort_by_key(|k| k.id);
                let drop = keys.len().saturating_sub(tarn_security::block_token::KEYS_KEPT);
                keys.drain(..drop);
                self.kv.put(CF_SM_META, META_BLOCK_KEYS, &encode(&keys))?;
                Ok(OpOutput::Done)
            }
        }
    }

    /// Adds `ns` inodes and `space` bytes to every directory with a quota from `start`
    /// up to (not including) `stop_at`, or to the root. Checks quotas when growing.
    fn charge(&self, start: u64, stop_at: Option<u64>, ns: i64, space: i64, check: bool) -> Result<(), FsError> {
        if (ns == 0 && space == 0) || self.quota_dirs()? == 0 {
            return Ok(());
        }
        let mut id = start;
        loop {
            if Some(id) == stop_at {
                return Ok(());
            }
            let mut dir = self.inode(id)?;
            if let Some(q) = dir.quota.as_mut() {
                let ns_new = q.namespace_used.saturating_add_signed(ns);
                let space_new = q.space_used.saturating_add_signed(space);
                if check {
                    if let Some(limit) = q.namespace_quota.filter(|&l| ns > 0 && ns_new > l) {
                        return Err(self.quota_error(id, "namespace", limit, ns_new));
                    }
                    if let Some(limit) = q.space_quota.filter(|&l| space > 0 && space_new > l) {
                        return Err(self.quota_error(id, "space", limit, space_new));
                    }
                }
                q.namespace_used = ns_new;
                q.space_used = space_new;
                self.put_inode(&dir)?;
            }
            if id == ROOT_ID {
                return Ok(());
            }
            id = dir.parent;
        }
    }

    fn quota_error(&self, dir: u64, kind: &str, quota: u64, would_use: u64) -> FsError {
        let path = self.path_of(dir).unwrap_or_else(|_| format!("inode {dir}"));
        FsError::QuotaExceeded { path, kind: kind.to_string(), quota, would_use }
    }

    fn touch(&self, id: u64) -> Result<(), FsError> {
        let mut dir = self.inode(id)?;
        dir.mtime_ms = self.now_ms;
        self.put_inode(&dir)
    }

    /// Creates missing directories along `parts`. `for_parent`: the last component is the
    /// parent of something being created, so a file there is "not a directory".
    fn mkdirs(&self, parts: &[&str], mode: u32, owner: &str, group: &str, for_parent: bool) -> Result<Inode, FsError> {
        let mut cur = self.inode(ROOT_ID)?;
        for (i, name) in parts.iter().enumerate() {
            match self.lookup(cur.id, name)? {
                Some(id) => {
                    let next = self.inode(id)?;
                    if !next.is_dir() {
                        let p = join(&parts[..=i]);
                        return Err(if i + 1 == parts.len() && !for_parent {
                            FsError::AlreadyExists { path: p }
                        } else {
                            FsError::NotADirectory { path: p }
                        });
                    }
                    cur = next;
                }
                None => {
                    let dir = new_dir(0, cur.id, name, mode, owner, "", self.now_ms);
                    cur = self.add_dir(&cur, dir, group, &join(&parts[..=i]))?;
                }
            }
        }
        Ok(cur)
    }

    /// Puts `dir` (its id still to be given) into `parent` at `path`: charged to the
    /// quotas above, with the parent's group unless `group` names one.
    fn add_dir(&self, parent: &Inode, mut dir: Inode, group: &str, path: &str) -> Result<Inode, FsError> {
        self.charge(parent.id, None, 1, 0, true)?;
        dir.id = self.next(META_NEXT_INODE, &self.next_inode)?;
        dir.group = if group.is_empty() { parent.group.clone() } else { group.to_string() };
        self.put_inode(&dir)?;
        self.kv.put(CF_DENTRIES, &dentry_key(parent.id, &dir.name), &id_key(dir.id))?;
        self.kv.put(CF_PATHS, &path_key(path, Kind::Directory), &path_value(dir.id, Kind::Directory))?;
        self.touch(parent.id)?;
        Ok(dir)
    }

    /// [`Op::MkdirExclusive`]: the directory with its owner, group, mode and attributes
    /// (and the missing directories above it, the same owner's), only if nothing is at its
    /// path. Refused, changing nothing, with [`FsError::AlreadyOwned`] when a directory of
    /// the same owner is there, else [`FsError::AlreadyExists`].
    fn mkdir_exclusive(&self, op: &MkdirOp) -> OpResult {
        let parts = components(&op.path)?;
        let path = join(&parts);
        check_principal("owner", &op.owner)?;
        if !op.group.is_empty() {
            check_principal("group", &op.group)?;
        }
        check_xattrs(&op.xattrs)?;
        self.check_required_dir(op.require_dir.as_deref())?;
        let Some((name, parent_parts)) = parts.split_last() else {
            return Err(FsError::AlreadyExists { path });
        };
        let parent = match self.resolve_parts(parent_parts)? {
            Some(p) if p.is_dir() => p,
            Some(_) => return Err(FsError::NotADirectory { path: join(parent_parts) }),
            None => self.mkdirs(parent_parts, 0o755, &op.owner, &op.group, true)?,
        };
        if let Some(id) = self.lookup(parent.id, name)? {
            let there = self.inode(id)?;
            return Err(if there.is_dir() && there.owner == op.owner {
                FsError::AlreadyOwned { path, owner: there.owner }
            } else {
                FsError::AlreadyExists { path }
            });
        }
        let mut dir = new_dir(0, parent.id, name, op.mode, &op.owner, "", self.now_ms);
        dir.xattrs = op.xattrs.clone();
        let dir = self.add_dir(&parent, dir, &op.group, &path)?;
        Ok(OpOutput::Inode(Box::new(dir)))
    }

    fn create(&self, op: &CreateOp) -> OpResult {
        let parts = components(&op.path)?;
        let Some((name, parent_parts)) = parts.split_last() else {
            return Err(FsError::IsADirectory { path: "/".into() });
        };
        let path = join(&parts);
        check_layout(op.replication, op.block_size)?;
        check_xattrs(&op.xattrs)?;
        let parent = if op.create_parent {
            self.mkdirs(parent_parts, 0o755, &op.owner, &op.group, true)?
        } else {
            self.resolve_dir(parent_parts, &path)?
        };
        match self.lookup(parent.id, name)? {
            Some(id) => {
                let existing = self.inode(id)?;
                if existing.is_dir() {
                    return Err(FsError::IsADirectory { path });
                }
                if let Some(expected) = op.expected_file_id {
                    if expected != existing.id {
                        return Err(FsError::condition(
                            &path,
                            format!("file id {expected}"),
                            format!("file id {}", existing.id),
                        ));
                    }
                } else if !op.overwrite {
                    return Err(FsError::AlreadyExists { path });
                }
                let other = existing.writer.as_ref().filter(|h| **h != op.client_name);
                if let Some(holder) = other.filter(|h| op.take_over_from.as_ref() != Some(*h)) {
                    return Err(FsError::LeaseConflict { path, holder: holder.clone() });
                }
                self.remove_file(&path, &existing)?;
            }
            None => {
                if let Some(expected) = op.expected_file_id {
                    return Err(FsError::condition(&path, format!("file id {expected}"), "no file"));
                }
            }
        }
        self.charge(parent.id, None, 1, 0, true)?;
        let id = self.next(META_NEXT_INODE, &self.next_inode)?;
        let file = Inode {
            id,
            parent: parent.id,
            name: name.to_string(),
            kind: Kind::File,
            mode: op.mode & 0o7777,
            owner: op.owner.clone(),
            // HDFS's (and BSD's) rule: a new entry belongs to its directory's group.
            group: if op.group.is_empty() { parent.group.clone() } else { op.group.clone() },
            mtime_ms: self.now_ms,
            replication: op.replication,
            block_size: op.block_size,
            length: 0,
            block_count: 0,
            last_block_open: false,
            writer: Some(op.client_name.clone()),
            space_charged: 0,
            quota: None,
            xattrs: op.xattrs.clone(),
        };
        self.put_inode(&file)?;
        self.kv.put(CF_DENTRIES, &dentry_key(parent.id, name), &id_key(id))?;
        self.kv.put(CF_PATHS, &path_key(&path, Kind::File), &path_value(id, Kind::File))?;
        self.kv.put(CF_UC, &id_key(id), op.client_name.as_bytes())?;
        self.touch(parent.id)?;
        Ok(OpOutput::Inode(Box::new(file)))
    }

    /// The file at `path` that `client` is writing, as file `file_id`.
    fn open_file(&self, path: &str, file_id: u64, client: &str) -> Result<Inode, FsError> {
        let found = self.resolve(path)?.ok_or_else(|| FsError::not_found(path))?;
        let f = found.inode;
        let refuse =
            |reason: String| FsError::NotLeaseHolder { path: path.to_string(), client: client.to_string(), reason };
        if f.is_dir() {
            return Err(FsError::IsADirectory { path: path.to_string() });
        }
        if f.id != file_id {
            return Err(refuse(format!("the file is now file id {}, not {file_id}", f.id)));
        }
        match &f.writer {
            Some(h) if h == client => Ok(f),
            Some(h) => Err(refuse(format!("held by {h}"))),
            None => Err(refuse("the file is closed".into())),
        }
    }

    fn update_pipeline(&self, path: &str, file_id: u64, client: &str, block_id: u64) -> OpResult {
        let f = self.open_file(path, file_id, client)?;
        let key = block_key(f.id, f.block_count.saturating_sub(1));
        let last = match self.kv.get(CF_BLOCKS, &key)? {
            Some(v) if f.last_block_open => Some(decode::<BlockRec>("block", &v)?),
            _ => None,
        };
        let mut b = last.filter(|b| b.block_id == block_id).ok_or_else(|| {
            FsError::InvalidArgument(format!("{path}: block {block_id} is not the block being written"))
        })?;
        b.generation = self.next(META_NEXT_GENERATION, &self.next_generation)?;
        self.kv.put(CF_BLOCKS, &key, &encode(&b))?;
        Ok(OpOutput::Block(b))
    }

    /// Records the final length of the open last block.
    fn finalize_last_block(&self, f: &mut Inode, length: u64) -> Result<(), FsError> {
        if length > f.block_size {
            return Err(FsError::InvalidArgument(format!("block length {length} exceeds block size {}", f.block_size)));
        }
        let key = block_key(f.id, f.block_count - 1);
        let mut b: BlockRec = decode(
            "block",
            &self
                .kv
                .get(CF_BLOCKS, &key)?
                .ok_or_else(|| FsError::Storage(format!("file {} misses block {}", f.id, f.block_count - 1)))?,
        )?;
        b.length = length;
        self.kv.put(CF_BLOCKS, &key, &encode(&b))?;
        f.length = f.length.saturating_add(length);
        f.last_block_open = false;
        Ok(())
    }

    /// Re-charges a file after its blocks or replication changed.
    fn recharge(&self, f: &mut Inode, check: bool) -> Result<(), FsError> {
        let new = f.compute_charge();
        let delta = (new as i128 - f.space_charged as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.charge(f.parent, None, 0, delta, check)?;
        f.space_charged = new;
        Ok(())
    }

    fn add_block(&self, path: &str, file_id: u64, client: &str, previous: Option<u64>) -> OpResult {
        let mut f = self.open_file(path, file_id, client)?;
        if f.last_block_open {
            let len = previous.ok_or_else(|| {
                FsError::InvalidArgument("the previous block's length is required to add a block".into())
            })?;
            self.finalize_last_block(&mut f, len)?;
        }
        let block = BlockRec {
            block_id: self.next(META_NEXT_BLOCK, &self.next_block)?,
            generation: self.next(META_NEXT_GENERATION, &self.next_generation)?,
            length: 0,
            index: f.block_count,
        };
        self.kv.put(CF_BLOCKS, &block_key(f.id, block.index), &encode(&block))?;
        let mut loc = id_key(f.id).to_vec();
        loc.extend_from_slice(&block.index.to_be_bytes());
        self.kv.put(CF_BLOCKMAP, &id_key(block.block_id), &loc)?;
        f.block_count += 1;
        f.last_block_open = true;
        self.recharge(&mut f, true)?;
        self.put_inode(&f)?;
        Ok(OpOutput::Block(block))
    }

    fn complete(
        &self,
        path: &str,
        file_id: u64,
        client: &str,
        last: Option<u64>,
        xattrs: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> OpResult {
        let mut f = self.open_file(path, file_id, client)?;
        if f.last_block_open {
            let len = last.ok_or_else(|| {
                FsError::InvalidArgument("the last block's length is required to complete the file".into())
            })?;
            self.finalize_last_block(&mut f, len)?;
        }
        f.xattrs.extend(xattrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        check_xattrs(&f.xattrs)?;
        f.writer = None;
        f.mtime_ms = self.now_ms;
        self.recharge(&mut f, false)?;
        self.kv.delete(CF_UC, &id_key(f.id))?;
        self.put_inode(&f)?;
        Ok(OpOutput::Inode(Box::new(f)))
    }

    /// Deletes a file's blocks, queueing their replicas for deletion on datanodes.
    fn drop_blocks(&self, file: u64) -> Result<(), FsError> {
        let start = id_key(file);
        let end = id_key(file + 1);
        let mut ids = Vec::new();
        self.kv.scan(CF_BLOCKS, &start, Some(&end), &mut |k, v| {
            let b: BlockRec = decode("block", v)?;
            ids.push((k.to_vec(), b.block_id));
            Ok(true)
        })?;
        for (key, block_id) in ids {
            self.kv.delete(CF_BLOCKS, &key)?;
            self.kv.delete(CF_BLOCKMAP, &id_key(block_id))?;
            self.kv.put(CF_INVALID, &id_key(block_id), b"")?;
        }
        Ok(())
    }

    fn remove_file(&self, path: &str, f: &Inode) -> Result<(), FsError> {
        self.drop_blocks(f.id)?;
        if f.is_inline() {
            self.kv.delete(CF_INLINE, &id_key(f.id))?;
        }
        self.kv.delete(CF_INODES, &id_key(f.id))?;
        self.kv.delete(CF_DENTRIES, &dentry_key(f.parent, &f.name))?;
        self.kv.delete(CF_PATHS, &path_key(path, Kind::File))?;
        self.kv.delete(CF_UC, &id_key(f.id))?;
        self.charge(f.parent, None, -1, -(f.space_charged as i64), false)
    }

    /// Removes a directory and everything under it; returns the number of files removed.
    fn remove_dir(&self, path: &str, dir: &Inode) -> Result<u64, FsError> {
        let mut files = 0u64;
        let mut ns = 1i64;
        let mut space = 0i64;
        let mut quota_dirs = u64::from(dir.quota.is_some());
        self.for_subtree(path, &mut |page| {
            for (key, id, kind) in page {
                let inode = self.inode(*id)?;
                if *kind == Kind::File {
                    self.drop_blocks(*id)?;
                    if inode.is_inline() {
                        self.kv.delete(CF_INLINE, &id_key(*id))?;
                    }
                    self.kv.delete(CF_UC, &id_key(*id))?;
                    files += 1;
                    space = space.saturating_add(inode.space_charged as i64);
                }
                ns += 1;
                quota_dirs += u64::from(inode.quota.is_some());
                self.kv.delete(CF_INODES, &id_key(*id))?;
                self.kv.delete(CF_DENTRIES, &dentry_key(inode.parent, &inode.name))?;
                self.kv.delete(CF_PATHS, key)?;
            }
            Ok(())
        })?;
        if quota_dirs > 0 {
            self.quota_dirs.set(Some(self.quota_dirs()?.saturating_sub(quota_dirs)));
        }
        self.kv.delete(CF_INODES, &id_key(dir.id))?;
        self.kv.delete(CF_DENTRIES, &dentry_key(dir.parent, &dir.name))?;
        self.kv.delete(CF_PATHS, &path_key(path, Kind::Directory))?;
        self.charge(dir.parent, None, -ns, -space, false)?;
        Ok(files)
    }

    fn delete(&self, path_str: &str, recursive: bool, expected: Option<u64>) -> OpResult {
        let parts = components(path_str)?;
        if parts.is_empty() {
            return Err(FsError::InvalidArgument("cannot delete the root directory".into()));
        }
        let path = join(&parts);
        let Some(found) = self.resolve_parts(&parts)? else {
            if let Some(e) = expected {
                return Err(FsError::condition(&path, format!("file id {e}"), "no file"));
            }
            return Ok(OpOutput::Deleted { deleted: false, files: 0 });
        };
        if let Some(e) = expected.filter(|e| *e != found.id) {
            return Err(FsError::condition(&path, format!("file id {e}"), format!("file id {}", found.id)));
        }
        let files = if found.is_dir() {
            if !recursive && self.has_children(found.id)? {
                return Err(FsError::DirectoryNotEmpty { path });
            }
            self.remove_dir(&path, &found)?
        } else {
            self.remove_file(&path, &found)?;
            1
        };
        self.touch(found.parent)?;
        Ok(OpOutput::Deleted { deleted: true, files })
    }

    /// Namespace and space used by `found`'s subtree, itself included.
    fn usage(&self, found: &Found) -> Result<(u64, u64), FsError> {
        if !found.inode.is_dir() {
            return Ok((1, found.inode.space_charged));
        }
        if let Some(q) = &found.inode.quota {
            return Ok((q.namespace_used, q.space_used));
        }
        let s = self.summarize(found)?;
        Ok((s.files + s.directories, s.space))
    }

    /// Ids from `id` up to the root, inclusive.
    fn ancestors(&self, mut id: u64) -> Result<Vec<u64>, FsError> {
        let mut out = vec![id];
        while id != ROOT_ID {
            id = self.inode(id)?.parent;
            out.push(id);
        }
        Ok(out)
    }

    fn rename(&self, op: &RenameOp) -> OpResult {
        let src_parts = components(&op.src)?;
        let dst_parts = components(&op.dst)?;
        let (Some((src_name, src_pp)), Some((dst_name, dst_pp))) = (src_parts.split_last(), dst_parts.split_last())
        else {
            return Err(FsError::InvalidArgument("cannot rename the root directory".into()));
        };
        let (src, dst) = (join(&src_parts), join(&dst_parts));
        if src != dst && path::is_within(&dst, &src) {
            return Err(FsError::RenameIntoSelf { src, dst });
        }
        let src_parent = match self.resolve_parts(src_pp)? {
            Some(d) if d.is_dir() => d,
            _ => return Err(FsError::not_found(&src)),
        };
        let id = self.lookup(src_parent.id, src_name)?.ok_or_else(|| FsError::not_found(&src))?;
        let mut inode = self.inode(id)?;
        if let Some(e) = op.src_expected_file_id.filter(|e| *e != inode.id) {
            return Err(FsError::condition(&src, format!("file id {e}"), format!("file id {}", inode.id)));
        }
        let dst_parent = self.resolve_dir(dst_pp, &dst)?;
        if let Some(existing_id) = self.lookup(dst_parent.id, dst_name)? {
            let existing = self.inode(existing_id)?;
            if src == dst {
                if op.dst_must_be_absent {
                    return Err(FsError::condition(&dst, "no file", format!("file id {}", existing.id)));
                }
                if let Some(e) = op.dst_expected_file_id.filter(|e| *e != existing.id) {
                    return Err(FsError::condition(&dst, format!("file id {e}"), format!("file id {}", existing.id)));
                }
                return Ok(OpOutput::Inode(Box::new(inode)));
            }
            let rule = DstRule {
                overwrite: op.overwrite,
                must_be_absent: op.dst_must_be_absent,
                expected_file_id: op.dst_expected_file_id,
            };
            self.clear_target(rule, &dst, inode.is_dir(), &existing)?;
        } else if let Some(e) = op.dst_expected_file_id {
            return Err(FsError::condition(&dst, format!("file id {e}"), "no file"));
        }
        if self.quota_dirs()? > 0 {
            let (ns, space) = self.usage(&Found { path: src.clone(), inode: inode.clone() })?;
            let src_chain = self.ancestors(src_parent.id)?;
            let dst_chain = self.ancestors(dst_parent.id)?;
            let common = src_chain.iter().find(|a| dst_chain.contains(a)).copied();
            self.charge(dst_parent.id, common, ns as i64, space as i64, true)?;
            self.charge(src_parent.id, common, -(ns as i64), -(space as i64), false)?;
            inode = self.inode(id)?;
        }
        self.kv.delete(CF_DENTRIES, &dentry_key(src_parent.id, src_name))?;
        self.kv.put(CF_DENTRIES, &dentry_key(dst_parent.id, dst_name), &id_key(id))?;
        inode.parent = dst_parent.id;
        inode.name = dst_name.to_string();
        self.put_inode(&inode)?;
        self.kv.delete(CF_PATHS, &path_key(&src, inode.kind))?;
        self.kv.put(CF_PATHS, &path_key(&dst, inode.kind), &path_value(id, inode.kind))?;
        if inode.is_dir() {
            self.move_subtree_paths(&src, &dst)?;
        }
        self.touch(src_parent.id)?;
        self.touch(dst_parent.id)?;
        Ok(OpOutput::Inode(Box::new(inode)))
    }

    fn concat(&self, op: &ConcatOp) -> OpResult {
        let parts = components(&op.dst)?;
        let Some((name, parent_parts)) = parts.split_last() else {
            return Err(FsError::IsADirectory { path: "/".into() });
        };
        let dst = join(&parts);
        if op.sources.is_empty() {
            return Err(FsError::InvalidArgument("concat needs at least one source file".into()));
        }
        self.check_required_dir(op.require_dir.as_deref())?;
        check_xattrs(&op.xattrs)?;
        // Every source must be a closed file that still has the expected id.
        let mut sources = Vec::with_capacity(op.sources.len());
        for (src, expected) in &op.sources {
            let src = join(&components(src)?);
            let f = self.resolve(&src)?.ok_or_else(|| FsError::not_found(&src))?.inode;
            if f.is_dir() {
                return Err(FsError::IsADirectory { path: src });
            }
            if f.id != *expected {
                return Err(FsError::condition(&src, format!("file id {expected}"), format!("file id {}", f.id)));
            }
            if let Some(h) = &f.writer {
                return Err(FsError::LeaseConflict { path: src, holder: h.clone() });
            }
            if f.is_inline() {
                return Err(FsError::InvalidArgument(format!(
                    "{src} is a small file kept in the namespace, not in blocks: concat joins block files \
                     (copy it into a new file first)"
                )));
            }
            if src == dst {
                return Err(FsError::InvalidArgument(format!("{src} is both a source and the destination")));
            }
            if sources.iter().any(|(_, s): &(String, Inode)| s.id == f.id) {
                return Err(FsError::InvalidArgument(format!("{src} is listed twice")));
            }
            sources.push((src, f));
        }
        let parent = if op.create_parent {
            self.mkdirs(parent_parts, 0o755, &op.owner, &op.group, true)?
        } else {
            self.resolve_dir(parent_parts, &dst)?
        };
        self.clear_publish_target(op, &parent, name, &dst)?;
        let id = self.next(META_NEXT_INODE, &self.next_inode)?;
        let mut file = Inode {
            id,
            parent: parent.id,
            name: name.to_string(),
            kind: Kind::File,
            mode: op.mode & 0o7777,
            owner: op.owner.clone(),
            // HDFS's (and BSD's) rule: a new entry belongs to its directory's group.
            group: if op.group.is_empty() { parent.group.clone() } else { op.group.clone() },
            mtime_ms: self.now_ms,
            replication: sources.iter().map(|(_, f)| f.replication).max().unwrap_or(1),
            block_size: sources.iter().map(|(_, f)| f.block_size).max().unwrap_or(1),
            length: 0,
            block_count: 0,
            last_block_open: false,
            writer: None,
            space_charged: 0,
            quota: None,
            xattrs: op.xattrs.clone(),
        };
        // Move each source's blocks to the new file, then drop the source's inode (its
        // blocks now belong to the new file and are not invalidated).
        for (src, f) in &sources {
            let (start, end) = (id_key(f.id), id_key(f.id + 1));
            let mut blocks = Vec::new();
            self.kv.scan(CF_BLOCKS, &start, Some(&end), &mut |k, v| {
                blocks.push((k.to_vec(), decode::<BlockRec>("block", v)?));
                Ok(true)
            })?;
            for (key, mut b) in blocks {
                self.kv.delete(CF_BLOCKS, &key)?;
                b.index = file.block_count;
                file.block_count += 1;
                file.length = file.length.saturating_add(b.length);
                self.kv.put(CF_BLOCKS, &block_key(id, b.index), &encode(&b))?;
                let mut loc = id_key(id).to_vec();
                loc.extend_from_slice(&b.index.to_be_bytes());
                self.kv.put(CF_BLOCKMAP, &id_key(b.block_id), &loc)?;
            }
            self.kv.delete(CF_INODES, &id_key(f.id))?;
            self.kv.delete(CF_DENTRIES, &dentry_key(f.parent, &f.name))?;
            self.kv.delete(CF_PATHS, &path_key(src, Kind::File))?;
            self.charge(f.parent, None, -1, -(f.space_charged as i64), false)?;
            self.touch(f.parent)?;
        }
        self.charge(parent.id, None, 1, 0, true)?;
        self.recharge(&mut file, true)?;
        self.put_inode(&file)?;
        self.kv.put(CF_DENTRIES, &dentry_key(parent.id, name), &id_key(id))?;
        self.kv.put(CF_PATHS, &path_key(&dst, Kind::File), &path_value(id, Kind::File))?;
        self.touch(parent.id)?;
        Ok(OpOutput::Inode(Box::new(file)))
    }

    /// The directory a publish (concat, inline put) requires, if it names one.
    fn check_required_dir(&self, require_dir: Option<&str>) -> Result<(), FsError> {
        if let Some(d) = require_dir {
            match self.resolve(&join(&components(d)?))? {
                Some(f) if f.inode.is_dir() => {}
                _ => return Err(FsError::not_found(d)),
            }
        }
        Ok(())
    }

    /// Checks a publish's conditions on what is now at `dst` (`name` in `parent`) and
    /// removes it if they allow.
    fn clear_publish_target(&self, op: &ConcatOp, parent: &Inode, name: &str, dst: &str) -> Result<(), FsError> {
        match self.lookup(parent.id, name)? {
            Some(id) => {
                let rule = DstRule {
                    overwrite: op.overwrite,
                    must_be_absent: op.dst_must_be_absent,
                    expected_file_id: op.dst_expected_file_id,
                };
                self.clear_target(rule, dst, false, &self.inode(id)?)
            }
            None => match op.dst_expected_file_id {
                Some(e) => Err(FsError::condition(dst, format!("file id {e}"), "no file")),
                None => Ok(()),
            },
        }
    }

    /// A closed small file at `publish.dst`, its (sealed) bytes kept in `inline`: one
    /// operation instead of create, block writes and complete.
    fn put_inline(&self, op: &PutInlineOp) -> OpResult {
        let c = &op.publish;
        let parts = components(&c.dst)?;
        let Some((name, parent_parts)) = parts.split_last() else {
            return Err(FsError::IsADirectory { path: "/".into() });
        };
        let dst = join(&parts);
        check_layout(op.replication, op.block_size)?;
        if op.length > INLINE_MAX || op.sealed.len() > INLINE_MAX as usize + INLINE_SEAL_OVERHEAD_MAX {
            return Err(FsError::InvalidArgument(format!(
                "{dst}: {} bytes is over the {INLINE_MAX} bytes a file kept in the namespace may hold",
                op.length
            )));
        }
        if (op.length == 0) != op.sealed.is_empty() {
            return Err(FsError::InvalidArgument(format!(
                "{dst}: kept bytes without a length, or a length without them"
            )));
        }
        self.check_required_dir(c.require_dir.as_deref())?;
        check_xattrs(&c.xattrs)?;
        let parent = if c.create_parent {
            self.mkdirs(parent_parts, 0o755, &c.owner, &c.group, true)?
        } else {
            self.resolve_dir(parent_parts, &dst)?
        };
        self.clear_publish_target(c, &parent, name, &dst)?;
        self.charge(parent.id, None, 1, 0, true)?;
        let id = self.next(META_NEXT_INODE, &self.next_inode)?;
        let mut file = Inode {
            id,
            parent: parent.id,
            name: name.to_string(),
            kind: Kind::File,
            mode: c.mode & 0o7777,
            owner: c.owner.clone(),
            group: if c.group.is_empty() { parent.group.clone() } else { c.group.clone() },
            mtime_ms: self.now_ms,
            replication: op.replication,
            block_size: op.block_size,
            length: op.length,
            block_count: 0,
            last_block_open: false,
            writer: None,
            space_charged: 0,
            quota: None,
            xattrs: c.xattrs.clone(),
        };
        self.recharge(&mut file, true)?;
        self.put_inode(&file)?;
        if file.is_inline() {
            self.kv.put(CF_INLINE, &id_key(id), &op.sealed)?;
        }
        self.kv.put(CF_DENTRIES, &dentry_key(parent.id, name), &id_key(id))?;
        self.kv.put(CF_PATHS, &path_key(&dst, Kind::File), &path_value(id, Kind::File))?;
        self.touch(parent.id)?;
        Ok(OpOutput::Inode(Box::new(file)))
    }

    fn reseal_inline(&self, file: u64, seal_id: &[u8], sealed: &[u8]) -> OpResult {
        if sealed.is_empty() || sealed.len() > INLINE_MAX as usize + INLINE_SEAL_OVERHEAD_MAX {
            return Err(FsError::InvalidArgument(format!(
                "file id {file}: {} bytes cannot be a small file's kept bytes",
                sealed.len()
            )));
        }
        // Gone, or written again since the leader read it: nothing to do.
        let Some(kept) = self.kv.get(CF_INLINE, &id_key(file))? else {
            return Ok(OpOutput::Resealed(false));
        };
        if seal_id.is_empty() || !kept.starts_with(seal_id) {
            return Ok(OpOutput::Resealed(false));
        }
        self.kv.put(CF_INLINE, &id_key(file), sealed)?;
        Ok(OpOutput::Resealed(true))
    }

    /// Checks the conditions on an existing destination (of a rename or concat) and removes
    /// it if allowed; `src_is_dir`: what takes its place is a directory.
    fn clear_target(&self, rule: DstRule, dst: &str, src_is_dir: bool, existing: &Inode) -> Result<(), FsError> {
        if rule.must_be_absent {
            return Err(FsError::condition(dst, "no file", format!("file id {}", existing.id)));
        }
        if let Some(e) = rule.expected_file_id {
            if e != existing.id {
                return Err(FsError::condition(dst, format!("file id {e}"), format!("file id {}", existing.id)));
            }
        } else if !rule.overwrite {
            return Err(FsError::AlreadyExists { path: dst.to_string() });
        }
        match (src_is_dir, existing.is_dir()) {
            (false, true) => return Err(FsError::IsADirectory { path: dst.to_string() }),
            (true, false) => return Err(FsError::NotADirectory { path: dst.to_string() }),
            _ => {}
        }
        if existing.is_dir() {
            if self.has_children(existing.id)? {
                return Err(FsError::DirectoryNotEmpty { path: dst.to_string() });
            }
            self.remove_dir(dst, existing)?;
        } else {
            if let Some(h) = &existing.writer {
                return Err(FsError::LeaseConflict { path: dst.to_string(), holder: h.clone() });
            }
            self.remove_file(dst, existing)?;
        }
        Ok(())
    }

    /// Rewrites the `paths` keys of every descendant of `src` to lie under `dst`.
    fn move_subtree_paths(&self, src: &str, dst: &str) -> Result<(), FsError> {
        let old_prefix = path_key(src, Kind::Directory);
        let new_prefix = path_key(dst, Kind::Directory);
        self.for_subtree(src, &mut |page| {
            for (key, id, kind) in page {
                let mut new_key = new_prefix.clone();
                new_key.extend_from_slice(&key[old_prefix.len()..]);
                self.kv.delete(CF_PATHS, key)?;
                self.kv.put(CF_PATHS, &new_key, &path_value(*id, *kind))?;
            }
            Ok(())
        })
    }

    fn set_replication(&self, path: &str, replication: u16) -> OpResult {
        if replication == 0 || replication > REPLICATION_MAX {
            return Err(FsError::InvalidArgument(format!("replication {replication} not in 1..={REPLICATION_MAX}")));
        }
        let found = self.resolve(path)?.ok_or_else(|| FsError::not_found(path))?;
        let mut f = found.inode;
        if f.is_dir() {
            return Err(FsError::IsADirectory { path: found.path });
        }
        f.replication = replication;
        self.recharge(&mut f, true)?;
        self.put_inode(&f)?;
        Ok(OpOutput::Inode(Box::new(f)))
    }

    fn set_quota(&self, path: &str, ns_quota: i64, space_quota: i64) -> OpResult {
        let found = self.resolve(path)?.ok_or_else(|| FsError::not_found(path))?;
        if !found.inode.is_dir() {
            return Err(FsError::NotADirectory { path: found.path });
        }
        let merge = |new: i64, old: Option<u64>| match new {
            -1 => Ok(None),
            0 => Ok(old),
            n if n > 0 => Ok(Some(n as u64)),
            n => Err(FsError::InvalidArgument(format!("quota {n}: use -1 to clear, 0 to keep, > 0 to set"))),
        };
        let old = found.inode.quota.clone();
        let ns = merge(ns_quota, old.as_ref().and_then(|q| q.namespace_quota))?;
        let space = merge(space_quota, old.as_ref().and_then(|q| q.space_quota))?;
        let mut dir = found.inode.clone();
        dir.quota = match (ns, space, old) {
            (None, None, old) => {
                if old.is_some() {
                    self.quota_dirs.set(Some(self.quota_dirs()?.saturating_sub(1)));
                }
                None
            }
            (ns, space, Some(q)) => Some(QuotaRec { namespace_quota: ns, space_quota: space, ..q }),
            (ns, space, None) => {
                let s = self.summarize(&found)?;
                self.quota_dirs.set(Some(self.quota_dirs()? + 1));
                Some(QuotaRec {
                    namespace_quota: ns,
                    space_quota: space,
                    namespace_used: s.files + s.directories,
                    space_used: s.space,
                })
            }
        };
        self.put_inode(&dir)?;
        Ok(OpOutput::Inode(Box::new(dir)))
    }

    fn set_attributes(&self, a: &SetAttributesOp) -> OpResult {
        let found = self.resolve(&a.path)?.ok_or_else(|| FsError::not_found(&a.path))?;
        let mut inode = found.inode;
        if let Some(e) = a.expected_file_id.filter(|e| *e != inode.id) {
            return Err(FsError::condition(&found.path, format!("file id {e}"), format!("file id {}", inode.id)));
        }
        if let Some(m) = a.mode {
            inode.mode = m & 0o7777;
        }
        if let Some(o) = &a.owner {
            inode.owner = o.clone();
        }
        if let Some(g) = &a.group {
            inode.group = g.clone();
        }
        if let Some(t) = a.mtime_ms {
            inode.mtime_ms = t;
        }
        for k in &a.remove_xattrs {
            inode.xattrs.remove(k);
        }
        inode.xattrs.extend(a.set_xattrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        check_xattrs(&inode.xattrs)?;
        self.put_inode(&inode)?;
        Ok(OpOutput::Inode(Box::new(inode)))
    }

    fn recover_lease(&self, file_id: u64, holder: Option<&str>, recovered: Option<u64>) -> OpResult {
        let Some(mut f) = self.get_inode(file_id)? else {
            return Ok(OpOutput::LeaseRecovered { closed: false });
        };
        match (&f.writer, holder) {
            (None, _) => return Ok(OpOutput::LeaseRecovered { closed: false }),
            (Some(w), Some(h)) if w != h => return Ok(OpOutput::LeaseRecovered { closed: false }),
            _ => {}
        }
        if let (true, Some(len)) = (f.last_block_open, recovered) {
            // Block recovery settled the open block's length on its replicas.
            self.finalize_last_block(&mut f, len)?;
        }
        if f.last_block_open {
            // No replica of the open block survived: the block is dropped.
            let key = block_key(f.id, f.block_count - 1);
            if let Some(v) = self.kv.get(CF_BLOCKS, &key)? {
                let b: BlockRec = decode("block", &v)?;
                self.kv.delete(CF_BLOCKS, &key)?;
                self.kv.delete(CF_BLOCKMAP, &id_key(b.block_id))?;
                self.kv.put(CF_INVALID, &id_key(b.block_id), b"")?;
            }
            f.block_count -= 1;
            f.last_block_open = false;
        }
        f.writer = None;
        self.recharge(&mut f, false)?;
        self.kv.delete(CF_UC, &id_key(f.id))?;
        self.put_inode(&f)?;
        Ok(OpOutput::LeaseRecovered { closed: true })
    }
}

fn new_dir(id: u64, parent: u64, name: &str, mode: u32, owner: &str, group: &str, now_ms: u64) -> Inode {
    Inode {
        id,
        parent,
        name: name.to_string(),
        kind: Kind::Directory,
        mode: mode & 0o7777,
        owner: owner.to_string(),
        group: group.to_string(),
        mtime_ms: now_ms,
        replication: 0,
        block_size: 0,
        length: 0,
        block_count: 0,
        last_block_open: false,
        writer: None,
        space_charged: 0,
        quota: None,
        xattrs: Default::default(),
    }
}

/// A new file's replication and block size are in range.
fn check_layout(replication: u16, block_size: u64) -> Result<(), FsError> {
    if replication == 0 || replication > REPLICATION_MAX {
        return Err(FsError::InvalidArgument(format!("replication {replication} not in 1..={REPLICATION_MAX}")));
    }
    if block_size == 0 || block_size > BLOCK_SIZE_MAX {
        return Err(FsError::InvalidArgument(format!("block size {block_size} not in 1..={BLOCK_SIZE_MAX}")));
    }
    Ok(())
}

fn check_xattrs(x: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<(), FsError> {
    let bytes: usize = x.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > XATTR_BYTES_MAX {
        return Err(FsError::InvalidArgument(format!(
            "extended attributes take {bytes} bytes, over {XATTR_BYTES_MAX}"
        )));
    }
    if let Some(k) = x.keys().find(|k| k.is_empty() || k.len() > 255) {
        return Err(FsError::InvalidArgument(format!("extended attribute name {k:?} must be 1..=255 bytes")));
    }
    Ok(())
}
