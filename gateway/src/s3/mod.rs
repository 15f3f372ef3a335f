//! The S3 operations over the namespace and blocks.
//!
//! Every write is staged: the bytes go to a file under `/.tarn/s3/tmp`, are checked
//! (Content-MD5, flexible checksums, body signatures), and only then become the object in
//! one namenode operation (`concat`) that also sets the object's metadata and checks the
//! request's conditions. A failed or interrupted upload leaves nothing visible.
//! Multipart parts are files of the upload's directory; completing the upload moves their
//! blocks into the object without copying data.
//!
//! One module per family of operations, each operation a function with the same steps:
//! - parse: s3s has parsed and authenticated the request into its `dto` input;
//! - authorize: the family's `ACCESS` table declares the operation's `AccessClass`,
//!   which `lib.rs`'s `Access` checks before the body is read (`access_class`: an
//!   operation no table declares is refused as NotImplemented); the file permissions of the
//!   key's user apply where the operation reads through `TarnS3::nn_for`;
//! - apply: namespace and block operations, failing with [`ApiError`];
//! - encode: the `dto` output (s3s writes the XML).
//!
//! The families: `bucket.rs` (buckets), `object.rs` (objects: put, get, head, delete,
//! copy), `list.rs` (object listings), `multipart.rs` (multipart uploads); `stage.rs` is
//! the write path they share (staging, verification, commit) and `error.rs` the one
//! place that chooses S3 error codes. `impl S3 for TarnS3` below only delegates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3s::dto::{self, ETag, ETagCondition, StreamingBlob, Timestamp};
use s3s::{S3Error, S3Request, S3Response, S3Result, S3};
use serde::{Deserialize, Serialize};
use tarn_client::blocks::FileReader;
use tarn_client::{ClientError, FileStatus, ListOptions, NamenodeClient, SetAttributes};

use crate::names::*;

/// Sets the `checksum_*` fields of any output type (they share the names) from what the
/// object stored. (Defined before the modules that use it.)
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

/// The read conditions of an input with `if_match`, `if_none_match`, `if_modified_since`
/// and `if_unmodified_since` (GetObject, HeadObject), or with `copy_source`: those of its
/// copy source (CopyObject, UploadPartCopy).
macro_rules! read_conditions {
    ($i:expr) => {
        ReadConditions {
            if_match: $i.if_match.as_ref(),
            if_none_match: $i.if_none_match.as_ref(),
            modified_since: $i.if_modified_since.as_ref(),
            unmodified_since: $i.if_unmodified_since.as_ref(),
        }
    };
    (copy_source $i:expr) => {
        ReadConditions {
            if_match: $i.copy_source_if_match.as_ref(),
            if_none_match: $i.copy_source_if_none_match.as_ref(),
            modified_since: $i.copy_source_if_modified_since.as_ref(),
            unmodified_since: $i.copy_source_if_unmodified_since.as_ref(),
        }
    };
}

/// The checksums a PutObject or UploadPart input (same field names) asks to be verified,
/// taking them out of it.
macro_rules! wanted_checksums {
    ($i:expr, $headers:expr) => {
        wanted(
            $i.checksum_algorithm.as_ref(),
            $i.checksum_crc32,
            $i.checksum_crc32c,
            $i.checksum_crc64nvme,
            $i.checksum_sha1,
            $i.checksum_sha256,
            $headers,
        )
    };
}

/// The metadata a write's input describes its object with (PutObject, CopyObject with
/// REPLACE, CreateMultipartUpload: same field names), taking it out of the input; ETag,
/// checksums and parts are the write's to fill in.
macro_rules! described_by {
    ($i:expr) => {
        ObjMeta {
            content_type: $i.content_type,
            content_encoding: stored_encoding($i.content_encoding),
            expires_ms: $i.expires.as_ref().map(ts_ms),
            content_disposition: $i.content_disposition,
            content_language: $i.content_language,
            cache_control: $i.cache_control,
            metadata: $i.metadata.unwrap_or_default().into_iter().collect(),
            ..Default::default()
        }
    };
}

mod bucket;
mod config;
mod cors;
mod error;
mod list;
mod multipart;
mod object;
mod stage;
mod tagging;

pub use config::BucketConfig;
pub use cors::CorsRule;
pub(crate) use cors::{actual as cors_actual, preflight as cors_preflight, rules_of as cors_rules_of};
pub use error::{ApiError, BodyError};
pub use list::LIST_SCAN_KEYS_MAX;
pub use tagging::{ObjectTags, Tags};

/// The result of a helper: S3 error codes are chosen only when an [`ApiError`] becomes
/// an `S3Error`.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
/// The result of an operation.
type OpResult<T> = ApiResult<S3Response<T>>;

const META_XATTR: &str = "s3.meta";
const BUCKET_XATTR: &str = "s3.bucket";
const MARKER_XATTR: &str = "s3.marker";
const UPLOAD_XATTR: &str = "s3.upload";
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
    /// The sizes of a multipart object's parts, in order (GET/HEAD `partNumber`,
    /// GetObjectAttributes); empty for objects completed before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_sizes: Vec<u64>,
    /// The `Expires` header the object was written with (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// The Content-Encoding to keep for an object: what the client sent without
/// `aws-chunked`, which only framed the request's body.
fn stored_encoding(sent: Option<String>) -> Option<String> {
    let kept: Vec<&str> = sent
        .as_deref()?
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// A multipart upload in progress (on its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadInfo {
    pub(crate) key: String,
    pub(crate) initiated_ms: u64,
    pub(crate) meta: ObjMeta,
    /// The object's tags (`x-amz-tagging` of CreateMultipartUpload).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tags: tagging::Tags,
}

pub struct TarnS3 {
    nn: Arc<NamenodeClient>,
    keys: Arc<crate::keys::KeyStore>,
    /// Clients acting for each user that wrote through this gateway (same connections).
    users: std::sync::Mutex<HashMap<String, Arc<NamenodeClient>>>,
    /// Keys a listing request reads at most (see [`LIST_SCAN_KEYS_MAX`]).
    list_scan_keys_max: usize,
    /// Bucket configuration changes through this gateway, one at a time (`config.rs`).
    config_changes: tokio::sync::Mutex<()>,
}

impl TarnS3 {
    pub fn new(nn: Arc<NamenodeClient>, keys: Arc<crate::keys::KeyStore>, list_scan_keys_max: usize) -> Self {
        TarnS3 {
            nn,
            keys,
            users: Default::default(),
            list_scan_keys_max: list_scan_keys_max.max(1),
            config_changes: Default::default(),
        }
    }

    /// The namenode client acting for the user of the request's access key, so what the
    /// request makes (buckets, objects, directory markers) is owned by that user and what
    /// it reads is subject to that user's permissions. Staging and upload bookkeeping under
    /// `/.tarn/s3` stay the gateway's own.
    async fn nn_for(&self, creds: Option<&s3s::auth::Credentials>) -> ApiResult<Arc<NamenodeClient>> {
        // Anonymous requests (reads of anonymous-read buckets) read as nobody in particular.
        let user = match creds {
            None => "anonymous".to_string(),
            Some(c) => {
                match self.keys.identity(&c.access_key).await.map_err(|e| ApiError::internal("access key lookup", e))? {
                    None => {
                        return Err(ApiError::AccessDenied(format!("access key {} no longer exists", c.access_key)));
                    }
                    // Admin keys are S3's root: they act as the gateway itself, which the
                    // namenode treats as its superuser.
                    Some(id) if id.admin => return Ok(self.nn.clone()),
                    Some(id) => id.user,
                }
            }
        };
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        Ok(users.entry(user.clone()).or_insert_with(|| Arc::new(self.nn.for_user(&user))).clone())
    }

    /// The user who should own what a request makes on the gateway's behalf (a bucket):
    /// the key's user, or `None` for admin keys (the gateway keeps it).
    async fn owner_for(&self, creds: Option<&s3s::auth::Credentials>) -> ApiResult<Option<String>> {
        let Some(c) = creds else { return Ok(None) };
        match self.keys.identity(&c.access_key).await.map_err(|e| ApiError::internal("access key lookup", e))? {
            Some(id) if !id.admin => Ok(Some(id.user)),
            _ => Ok(None),
        }
    }

    /// The caller's access key unless it is an admin's (None: an admin, sees everything;
    /// an empty string: anonymous).
    async fn restricted_caller(&self, creds: Option<&s3s::auth::Credentials>) -> ApiResult<Option<String>> {
        let Some(c) = creds else { return Ok(Some(String::new())) };
        match self.keys.identity(&c.access_key).await {
            Ok(Some(id)) if id.admin => Ok(None),
            Ok(_) => Ok(Some(c.access_key.clone())),
            Err(e) => Err(ApiError::internal("access key lookup", e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Who may call what

/// Who may call an operation, declared by each family's `ACCESS` table and checked by
/// `lib.rs`'s `Access` before the request's body is read. Admin keys may call anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessClass {
    /// Reads a bucket: a read grant on it; with `anonymous_read`, a bucket open to
    /// anonymous reads lets any caller in (signed or not).
    Read { anonymous_read: bool },
    /// Changes a bucket: a write grant on it.
    Write,
    /// Any signed key, with no grant on a bucket (the operation itself limits what the key
    /// sees or makes); `verb` says what an anonymous caller is refused ("list buckets").
    Signed { verb: &'static str },
    /// No table declares it: an operation Tarn does not implement (a test checks that
    /// every implemented one is declared). Refused with NotImplemented before anything
    /// else, so a new operation is never open by omission.
    Unimplemented,
}

/// The access tables of the families: every operation `impl S3 for TarnS3` implements is
/// declared in exactly one of them (a test checks).
const ACCESS: [&[(&str, AccessClass)]; 6] =
    [bucket::ACCESS, object::ACCESS, list::ACCESS, multipart::ACCESS, tagging::ACCESS, cors::ACCESS];

/// The class declared for operation `op` (as s3s names it: `cx.s3_op().name()`, e.g.
/// `ListObjectsV2`), or `None` if no family declares it.
fn declared(op: &str) -> Option<AccessClass> {
    ACCESS.iter().flat_map(|t| t.iter()).find(|(name, _)| *name == op).map(|(_, c)| *c)
}

/// Who may call operation `op`: as its family declares; nobody for an operation none
/// declares (fail closed: a new operation is never open by omission).
pub(crate) fn access_class(op: &str) -> AccessClass {
    declared(op).unwrap_or(AccessClass::Unimplemented)
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

// ---------------------------------------------------------------------------------------
// Reading objects

/// The preconditions of a read (GET/HEAD, or a copy's source).
struct ReadConditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    modified_since: Option<&'a Timestamp>,
    unmodified_since: Option<&'a Timestamp>,
}

impl ReadConditions<'_> {
    /// Checks them in RFC 7232's order, as S3 applies them.
    fn check(&self, m: &ObjMeta, mtime_ms: u64) -> ApiResult<()> {
        let secs = mtime_ms / 1000;
        let matches = |c: &ETagCondition| match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => strip_quotes(e.value()) == m.etag,
        };
        if let Some(c) = self.if_match {
            if !matches(c) {
                return Err(ApiError::PreconditionFailed(format!("If-Match: the object's ETag is {}", m.etag)));
            }
        } else if let Some(t) = self.unmodified_since {
            if secs > ts_ms(t) / 1000 {
                return Err(ApiError::PreconditionFailed(
                    "If-Unmodified-Since: the object was modified after it".into(),
                ));
            }
        }
        if let Some(c) = self.if_none_match {
            if matches(c) {
                return Err(ApiError::NotModified);
            }
        } else if let Some(t) = self.modified_since {
            if secs <= ts_ms(t) / 1000 {
                return Err(ApiError::NotModified);
            }
        }
        Ok(())
    }
}

impl TarnS3 {
    async fn bucket_exists(&self, bucket: &str) -> ApiResult<FileStatus> {
        match self.nn.get_file_info(&bucket_path(bucket), true).await {
            Ok(Some(st)) if st.is_dir() => Ok(st),
            Ok(_) => Err(ApiError::NoSuchBucket(bucket.to_string())),
            Err(source) => Err(ApiError::Fs { what: "bucket lookup", source }),
        }
    }

    /// The object at `key`: a closed file, or a marked directory for keys ending in '/'.
    async fn head(&self, bucket: &str, key: &str) -> ApiResult<(String, FileStatus)> {
        let (path, marker) = object_path(bucket, key)?;
        let st = self.nn.get_file_info(&path, true).await.map_err(ApiError::fs("lookup"))?;
        match st {
            Some(st) if marker && st.is_dir() && is_marker(&st) => Ok((path, st)),
            Some(st) if !marker && !st.is_dir() && st.writer.is_none() => Ok((path, st)),
            _ => {
                self.bucket_exists(bucket).await?;
                Err(ApiError::NoSuchKey { bucket: bucket.to_string(), key: key.to_string() })
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
    ) -> ApiResult<(String, FileStatus, ObjMeta)> {
        if version.is_some_and(|v| v != "null") {
            return Err(ApiError::NoSuchVersion);
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
    ) -> ApiResult<(String, FileStatus, ObjMeta)> {
        let (bucket, key) = copy_source(cs)?;
        self.read_target(&bucket, &key, None, conds).await.map_err(|e| match e {
            ApiError::NotModified => ApiError::CopySourceCondition,
            e => e,
        })
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

fn copy_source(cs: &dto::CopySource) -> ApiResult<(String, String)> {
    match cs {
        dto::CopySource::Bucket { bucket, key, version_id } => {
            if version_id.as_deref().is_some_and(|v| v != "null") {
                return Err(ApiError::NoSuchVersion);
            }
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(ApiError::NotImplemented("copy sources other than bucket/key".into())),
    }
}

// ---------------------------------------------------------------------------------------
// The operations: each delegates to its family's module, where its access is declared.

#[async_trait::async_trait]
impl S3 for TarnS3 {
    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        bucket::create_bucket(self, req).await.map_err(S3Error::from)
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await.map_err(S3Error::from)
    }

    async fn head_bucket(&self, req: S3Request<dto::HeadBucketInput>) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        bucket::head_bucket(self, req).await.map_err(S3Error::from)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await.map_err(S3Error::from)
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        bucket::get_bucket_versioning(self, req).await.map_err(S3Error::from)
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        bucket::list_buckets(self, req).await.map_err(S3Error::from)
    }

    async fn put_object(&self, req: S3Request<dto::PutObjectInput>) -> S3Result<S3Response<dto::PutObjectOutput>> {
        object::put_object(self, req).await.map_err(S3Error::from)
    }

    async fn get_object(&self, req: S3Request<dto::GetObjectInput>) -> S3Result<S3Response<dto::GetObjectOutput>> {
        object::get_object(self, req).await.map_err(S3Error::from)
    }

    async fn head_object(&self, req: S3Request<dto::HeadObjectInput>) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        object::head_object(self, req).await.map_err(S3Error::from)
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        object::delete_object(self, req).await.map_err(S3Error::from)
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        object::delete_objects(self, req).await.map_err(S3Error::from)
    }

    async fn copy_object(&self, req: S3Request<dto::CopyObjectInput>) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        object::copy_object(self, req).await.map_err(S3Error::from)
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        list::list_objects(self, req).await.map_err(S3Error::from)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await.map_err(S3Error::from)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await.map_err(S3Error::from)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await.map_err(S3Error::from)
    }

    async fn upload_part(&self, req: S3Request<dto::UploadPartInput>) -> S3Result<S3Response<dto::UploadPartOutput>> {
        multipart::upload_part(self, req).await.map_err(S3Error::from)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await.map_err(S3Error::from)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await.map_err(S3Error::from)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await.map_err(S3Error::from)
    }

    async fn list_parts(&self, req: S3Request<dto::ListPartsInput>) -> S3Result<S3Response<dto::ListPartsOutput>> {
        multipart::list_parts(self, req).await.map_err(S3Error::from)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await.map_err(S3Error::from)
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        tagging::get_object_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<dto::PutObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::PutObjectTaggingOutput>> {
        tagging::put_object_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<dto::DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectTaggingOutput>> {
        tagging::delete_object_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<dto::GetBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
        tagging::get_bucket_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<dto::PutBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::PutBucketTaggingOutput>> {
        tagging::put_bucket_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<dto::DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketTaggingOutput>> {
        tagging::delete_bucket_tagging(self, req).await.map_err(S3Error::from)
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<dto::GetBucketCorsInput>,
    ) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
        cors::get_bucket_cors(self, req).await.map_err(S3Error::from)
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<dto::PutBucketCorsInput>,
    ) -> S3Result<S3Response<dto::PutBucketCorsOutput>> {
        cors::put_bucket_cors(self, req).await.map_err(S3Error::from)
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<dto::DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketCorsOutput>> {
        cors::delete_bucket_cors(self, req).await.map_err(S3Error::from)
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<dto::GetObjectAttributesInput>,
    ) -> S3Result<S3Response<dto::GetObjectAttributesOutput>> {
        object::get_object_attributes(self, req).await.map_err(S3Error::from)
    }
}

// ---------------------------------------------------------------------------------------
// The gateway's own directory

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The name s3s gives an operation (`cx.s3_op().name()`) for its `S3` trait method:
    /// the method's snake_case name in CamelCase (`list_objects_v2` → `ListObjectsV2`).
    fn op_name(method: &str) -> String {
        method
            .split('_')
            .map(|w| {
                let mut cs = w.chars();
                cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
            })
            .collect()
    }

    /// The methods of `impl S3 for TarnS3`, read from this file's source.
    fn implemented() -> Vec<String> {
        let src = include_str!("mod.rs");
        let start = src.find("\nimpl S3 for TarnS3 {\n").expect("the S3 impl in mod.rs");
        let body = &src[start..];
        let end = body.find("\n}\n").expect("the end of the S3 impl");
        body[..end]
            .split("async fn ")
            .skip(1)
            .map(|s| s.split('(').next().expect("a method name").trim().to_string())
            .collect()
    }

    #[test]
    fn operation_names_are_s3s_names() {
        assert_eq!(op_name("list_objects_v2"), "ListObjectsV2");
        assert_eq!(op_name("get_bucket_location"), "GetBucketLocation");
        assert_eq!(op_name("upload_part_copy"), "UploadPartCopy");
    }

    #[test]
    fn every_implemented_operation_declares_its_access_class() {
        let ops: Vec<String> = implemented().iter().map(|m| op_name(m)).collect();
        assert!(ops.len() >= 22 && ops.contains(&"ListMultipartUploads".to_string()), "parsed {ops:?}");
        for op in &ops {
            let n = ACCESS.iter().flat_map(|t| t.iter()).filter(|(name, _)| name == op).count();
            assert_eq!(n, 1, "{op} is implemented and must be declared in exactly one ACCESS table");
        }
        // And nothing is declared that is not implemented (the entry would say something
        // of an operation s3s answers NotImplemented for).
        for (name, _) in ACCESS.iter().flat_map(|t| t.iter()) {
            assert!(ops.iter().any(|op| op == name), "{name} is declared but not implemented");
        }
    }

    #[test]
    fn undeclared_operations_are_refused() {
        for op in ["PutBucketPolicy", "GetBucketAcl", "ListDirectoryBuckets", "WriteGetObjectResponse", ""] {
            assert_eq!(access_class(op), AccessClass::Unimplemented, "{op}");
        }
    }

    #[test]
    fn access_classes_keep_the_gateways_rules() {
        use AccessClass::*;
        // Uploads in progress are not shown to anonymous readers of a public bucket.
        assert_eq!(access_class("ListMultipartUploads"), Read { anonymous_read: false });
        assert_eq!(access_class("ListParts"), Read { anonymous_read: false });
        assert_eq!(access_class("GetObject"), Read { anonymous_read: true });
        assert_eq!(access_class("ListObjectsV2"), Read { anonymous_read: true });
        assert_eq!(access_class("PutObject"), Write);
        assert_eq!(access_class("DeleteBucket"), Write);
        assert!(matches!(access_class("CreateBucket"), Signed { .. }));
        assert!(matches!(access_class("ListBuckets"), Signed { .. }));
    }
}
