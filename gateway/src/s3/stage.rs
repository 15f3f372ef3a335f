//! The write path every uploading operation shares (PutObject, CopyObject, UploadPart,
//! UploadPartCopy, CompleteMultipartUpload): bodies are staged into files under
//! `/.tarn/s3/tmp` and verified (Content-MD5, flexible checksums in headers or trailers),
//! then published as the object in one namenode operation that sets its metadata and
//! checks the request's conditions. A staged file that is not committed is removed, also
//! when the request is dropped midway.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::{self, ETagCondition, StreamingBlob};
use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{ClientError, ConcatOptions, CreateOptions, ErrorKind, FileStatus, NamenodeClient};

use super::tagging::{encode_tags, Tags, TAGS_XATTR};
use super::{
    blob, encode_meta, meta_of, random_id, read_stream, strip_quotes, ApiError, ApiResult, BodyError, ObjMeta, TarnS3,
    META_XATTR,
};
use crate::names::*;

/// Largest single PUT and largest part, as on S3.
pub(super) const PUT_BYTES_MAX: u64 = 5 << 30;

/// Checksums the client asked for (by header value, algorithm or trailer name).
pub(super) struct Wanted {
    hasher: s3s::checksum::ChecksumHasher,
    given: dto::Checksum,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn wanted(
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
) -> ApiResult<BTreeMap<String, String>> {
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
                return Err(ApiError::BadDigest(format!(
                    "the {name} checksum sent ({sent}) does not match the body's ({value})"
                )));
            }
        }
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// Checks a body read in full against what the client said about it (Content-MD5, the
/// flexible checksums in headers or trailers); returns its MD5 and the checksums to keep.
fn verify_body(
    md5: Md5,
    content_md5: Option<&str>,
    want: Wanted,
    trailers: Option<s3s::TrailingHeaders>,
) -> ApiResult<([u8; 16], BTreeMap<String, String>)> {
    let md5: [u8; 16] = md5.finalize().into();
    if let Some(sent) = content_md5 {
        use base64::Engine as _;
        let sent = base64::engine::general_purpose::STANDARD
            .decode(sent.trim())
            .map_err(|_| ApiError::InvalidDigest("Content-MD5 is not base64".into()))?;
        if sent != md5 {
            return Err(ApiError::BadDigest("the Content-MD5 sent does not match the body's".into()));
        }
    }
    let trailers = trailers.and_then(|t| t.take());
    let checksums = verify_checksums(want.hasher.finalize(), &want.given, trailers.as_ref())?;
    Ok((md5, checksums))
}

/// A staged upload whose bytes are all written and verified, its file still open.
pub(super) struct Open {
    pub(super) w: FileWriter<'static>,
    pub(super) path: String,
    pub(super) length: u64,
    pub(super) md5: [u8; 16],
    pub(super) checksums: BTreeMap<String, String>,
    pub(super) guard: StageGuard,
}

/// What a staged upload produced.
pub(super) struct Staged {
    pub(super) path: String,
    pub(super) file_id: u64,
    pub(super) md5: [u8; 16],
    pub(super) checksums: BTreeMap<String, String>,
    pub(super) guard: StageGuard,
}

/// Deletes a staged file unless it was committed: also when the request is dropped
/// midway (the client went away), which runs no code after the await it was parked on.
pub(super) struct StageGuard {
    nn: Arc<NamenodeClient>,
    path: String,
    armed: bool,
}

impl StageGuard {
    pub(super) fn committed(&mut self) {
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

impl TarnS3 {
    /// Streams `body` into a new staged file, verifying what the client sent about it.
    pub(super) async fn stage(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&str>,
        want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> ApiResult<Staged> {
        let o = self.stage_open(body, limit, content_md5, want, trailers, false).await?;
        let st = o.w.close().await.map_err(ApiError::fs("finish upload"))?;
        Ok(Staged { path: o.path, file_id: st.file_id, md5: o.md5, checksums: o.checksums, guard: o.guard })
    }

    /// Streams `body` into a new staged file and verifies it, leaving the file open (to
    /// be closed, or closed and published in one namenode operation). With `first_block`
    /// (a body is coming), the file's first block is allocated with the file.
    pub(super) async fn stage_open(
        &self,
        body: Option<StreamingBlob>,
        limit: u64,
        content_md5: Option<&str>,
        mut want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
        first_block: bool,
    ) -> ApiResult<Open> {
        let (mut w, path, guard) = self.stage_create(first_block).await?;
        let mut md5 = Md5::new();
        let mut length = 0u64;
        let result: ApiResult<()> = async {
            if let Some(mut body) = body {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(BodyError::classify)?;
                    length += chunk.len() as u64;
                    if length > limit {
                        return Err(ApiError::EntityTooLarge(format!("the body exceeds {limit} bytes")));
                    }
                    md5.update(&chunk);
                    want.hasher.update(&chunk);
                    w.write(&chunk).await.map_err(ApiError::fs("write"))?;
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
    pub(super) async fn stage_create(&self, first_block: bool) -> ApiResult<(FileWriter<'static>, String, StageGuard)> {
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
        let w = created.map_err(ApiError::fs("stage upload"))?;
        Ok((w, path, guard))
    }

    /// A small body read whole (at most `INLINE_MAX` bytes) and verified.
    pub(super) async fn read_small(
        &self,
        body: Option<StreamingBlob>,
        content_md5: Option<&str>,
        mut want: Wanted,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> ApiResult<(Bytes, [u8; 16], BTreeMap<String, String>)> {
        let mut md5 = Md5::new();
        let mut data = bytes::BytesMut::new();
        if let Some(mut body) = body {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BodyError::classify)?;
                if data.len() + chunk.len() > tarn_client::INLINE_MAX {
                    return Err(ApiError::IncompleteBody("the body is longer than its Content-Length".into()));
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
    pub(super) async fn commit(
        &self,
        owner: Option<String>,
        sources: &[(String, u64)],
        (bucket, key, path): (&str, &str, &str),
        what: (&ObjMeta, &Tags),
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> ApiResult<FileStatus> {
        let o = self.publish_options(owner, bucket, key, what, if_match, if_none_match).await?;
        match self.nn.concat(sources, path, &o).await {
            Ok(st) => Ok(st),
            Err(e) => Err(self.commit_error(bucket, e).await),
        }
    }

    /// How a staged upload becomes the object `key` of `bucket`: parents below the bucket
    /// made as needed, the bucket itself required (a DeleteBucket meanwhile is not undone),
    /// the metadata and tags, the owner, and the write conditions.
    pub(super) async fn publish_options(
        &self,
        owner: Option<String>,
        bucket: &str,
        key: &str,
        (meta, tags): (&ObjMeta, &Tags),
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> ApiResult<ConcatOptions> {
        let mut o = ConcatOptions {
            create_parent: true,
            overwrite: true,
            require_dir: Some(bucket_path(bucket)),
            owner,
            ..Default::default()
        };
        o.xattrs.insert(META_XATTR.into(), encode_meta(meta));
        if !tags.is_empty() {
            o.xattrs.insert(TAGS_XATTR.into(), encode_tags(tags));
        }
        match if_none_match {
            Some(ETagCondition::Any) => o.dst_must_be_absent = true,
            Some(ETagCondition::ETag(_)) => {
                return Err(ApiError::NotImplemented("If-None-Match on a write supports only '*'".into()));
            }
            None => {}
        }
        if let Some(c) = if_match {
            let (_, cur) = self.head(bucket, key).await?;
            if let ETagCondition::ETag(e) = c {
                if strip_quotes(e.value()) != meta_of(&cur).etag {
                    return Err(ApiError::PreconditionFailed(format!(
                        "If-Match: the object's ETag is {}",
                        meta_of(&cur).etag
                    )));
                }
            }
            o.dst_expected_file_id = Some(cur.file_id);
        }
        Ok(o)
    }

    /// What a commit the namenode refused means for the request.
    pub(super) async fn commit_error(&self, bucket: &str, e: ClientError) -> ApiError {
        match e.kind() {
            ErrorKind::ConditionFailed | ErrorKind::AlreadyExists => {
                ApiError::PreconditionFailed(format!("the object changed or exists: {e}"))
            }
            // The bucket went away meanwhile (or a staged source did).
            ErrorKind::NotFound => match self.bucket_exists(bucket).await {
                Err(no_bucket) => no_bucket,
                Ok(_) => ApiError::Fs { what: "commit", source: e },
            },
            _ => ApiError::Fs { what: "commit", source: e },
        }
    }

    /// Copies `[start, end)` of the object at `src` into a staged file.
    /// The source is read as the request's user (`nn`): its permissions apply.
    pub(super) async fn stage_copy(
        &self,
        nn: Arc<NamenodeClient>,
        src: &FileStatus,
        src_path: &str,
        start: u64,
        end: u64,
    ) -> ApiResult<Staged> {
        let reader = FileReader::open(nn, src_path).await.map_err(ApiError::fs("open copy source"))?;
        if reader.file_id() != src.file_id || reader.length() < end {
            return Err(ApiError::PreconditionFailed("the copy source changed while it was read".into()));
        }
        let stream = read_stream(reader, start, end).map_err(std::io::Error::other);
        let want = wanted(None, None, None, None, None, None, &http::HeaderMap::new());
        self.stage(Some(blob(stream)), PUT_BYTES_MAX, None, want, None).await
    }
}
