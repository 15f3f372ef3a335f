//! Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects and
//! CopyObject. Key `x/y` of bucket `b` is the file `/b/x/y`; a key ending in '/' is a
//! directory marker (the directory itself, with the `s3.marker` attribute).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::{self, ETag, ETagCondition};
use s3s::{S3Error, S3Request, S3Response};
use tarn_client::blocks::FileReader;
use tarn_client::{ClientError, ErrorKind, FileStatus, MkdirOptions, SetAttributes};

use super::stage::{wanted, Open, PUT_BYTES_MAX};
use super::{
    blob, etag, is_marker, read_stream, stored_encoding, tagging, ts, ts_ms, AccessClass, ApiError, ApiResult,
    BodyError, ObjMeta, OpResult, ReadConditions, TarnS3, MARKER_XATTR,
};
use crate::names::*;

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    ("PutObject", AccessClass::Write),
    ("GetObject", AccessClass::Read { anonymous_read: true }),
    ("HeadObject", AccessClass::Read { anonymous_read: true }),
    ("DeleteObject", AccessClass::Write),
    ("DeleteObjects", AccessClass::Write),
    // The source bucket's read grant is checked too (`lib.rs`'s `Access::copy_object`).
    ("CopyObject", AccessClass::Write),
    ("GetObjectAttributes", AccessClass::Read { anonymous_read: true }),
];

/// The byte range of part `n` (1-based) of an object of `len` bytes, and how many parts
/// it has: a single-part object is its own part 1.
fn part_range(m: &ObjMeta, len: u64, n: i32) -> ApiResult<(std::ops::Range<u64>, usize)> {
    let count = m.parts.map_or(1, |p| p as usize);
    if n < 1 || n as usize > count {
        return Err(ApiError::InvalidPartNumber(format!("the object has {count} part(s), not a part {n}")));
    }
    if m.parts.is_none() {
        return Ok((0..len, 1));
    }
    if m.part_sizes.len() != count {
        return Err(ApiError::InvalidRequest(
            "this object was completed before Tarn kept part sizes: its parts cannot be read one by one".into(),
        ));
    }
    let start: u64 = m.part_sizes[..n as usize - 1].iter().sum();
    Ok((start..start + m.part_sizes[n as usize - 1], count))
}

/// Keys one DeleteObjects request may name, as on S3.
const DELETE_KEYS_MAX: usize = 1000;

/// Fills what GetObject and HeadObject both say of an object (different output types with
/// the same field names): representation headers, ETag, metadata and (when asked) checksums.
macro_rules! describe_object {
    ($out:expr, $m:expr, $st:expr, $with_checksums:expr) => {{
        let (m, st): (&ObjMeta, &FileStatus) = ($m, $st);
        $out.accept_ranges = Some("bytes".into());
        $out.content_type = Some(m.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into()));
        $out.content_encoding = m.content_encoding.clone();
        $out.expires = m.expires_ms.map(ts);
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

pub(super) async fn put_object(s3: &TarnS3, req: S3Request<dto::PutObjectInput>) -> OpResult<dto::PutObjectOutput> {
    let (path, marker) = object_path(&req.input.bucket, &req.input.key)?;
    // Bad tags are refused before the body is read.
    let tags = tagging::parse_header(req.input.tagging.as_deref())?;
    if marker {
        return put_marker(s3, req, &path, &tags).await;
    }
    let headers = req.headers;
    let trailers = req.trailing_headers;
    let i = req.input;
    if let Some(ETagCondition::Any) = &i.if_none_match {
        // Refuse early; the commit checks again atomically.
        if s3.nn.get_file_info(&path, false).await.map_err(ApiError::fs("lookup"))?.is_some() {
            return Err(ApiError::PreconditionFailed(format!("If-None-Match: * and {:?} exists", i.key)));
        }
    }
    let want = wanted_checksums!(i, &headers);
    // No lookup of the bucket first: the publish requires it (in the same operation),
    // and a refusal for its absence is answered with NoSuchBucket.
    let described = described_by!(i);
    let new_meta = |md5: &[u8; 16], checksums: &BTreeMap<String, String>| ObjMeta {
        etag: hex::encode(md5),
        checksums: checksums.clone(),
        ..described.clone()
    };
    let owner = s3.owner_for(req.credentials.as_ref()).await?;
    // Current boto3 and aws cli send aws-chunked bodies with Transfer-Encoding: chunked
    // and no Content-Length; their decoded length is announced instead.
    let body_len = i.content_length.or_else(|| decoded_length(&headers));
    let staged = if body_len.is_some_and(|n| (0..=tarn_client::INLINE_MAX as i64).contains(&n)) {
        // A small object: its bytes go to the namenodes in the one operation that
        // publishes it (kept in the namespace, sealed); blocks if they do not keep it.
        let (data, md5, checksums) = s3.read_small(i.body, i.content_md5.as_deref(), want, trailers).await?;
        let meta = new_meta(&md5, &checksums);
        let o = s3
            .publish_options(
                owner.clone(),
                &i.bucket,
                &i.key,
                (&meta, &tags),
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
            )
            .await?;
        match s3.nn.put_small(&path, data.clone(), 0, &o).await {
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
            Err(e) => return Err(s3.commit_error(&i.bucket, e).await),
        }
        let (mut w, path, guard) = s3.stage_create(!data.is_empty()).await?;
        w.write(&data).await.map_err(ApiError::fs("write"))?;
        Open { w, path, length: data.len() as u64, md5, checksums, guard }
    } else {
        // One namenode operation makes the staged file with its first block, one
        // completes it and publishes it as the object.
        let first_block = body_len.is_some_and(|n| n > 0);
        s3.stage_open(i.body, PUT_BYTES_MAX, i.content_md5.as_deref(), want, trailers, first_block).await?
    };
    let meta = new_meta(&staged.md5, &staged.checksums);
    let o = s3
        .publish_options(owner, &i.bucket, &i.key, (&meta, &tags), i.if_match.as_ref(), i.if_none_match.as_ref())
        .await?;
    let Open { w, mut guard, length, .. } = staged;
    match w.close_publish(&path, &o).await {
        // The staged file is the object now; on an error the guard removes it.
        Ok(_) => guard.committed(),
        Err(e) => return Err(s3.commit_error(&i.bucket, e).await),
    }
    let mut out = dto::PutObjectOutput { e_tag: Some(etag(&meta)), size: Some(length as i64), ..Default::default() };
    set_checksums!(out, meta);
    Ok(S3Response::new(out))
}

/// A PutObject of a directory marker (`path` of a key ending in '/'): an empty object.
async fn put_marker(
    s3: &TarnS3,
    req: S3Request<dto::PutObjectInput>,
    path: &str,
    tags: &tagging::Tags,
) -> OpResult<dto::PutObjectOutput> {
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    let mut n = i.content_length.unwrap_or(0).max(0) as u64;
    if let Some(mut body) = i.body {
        while let Some(chunk) = body.next().await {
            n += chunk.map_err(BodyError::classify)?.len() as u64;
        }
    }
    if n > 0 {
        return Err(ApiError::InvalidArgument(
            "keys ending in '/' are directories in Tarn and must be empty objects".into(),
        ));
    }
    // The bucket's grants decide who may write in it: the gateway makes the marker
    // (and the directories above it) for the key's user, in one operation, only if
    // nothing is there and while the bucket exists.
    let owner = s3.owner_for(req.credentials.as_ref()).await?;
    // The marker and its tags (a PUT replaces the object: tags not given are gone).
    let mut xattrs = BTreeMap::from([(MARKER_XATTR.to_string(), b"1".to_vec())]);
    if !tags.is_empty() {
        xattrs.insert(tagging::TAGS_XATTR.into(), tagging::encode_tags(tags));
    }
    let opts = MkdirOptions {
        owner: owner.clone(),
        group: owner,
        xattrs: xattrs.clone(),
        require_dir: Some(bucket_path(&i.bucket)),
        ..Default::default()
    };
    match s3.nn.mkdir_exclusive(path, &opts).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {
            s3.mark_existing_dir(&i.bucket, &i.key, path, xattrs).await?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(ApiError::NoSuchBucket(i.bucket)),
        Err(e) => return Err(ApiError::Fs { what: "create directory marker", source: e }),
    }
    let e = format!("{:x}", Md5::digest(b""));
    Ok(S3Response::new(dto::PutObjectOutput { e_tag: Some(ETag::Strong(e)), ..Default::default() }))
}

pub(super) async fn get_object(s3: &TarnS3, req: S3Request<dto::GetObjectInput>) -> OpResult<dto::GetObjectOutput> {
    let i = req.input;
    let conds = read_conditions!(i);
    let (path, st, m) = s3.read_target(&i.bucket, &i.key, i.version_id.as_deref(), &conds).await?;
    let len = if st.is_dir() { 0 } else { st.length };
    let mut parts_count = None;
    let (range, content_range) = match (&i.range, i.part_number) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest("a Range header and a partNumber cannot be given together".into()));
        }
        (None, Some(n)) => {
            let (r, count) = part_range(&m, len, n)?;
            parts_count = m.parts.map(|_| count as i32);
            let cr = format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1));
            (r, Some(cr))
        }
        (None, None) => (0..len, None),
        (Some(r), None) => {
            let r = r.check(len).map_err(|_| ApiError::RangeNotSatisfiable)?;
            let cr = format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1));
            (r, Some(cr))
        }
    };
    let body = if range.is_empty() {
        blob(futures::stream::empty::<Result<Bytes, ClientError>>())
    } else {
        // Read as the key's user: the object's permissions apply as to `tarn fs`.
        let nn = s3.nn_for(req.credentials.as_ref()).await?;
        let reader = FileReader::open(nn, &path).await.map_err(ApiError::fs("open"))?;
        if reader.file_id() != st.file_id {
            return Err(ApiError::Internal("the object was replaced while it was opened; retry".into()));
        }
        blob(read_stream(reader, range.start, range.end))
    };
    let checksums =
        content_range.is_none() && i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == dto::ChecksumMode::ENABLED);
    let mut out = dto::GetObjectOutput {
        body: Some(body),
        content_length: Some((range.end - range.start) as i64),
        content_range,
        ..Default::default()
    };
    // x-amz-tagging-count (a record this gateway cannot read is left out of it, not an
    // error of the read: GetObjectTagging says what is wrong with it).
    // Not for anonymous readers: they may not read tags (GetObjectTagging).
    if req.credentials.is_some() {
        out.tag_count = tagging::tags_of(&st.xattrs).ok().filter(|t| !t.is_empty()).map(|t| t.len() as i32);
    }
    if parts_count.is_some() {
        out.parts_count = parts_count;
    }
    describe_object!(out, &m, &st, checksums);
    Ok(S3Response::new(out))
}

pub(super) async fn head_object(s3: &TarnS3, req: S3Request<dto::HeadObjectInput>) -> OpResult<dto::HeadObjectOutput> {
    let i = req.input;
    let conds = read_conditions!(i);
    let (_, st, m) = s3.read_target(&i.bucket, &i.key, i.version_id.as_deref(), &conds).await?;
    let len = if st.is_dir() { 0 } else { st.length };
    let mut out = dto::HeadObjectOutput { content_length: Some(len as i64), ..Default::default() };
    let checksums = i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == dto::ChecksumMode::ENABLED);
    describe_object!(out, &m, &st, checksums);
    if let Some(n) = i.part_number {
        let (r, _) = part_range(&m, len, n)?;
        out.content_length = Some((r.end - r.start) as i64);
        out.content_range = Some(format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1)));
    }
    Ok(S3Response::new(out))
}

pub(super) async fn delete_object(
    s3: &TarnS3,
    req: S3Request<dto::DeleteObjectInput>,
) -> OpResult<dto::DeleteObjectOutput> {
    let i = req.input;
    s3.delete_key(&i.bucket, &i.key).await?;
    Ok(S3Response::new(dto::DeleteObjectOutput::default()))
}

/// Deletes each key named; each refusal is reported with its key, as S3 does.
pub(super) async fn delete_objects(
    s3: &TarnS3,
    req: S3Request<dto::DeleteObjectsInput>,
) -> OpResult<dto::DeleteObjectsOutput> {
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    if i.delete.objects.len() > DELETE_KEYS_MAX {
        return Err(ApiError::MalformedXml(format!("at most {DELETE_KEYS_MAX} keys per DeleteObjects request")));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in &i.delete.objects {
        match s3.delete_key(&i.bucket, &o.key).await {
            Ok(()) => {
                if !quiet {
                    deleted.push(dto::DeletedObject { key: Some(o.key.clone()), ..Default::default() });
                }
            }
            Err(e) => {
                // The S3 error this key's refusal is, in the answer's list.
                let e = S3Error::from(e);
                errors.push(dto::Error {
                    key: Some(o.key.clone()),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    version_id: None,
                })
            }
        }
    }
    Ok(S3Response::new(dto::DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}

pub(super) async fn copy_object(s3: &TarnS3, req: S3Request<dto::CopyObjectInput>) -> OpResult<dto::CopyObjectOutput> {
    let i = req.input;
    let (dst, dst_marker) = object_path(&i.bucket, &i.key)?;
    if dst_marker {
        return Err(ApiError::InvalidArgument("cannot copy onto a directory marker".into()));
    }
    s3.bucket_exists(&i.bucket).await?;
    let conds = read_conditions!(copy_source i);
    // The copy's tags: the source's (COPY, the default) or the request's (REPLACE),
    // checked before any byte is copied.
    let replace_tags = i.tagging_directive.as_ref().is_some_and(|d| d.as_str() == dto::TaggingDirective::REPLACE);
    let new_tags = if replace_tags { tagging::parse_header(i.tagging.as_deref())? } else { Default::default() };
    let (src_path, src, sm) = s3.copy_source_target(&i.copy_source, &conds).await?;
    let tags = if replace_tags { new_tags } else { tagging::tags_of(&src.xattrs)? };
    let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
    if src_path == dst && !replace {
        return Err(ApiError::InvalidRequest(
            "copying an object onto itself needs a change: set x-amz-metadata-directive: REPLACE".into(),
        ));
    }
    let len = if src.is_dir() { 0 } else { src.length };
    let staged = s3.stage_copy(s3.nn_for(req.credentials.as_ref()).await?, &src, &src_path, 0, len).await?;
    let mut meta = if replace {
        described_by!(i)
    } else {
        ObjMeta { checksums: BTreeMap::new(), parts: None, part_sizes: Vec::new(), ..sm.clone() }
    };
    meta.etag = hex::encode(staged.md5);
    meta.checksums = staged.checksums.clone();
    let sources = [(staged.path.clone(), staged.file_id)];
    let mut staged = staged;
    let owner = s3.owner_for(req.credentials.as_ref()).await?;
    let st = s3.commit(owner, &sources, (&i.bucket, &i.key, &dst), (&meta, &tags), None, None).await?;
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

impl TarnS3 {
    /// A directory marker PUT where something already is: a directory becomes (or stays)
    /// a marker, keeping its owner, mode and grants (S3 overwrites the object, and Tarn
    /// takes no directory from its owner); a file there refuses the key.
    /// Makes the existing directory at `path` a marker with `xattrs` (the marker flag and
    /// its tags; tags it had before and are not given go).
    async fn mark_existing_dir(
        &self,
        bucket: &str,
        key: &str,
        path: &str,
        xattrs: BTreeMap<String, Vec<u8>>,
    ) -> ApiResult<()> {
        let st = self.nn.get_file_info(path, false).await.map_err(ApiError::fs("create directory marker"))?;
        let Some(st) = st.filter(|st| st.is_dir()) else {
            return Err(ApiError::InvalidArgument(format!(
                "{key:?} in bucket {bucket:?}: an object {:?} is there (Tarn stores keys as paths: a key cannot be both an object and a prefix of other keys)",
                key.trim_end_matches('/')
            )));
        };
        let remove_xattrs = match xattrs.contains_key(tagging::TAGS_XATTR) {
            false => vec![tagging::TAGS_XATTR.to_string()],
            true => Vec::new(),
        };
        let a = SetAttributes {
            set_xattrs: xattrs,
            remove_xattrs,
            // Still the directory that was looked at (not one made since by someone else).
            expected_file_id: Some(st.file_id),
            ..Default::default()
        };
        self.nn.set_attributes(path, a).await.map_err(ApiError::fs("create directory marker"))?;
        Ok(())
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

    async fn delete_key(&self, bucket: &str, key: &str) -> ApiResult<()> {
        let (path, marker) = object_path(bucket, key)?;
        let st = self.nn.get_file_info(&path, true).await.map_err(ApiError::fs("lookup"))?;
        match st {
            Some(st) if marker && st.is_dir() && is_marker(&st) => {
                // An empty marked directory goes; one with objects under it loses the marker.
                if self.nn.delete(&path, false, Some(st.file_id)).await.is_err() {
                    // Its tags go with it (a marker made again starts without them).
                    let a = SetAttributes {
                        remove_xattrs: vec![MARKER_XATTR.into(), tagging::TAGS_XATTR.into()],
                        expected_file_id: Some(st.file_id),
                        ..Default::default()
                    };
                    self.nn.set_attributes(&path, a).await.map_err(ApiError::fs("delete marker"))?;
                    return Ok(());
                }
            }
            Some(st) if !marker && !st.is_dir() => {
                match self.nn.delete(&path, false, Some(st.file_id)).await {
                    Ok(_) => {}
                    // Replaced meanwhile: the newer object stays, as if the delete came first.
                    Err(e) if e.kind() == ErrorKind::ConditionFailed => return Ok(()),
                    Err(e) => return Err(ApiError::Fs { what: "delete", source: e }),
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

/// What GetObjectAttributes asks of an object, without its bytes.
pub(super) async fn get_object_attributes(
    s3: &TarnS3,
    req: S3Request<dto::GetObjectAttributesInput>,
) -> OpResult<dto::GetObjectAttributesOutput> {
    let i = req.input;
    if i.version_id.as_deref().is_some_and(|v| v != "null") {
        return Err(ApiError::NoSuchVersion);
    }
    let (_, st) = s3.head(&i.bucket, &i.key).await?;
    let m = super::meta_of(&st);
    // One header, comma-separated, as SDKs send it (s3s may give it as one item).
    let want = |a: &str| i.object_attributes.iter().flat_map(|x| x.as_str().split(',')).any(|x| x.trim() == a);
    let mut out = dto::GetObjectAttributesOutput { last_modified: Some(ts(st.mtime_ms)), ..Default::default() };
    if want(dto::ObjectAttributes::ETAG) {
        out.e_tag = Some(etag(&m));
    }
    if want(dto::ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(if st.is_dir() { 0 } else { st.length as i64 });
    }
    if want(dto::ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(dto::StorageClass::from_static(dto::StorageClass::STANDARD));
    }
    if want(dto::ObjectAttributes::CHECKSUM) && !m.checksums.is_empty() {
        let mut c = dto::Checksum::default();
        set_checksums!(c, m);
        out.checksum = Some(c);
    }
    if want(dto::ObjectAttributes::OBJECT_PARTS) {
        if let Some(total) = m.parts {
            // Parts after the marker, at most max_parts (1,000 by default) of them.
            let marker = i.part_number_marker.unwrap_or(0).max(0) as usize;
            let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
            let listed: Vec<dto::ObjectPart> = m
                .part_sizes
                .iter()
                .enumerate()
                .skip(marker)
                .take(max)
                .map(|(n, size)| dto::ObjectPart {
                    part_number: Some(n as i32 + 1),
                    size: Some(*size as i64),
                    ..Default::default()
                })
                .collect();
            let truncated = marker + listed.len() < m.part_sizes.len();
            out.object_parts = Some(dto::GetObjectAttributesParts {
                total_parts_count: Some(total as i32),
                part_number_marker: i.part_number_marker,
                next_part_number_marker: truncated.then(|| (marker + listed.len()) as i32),
                max_parts: Some(max as i32),
                is_truncated: Some(truncated),
                parts: (!listed.is_empty()).then_some(listed),
            });
        }
    }
    Ok(S3Response::new(out))
}
