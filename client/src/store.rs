//! [`TarnStore`]: Tarn's file system as an [`object_store::ObjectStore`], so DataFusion and
//! any other `object_store` user read and write Tarn directly.
//!
//! - Object `a/b/c` is the file `/a/b/c` (under an optional root directory); directories
//!   appear as common prefixes in delimited listings.
//! - A put is atomic: the bytes go to a temporary file under `/.tarn/tmp/`, which one Raft
//!   operation renames onto the target — unconditionally (`Overwrite`), only if absent
//!   (`Create`), or only if the current file is the expected version (`Update`). Readers
//!   never see a partial object; a failed put leaves nothing.
//! - The version of an object is its file id (a new file on every put); the ETag is the
//!   same id in hex. Conditional gets (`If-Match`, `If-None-Match`, modified-since) compare
//!   against it.
//! - Multipart uploads stream parts, in the order `put_part` was called, into one temporary
//!   file; `complete` renames it into place, `abort` deletes it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions as OsRename,
    RenameTargetMode, UploadPart,
};
use tokio::sync::{mpsc, oneshot};

use crate::blocks::{FileReader, FileWriter};
use crate::{ClientError, ConcatOptions, CreateOptions, ErrorKind, FileStatus, NamenodeClient, RenameOptions};

const STORE: &str = "Tarn";
/// Where puts are staged before they are renamed into place.
const TMP_DIR: &str = "/.tarn/tmp";
/// Bytes per read of a get's stream.
const GET_PIECE_BYTES: u64 = 4 << 20;
/// Entries per listing call.
const LIST_PAGE: u32 = 1000;

/// Tarn as an object store.
#[derive(Clone)]
pub struct TarnStore {
    nn: Arc<NamenodeClient>,
    /// Objects live under this directory ("" for the root).
    root: String,
}

impl std::fmt::Debug for TarnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TarnStore({})", if self.root.is_empty() { "/" } else { &self.root })
    }
}

impl std::fmt::Display for TarnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tarn://{}", self.root)
    }
}

fn generic(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: e.into() }
}

/// An object-store error for a client error about `path`.
fn os_err(path: &str, e: ClientError) -> object_store::Error {
    let path = path.to_string();
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::ParentNotFound => object_store::Error::NotFound { path, source: e.into() },
        ErrorKind::AlreadyExists => object_store::Error::AlreadyExists { path, source: e.into() },
        ErrorKind::ConditionFailed => object_store::Error::Precondition { path, source: e.into() },
        ErrorKind::PermissionDenied => object_store::Error::PermissionDenied { path, source: e.into() },
        _ => generic(e),
    }
}

/// A refused conditional rename: "must be absent" failing means the object exists.
fn rename_err(dst: &str, r: &RenameOptions, e: ClientError) -> object_store::Error {
    if r.dst_must_be_absent && matches!(e.kind(), ErrorKind::ConditionFailed | ErrorKind::AlreadyExists) {
        return object_store::Error::AlreadyExists { path: dst.to_string(), source: e.into() };
    }
    os_err(dst, e)
}

fn e_tag(file_id: u64) -> String {
    format!("{file_id:x}")
}

fn modified(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64).single().unwrap_or_default()
}

impl TarnStore {
    /// Objects at the root of the namespace.
    pub fn new(nn: Arc<NamenodeClient>) -> Self {
        TarnStore { nn, root: String::new() }
    }

    /// Objects under directory `root` (e.g. `/warehouse`).
    pub fn with_root(nn: Arc<NamenodeClient>, root: &str) -> Self {
        TarnStore { nn, root: root.trim_end_matches('/').to_string() }
    }

    fn path_of(&self, location: &Path) -> String {
        format!("{}/{}", self.root, location.as_ref())
    }

    /// The object location of a full path under the root.
    fn location_of(&self, path: &str) -> object_store::Result<Path> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path).trim_start_matches('/');
        Path::parse(rel).map_err(Into::into)
    }

    fn meta(&self, s: &FileStatus, path: &str) -> object_store::Result<ObjectMeta> {
        Ok(ObjectMeta {
            location: self.location_of(path)?,
            last_modified: modified(s.mtime_ms),
            size: s.length,
            e_tag: Some(e_tag(s.file_id)),
            version: Some(s.file_id.to_string()),
        })
    }

    fn tmp_path() -> String {
        format!("{TMP_DIR}/{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
    }

    fn parent(path: &str) -> &str {
        match path.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((p, _)) => p,
        }
    }

    /// Moves a finished temporary file onto `dst` under `rename`'s condition; deletes it on
    /// failure, so nothing is left behind.
    async fn publish(
        &self,
        tmp: &str,
        file_id: u64,
        dst: &str,
        rename: RenameOptions,
    ) -> object_store::Result<PutResult> {
        let moved = async {
            self.nn.mkdirs(Self::parent(dst)).await?;
            self.nn.rename(tmp, dst, &rename).await
        }
        .await;
        match moved {
            Ok(_) => Ok(PutResult { e_tag: Some(e_tag(file_id)), version: Some(file_id.to_string()) }),
            Err(e) => {
                if let Err(d) = self.nn.delete(tmp, false, Some(file_id)).await {
                    tracing::warn!(path = %tmp, error = %d, "could not delete a staged object");
                }
                Err(rename_err(dst, &rename, e))
            }
        }
    }

    fn rename_for(mode: &PutMode, dst: &str) -> object_store::Result<RenameOptions> {
        Ok(match mode {
            PutMode::Overwrite => RenameOptions { overwrite: true, ..Default::default() },
            PutMode::Create => RenameOptions { dst_must_be_absent: true, ..Default::default() },
            PutMode::Update(v) => {
                let id = v
                    .version
                    .as_deref()
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| v.e_tag.as_deref().and_then(|t| u64::from_str_radix(t.trim_matches('"'), 16).ok()))
                    .ok_or_else(|| object_store::Error::Precondition {
                        path: dst.to_string(),
                        source: "an update needs the version or ETag this store returned".into(),
                    })?;
                RenameOptions { overwrite: true, dst_expected_file_id: Some(id), ..Default::default() }
            }
        })
    }

    async fn stat(&self, path: &str) -> object_store::Result<FileStatus> {
        match self.nn.get_file_info(path, false).await.map_err(|e| os_err(path, e))? {
            Some(s) if !s.is_dir() => Ok(s),
            _ => Err(object_store::Error::NotFound { path: path.into(), source: "no such object".into() }),
        }
    }
}

#[async_trait]
impl ObjectStore for TarnStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let dst = self.path_of(location);
        let rename = Self::rename_for(&opts.mode, &dst)?;
        if payload.content_length() <= crate::INLINE_MAX {
            // One namespace operation with the bytes, under the same condition; blocks if
            // the namenodes do not keep it.
            let o = ConcatOptions {
                overwrite: rename.overwrite,
                dst_must_be_absent: rename.dst_must_be_absent,
                dst_expected_file_id: rename.dst_expected_file_id,
                create_parent: true,
                ..Default::default()
            };
            match self.nn.put_small(&dst, Bytes::from(payload.clone()), 0, &o).await {
                Ok(st) => {
                    return Ok(PutResult { e_tag: Some(e_tag(st.file_id)), version: Some(st.file_id.to_string()) })
                }
                Err(e) if e.kind() == ErrorKind::InlineUnavailable => {}
                Err(e) => return Err(rename_err(&dst, &rename, e)),
            }
        }
        let tmp = Self::tmp_path();
        let create = CreateOptions { create_parent: true, ..Default::default() };
        let mut w = FileWriter::create(self.nn.clone(), &tmp, &create).await.map_err(|e| os_err(&dst, e))?;
        let file_id = w.status.file_id;
        let written = async {
            for b in payload.iter() {
                w.write(b).await?;
            }
            w.close().await
        }
        .await;
        if let Err(e) = written {
            let _ = self.nn.delete(&tmp, false, Some(file_id)).await;
            return Err(os_err(&dst, e));
        }
        self.publish(&tmp, file_id, &dst, rename).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let dst = self.path_of(location);
        let tmp = Self::tmp_path();
        let create = CreateOptions { create_parent: true, ..Default::default() };
        let w = FileWriter::create(self.nn.clone(), &tmp, &create).await.map_err(|e| os_err(&dst, e))?;
        let file_id = w.status.file_id;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(upload_parts(w, rx));
        Ok(Box::new(TarnUpload { store: self.clone(), tx: Some(tx), tmp, file_id, dst }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let path = self.path_of(location);
        let st = self.stat(&path).await?;
        let meta = self.meta(&st, &path)?;
        options.check_preconditions(&meta)?;
        if let Some(v) = &options.version {
            if v != &st.file_id.to_string() {
                return Err(object_store::Error::NotFound { path, source: format!("version {v} is gone").into() });
            }
        }
        let range = match &options.range {
            Some(r) => r.as_range(st.length).map_err(|e| generic(e.to_string()))?,
            None => 0..st.length,
        };
        let payload: BoxStream<'static, object_store::Result<Bytes>> = if options.head || range.is_empty() {
            futures::stream::empty().boxed()
        } else {
            let (start, end) = (range.start, range.end);
            let file_id = st.file_id;
            // Opened before answering, so a refusal (permissions, a missing block list)
            // is the call's error rather than the first chunk's.
            let reader = FileReader::open(self.nn.clone(), &path).await.map_err(|e| os_err(&path, e))?;
            // The file was replaced between the lookup and now: it is another object.
            if reader.file_id() != file_id || reader.length() < end {
                return Err(object_store::Error::Precondition {
                    path,
                    source: format!("object {file_id:x} changed while it was read").into(),
                });
            }
            read_stream(reader, start, end)
        };
        Ok(GetResult { payload: GetResultPayload::Stream(payload), meta, range, attributes: Default::default() })
    }

    /// Many ranges of one file (a parquet reader's column chunks): the file's blocks are
    /// looked up once, not once per range, and nearby ranges are read as one.
    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path_of(location);
        let reader = FileReader::open(self.nn.clone(), &path).await.map_err(|e| os_err(&path, e))?;
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > reader.length()) {
            return Err(generic(format!("{path}: range {}..{} of a {}-byte object", r.start, r.end, reader.length())));
        }
        let reader = &reader;
        object_store::coalesce_ranges(
            ranges,
            |r| async move {
                let pieces =
                    reader.read_at_bytes(r.start, r.end - r.start).await.map_err(|e| generic(e.to_string()))?;
                Ok::<_, object_store::Error>(match pieces.len() {
                    1 => pieces.into_iter().next().unwrap_or_default(),
                    _ => Bytes::from(pieces.concat()),
                })
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .and_then(move |location| {
                let store = store.clone();
                async move {
                    let path = store.path_of(&location);
                    // Deleting a missing object succeeds, as on S3.
                    store.nn.delete(&path, false, None).await.map_err(|e| os_err(&path, e))?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let dir = match prefix {
            Some(p) if !p.as_ref().is_empty() => format!("{}/", store.path_of(p)),
            _ => format!("{}/", store.root),
        };
        futures::stream::try_unfold(Some(String::new()), move |after| {
            let (store, dir) = (store.clone(), dir.clone());
            async move {
                let Some(after) = after else { return Ok::<_, object_store::Error>(None) };
                // The namespace's recursive listing passes over what the caller may not read
                // (as S3 listings do); a prefix that is itself such a directory is refused
                // instead, so that a table there is not read as empty.
                if after.is_empty() && dir.len() > 1 {
                    let probe = dir.trim_end_matches('/');
                    if let Err(e) = store.nn.list_dir(probe, "", 1).await {
                        if e.kind() == ErrorKind::PermissionDenied {
                            return Err(os_err(probe, e));
                        }
                    }
                }
                let (page, more) =
                    store.nn.list_recursive(&dir, &after, LIST_PAGE, false).await.map_err(|e| os_err(&dir, e))?;
                let next = if more { page.last().map(|s| s.path.clone()) } else { None };
                let metas: Vec<object_store::Result<ObjectMeta>> = page
                    .iter()
                    .filter(|s| !s.path.starts_with(TMP_DIR) && s.writer.is_none())
                    .map(|s| store.meta(s, &s.path))
                    .collect();
                Ok(Some((futures::stream::iter(metas), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = match prefix {
            Some(p) if !p.as_ref().is_empty() => self.path_of(p),
            _ => {
                if self.root.is_empty() {
                    "/".to_string()
                } else {
                    self.root.clone()
                }
            }
        };
        let entries = match self.nn.list_dir_all(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(os_err(&dir, e)),
        };
        let mut out = ListResult { common_prefixes: Vec::new(), objects: Vec::new() };
        for s in entries {
            let full = if dir.ends_with('/') { format!("{dir}{}", s.path) } else { format!("{dir}/{}", s.path) };
            if full.starts_with("/.tarn") {
                continue;
            }
            if s.is_dir() {
                out.common_prefixes.push(self.location_of(&full)?);
            } else if s.writer.is_none() {
                out.objects.push(self.meta(&s, &full)?);
            }
        }
        Ok(out)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let src = self.path_of(from);
        let st = self.stat(&src).await?;
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        // No block sharing yet: the bytes are copied through this client.
        let reader = FileReader::open(self.nn.clone(), &src).await.map_err(|e| os_err(&src, e))?;
        if reader.file_id() != st.file_id {
            return Err(object_store::Error::Precondition { path: src, source: "replaced while being copied".into() });
        }
        let dst = self.path_of(to);
        let tmp = Self::tmp_path();
        let create = CreateOptions { create_parent: true, ..Default::default() };
        let mut w = FileWriter::create(self.nn.clone(), &tmp, &create).await.map_err(|e| os_err(&dst, e))?;
        let file_id = w.status.file_id;
        let copied = async {
            let mut pieces = std::pin::pin!(reader.read_pieces(0, st.length, GET_PIECE_BYTES, 4));
            while let Some(p) = pieces.next().await {
                for b in p? {
                    w.write(&b).await?;
                }
            }
            w.close().await
        }
        .await;
        if let Err(e) = copied {
            let _ = self.nn.delete(&tmp, false, Some(file_id)).await;
            return Err(os_err(&src, e));
        }
        let rename = Self::rename_for(&mode, &dst)?;
        self.publish(&tmp, file_id, &dst, rename).await.map(|_| ())
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: OsRename) -> object_store::Result<()> {
        let (src, dst) = (self.path_of(from), self.path_of(to));
        let st = self.stat(&src).await?;
        let rename = match options.target_mode {
            RenameTargetMode::Overwrite => RenameOptions { overwrite: true, ..Default::default() },
            RenameTargetMode::Create => RenameOptions { dst_must_be_absent: true, ..Default::default() },
        };
        let rename = RenameOptions { src_expected_file_id: Some(st.file_id), ..rename };
        self.nn.mkdirs(Self::parent(&dst)).await.map_err(|e| os_err(&dst, e))?;
        self.nn.rename(&src, &dst, &rename).await.map_err(|e| rename_err(&dst, &rename, e))?;
        Ok(())
    }
}

/// The bytes `[start, end)` of `reader` as a stream of pieces, read ahead.
fn read_stream(reader: FileReader<'static>, start: u64, end: u64) -> BoxStream<'static, object_store::Result<Bytes>> {
    let reader = Arc::new(reader);
    futures::stream::iter((start..end).step_by(GET_PIECE_BYTES as usize))
        .map(move |o| {
            let reader = reader.clone();
            async move {
                let len = GET_PIECE_BYTES.min(end - o);
                let pieces = reader.read_at_bytes(o, len).await.map_err(|e| generic(e.to_string()))?;
                Ok::<_, object_store::Error>(futures::stream::iter(pieces.into_iter().map(Ok)))
            }
        })
        .buffered(4)
        .try_flatten()
        .boxed()
}

enum PartMsg {
    Part(PutPayload, oneshot::Sender<Result<(), ClientError>>),
    Complete(oneshot::Sender<Result<(), ClientError>>),
}

/// Writes parts into the staged file in the order they were handed over.
async fn upload_parts(mut w: FileWriter<'static>, mut rx: mpsc::UnboundedReceiver<PartMsg>) {
    while let Some(m) = rx.recv().await {
        match m {
            PartMsg::Part(p, done) => {
                let mut r = Ok(());
                for b in p.iter() {
                    r = w.write(b).await;
                    if r.is_err() {
                        break;
                    }
                }
                let failed = r.is_err();
                let _ = done.send(r);
                if failed {
                    return;
                }
            }
            PartMsg::Complete(done) => {
                let _ = done.send(w.close().await.map(|_| ()));
                return;
            }
        }
    }
    // Aborted (the sender went away): the caller deletes the staged file.
}

/// An upload dropped without `complete` or `abort` deletes its staged file.
impl Drop for TarnUpload {
    fn drop(&mut self) {
        if self.tx.take().is_none() {
            return; // completed or aborted
        }
        let (nn, tmp, id) = (self.store.nn.clone(), self.tmp.clone(), self.file_id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = nn.delete(&tmp, false, Some(id)).await {
                    tracing::warn!(path = %tmp, error = %e, "could not delete an abandoned upload");
                }
            });
        }
    }
}

#[derive(Debug)]
struct TarnUpload {
    store: TarnStore,
    tx: Option<mpsc::UnboundedSender<PartMsg>>,
    tmp: String,
    file_id: u64,
    dst: String,
}

#[async_trait]
impl MultipartUpload for TarnUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (done, rx) = oneshot::channel();
        let sent = self.tx.as_ref().map(|tx| tx.send(PartMsg::Part(data, done)).is_ok()).unwrap_or(false);
        let dst = self.dst.clone();
        Box::pin(async move {
            if !sent {
                return Err(generic(format!("{dst}: upload already completed or aborted")));
            }
            match rx.await {
                Ok(r) => r.map_err(|e| os_err(&dst, e)),
                Err(_) => Err(generic(format!("{dst}: upload failed on an earlier part"))),
            }
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let tx = self.tx.take().ok_or_else(|| generic(format!("{}: upload already finished", self.dst)))?;
        let (done, rx) = oneshot::channel();
        let _ = tx.send(PartMsg::Complete(done));
        let closed = rx.await.map_err(|_| generic(format!("{}: upload failed on an earlier part", self.dst)))?;
        if let Err(e) = closed {
            let _ = self.store.nn.delete(&self.tmp, false, Some(self.file_id)).await;
            return Err(os_err(&self.dst, e));
        }
        let rename = RenameOptions { overwrite: true, ..Default::default() };
        self.store.publish(&self.tmp, self.file_id, &self.dst, rename).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.tx = None;
        self.store.nn.delete(&self.tmp, false, Some(self.file_id)).await.map_err(|e| os_err(&self.tmp, e))?;
        Ok(())
    }
}
