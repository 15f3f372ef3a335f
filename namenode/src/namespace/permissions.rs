//! Permission checks, HDFS's model: owner / group / other bits of each inode's mode, search
//! (x) on every directory above a path, the sticky bit on directories, and groups kept in
//! the replicated state (`tarn admin groups`).
//!
//! Changes are checked by [`Namespace::authorize`] while the state machine applies them
//! ([`Op::As`]), in the same transaction as the change itself, so what was checked is what
//! is changed. Queries check on the read view they answer from.
//!
//! | operation | needs |
//! |---|---|
//! | mkdirs, create, put a small file | w+x on the deepest existing directory above; replacing a file: w on it |
//! | exclusive mkdir | as mkdirs; owned by the caller, in one of its groups |
//! | delete | w+x on the parent; a non-empty directory: r+w+x on every directory in it |
//! | rename | w+x on both parents |
//! | concat | r on each source and w+x on its parent; the destination as create |
//! | set replication, recover lease | w on the file |
//! | chmod, touch, xattrs | being the owner; chgrp: the owner, to a group of theirs |
//! | chown, quotas, groups | the superuser |
//! | read bytes | r on the file; list: r+x on the directory; content summary: r+x on every directory |
//!
//! In a sticky directory (mode 0o1000, like `/tmp`), an entry is removed, renamed or
//! replaced only by its owner or the directory's. Everything also needs x on the
//! directories above the path.

use std::collections::HashMap;

use super::*;

/// The sticky bit of a directory's mode.
pub const STICKY: u32 = 0o1000;

/// `sm_meta` keys of group memberships: `PREFIX_MEMBERS` group NUL user and
/// `PREFIX_GROUPS` user NUL group (both directions, each a prefix scan).
const PREFIX_MEMBERS: &[u8] = b"group/m/";
const PREFIX_GROUPS: &[u8] = b"group/u/";

fn membership_key(prefix: &[u8], a: &str, b: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

/// User and group names: what a certificate may carry (1 to 64 of A-Z a-z 0-9 . _ -).
pub fn check_principal(kind: &str, name: &str) -> Result<(), FsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FsError::InvalidArgument(format!(
            "{kind} name {name:?}: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )))
    }
}

fn denied(who: &Caller, path: String, action: impl Into<String>) -> FsError {
    FsError::PermissionDenied { path, user: who.user.clone(), action: action.into() }
}

impl<K: KvRead> Namespace<'_, K> {
    /// The groups `user` is a member of, besides the group named like the user (every user
    /// has one, as with Unix user private groups).
    pub fn groups_of(&self, user: &str) -> Result<Vec<String>, FsError> {
        let prefix = membership_key(PREFIX_GROUPS, user, "");
        let end = prefix_end(&prefix);
        let mut out = vec![user.to_string()];
        self.kv.scan(CF_SM_META, &prefix, end.as_deref(), &mut |k, _| {
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every group with its members, by name.
    pub fn all_groups(&self) -> Result<Vec<(String, Vec<String>)>, FsError> {
        let end = prefix_end(PREFIX_MEMBERS);
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        self.kv.scan(CF_SM_META, PREFIX_MEMBERS, end.as_deref(), &mut |k, _| {
            let rest = String::from_utf8_lossy(&k[PREFIX_MEMBERS.len()..]).into_owned();
            let (group, user) = rest.split_once('\0').unwrap_or((&rest, ""));
            match out.last_mut() {
                Some((g, members)) if g == group => members.push(user.to_string()),
                _ => out.push((group.to_string(), vec![user.to_string()])),
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// `who` with the groups the namespace gives its user (none needed for the superuser).
    pub fn with_groups(&self, who: &Caller) -> Result<Caller, FsError> {
        if who.superuser {
            return Ok(who.clone());
        }
        Ok(Caller { user: who.user.clone(), groups: self.groups_of(&who.user)?, superuser: false })
    }

    /// The inodes along `parts` from the root, as far as they exist (the root first; the
    /// walk stops at a file).
    fn chain(&self, parts: &[&str]) -> Result<Vec<Inode>, FsError> {
        let mut out = vec![self.inode(ROOT_ID)?];
        for name in parts {
            let cur = &out[out.len() - 1];
            if !cur.is_dir() {
                break;
            }
            match self.lookup(cur.id, name)? {
                Some(id) => out.push(self.inode(id)?),
                None => break,
            }
        }
        Ok(out)
    }

    /// x on every directory of `chain` before index `at`, and `want` on `chain[at]`.
    fn require(
        &self,
        who: &Caller,
        parts: &[&str],
        chain: &[Inode],
        at: usize,
        want: u32,
        action: &str,
    ) -> Result<(), FsError> {
        for (i, dir) in chain.iter().enumerate().take(at) {
            if !who.may(dir, EXECUTE) {
                return Err(denied(who, join(&parts[..i]), "search it"));
            }
        }
        if !who.may(&chain[at], want) {
            return Err(denied(who, join(&parts[..at]), action));
        }
        Ok(())
    }

    /// In a sticky directory only the entry's owner or the directory's may remove or
    /// replace the entry.
    fn require_sticky(&self, who: &Caller, path: &str, dir: &Inode, entry: &Inode) -> Result<(), FsError> {
        if dir.mode & STICKY != 0 && who.user != dir.owner && who.user != entry.owner {
            return Err(denied(
                who,
                path.to_string(),
                format!("remove or replace it (owned by {}, in a sticky directory)", entry.owner),
            ));
        }
        Ok(())
    }

    /// Making `path` (with missing parents) and, if a file is there, replacing it.
    fn require_create(&self, who: &Caller, path: &str, replace: bool) -> Result<(), FsError> {
        let parts = components(path)?;
        let chain = self.chain(&parts)?;
        let last = chain.len() - 1;
        if chain.len() == parts.len() + 1 {
            if chain[last].is_dir() {
                // mkdirs of a directory that exists (or a create that fails on it).
                return self.require(who, &parts, &chain, last, 0, "see it");
            }
            // A file: w+x on its directory, w on it when it is replaced.
            self.require(who, &parts, &chain, last - 1, WRITE | EXECUTE, "create in it")?;
            if replace {
                self.require(who, &parts, &chain, last, WRITE, "replace it")?;
                self.require_sticky(who, path, &chain[last - 1], &chain[last])?;
            }
            return Ok(());
        }
        if !chain[last].is_dir() {
            // The operation fails (a file is in the way), told only to who may see it.
            return self.require(who, &parts, &chain, last, 0, "see it");
        }
        self.require(who, &parts, &chain, last, WRITE | EXECUTE, "create in it")
    }

    /// Removing (or moving away) the entry at `path`: w+x on its directory and the sticky
    /// rule. Returns the entry, if it exists.
    fn require_remove(&self, who: &Caller, path: &str, action: &str) -> Result<Option<Found>, FsError> {
        let parts = components(path)?;
        if parts.is_empty() {
            return Ok(None); // The operation refuses the root.
        }
        let chain = self.chain(&parts)?;
        let last = chain.len() - 1;
        if chain.len() < parts.len() + 1 {
            // Absent: finding that out needs search on the directories that exist.
            return self
                .require(who, &parts, &chain, last, if chain[last].is_dir() { EXECUTE } else { 0 }, "search it")
                .map(|_| None);
        }
        self.require(who, &parts, &chain, last - 1, WRITE | EXECUTE, action)?;
        self.require_sticky(who, path, &chain[last - 1], &chain[last])?;
        Ok(Some(Found { path: join(&parts), inode: chain[last].clone() }))
    }

    /// `want` on the inode at `path` (which must exist for the check to ask anything).
    fn require_on(&self, who: &Caller, path: &str, want: u32, action: &str) -> Result<(), FsError> {
        let parts = components(path)?;
        let chain = self.chain(&parts)?;
        let last = chain.len() - 1;
        let want = if chain.len() == parts.len() + 1 {
            want
        } else if chain[last].is_dir() {
            EXECUTE
        } else {
            0
        };
        self.require(who, &parts, &chain, last, want, action)
    }

    /// `want` on every directory under `found` (itself included).
    pub fn check_subtree(&self, found: &Found, who: &Caller, want: u32, action: &str) -> Result<(), FsError> {
        if who.superuser || !found.inode.is_dir() {
            return Ok(());
        }
        if !who.may(&found.inode, want) {
            return Err(denied(who, found.path.clone(), action));
        }
        self.for_subtree(&found.path, &mut |page| {
            for (key, id, kind) in page {
                if *kind == Kind::Directory {
                    let dir = self.inode(*id)?;
                    if !who.may(&dir, want) {
                        let p = String::from_utf8_lossy(key);
                        return Err(denied(who, p.trim_end_matches('/').to_string(), action));
                    }
                }
            }
            Ok(())
        })
    }

    /// For a lookup of `path`: search permission on the directories above it (whether it
    /// exists or not).
    pub fn check_lookup(&self, who: &Caller, path: &str) -> Result<(), FsError> {
        if who.superuser {
            return Ok(());
        }
        self.require_on(who, path, 0, "see it")
    }

    /// Whether `who` may apply `op` to the current state (see the module's table).
    pub fn authorize(&self, who: &Caller, op: &Op) -> Result<(), FsError> {
        if who.superuser {
            return Ok(());
        }
        let superuser_only = |what: &str| Err(denied(who, "/".into(), format!("{what} (the superuser may)")));
        match op {
            Op::Mkdirs { path, .. } => self.require_create(who, path, false),
            // As mkdirs; the directory may be given only to the caller and one of its groups.
            Op::MkdirExclusive(m) => {
                if m.owner != who.user {
                    return Err(denied(who, m.path.clone(), format!("give it to {} (the superuser may)", m.owner)));
                }
                if !m.group.is_empty() && !who.groups.contains(&m.group) {
                    return Err(denied(
                        who,
                        m.path.clone(),
                        format!("give it to group {} (not one of theirs)", m.group),
                    ));
                }
                if let Some(d) = &m.require_dir {
                    self.require_on(who, d, 0, "see it")?;
                }
                self.require_create(who, &m.path, false)
            }
            Op::Create(c) => self.require_create(who, &c.path, c.overwrite || c.expected_file_id.is_some()),
            // The lease holder alone may change a file being written (its user is in the
            // holder's name); publishing it elsewhere is a concat of it.
            Op::Complete { path, file_id, publish: Some(p), .. } => {
                let c = ConcatOp { sources: vec![(path.clone(), *file_id)], ..p.clone() };
                self.authorize(who, &Op::Concat(c))
            }
            Op::AddBlock { .. } | Op::Complete { .. } | Op::UpdatePipeline { .. } => Ok(()),
            Op::Delete { path, recursive, .. } => {
                if let Some(f) = self.require_remove(who, path, "delete from it")? {
                    if *recursive && f.inode.is_dir() && self.has_children(f.inode.id)? {
                        self.check_subtree(&f, who, READ | WRITE | EXECUTE, "delete what is in it")?;
                    }
                }
                Ok(())
            }
            Op::Rename(r) => {
                if self.require_remove(who, &r.src, "move out of it")?.is_some() {
                    let replace = r.overwrite || r.dst_expected_file_id.is_some();
                    match self.resolve(&r.dst)? {
                        Some(_) if replace => {
                            self.require_remove(who, &r.dst, "move into it")?;
                        }
                        _ => self.require_create(who, &r.dst, false)?,
                    }
                }
                Ok(())
            }
            Op::Concat(c) => {
                for (src, _) in &c.sources {
                    self.require_on(who, src, READ, "read it")?;
                    self.require_remove(who, src, "move out of it")?;
                }
                self.require_create(who, &c.dst, c.overwrite || c.dst_expected_file_id.is_some())
            }
            // A new file with its bytes: what a create (replacing one or not) asks.
            Op::PutInline(p) => {
                let c = &p.publish;
                self.require_create(who, &c.dst, c.overwrite || c.dst_expected_file_id.is_some())
            }
            Op::SetReplication { path, .. } => self.require_on(who, path, WRITE, "change its replication"),
            Op::RecoverLease { file_id, .. } => match self.get_inode(*file_id)? {
                Some(_) => self.require_on(who, &self.path_of(*file_id)?, WRITE, "recover its lease"),
                None => Ok(()),
            },
            Op::SetAttributes(a) => {
                self.require_on(who, &a.path, 0, "see it")?;
                let Some(f) = self.resolve(&a.path)? else { return Ok(()) };
                if a.owner.as_ref().is_some_and(|o| *o != f.inode.owner) {
                    return Err(denied(who, f.path, "change its owner (the superuser may)"));
                }
                if f.inode.owner != who.user {
                    return Err(denied(who, f.path, format!("change its attributes (owned by {})", f.inode.owner)));
                }
                if let Some(g) = a.group.as_ref().filter(|g| **g != f.inode.group) {
                    if !who.groups.contains(g) {
                        return Err(denied(who, f.path, format!("give it to group {g} (not one of theirs)")));
                    }
                }
                Ok(())
            }
            Op::SetQuota { .. } => superuser_only("set quotas"),
            Op::SetDecommission { .. } | Op::ForgetInvalid { .. } => superuser_only("administer datanodes"),
            Op::ChangeGroup { .. } => superuser_only("change groups"),
            Op::AddBlockKey { .. } => superuser_only("make block keys"),
            Op::EnsureSystemDirs => superuser_only("make the system's directories"),
            Op::ResealInline { .. } => superuser_only("re-seal small files"),
            Op::SetClusterFormat { .. } => superuser_only("raise the cluster's format"),
            Op::As { .. } => Err(FsError::InvalidArgument("an operation on behalf of a user cannot nest".into())),
        }
    }
}

/// Mutations of the group table.
impl<K: KvWrite> Namespace<'_, K> {
    pub fn change_group(&self, group: &str, add: &[String], remove: &[String]) -> OpResult {
        check_principal("group", group)?;
        for u in add.iter().chain(remove) {
            check_principal("user", u)?;
        }
        for u in remove {
            self.kv.delete(CF_SM_META, &membership_key(PREFIX_MEMBERS, group, u))?;
            self.kv.delete(CF_SM_META, &membership_key(PREFIX_GROUPS, u, group))?;
        }
        for u in add {
            self.kv.put(CF_SM_META, &membership_key(PREFIX_MEMBERS, group, u), b"")?;
            self.kv.put(CF_SM_META, &membership_key(PREFIX_GROUPS, u, group), b"")?;
        }
        Ok(OpOutput::Done)
    }
}

/// What one caller may see of a recursive listing: a directory's entries are visible when
/// the caller may list it (r+x) and search every directory above it. Answers are cached
/// per directory for one listing.
pub struct Sight<'c> {
    who: &'c Caller,
    searchable: HashMap<u64, bool>,
    listable: HashMap<u64, bool>,
}

impl<'c> Sight<'c> {
    pub fn new(who: &'c Caller) -> Self {
        Sight { who, searchable: HashMap::new(), listable: HashMap::new() }
    }

    /// Whether the caller may search `dir` and every directory above it.
    pub fn searchable<K: KvRead>(&mut self, ns: &Namespace<'_, K>, dir: u64) -> Result<bool, FsError> {
        if let Some(v) = self.searchable.get(&dir) {
            return Ok(*v);
        }
        let inode = ns.inode(dir)?;
        let v = self.who.may(&inode, EXECUTE) && (dir == ROOT_ID || self.searchable(ns, inode.parent)?);
        self.searchable.insert(dir, v);
        Ok(v)
    }

    /// Whether the caller may see the entries of directory `dir`.
    pub fn listable<K: KvRead>(&mut self, ns: &Namespace<'_, K>, dir: u64) -> Result<bool, FsError> {
        if self.who.superuser {
            return Ok(true);
        }
        if let Some(v) = self.listable.get(&dir) {
            return Ok(*v);
        }
        let inode = ns.inode(dir)?;
        let v = self.who.may(&inode, READ | EXECUTE) && self.searchable(ns, dir)?;
        self.listable.insert(dir, v);
        Ok(v)
    }
}
