//! The S3 operations over the namespace and blocks.
//!
//! Every write is staged: the bytes go to a file under `/.tarn/s3/tmp`, are checked
//! (Content-MD5, flexible checksums, body signatures), and only then become the object in
//! one namenode operation (`concat`) that also sets the object's metadata and checks the
//! request's conditions. A failed or interrupted upload leaves nothing visible.
//! Multipart parts are files of the upload's directory; completing the upload moves their
//! blocks into the object without copying data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::{self, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use serde::{Deserialize, Serialize};
use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{
    ClientError, ConcatOptions, CreateOptions, ErrorKind, FileStatus, ListOptions, MkdirOptions, NamenodeClient,
    SetAttributes,
};

use crate::names::*;

const META_XATTR: &str = "s3.meta";
const BUCKET_XATTR: &str = "s3.bucket";
const MARKER_XATTR: &str = "s3.marker";
const UPLOAD_XATTR: &str = "s3.upload";
/// Largest single PUT and largest part, as on S3.
const PUT_BYTES_MAX: u64 = 5 << 30;
/// Smallest part except the last, as on S3.
const PART_BYTES_MIN: u64 = 5 << 20;
const PARTS_MAX: i32 = 10_000;
const LIST_KEYS_MAX: i32 = 1000;
/// Keys one listing request reads from the namespace at most, by default
/// (`gateway.list_scan_keys_max`): with a delimiter other than '/' the gateway groups keys
/// itself, so without a bound one request could read a whole bucket.
pub const LIST_SCAN_KEYS_MAX: usize = 10_000;
/// Bytes per read from the datanodes when serving a GET, and reads kept in flight.
const GET_PIECE_BYTES: u64 = 1 << 20;
const GET_READ_AHEAD: usize = 4;

/// What S3 knows about an object beyond its bytes (kept as one extended attribute).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjMeta {
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Full-object checksums by algorithm (`CRC32`, ...), base64 as S3 sends them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

/// A multipart upload in progress (on its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadInfo {
    pub(crate) key: String,
    pub(crate) initiated_ms: u64,
    pub(crate) meta: ObjMeta,
}

pub struct TarnS3 {
    nn: Arc<NamenodeClient>,
    keys: Arc<crate::keys::KeyStore>,
    /// Clients acting for each user that wrote through this gateway (same connections).
    users: std::sync::Mutex<HashMap<String, Arc<NamenodeClient>>>,
    /// Keys a listing request reads at most (see [`LIST_SCAN_KEYS_MAX`]).
    list_scan_keys_max: usize,
}

impl TarnS3 {
    pub fn new(nn: Arc<NamenodeClient>, keys: Arc<crate::keys::KeyStore>, list_scan_keys_max: usize) -> Self {
        TarnS3 { nn, keys, users: Default::default(), list_scan_keys_max: list_scan_keys_max.max(1) }
    }

    /// The namenode client acting for the user of the request's access key, so what the
    /// request makes (buckets, objects, directory markers) is owned by that user and what
    /// it reads is subject to that user's permissions. Staging and upload bookkeeping under
    /// `/.tarn/s3` stay the gateway's own.
    async fn nn_for(&self, creds: Option<&s3s::auth::Credentials>) -> S3Result<Arc<NamenodeClient>> {
        // Anonymous requests (reads of anonymous-read buckets) read as nobody in particular.
        let user = match creds {
            None => "anonymous".to_string(),
            Some(c) => match self.keys.identity(&c.access_key).await.map_err(|e| internal("access key lookup", e))? {
                None => return Err(s3_error!(AccessDenied, "access key {} no longer exists", c.access_key)),
                // Admin keys are S3's root: they act as the gateway itself, which the
                // namenode treats as its superuser.
                Some(id) if id.admin => return Ok(self.nn.clone()),
                Some(id) => id.user,
            },
        };
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        Ok(users.entry(user.clone()).or_insert_with(|| Arc::new(self.nn.for_user(&user))).clone())
    }

    /// The user who should own what a request makes on the gateway's behalf (a bucket):
    /// the key's user, or `None` for admin keys (the gateway keeps it).
    async fn owner_for(&self, creds: Option<&s3s::auth::Credentials>) -> S3Result<Option<String>> {
        let Some(c) = creds else { return Ok(None) };
        match self.keys.identity(&c.access_key).await.map_err(|e| internal("access key lookup", e))? {
            Some(id) if !id.admin => Ok(Some(id.user)),
            _ => Ok(None),
        }
    }

    /// The caller's access key unless it is an admin's (None: an admin, sees everything;
    /// an empty string: anonymous).
    async fn restricted_caller(&self, creds: Option<&s3s::auth::Credentials>) -> S3Result<Option<String>> {
        let Some(c) = creds else { return Ok(Some(String::new())) };
        match self.keys.identity(&c.access_key).await {
            Ok(Some(id)) if id.admin => Ok(None),
            Ok(_) => Ok(Some(c.access_key.clone())),
            Err(e) => Err(internal("access key lookup", e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn internal(what: &str, e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, format!("{what}: {e}"))
}

fn custom(code: &'static str, status: http::StatusCode, msg: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(status);
    e
}

/// A namespace or block error as the S3 error a client expects.
fn fs_err(what: &str, e: ClientError) -> S3Error {
    let msg = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::ParentNotFound => S3Error::with_message(S3ErrorCode::NoSuchKey, msg),
        ErrorKind::ConditionFailed | ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned => {
            S3Error::with_message(S3ErrorCode::PreconditionFailed, msg)
        }
        ErrorKind::LeaseConflict => S3Error::with_message(S3ErrorCode::ConditionalRequestConflict, msg),
        ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("{msg} (Tarn stores keys as paths: a key cannot be both an object and a prefix of other keys)"),
        ),
        ErrorKind::QuotaExceeded => custom("QuotaExceeded", http::StatusCode::FORBIDDEN, msg),
        ErrorKind::PermissionDenied => S3Error::with_message(S3ErrorCode::AccessDenied, msg),
        ErrorKind::InvalidPath | ErrorKind::InvalidArgument => S3Error::with_message(S3ErrorCode::InvalidArgument, msg),
        // SafeMode and an unfinished upgrade pass: the client may retry later.
        ErrorKind::Unavailable | ErrorKind::NotLeader | ErrorKind::SafeMode | ErrorKind::UpgradePending => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, msg)
        }
        _ => internal(what, e),
    }
}

/// An error of the request body stream (s3s checks signatures and hashes as it streams).
fn body_err(e: &dyn std::fmt::Display) -> S3Error {
    let m = e.to_string();
    if m.contains("Sha256Mismatch") {
        custom("XAmzContentSHA256Mismatch", http::StatusCode::BAD_REQUEST, format!("request body: {m}"))
    } else if m.contains("Signature") {
        S3Error::with_message(S3ErrorCode::SignatureDoesNotMatch, format!("request body: {m}"))
    } else {
        S3Error::with_message(S3ErrorCode::IncompleteBody, format!("request body: {m}"))
    }
}

// ---------------------------------------------------------------------------------------
// Metadata helpers

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ts(ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn ts_ms(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

fn meta_of(st: &FileStatus) -> ObjMeta {
    match st.xattrs.get(META_XATTR).and_then(|v| serde_json::from_slice::<ObjMeta>(v).ok()) {
        Some(m) => m,
        // Written by another Tarn client (tarn fs, the object store): the file id names
        // this version of the file.
        None => ObjMeta { etag: format!("{:016x}", st.file_id), ..Default::default() },
    }
}

fn is_marker(st: &FileStatus) -> bool {
    st.xattrs.contains_key(MARKER_XATTR)
}

fn etag(m: &ObjMeta) -> ETag {
    ETag::Strong(m.etag.clone())
}

fn strip_quotes(s: &str) -> &str {
    s.trim().trim_start_matches("W/").trim_matches('"')
}

fn encode_meta(m: &ObjMeta) -> Vec<u8> {
    serde_json::to_vec(m).expect("metadata serializes")
}

fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Checksums the client asked for (by header value, algorithm or trailer name).
struct Wanted {
    hasher: s3s::checksum::ChecksumHasher,
    given: dto::Checksum,
}

#[allow(clippy::too_many_arguments)]
fn wanted(
    algorithm: Option<&dto::ChecksumAlgorithm>,
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    headers: &http::HeaderMap,
) -> Wanted {
    use s3s::crypto::Checksum as _;
    let trailer = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let algo = algorithm.map(|a| a.as_str().to_ascii_uppercase()).unwrap_or_default();
    let want = |name: &str, given: &Option<String>| {
        given.is_some() || algo == name.to_ascii_uppercase() || trailer.contains(&format!("x-amz-checksum-{name}"))
    };
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    if want("crc32", &crc32) {
        hasher.crc32 = Some(s3s::crypto::Crc32::new());
    }
    if want("crc32c", &crc32c) {
        hasher.crc32c = Some(s3s::crypto::Crc32c::new());
    }
    if want("crc64nvme", &crc64nvme) {
        hasher.crc64nvme = Some(s3s::crypto::Crc64Nvme::new());
    }
    if want("sha1", &sha1) {
        hasher.sha1 = Some(s3s::crypto::Sha1::new());
    }
    if want("sha256", &sha256) {
        hasher.sha256 = Some(s3s::crypto::Sha256::new());
    }
    let given = dto::Checksum {
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64nvme,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        ..Default::default()
    };
    Wanted { hasher, given }
}

/// Checks computed checksums against those given in headers or trailers; returns them by
/// algorithm name.
fn verify_checksums(
    computed: dto::Checksum,
    given: &dto::Checksum,
    trailers: Option<&http::HeaderMap>,
) -> S3Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let pairs = [
        ("CRC32", "x-amz-checksum-crc32", computed.checksum_crc32, &given.checksum_crc32),
        ("CRC32C", "x-amz-checksum-crc32c", computed.checksum_crc32c, &given.checksum_crc32c),
        ("CRC64NVME", "x-amz-checksum-crc64nvme", computed.checksum_crc64nvme, &given.checksum_crc64nvme),
        ("SHA1", "x-amz-checksum-sha1", computed.checksum_sha1, &given.checksum_sha1),
        ("SHA256", "x-amz-checksum-sha256", computed.checksum_sha256, &given.checksum_sha256),
    ];
    for (name, header, value, given) in pairs {
        let Some(value) = value else { continue };
        let sent = given
            .clone()
            .or_else(|| trailers.and_then(|t| t.get(header)).and_then(|v| v.to_str().ok()).map(str::to_string));
        if let Some(sent) = sent {
            if sent.trim() != value {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!("the {name} checksum sent ({sent}) does not match the body's ({value})"),
                ));
            }
        }
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// Sets the `checksum_*` fields of any output type (they share the names) from what the
/// object stored.
macro_rules! set_checksums {
    ($out:expr, $m:expr) => {{
        for (k, v) in &$m.checksums {
            let v = Some(v.clone());
            match k.as_str() {
                "CRC32" => $out.checksum_crc32 = v,
                "CRC32C" => $out.checksum_crc32c = v,
                "CRC64NVME" => $out.checksum_crc64nvme = v,
                "SHA1" => $out.checksum_sha1 = v,
                "SHA256" => $out.checksum_sha256 = v,
                _ => {}
            }
        }
    }};
}

/// Fills what GetObject and HeadObject both say of an object (different output types with
/// the same field names): representation headers, ETag, metadata and (when asked) checksums.
macro_rules! describe_object {
    ($out:expr, $m:expr, $st:expr, $with_checksums:expr) => {{
        let (m, st): (&ObjMeta, &FileStatus) = ($m, $st);
        $out.accept_ranges = Some("bytes".into());
        $out.content_type = Some(m.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into()));
        $out.content_encoding = m.content_encoding.clone();
        $out.content_disposition = m.content_disposition.clone();
        $out.content_language = m.content_language.clone();
        $out.cache_control = m.cache_control.clone();
        $out.e_tag = Some(etag(m));
        $out.last_modified = Some(ts(st.mtime_ms));
        $out.metadata = (!m.metadata.is_empty()).then(|| m.metadata.clone().into_iter().collect());
        $out.parts_count = m.parts.map(|p| p as i32);
        if $with_checksums {
            set_checksums!($out, m);
        }
    }};
}

/// The length an aws-chunked body decodes to, as its sender announced it.
fn decoded_length(headers: &http::HeaderMap) -> Option<i64> {
    headers.get("x-amz-decoded-content-length")?.to_str().ok()?.trim().parse().ok()
}

/// Checks a body read in full against what the client said about it (Content-MD5, the
/// flexible checksums in headers or trailers); returns its MD5 and the checksums to keep.
fn verify_body(
    md5: Md5,
    content_md5: Option<&str>,
    want: Wanted,
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<([u8; 16], BTreeMap<String, String>)> {
    let md5: [u8; 16] = md5.finalize().into();
    if let Some(sent) = content_md5 {
        use base64::Engine as _;
        let sent = base64::engine::general_purpose::STANDARD
            .decode(sent.trim())
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if sent != md5 {
            return Err(s3_error!(BadDigest, "the Content-MD5 sent does not match the body's"));
        }
    }
    let trailers = trailers.and_then(|t| t.take());
    let checksums = verify_checksums(want.hasher.finalize(), &want.given, trailers.as_ref())?;
    Ok((md5, checksums))
}

/// A staged upload whose bytes are all written and verified, its file still open.
struct Open {
    w: FileWriter<'static>,
    path: String,
    length: u64,
    md5: [u8; 16],
    checksums: BTreeMap<String, String>,
    guard: StageGuard,
}

/// What a staged upload produced.
struct Staged {
    path: String,
    file_id: u64,
    md5: [u8; 16],
    checksums: BTreeMap<String, String>,
    guard: StageGuard,
}

/// Deletes a staged file unless it was committed: also when the request is dropped
/// midway (the client went away), which runs no code after the await it was parked on.
struct StageGuard {
    nn: Arc<NamenodeClient>,
    path: String,
    armed: bool,
}

impl StageGuard {
    fn committed(&mut self) {
        self.armed = false;
    }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (nn, path) = (self.nn.clone(), std::mem::take(&mut self.path));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = nn.delete(&path, false, None).await {
                    tracing::warn!(%path, error = %e, "could not remove a staged upload (the janitor will)");
                }
            });
        }
    }
}

/// The preconditions of a read (GET/HEAD, or a copy's source).
struct ReadConditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    modified_since: Option<&'a Timestamp>,
    unmodified_since: Option<&'a Timestamp>,
}

impl ReadConditions<'_> {
    /// Checks them in RFC 7232's order, as S3 applies them.
    fn check(&self, m: &ObjMeta, mtime_ms: u64) -> S3Result<()> {
        let secs = mtime_ms / 1000;
        let matches = |c: &ETagCondition| match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => strip_quotes(e.value()) == m.etag,
        };
        if let Some(c) = self.if_match {
            if !matches(c) {
                return Err(s3_error!(PreconditionFailed, "If-Match: the object's ETag is {}", m.etag));
            }
        } else if let Some(t) = self.unmodified_since {
            if secs > ts_ms(t) / 1000 {
                return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since: the object was modified after it"));
            }
        }
        if let Some(c) = self.if_none_match {
            if matches(c) {
                return Err(S3Error::new(S3ErrorCode::NotModified));
            }
        } else if let Some(t) = self.modified_since {
            if secs <= ts_ms(t) / 1000 {
                return Err(S3Error::new(S3ErrorCode::NotModified));
            }
        }
        Ok(())
    }
}

/// One listing page: objects (`FileStatus` with their key) and common prefixes, in S3
/// order.
#[derive(Default)]
struct Page {
    objects: Vec<(String, FileStatus)>,
    prefixes: Vec<String>,
    truncated: bool,
    /// Where the next page starts: the last key or common prefix returned or, for a page
    /// ended by the scan bound, the last key read.
    last: Option<String>,
}

/// The common prefix `key` rolls up into under `prefix` with `delimiter`, if any.
fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: &str) -> Option<&'k str> {
    let i = key.strip_prefix(prefix)?.find(delimiter)?;
    Some(&key[..prefix.len() + i + delimiter.len()])
}

impl TarnS3 {
    async fn bucket_exists(&self, bucket: &str) -> S3Result<FileStatus> {
        match self.nn.get_file_info(&bucket_path(bucket), true).await {
            Ok(Some(st)) if st.is_dir() => Ok(st),
            Ok(_) => Err(s3_error!(NoSuchBucket, "no bucket {bucket:?}")),
            Err(e) => Err(fs_err("bucket lookup", e)),
        }
    }

    /// The object at `key`: a closed file, or a marked directory for keys ending in '/'.
    async fn head(&self, bucket: &str, key: &str) -> S3Result<(String, FileStatus)> {
        let (path, marker) = object_path(bucket, key)?;
        let st = self.nn.get_file_info(&path, true).await.map_err(|e| fs_err("lookup", e))?;
        match st {
            Some(st) if marker && st.is_dir() && is_marker(&st) => Ok((path, st)),
            Some(st) if !marker && !st.is_dir() && st.writer.is_none() => Ok((path, st)),
            _ => {
                self.bucket_exists(bucket).await?;
                Err(s3_error!(NoSuchKey, "no object {key:?} in bucket {bucket:?}"))
            }
        }
    }

    /// The object a read names, if its preconditions hold: its path, status and metadata.
    async fn read_target(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        conds: &ReadConditions<'_>,
    ) -> S3Result<(String, FileStatus, ObjMeta)> {
        if version.is_some_and(|v| v != "null") {
            return Err(s3_error!(NoSuchVersion, "versioning is off: only version \"null\" exists"));
        }
        let (path, st) = self.head(bucket, key).await?;
        let m = meta_of(&st);
        conds.check(&m, st.mtime_ms)?;
        Ok((path, st, m))
    }

    /// A copy's source object; a failed precondition is 412 here, never 304.
    async fn copy_source_target(
        &self,
        cs: &dto::CopySource,
        conds: &ReadConditions<'_>,
    ) -> S3Result<(String, FileStatus, ObjMeta)> {
        let (bucket, key) = copy_source(cs)?;
        self.read_target(&bucket, &key, None, conds).await.map_err(|e| {
            if *e.code() == S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed)
            } else {
                e
            }
        })
    }

    /// Streams `body` into a new staged file, verifying what the client sent about it.
    async fn stage(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&str>,
        want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<Staged> {
        let o = self.stage_open(body, limit, content_md5, want, trailers, false).await?;
        let st = o.w.close().await.map_err(|e| fs_err("finish upload", e))?;
        Ok(Staged { path: o.path, file_id: st.file_id, md5: o.md5, checksums: o.checksums, guard: o.guard })
    }

    /// Streams `body` into a new staged file and verifies it, leaving the file open (to
    /// be closed, or closed and published in one namenode operation). With `first_block`
    /// (a body is coming), the file's first block is allocated with the file.
    async fn stage_open(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&str>,
        mut want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
        first_block: bool,
    ) -> S3Result<Open> {
        let (mut w, path, guard) = self.stage_create(first_block).await?;
        let mut md5 = Md5::new();
        let mut length = 0u64;
        let result: S3Result<()> = async {
            if let Some(mut body) = body {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| body_err(&e))?;
                    length += chunk.len() as u64;
                    if length > limit {
                        return Err(s3_error!(EntityTooLarge, "the body exceeds {limit} bytes"));
                    }
                    md5.update(&chunk);
                    want.hasher.update(&chunk);
                    w.write(&chunk).await.map_err(|e| fs_err("write", e))?;
                }
            }
            Ok(())
        }
        .await;
        // On any error the guard removes the staged file.
        let (md5, checksums) = result.and_then(|()| verify_body(md5, content_md5, want, trailers))?;
        Ok(Open { w, path, length, md5, checksums, guard })
    }

    /// A new staged file, open for writing (with its first block allocated if asked), and
    /// the guard that removes it unless it is committed.
    async fn stage_create(&self, first_block: bool) -> S3Result<(FileWriter<'static>, String, StageGuard)> {
        let path = format!("{TMP_DIR}/{}", random_id());
        let opts = CreateOptions { create_parent: true, ..Default::default() };
        // Armed before the create: a create that committed but answered with an error
        // leaves nothing behind either.
        let guard = StageGuard { nn: self.nn.clone(), path: path.clone(), armed: true };
        let created = if first_block {
            FileWriter::create_with_block(self.nn.clone(), &path, &opts).await
        } else {
            FileWriter::create(self.nn.clone(), &path, &opts).await
        };
        let w = created.map_err(|e| fs_err("stage upload", e))?;
        Ok((w, path, guard))
    }

    /// A small body read whole (at most `INLINE_MAX` bytes) and verified.
    async fn read_small(
        &self,
        body: Option<StreamingBlob>,
        content_md5: Option<&str>,
        mut want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<(Bytes, [u8; 16], BTreeMap<String, String>)> {
        let mut md5 = Md5::new();
        let mut data = bytes::BytesMut::new();
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| body_err(&e))?;
                if data.len() + chunk.len() > tarn_client::INLINE_MAX {
                    return Err(s3_error!(IncompleteBody, "the body is longer than its Content-Length"));
                }
                md5.update(&chunk);
                want.hasher.update(&chunk);
                data.extend_from_slice(&chunk);
            }
        }
        let (md5, checksums) = verify_body(md5, content_md5, want, trailers)?;
        Ok((data.freeze(), md5, checksums))
    }

    /// Makes a staged file (or several, in order) the object at `path` with `meta`, if the
    /// conditions hold, owned by `owner` (the key's user; `None`: the gateway). Returns the
    /// new object's status. The bucket's grants, checked before, decide who may write in
    /// it (as for S3): the gateway commits as itself and gives the object to the user.
    async fn commit(
        &self,
        owner: Option<String>,
        sources: &[(String, u64)],
        (bucket, key, path): (&str, &str, &str),
        meta: &ObjMeta,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<FileStatus> {
        let o = self.publish_options(owner, bucket, key, meta, if_match, if_none_match).await?;
        match self.nn.concat(sources, path, &o).await {
            Ok(st) => Ok(st),
            Err(e) => Err(self.commit_error(bucket, e).await),
        }
    }

    /// How a staged upload becomes the object `key` of `bucket`: parents below the bucket
    /// made as needed, the bucket itself required (a DeleteBucket meanwhile is not undone),
    /// the metadata, the owner, and the write conditions.
    async fn publish_options(
        &self,
        owner: Option<String>,
        bucket: &str,
        key: &str,
        meta: &ObjMeta,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<ConcatOptions> {
        let mut o = ConcatOptions {
            create_parent: true,
            overwrite: true,
            require_dir: Some(bucket_path(bucket)),
            owner,
            ..Default::default()
        };
        o.xattrs.insert(META_XATTR.into(), encode_meta(meta));
        match if_none_match {
            Some(ETagCondition::Any) => o.dst_must_be_absent = true,
            Some(ETagCondition::ETag(_)) => {
                return Err(s3_error!(NotImplemented, "If-None-Match on a write supports only '*'"));
            }
            None => {}
        }
        if let Some(c) = if_match {
            let (_, cur) = self.head(bucket, key).await?;
            if let ETagCondition::ETag(e) = c {
                if strip_quotes(e.value()) != meta_of(&cur).etag {
                    return Err(s3_error!(PreconditionFailed, "If-Match: the object's ETag is {}", meta_of(&cur).etag));
                }
            }
            o.dst_expected_file_id = Some(cur.file_id);
        }
        Ok(o)
    }

    /// The S3 error for a commit the namenode refused.
    async fn commit_error(&self, bucket: &str, e: ClientError) -> S3Error {
        match e.kind() {
            ErrorKind::ConditionFailed | ErrorKind::AlreadyExists => {
                s3_error!(PreconditionFailed, "the object changed or exists: {e}")
            }
            // The bucket went away meanwhile (or a staged source did).
            ErrorKind::NotFound => match self.bucket_exists(bucket).await {
                Err(no_bucket) => no_bucket,
                Ok(_) => fs_err("commit", e),
            },
            _ => fs_err("commit", e),
        }
    }

    /// Copies `[start, end)` of the object at `src` into a staged file.
    /// The source is read as the request's user (`nn`): its permissions apply.
    async fn stage_copy(
        &self,
        nn: Arc<NamenodeClient>,
        src: &FileStatus,
        src_path: &str,
        start: u64,
        end: u64,
    ) -> S3Result<Staged> {
        let reader = FileReader::open(nn, src_path).await.map_err(|e| fs_err("open copy source", e))?;
        if reader.file_id() != src.file_id || reader.length() < end {
            return Err(s3_error!(PreconditionFailed, "the copy source changed while it was read"));
        }
        let stream = read_stream(reader, start, end).map_err(std::io::Error::other);
        let want = wanted(None, None, None, None, None, None, &http::HeaderMap::new());
        self.stage(Some(blob(stream)), PUT_BYTES_MAX, None, want, None).await
    }

    /// Objects and common prefixes under `prefix` after `after` (a key), in S3 order, as
    /// `nn`'s user sees them (what sits in directories it may not list is left out).
    /// Reads at most `list_scan_keys_max` keys: a page that reaches the bound ends there,
    /// truncated (perhaps with fewer than `max` entries, or none, as S3 may), and `last`
    /// says where to go on.
    async fn list_page(
        &self,
        nn: &NamenodeClient,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: &str,
        max: i32,
    ) -> S3Result<Page> {
        let root = format!("/{bucket}/");
        let max = max.clamp(0, LIST_KEYS_MAX) as usize;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut page = Page::default();
        if max == 0 {
            return Ok(page);
        }
        let opts =
            ListOptions { include_directories: true, collapse_directories: delimiter == Some("/"), with_xattrs: true };
        let list_prefix = format!("{root}{prefix}");
        let mut cursor = if after.is_empty() { String::new() } else { format!("{root}{after}") };
        // Keys grouped under the last common prefix are skipped (also across pages): S3
        // lists only what sorts after `after`, and a common prefix `after` rolls up into
        // sorts before it, so it was listed already.
        let mut last_cp: Option<String> = delimiter.and_then(|d| common_prefix(after, prefix, d)).map(str::to_string);
        // A collapsed listing skips the listed directory itself; its marker (key == prefix)
        // is an object S3 lists first (s3a and s3fs probe directories this way).
        if opts.collapse_directories && prefix.ends_with('/') && after < prefix {
            let dir = format!("{root}{}", prefix.trim_end_matches('/'));
            if let Some(st) = nn.get_file_info(&dir, true).await.map_err(|e| fs_err("list", e))? {
                if st.is_dir() && is_marker(&st) {
                    page.last = Some(prefix.to_string());
                    page.objects.push((prefix.to_string(), st));
                    if page.objects.len() == max {
                        // More may follow: let the client ask (S3 may end a page early).
                        page.truncated = true;
                        return Ok(page);
                    }
                }
            }
        }
        let mut budget = self.list_scan_keys_max;
        loop {
            // Inside a common prefix already listed, the next read starts past it: a large
            // group costs one read, not a scan.
            let mut start = cursor.clone();
            if let Some(cp) = &last_cp {
                if key_of(&root, &cursor).is_some_and(|k| k.starts_with(cp.as_str())) {
                    // Every key of the group sorts before this (UTF-8 has nothing after
                    // U+10FFFF); any that do not are still skipped below. Never backwards:
                    // a cursor already past it (keys with U+10FFFF after the prefix) stays.
                    start = format!("{root}{cp}{}", char::MAX).max(cursor.clone());
                }
            }
            let want = (max - page.objects.len() - page.prefixes.len() + 1).min(1000).min(budget) as u32;
            let (entries, more) =
                nn.list_tree(&list_prefix, &start, want, &opts).await.map_err(|e| fs_err("list", e))?;
            for st in entries {
                cursor = st.path.clone();
                let Some(key) = key_of(&root, &st.path) else { continue };
                if key.is_empty() {
                    continue; // the bucket's directory itself: not a key, not counted
                }
                budget = budget.saturating_sub(1);
                let key = key.to_string();
                if let Some(d) = delimiter {
                    if let Some(cp) = common_prefix(&key, prefix, d) {
                        if last_cp.as_deref() == Some(cp) {
                            continue;
                        }
                        if page.objects.len() + page.prefixes.len() == max {
                            page.truncated = true;
                            return Ok(page);
                        }
                        last_cp = Some(cp.to_string());
                        page.last = Some(cp.to_string());
                        page.prefixes.push(cp.to_string());
                        continue;
                    }
                }
                if st.is_dir() && !is_marker(&st) {
                    continue;
                }
                if !st.is_dir() && st.writer.is_some() {
                    continue; // still being written (not an S3 upload, which is staged)
                }
                if page.objects.len() + page.prefixes.len() == max {
                    page.truncated = true;
                    return Ok(page);
                }
                page.last = Some(key.clone());
                page.objects.push((key, st));
            }
            if !more {
                return Ok(page);
            }
            if budget == 0 {
                // The bound is reached: the next page starts after the last key read.
                page.truncated = true;
                page.last = key_of(&root, &cursor).map(str::to_string);
                return Ok(page);
            }
        }
    }

    /// A directory marker PUT where something already is: a directory becomes (or stays)
    /// a marker, keeping its owner, mode and grants (S3 overwrites the object, and Tarn
    /// takes no directory from its owner); a file there refuses the key.
    async fn mark_existing_dir(&self, bucket: &str, key: &str, path: &str) -> S3Result<()> {
        let st = self.nn.get_file_info(path, false).await.map_err(|e| fs_err("create directory marker", e))?;
        let Some(st) = st.filter(|st| st.is_dir()) else {
            return Err(s3_error!(
                InvalidArgument,
                "{key:?} in bucket {bucket:?}: an object {:?} is there (Tarn stores keys as paths: a key cannot be both an object and a prefix of other keys)",
                key.trim_end_matches('/')
            ));
        };
        if is_marker(&st) {
            return Ok(());
        }
        let a = SetAttributes {
            set_xattrs: BTreeMap::from([(MARKER_XATTR.to_string(), b"1".to_vec())]),
            // Still the directory that was looked at (not one made since by someone else).
            expected_file_id: Some(st.file_id),
            ..Default::default()
        };
        self.nn.set_attributes(path, a).await.map_err(|e| fs_err("create directory marker", e))?;
        Ok(())
    }

    fn object_entry(&self, key: &str, st: &FileStatus, url: bool) -> dto::Object {
        let m = meta_of(st);
        dto::Object {
            key: Some(if url { url_encode(key) } else { key.to_string() }),
            e_tag: Some(etag(&m)),
            size: Some(if st.is_dir() { 0 } else { st.length as i64 }),
            last_modified: Some(ts(st.mtime_ms)),
            storage_class: Some(dto::ObjectStorageClass::from_static(dto::ObjectStorageClass::STANDARD)),
            ..Default::default()
        }
    }

    async fn upload_info(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<(String, UploadInfo)> {
        check_upload_id(upload_id)?;
        let dir = upload_dir(bucket, upload_id);
        let st = self.nn.get_file_info(&dir, true).await.map_err(|e| fs_err("upload lookup", e))?;
        let info = st
            .as_ref()
            .and_then(|st| st.xattrs.get(UPLOAD_XATTR))
            .and_then(|v| serde_json::from_slice::<UploadInfo>(v).ok())
            .filter(|i| i.key == key)
            .ok_or_else(|| s3_error!(NoSuchUpload, "no upload {upload_id} of {key:?} in bucket {bucket:?}"))?;
        Ok((dir, info))
    }

    /// The parts of an upload: (part number, status), by number.
    async fn parts(&self, dir: &str) -> S3Result<Vec<(i32, FileStatus)>> {
        let opts = ListOptions { with_xattrs: true, ..Default::default() };
        let prefix = format!("{dir}/");
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) =
                self.nn.list_tree(&prefix, &after, 1000, &opts).await.map_err(|e| fs_err("list parts", e))?;
            for st in page {
                after = st.path.clone();
                if let Some(n) = st.path.strip_prefix(&prefix).and_then(|n| n.parse::<i32>().ok()) {
                    out.push((n, st));
                }
            }
            if !more {
                return Ok(out);
            }
        }
    }

    /// Removes directories left empty by a delete, up to the bucket (not markers).
    async fn prune(&self, bucket: &str, path: &str) {
        let root = bucket_path(bucket);
        let mut dir = path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
        while dir.len() > root.len() && dir.starts_with(&root) {
            // Markers and directories with a quota (an operator's) stay.
            let id = match self.nn.get_file_info(&dir, true).await {
                Ok(Some(st)) if st.is_dir() && !is_marker(&st) && st.quota.is_none() => st.file_id,
                _ => return,
            };
            if self.nn.delete(&dir, false, Some(id)).await.is_err() {
                return; // not empty (or already gone): stop here
            }
            dir = match dir.rsplit_once('/') {
                Some((d, _)) => d.to_string(),
                None => return,
            };
        }
    }

    async fn delete_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        let (path, marker) = object_path(bucket, key)?;
        let st = self.nn.get_file_info(&path, true).await.map_err(|e| fs_err("lookup", e))?;
        match st {
            Some(st) if marker && st.is_dir() && is_marker(&st) => {
                // An empty marked directory goes; one with objects under it loses the marker.
                if self.nn.delete(&path, false, Some(st.file_id)).await.is_err() {
                    let a = SetAttributes { remove_xattrs: vec![MARKER_XATTR.into()], ..Default::default() };
                    self.nn.set_attributes(&path, a).await.map_err(|e| fs_err("delete marker", e))?;
                    return Ok(());
                }
            }
            Some(st) if !marker && !st.is_dir() => {
                match self.nn.delete(&path, false, Some(st.file_id)).await {
                    Ok(_) => {}
                    // Replaced meanwhile: the newer object stays, as if the delete came first.
                    Err(e) if e.kind() == ErrorKind::ConditionFailed => return Ok(()),
                    Err(e) => return Err(fs_err("delete", e)),
                }
            }
            _ => {
                self.bucket_exists(bucket).await?;
                return Ok(()); // deleting a missing key succeeds, as on S3
            }
        }
        self.prune(bucket, &path).await;
        Ok(())
    }
}

/// The bytes `[start, end)` of an open file as a stream of pieces, read ahead.
fn read_stream(
    reader: FileReader<'static>,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
    let reader = Arc::new(reader);
    futures::stream::iter((start..end).step_by(GET_PIECE_BYTES as usize))
        .map(move |o| {
            let reader = reader.clone();
            async move {
                let pieces = reader.read_at_bytes(o, GET_PIECE_BYTES.min(end - o)).await?;
                Ok::<_, ClientError>(futures::stream::iter(pieces.into_iter().map(Ok)))
            }
        })
        .buffered(GET_READ_AHEAD)
        .try_flatten()
}

/// A stream made `Sync` (s3s needs it) by locking around each poll.
struct SyncStream<S>(std::sync::Mutex<std::pin::Pin<Box<S>>>);

impl<S: futures::Stream> futures::Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<S::Item>> {
        self.0.lock().expect("stream lock").as_mut().poll_next(cx)
    }
}

fn blob<S, E>(s: S) -> StreamingBlob
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(Box::pin(s))))
}

fn copy_source(cs: &dto::CopySource) -> S3Result<(String, String)> {
    match cs {
        dto::CopySource::Bucket { bucket, key, version_id } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(s3_error!(NoSuchVersion, "versioning is off: only version \"null\" exists"));
            }
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(s3_error!(NotImplemented, "copy sources other than bucket/key")),
    }
}

/// Parses `bytes=a-b` of UploadPartCopy.
fn copy_range(r: Option<&str>, len: u64) -> S3Result<(u64, u64)> {
    let Some(r) = r else { return Ok((0, len)) };
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range {r:?} is not bytes=first-last");
    let (a, b) = r.trim().strip_prefix("bytes=").and_then(|x| x.split_once('-')).ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= len {
        return Err(s3_error!(InvalidRange, "range {r} is outside the {len}-byte source"));
    }
    Ok((a, b + 1))
}

#[async_trait::async_trait]
impl S3 for TarnS3 {
    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let caller = self.restricted_caller(req.credentials.as_ref()).await?;
        let bucket = req.input.bucket;
        let path = bucket_path(&bucket);
        // Any key may create buckets (S3's rule): the gateway makes the directory for the
        // key's user, with the key's grant, in one operation that fails if anything is
        // there, so of concurrent creators exactly one succeeds and an existing directory
        // is never taken over.
        let owner = self.owner_for(req.credentials.as_ref()).await?;
        let mut xattrs = BTreeMap::new();
        xattrs.insert(BUCKET_XATTR.to_string(), now_ms().to_string().into_bytes());
        if let Some(ak) = caller.filter(|a| !a.is_empty()) {
            // A key that is not an admin's may use the bucket it made.
            let mut access = crate::keys::BucketAccess::default();
            access.grants.insert(ak, "rw".into());
            xattrs.insert(crate::keys::ACCESS_XATTR.to_string(), serde_json::to_vec(&access).expect("serializes"));
        }
        let opts = MkdirOptions { owner: owner.clone(), group: owner, xattrs, ..Default::default() };
        match self.nn.mkdir_exclusive(&path, &opts).await {
            Ok(_) => self.keys.forget_bucket(&bucket),
            // The namenode compared the owner there with the one asked for (for an admin
            // key: the gateway itself).
            Err(e) if e.kind() == ErrorKind::AlreadyOwned => {
                return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {bucket:?} exists and is yours"));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(s3_error!(BucketAlreadyExists, "bucket {bucket:?} exists"));
            }
            Err(e) => return Err(fs_err("create bucket", e)),
        }
        Ok(S3Response::new(dto::CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        self.bucket_exists(&bucket).await?;
        match self.nn.delete(&bucket_path(&bucket), false, None).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                return Err(s3_error!(BucketNotEmpty, "bucket {bucket:?} is not empty"));
            }
            Err(e) => return Err(fs_err("delete bucket", e)),
        }
        // Uploads in progress go with the bucket.
        let _ = self.nn.delete(&format!("{UPLOADS_DIR}/{bucket}"), true, None).await;
        Ok(S3Response::new(dto::DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(dto::HeadBucketOutput {
            bucket_region: req.region.map(|r| r.to_string()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(dto::GetBucketLocationOutput { location_constraint: None }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput::default()))
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let caller = self.restricted_caller(req.credentials.as_ref()).await?;
        let opts = ListOptions { collapse_directories: true, with_xattrs: true, ..Default::default() };
        let mut buckets = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) =
                self.nn.list_tree("/", &after, 1000, &opts).await.map_err(|e| fs_err("list buckets", e))?;
            for st in page {
                after = st.path.clone();
                let name = st.path.trim_matches('/');
                if !st.is_dir() || name.starts_with('.') {
                    continue;
                }
                if let Some(ak) = &caller {
                    let access = st
                        .xattrs
                        .get(crate::keys::ACCESS_XATTR)
                        .and_then(|v| serde_json::from_slice::<crate::keys::BucketAccess>(v).ok())
                        .unwrap_or_default();
                    if !access.can_read(ak) && !access.can_write(ak) {
                        continue;
                    }
                }
                let created = st
                    .xattrs
                    .get(BUCKET_XATTR)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(st.mtime_ms);
                buckets.push(dto::Bucket {
                    name: Some(name.to_string()),
                    creation_date: Some(ts(created)),
                    ..Default::default()
                });
            }
            if !more {
                break;
            }
        }
        Ok(S3Response::new(dto::ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let i = req.input;
        let (path, marker) = object_path(&i.bucket, &i.key)?;
        if marker {
            self.bucket_exists(&i.bucket).await?;
            // A directory marker: an empty object whose key ends in '/'.
            let mut n = i.content_length.unwrap_or(0).max(0) as u64;
            if let Some(mut body) = i.body {
                while let Some(chunk) = body.next().await {
                    n += chunk.map_err(|e| body_err(&e))?.len() as u64;
                }
            }
            if n > 0 {
                return Err(s3_error!(
                    InvalidArgument,
                    "keys ending in '/' are directories in Tarn and must be empty objects"
                ));
            }
            // The bucket's grants decide who may write in it: the gateway makes the marker
            // (and the directories above it) for the key's user, in one operation, only if
            // nothing is there and while the bucket exists.
            let owner = self.owner_for(req.credentials.as_ref()).await?;
            let opts = MkdirOptions {
                owner: owner.clone(),
                group: owner,
                xattrs: BTreeMap::from([(MARKER_XATTR.to_string(), b"1".to_vec())]),
                require_dir: Some(bucket_path(&i.bucket)),
                ..Default::default()
            };
            match self.nn.mkdir_exclusive(&path, &opts).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {
                    self.mark_existing_dir(&i.bucket, &i.key, &path).await?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(s3_error!(NoSuchBucket, "no bucket {:?}", i.bucket));
                }
                Err(e) => return Err(fs_err("create directory marker", e)),
            }
            let e = format!("{:x}", Md5::digest(b""));
            return Ok(S3Response::new(dto::PutObjectOutput { e_tag: Some(ETag::Strong(e)), ..Default::default() }));
        }
        if let Some(ETagCondition::Any) = &i.if_none_match {
            // Refuse early; the commit checks again atomically.
            if self.nn.get_file_info(&path, false).await.map_err(|e| fs_err("lookup", e))?.is_some() {
                return Err(s3_error!(PreconditionFailed, "If-None-Match: * and {:?} exists", i.key));
            }
        }
        let want = wanted(
            i.checksum_algorithm.as_ref(),
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
            &headers,
        );
        // No lookup of the bucket first: the publish requires it (in the same operation),
        // and a refusal for its absence is answered with NoSuchBucket.
        let new_meta = |md5: &[u8; 16], checksums: &BTreeMap<String, String>| ObjMeta {
            etag: hex::encode(md5),
            content_type: i.content_type.clone(),
            content_encoding: i.content_encoding.clone(),
            content_disposition: i.content_disposition.clone(),
            content_language: i.content_language.clone(),
            cache_control: i.cache_control.clone(),
            metadata: i.metadata.clone().unwrap_or_default().into_iter().collect(),
            checksums: checksums.clone(),
            parts: None,
        };
        let owner = self.owner_for(req.credentials.as_ref()).await?;
        // Current boto3 and aws cli send aws-chunked bodies with Transfer-Encoding: chunked
        // and no Content-Length; their decoded length is announced instead.
        let body_len = i.content_length.or_else(|| decoded_length(&headers));
        let staged = if body_len.is_some_and(|n| (0..=tarn_client::INLINE_MAX as i64).contains(&n)) {
            // A small object: its bytes go to the namenodes in the one operation that
            // publishes it (kept in the namespace, sealed); blocks if they do not keep it.
            let (data, md5, checksums) = self.read_small(i.body, i.content_md5.as_deref(), want, trailers).await?;
            let meta = new_meta(&md5, &checksums);
            let o = self
                .publish_options(owner.clone(), &i.bucket, &i.key, &meta, i.if_match.as_ref(), i.if_none_match.as_ref())
                .await?;
            match self.nn.put_small(&path, data.clone(), 0, &o).await {
                Ok(_) => {
                    let mut out = dto::PutObjectOutput {
                        e_tag: Some(etag(&meta)),
                        size: Some(data.len() as i64),
                        ..Default::default()
                    };
                    set_checksums!(out, meta);
                    return Ok(S3Response::new(out));
                }
                Err(e) if e.kind() == ErrorKind::InlineUnavailable => {}
                Err(e) => return Err(self.commit_error(&i.bucket, e).await),
            }
            let (mut w, path, guard) = self.stage_create(!data.is_empty()).await?;
            w.write(&data).await.map_err(|e| fs_err("write", e))?;
            Open { w, path, length: data.len() as u64, md5, checksums, guard }
        } else {
            // One namenode operation makes the staged file with its first block, one
            // completes it and publishes it as the object.
            let first_block = body_len.is_some_and(|n| n > 0);
            self.stage_open(i.body, PUT_BYTES_MAX, i.content_md5.as_deref(), want, trailers, first_block).await?
        };
        let meta = new_meta(&staged.md5, &staged.checksums);
        let o = self
            .publish_options(owner, &i.bucket, &i.key, &meta, i.if_match.as_ref(), i.if_none_match.as_ref())
            .await?;
        let Open { w, mut guard, length, .. } = staged;
        match w.close_publish(&path, &o).await {
            // The staged file is the object now; on an error the guard removes it.
            Ok(_) => guard.committed(),
            Err(e) => return Err(self.commit_error(&i.bucket, e).await),
        }
        let mut out =
            dto::PutObjectOutput { e_tag: Some(etag(&meta)), size: Some(length as i64), ..Default::default() };
        set_checksums!(out, meta);
        Ok(S3Response::new(out))
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let i = req.input;
        let conds = ReadConditions {
            if_match: i.if_match.as_ref(),
            if_none_match: i.if_none_match.as_ref(),
            modified_since: i.if_modified_since.as_ref(),
            unmodified_since: i.if_unmodified_since.as_ref(),
        };
        let (path, st, m) = self.read_target(&i.bucket, &i.key, i.version_id.as_deref(), &conds).await?;
        let len = if st.is_dir() { 0 } else { st.length };
        let (range, content_range) = match &i.range {
            Some(r) => {
                let r = r.check(len)?;
                let cr = format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1));
                (r, Some(cr))
            }
            None => (0..len, None),
        };
        let body = if range.is_empty() {
            blob(futures::stream::empty::<Result<Bytes, ClientError>>())
        } else {
            // Read as the key's user: the object's permissions apply as to `tarn fs`.
            let nn = self.nn_for(req.credentials.as_ref()).await?;
            let reader = FileReader::open(nn, &path).await.map_err(|e| fs_err("open", e))?;
            if reader.file_id() != st.file_id {
                return Err(s3_error!(InternalError, "the object was replaced while it was opened; retry"));
            }
            blob(read_stream(reader, range.start, range.end))
        };
        let checksums = content_range.is_none()
            && i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == dto::ChecksumMode::ENABLED);
        let mut out = dto::GetObjectOutput {
            body: Some(body),
            content_length: Some((range.end - range.start) as i64),
            content_range,
            ..Default::default()
        };
        describe_object!(out, &m, &st, checksums);
        Ok(S3Response::new(out))
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let i = req.input;
        let conds = ReadConditions {
            if_match: i.if_match.as_ref(),
            if_none_match: i.if_none_match.as_ref(),
            modified_since: i.if_modified_since.as_ref(),
            unmodified_since: i.if_unmodified_since.as_ref(),
        };
        let (_, st, m) = self.read_target(&i.bucket, &i.key, i.version_id.as_deref(), &conds).await?;
        let len = if st.is_dir() { 0 } else { st.length };
        let mut out = dto::HeadObjectOutput { content_length: Some(len as i64), ..Default::default() };
        let checksums = i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == dto::ChecksumMode::ENABLED);
        describe_object!(out, &m, &st, checksums);
        Ok(S3Response::new(out))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let i = req.input;
        self.delete_key(&i.bucket, &i.key).await?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let i = req.input;
        self.bucket_exists(&i.bucket).await?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per DeleteObjects request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in &i.delete.objects {
            match self.delete_key(&i.bucket, &o.key).await {
                Ok(()) => {
                    if !quiet {
                        deleted.push(dto::DeletedObject { key: Some(o.key.clone()), ..Default::default() });
                    }
                }
                Err(e) => errors.push(dto::Error {
                    key: Some(o.key.clone()),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let i = req.input;
        let (dst, dst_marker) = object_path(&i.bucket, &i.key)?;
        if dst_marker {
            return Err(s3_error!(InvalidArgument, "cannot copy onto a directory marker"));
        }
        self.bucket_exists(&i.bucket).await?;
        let conds = ReadConditions {
            if_match: i.copy_source_if_match.as_ref(),
            if_none_match: i.copy_source_if_none_match.as_ref(),
            modified_since: i.copy_source_if_modified_since.as_ref(),
            unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
        };
        let (src_path, src, sm) = self.copy_source_target(&i.copy_source, &conds).await?;
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
        if src_path == dst && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs a change: set x-amz-metadata-directive: REPLACE"
            ));
        }
        let len = if src.is_dir() { 0 } else { src.length };
        let staged = self.stage_copy(self.nn_for(req.credentials.as_ref()).await?, &src, &src_path, 0, len).await?;
        let mut meta = if replace {
            ObjMeta {
                content_type: i.content_type,
                content_encoding: i.content_encoding,
                content_disposition: i.content_disposition,
                content_language: i.content_language,
                cache_control: i.cache_control,
                metadata: i.metadata.unwrap_or_default().into_iter().collect(),
                ..Default::default()
            }
        } else {
            ObjMeta { checksums: BTreeMap::new(), parts: None, ..sm.clone() }
        };
        meta.etag = hex::encode(staged.md5);
        meta.checksums = staged.checksums.clone();
        let sources = [(staged.path.clone(), staged.file_id)];
        let mut staged = staged;
        let st = self
            .commit(
                self.owner_for(req.credentials.as_ref()).await?,
                &sources,
                (&i.bucket, &i.key, &dst),
                &meta,
                None,
                None,
            )
            .await?;
        staged.guard.committed();
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(ts(st.mtime_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let i = req.input;
        self.bucket_exists(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let marker = i.marker.clone().unwrap_or_default();
        let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == dto::EncodingType::URL);
        let nn = self.nn_for(req.credentials.as_ref()).await?;
        let page = self.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &marker, max).await?;
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(&prefix)),
            marker: Some(enc(&marker)),
            max_keys: Some(max),
            is_truncated: Some(page.truncated),
            next_marker: page.truncated.then(|| page.last.as_deref().map(enc)).flatten(),
            contents: Some(page.objects.iter().map(|(k, st)| self.object_entry(k, st, url)).collect()),
            common_prefixes: Some(page.prefixes.iter().map(|p| dto::CommonPrefix { prefix: Some(enc(p)) }).collect()),
            delimiter: i.delimiter.as_deref().map(enc),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let i = req.input;
        self.bucket_exists(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == dto::EncodingType::URL);
        let after = match &i.continuation_token {
            // Paginators resuming inside the first page send an empty token.
            Some(t) if !t.is_empty() => {
                let raw = b64.decode(t).map_err(|_| s3_error!(InvalidArgument, "the continuation token is invalid"))?;
                String::from_utf8(raw).map_err(|_| s3_error!(InvalidArgument, "the continuation token is invalid"))?
            }
            _ => i.start_after.clone().unwrap_or_default(),
        };
        let nn = self.nn_for(req.credentials.as_ref()).await?;
        let page = self.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &after, max).await?;
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let count = (page.objects.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(&prefix)),
            max_keys: Some(max),
            key_count: Some(count),
            continuation_token: i.continuation_token.clone(),
            start_after: i.start_after.as_deref().map(enc),
            is_truncated: Some(page.truncated),
            next_continuation_token: page.truncated.then(|| page.last.as_ref().map(|l| b64.encode(l))).flatten(),
            contents: Some(page.objects.iter().map(|(k, st)| self.object_entry(k, st, url)).collect()),
            common_prefixes: Some(page.prefixes.iter().map(|p| dto::CommonPrefix { prefix: Some(enc(p)) }).collect()),
            delimiter: i.delimiter.as_deref().map(enc),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        // Versioning is never on: every object is its only ("null") version.
        let i = req.input;
        self.bucket_exists(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let marker = i.key_marker.clone().unwrap_or_default();
        let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == dto::EncodingType::URL);
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let nn = self.nn_for(req.credentials.as_ref()).await?;
        let page = self.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &marker, max).await?;
        let versions = page
            .objects
            .iter()
            .map(|(k, st)| {
                let o = self.object_entry(k, st, url);
                dto::ObjectVersion {
                    key: o.key,
                    e_tag: o.e_tag,
                    size: o.size,
                    last_modified: o.last_modified,
                    is_latest: Some(true),
                    version_id: Some("null".into()),
                    storage_class: Some(dto::ObjectVersionStorageClass::from_static(
                        dto::ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }
            })
            .collect();
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(&prefix)),
            key_marker: Some(enc(&marker)),
            max_keys: Some(max),
            is_truncated: Some(page.truncated),
            next_key_marker: page.truncated.then(|| page.last.as_deref().map(enc)).flatten(),
            next_version_id_marker: page.truncated.then(|| "null".to_string()),
            versions: Some(versions),
            common_prefixes: Some(page.prefixes.iter().map(|p| dto::CommonPrefix { prefix: Some(enc(p)) }).collect()),
            delimiter: i.delimiter.as_deref().map(enc),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let i = req.input;
        let (_, marker) = object_path(&i.bucket, &i.key)?;
        if marker {
            return Err(s3_error!(InvalidArgument, "keys ending in '/' are directories in Tarn and must be empty"));
        }
        self.bucket_exists(&i.bucket).await?;
        let id = random_id();
        let dir = upload_dir(&i.bucket, &id);
        let info = UploadInfo {
            key: i.key.clone(),
            initiated_ms: now_ms(),
            meta: ObjMeta {
                content_type: i.content_type,
                content_encoding: i.content_encoding,
                content_disposition: i.content_disposition,
                content_language: i.content_language,
                cache_control: i.cache_control,
                metadata: i.metadata.unwrap_or_default().into_iter().collect(),
                ..Default::default()
            },
        };
        // The upload's directory and its description in one operation (never one without
        // the other), while the bucket exists.
        let opts = MkdirOptions {
            xattrs: BTreeMap::from([(UPLOAD_XATTR.to_string(), serde_json::to_vec(&info).expect("serializes"))]),
            require_dir: Some(bucket_path(&i.bucket)),
            ..Default::default()
        };
        match self.nn.mkdir_exclusive(&dir, &opts).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(s3_error!(NoSuchBucket, "no bucket {:?}", i.bucket));
            }
            // Refusals say what they are (an unfinished upgrade is a 503).
            Err(e) => return Err(fs_err("create upload", e)),
        }
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let headers = req.headers;
        let trailers = req.trailing_headers;
        let i = req.input;
        if !(1..=PARTS_MAX).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number {} is not in 1..={PARTS_MAX}", i.part_number));
        }
        let (_, _) = self.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
        let want = wanted(
            i.checksum_algorithm.as_ref(),
            i.checksum_crc32,
            i.checksum_crc32c,
            i.checksum_crc64nvme,
            i.checksum_sha1,
            i.checksum_sha256,
            &headers,
        );
        let staged = self.stage(i.body, PUT_BYTES_MAX, i.content_md5.as_deref(), want, trailers).await?;
        let (m, _) = self.finish_part(&i.bucket, &i.upload_id, i.part_number, staged).await?;
        let mut out = dto::UploadPartOutput { e_tag: Some(etag(&m)), ..Default::default() };
        set_checksums!(out, m);
        Ok(S3Response::new(out))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let i = req.input;
        if !(1..=PARTS_MAX).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "part number {} is not in 1..={PARTS_MAX}", i.part_number));
        }
        self.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
        let conds = ReadConditions {
            if_match: i.copy_source_if_match.as_ref(),
            if_none_match: i.copy_source_if_none_match.as_ref(),
            modified_since: i.copy_source_if_modified_since.as_ref(),
            unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
        };
        let (src_path, src, _) = self.copy_source_target(&i.copy_source, &conds).await?;
        let (start, end) = copy_range(i.copy_source_range.as_deref(), src.length)?;
        let staged = self.stage_copy(self.nn_for(req.credentials.as_ref()).await?, &src, &src_path, start, end).await?;
        let (m, st) = self.finish_part(&i.bucket, &i.upload_id, i.part_number, staged).await?;
        Ok(S3Response::new(dto::UploadPartCopyOutput {
            copy_part_result: Some(dto::CopyPartResult {
                e_tag: Some(etag(&m)),
                last_modified: Some(ts(st.mtime_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let i = req.input;
        let (path, _) = object_path(&i.bucket, &i.key)?;
        let asked = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(MalformedXML, "CompleteMultipartUpload lists no parts"));
        }
        let (dir, info) = match self.upload_info(&i.bucket, &i.key, &i.upload_id).await {
            Ok(v) => v,
            // A retry of a complete that committed (its answer was lost): S3 answers it
            // again when the object is the one those parts made.
            Err(e) if *e.code() == S3ErrorCode::NoSuchUpload => {
                let mut md5s = Vec::new();
                for p in &asked {
                    match p.e_tag.as_ref().and_then(|e| hex::decode(strip_quotes(e.value())).ok()) {
                        Some(d) => md5s.extend(d),
                        None => return Err(e),
                    }
                }
                let want = format!("{:x}-{}", Md5::digest(&md5s), asked.len());
                return match self.head(&i.bucket, &i.key).await {
                    Ok((_, st)) if meta_of(&st).etag == want => {
                        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
                            bucket: Some(i.bucket.clone()),
                            key: Some(i.key.clone()),
                            e_tag: Some(ETag::Strong(want)),
                            location: Some(format!("/{}/{}", i.bucket, i.key)),
                            ..Default::default()
                        }))
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let have: BTreeMap<i32, FileStatus> = self.parts(&dir).await?.into_iter().collect();
        let mut sources = Vec::with_capacity(asked.len());
        let mut md5s = Vec::with_capacity(asked.len() * 16);
        let mut prev = 0;
        for (n, p) in asked.iter().enumerate() {
            let num = p.part_number.unwrap_or(0);
            if num <= prev {
                return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
            }
            prev = num;
            let st = have.get(&num).ok_or_else(|| s3_error!(InvalidPart, "part {num} was not uploaded"))?;
            let m = meta_of(st);
            if let Some(e) = &p.e_tag {
                if strip_quotes(e.value()) != m.etag {
                    return Err(s3_error!(InvalidPart, "part {num} has ETag {}, not {}", m.etag, e.value()));
                }
            }
            if n + 1 < asked.len() && st.length < PART_BYTES_MIN {
                return Err(s3_error!(
                    EntityTooSmall,
                    "part {num} is {} bytes; all but the last need 5 MiB",
                    st.length
                ));
            }
            md5s.extend(hex::decode(&m.etag).map_err(|_| internal("part etag", &m.etag))?);
            sources.push((part_path(&i.bucket, &i.upload_id, num), st.file_id));
        }
        let mut meta = info.meta.clone();
        meta.etag = format!("{:x}-{}", Md5::digest(&md5s), asked.len());
        meta.parts = Some(asked.len() as u32);
        self.commit(
            self.owner_for(req.credentials.as_ref()).await?,
            &sources,
            (&i.bucket, &i.key, &path),
            &meta,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
        )
        .await?;
        // Parts not listed go with the upload.
        if let Err(e) = self.nn.delete(&dir, true, None).await {
            tracing::warn!(%dir, error = %e, "could not remove a completed upload's directory");
        }
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&meta)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let i = req.input;
        let (dir, _) = self.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
        self.nn.delete(&dir, true, None).await.map_err(|e| fs_err("abort upload", e))?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let i = req.input;
        let (dir, _) = self.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
        let marker: i32 = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let all: Vec<_> = self.parts(&dir).await?.into_iter().filter(|(n, _)| *n > marker).collect();
        let truncated = all.len() > max;
        let parts: Vec<dto::Part> = all
            .iter()
            .take(max)
            .map(|(n, st)| {
                let m = meta_of(st);
                let mut part = dto::Part {
                    part_number: Some(*n),
                    e_tag: Some(etag(&m)),
                    size: Some(st.length as i64),
                    last_modified: Some(ts(st.mtime_ms)),
                    ..Default::default()
                };
                set_checksums!(part, m);
                part
            })
            .collect();
        let next = parts.last().and_then(|p| p.part_number);
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let i = req.input;
        self.bucket_exists(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let opts = ListOptions { collapse_directories: true, with_xattrs: true, ..Default::default() };
        let root = format!("{UPLOADS_DIR}/{}/", i.bucket);
        let mut uploads = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = match self.nn.list_tree(&root, &after, 1000, &opts).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => (Vec::new(), false),
                Err(e) => return Err(fs_err("list uploads", e)),
            };
            for st in page {
                after = st.path.clone();
                let Some(info) = st.xattrs.get(UPLOAD_XATTR).and_then(|v| serde_json::from_slice::<UploadInfo>(v).ok())
                else {
                    continue;
                };
                if !info.key.starts_with(&prefix) {
                    continue;
                }
                let id = st.path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
                uploads.push((info.key, id, info.initiated_ms));
            }
            if !more {
                break;
            }
        }
        uploads.sort();
        let key_marker = i.key_marker.clone().unwrap_or_default();
        let id_marker = i.upload_id_marker.clone().unwrap_or_default();
        uploads.retain(|(k, id, _)| {
            key_marker.is_empty()
                || k.as_str() > key_marker.as_str()
                || (*k == key_marker && id.as_str() > id_marker.as_str())
        });
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        let last = uploads.last().cloned();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: Some(prefix),
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { last.as_ref().map(|l| l.0.clone()) } else { None },
            next_upload_id_marker: if truncated { last.as_ref().map(|l| l.1.clone()) } else { None },
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|(key, id, at)| dto::MultipartUpload {
                        key: Some(key),
                        upload_id: Some(id),
                        initiated: Some(ts(at)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

impl TarnS3 {
    /// Makes a staged file part `n` of an upload (replacing an earlier upload of it).
    async fn finish_part(
        &self,
        bucket: &str,
        upload_id: &str,
        n: i32,
        staged: Staged,
    ) -> S3Result<(ObjMeta, FileStatus)> {
        let m = ObjMeta { etag: hex::encode(staged.md5), checksums: staged.checksums.clone(), ..Default::default() };
        let mut o = ConcatOptions { overwrite: true, ..Default::default() };
        o.xattrs.insert(META_XATTR.into(), encode_meta(&m));
        let dst = part_path(bucket, upload_id, n);
        let mut staged = staged;
        match self.nn.concat(&[(staged.path.clone(), staged.file_id)], &dst, &o).await {
            Ok(st) => {
                staged.guard.committed();
                Ok((m, st))
            }
            Err(e) => {
                Err(match e.kind() {
                    // The upload was completed or aborted meanwhile.
                    ErrorKind::NotFound | ErrorKind::ParentNotFound => {
                        s3_error!(NoSuchUpload, "upload {upload_id} is gone")
                    }
                    _ => fs_err("store part", e),
                })
            }
        }
    }
}

/// Keeps the gateway's directory (staged uploads, parts, access keys) to the gateway: mode
/// 0700, whoever made it first.
pub async fn make_system_dir_private(nn: &NamenodeClient) -> Result<(), ClientError> {
    let st = match nn.get_file_info(SYSTEM_DIR, false).await? {
        Some(st) => st,
        None => nn.mkdirs(SYSTEM_DIR).await?,
    };
    if st.mode & 0o7777 != 0o700 {
        nn.set_attributes(SYSTEM_DIR, SetAttributes { mode: Some(0o700), ..Default::default() }).await?;
    }
    Ok(())
}

/// Removes staged uploads left behind by a gateway that died mid-upload: closed ones
/// (their lease was recovered) older than `closed_age`, open ones older than `open_age`.
pub async fn sweep_staged(nn: &NamenodeClient, closed_age: Duration, open_age: Duration) -> usize {
    let now = now_ms();
    let mut removed = 0;
    let mut after = String::new();
    loop {
        let Ok((page, more)) = nn.list_tree(&format!("{TMP_DIR}/"), &after, 1000, &ListOptions::default()).await else {
            return removed;
        };
        for st in page {
            after = st.path.clone();
            let age = if st.writer.is_some() { open_age } else { closed_age };
            if st.mtime_ms <= now.saturating_sub(age.as_millis() as u64)
                && nn.delete(&st.path, false, Some(st.file_id)).await.unwrap_or(false)
            {
                removed += 1;
            }
        }
        if !more {
            return removed;
        }
    }
}
