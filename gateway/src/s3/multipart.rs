//! Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy,
//! CompleteMultipartUpload, AbortMultipartUpload, ListParts and ListMultipartUploads.
//! An upload is a directory `/.tarn/s3/uploads/<bucket>/<id>` described by its
//! `s3.upload` attribute; each part a file of it; completing the upload concatenates the
//! listed parts into the object (their blocks move, no data is copied).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use s3s::dto::{self, ETag};
use s3s::{S3Request, S3Response};
use tarn_client::{ConcatOptions, ErrorKind, FileStatus, ListOptions, MkdirOptions};

use super::stage::{wanted, Staged, PUT_BYTES_MAX};
use super::{
    encode_meta, etag, meta_of, now_ms, random_id, stored_encoding, strip_quotes, tagging, ts, ts_ms, AccessClass,
    ApiError, ApiResult, ObjMeta, OpResult, ReadConditions, TarnS3, UploadInfo, META_XATTR, UPLOAD_XATTR,
};
use crate::names::*;

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    ("CreateMultipartUpload", AccessClass::Write),
    ("UploadPart", AccessClass::Write),
    // The source bucket's read grant is checked too (`lib.rs`'s `Access::upload_part_copy`).
    ("UploadPartCopy", AccessClass::Write),
    ("CompleteMultipartUpload", AccessClass::Write),
    ("AbortMultipartUpload", AccessClass::Write),
    // Uploads in progress are not for anonymous readers of a public bucket.
    ("ListParts", AccessClass::Read { anonymous_read: false }),
    ("ListMultipartUploads", AccessClass::Read { anonymous_read: false }),
];

/// Smallest part except the last, as on S3.
const PART_BYTES_MIN: u64 = 5 << 20;
const PARTS_MAX: i32 = 10_000;
/// Parts or uploads one listing page holds at most, as on S3.
const LIST_PAGE_MAX: i32 = 1000;

pub(super) async fn create_multipart_upload(
    s3: &TarnS3,
    req: S3Request<dto::CreateMultipartUploadInput>,
) -> OpResult<dto::CreateMultipartUploadOutput> {
    let i = req.input;
    let (_, marker) = object_path(&i.bucket, &i.key)?;
    if marker {
        return Err(ApiError::InvalidArgument("keys ending in '/' are directories in Tarn and must be empty".into()));
    }
    let tags = tagging::parse_header(i.tagging.as_deref())?;
    s3.bucket_exists(&i.bucket).await?;
    let id = random_id();
    let dir = upload_dir(&i.bucket, &id);
    let info = UploadInfo { key: i.key.clone(), initiated_ms: now_ms(), tags, meta: described_by!(i) };
    // The upload's directory and its description in one operation (never one without
    // the other), while the bucket exists.
    let opts = MkdirOptions {
        xattrs: BTreeMap::from([(UPLOAD_XATTR.to_string(), serde_json::to_vec(&info).expect("serializes"))]),
        require_dir: Some(bucket_path(&i.bucket)),
        ..Default::default()
    };
    match s3.nn.mkdir_exclusive(&dir, &opts).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(ApiError::NoSuchBucket(i.bucket)),
        // Refusals say what they are (an unfinished upgrade is a 503).
        Err(e) => return Err(ApiError::Fs { what: "create upload", source: e }),
    }
    Ok(S3Response::new(dto::CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

/// Refuses part numbers S3 does not accept.
fn check_part_number(n: i32) -> ApiResult<()> {
    if (1..=PARTS_MAX).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!("part number {n} is not in 1..={PARTS_MAX}")))
    }
}

pub(super) async fn upload_part(s3: &TarnS3, req: S3Request<dto::UploadPartInput>) -> OpResult<dto::UploadPartOutput> {
    let headers = req.headers;
    let trailers = req.trailing_headers;
    let i = req.input;
    check_part_number(i.part_number)?;
    s3.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
    let want = wanted_checksums!(i, &headers);
    let staged = s3.stage(i.body, PUT_BYTES_MAX, i.content_md5.as_deref(), want, trailers).await?;
    let (m, _) = s3.finish_part(&i.bucket, &i.upload_id, i.part_number, staged).await?;
    let mut out = dto::UploadPartOutput { e_tag: Some(etag(&m)), ..Default::default() };
    set_checksums!(out, m);
    Ok(S3Response::new(out))
}

pub(super) async fn upload_part_copy(
    s3: &TarnS3,
    req: S3Request<dto::UploadPartCopyInput>,
) -> OpResult<dto::UploadPartCopyOutput> {
    let i = req.input;
    check_part_number(i.part_number)?;
    s3.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
    let conds = read_conditions!(copy_source i);
    let (src_path, src, _) = s3.copy_source_target(&i.copy_source, &conds).await?;
    let (start, end) = copy_range(i.copy_source_range.as_deref(), src.length)?;
    let staged = s3.stage_copy(s3.nn_for(req.credentials.as_ref()).await?, &src, &src_path, start, end).await?;
    let (m, st) = s3.finish_part(&i.bucket, &i.upload_id, i.part_number, staged).await?;
    Ok(S3Response::new(dto::UploadPartCopyOutput {
        copy_part_result: Some(dto::CopyPartResult {
            e_tag: Some(etag(&m)),
            last_modified: Some(ts(st.mtime_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// Parses `bytes=a-b` of UploadPartCopy.
fn copy_range(r: Option<&str>, len: u64) -> ApiResult<(u64, u64)> {
    let Some(r) = r else { return Ok((0, len)) };
    let bad = || ApiError::InvalidArgument(format!("x-amz-copy-source-range {r:?} is not bytes=first-last"));
    let (a, b) = r.trim().strip_prefix("bytes=").and_then(|x| x.split_once('-')).ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= len {
        return Err(ApiError::InvalidRange(format!("range {r} is outside the {len}-byte source")));
    }
    Ok((a, b + 1))
}

/// The ETag of an object made of parts with these MD5s (concatenated): `md5(md5s)-N`.
fn multipart_etag(md5s: &[u8], parts: usize) -> String {
    format!("{:x}-{parts}", Md5::digest(md5s))
}

pub(super) async fn complete_multipart_upload(
    s3: &TarnS3,
    req: S3Request<dto::CompleteMultipartUploadInput>,
) -> OpResult<dto::CompleteMultipartUploadOutput> {
    let i = req.input;
    let (path, _) = object_path(&i.bucket, &i.key)?;
    let asked = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if asked.is_empty() {
        return Err(ApiError::MalformedXml("CompleteMultipartUpload lists no parts".into()));
    }
    let done = |e_tag: ETag| dto::CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        e_tag: Some(e_tag),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        ..Default::default()
    };
    let (dir, info) = match s3.upload_info(&i.bucket, &i.key, &i.upload_id).await {
        Ok(v) => v,
        // A retry of a complete that committed (its answer was lost): S3 answers it
        // again when the object is the one those parts made.
        Err(e @ ApiError::NoSuchUpload(_)) => {
            let mut md5s = Vec::new();
            for p in &asked {
                match p.e_tag.as_ref().and_then(|e| hex::decode(strip_quotes(e.value())).ok()) {
                    Some(d) => md5s.extend(d),
                    None => return Err(e),
                }
            }
            let want = multipart_etag(&md5s, asked.len());
            return match s3.head(&i.bucket, &i.key).await {
                Ok((_, st)) if meta_of(&st).etag == want => Ok(S3Response::new(done(ETag::Strong(want)))),
                _ => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let have: BTreeMap<i32, FileStatus> = s3.parts(&dir).await?.into_iter().collect();
    let mut sources = Vec::with_capacity(asked.len());
    let mut md5s = Vec::with_capacity(asked.len() * 16);
    let mut sizes = Vec::with_capacity(asked.len());
    let mut prev = 0;
    for (n, p) in asked.iter().enumerate() {
        let num = p.part_number.unwrap_or(0);
        if num <= prev {
            return Err(ApiError::InvalidPartOrder("parts must be listed in ascending order".into()));
        }
        prev = num;
        let st = have.get(&num).ok_or_else(|| ApiError::InvalidPart(format!("part {num} was not uploaded")))?;
        let m = meta_of(st);
        if let Some(e) = &p.e_tag {
            if strip_quotes(e.value()) != m.etag {
                return Err(ApiError::InvalidPart(format!("part {num} has ETag {}, not {}", m.etag, e.value())));
            }
        }
        if n + 1 < asked.len() && st.length < PART_BYTES_MIN {
            return Err(ApiError::EntityTooSmall(format!(
                "part {num} is {} bytes; all but the last need 5 MiB",
                st.length
            )));
        }
        md5s.extend(hex::decode(&m.etag).map_err(|_| ApiError::internal("part etag", &m.etag))?);
        sources.push((part_path(&i.bucket, &i.upload_id, num), st.file_id));
        sizes.push(st.length);
    }
    let mut meta = info.meta.clone();
    meta.etag = multipart_etag(&md5s, asked.len());
    meta.parts = Some(asked.len() as u32);
    meta.part_sizes = sizes;
    let owner = s3.owner_for(req.credentials.as_ref()).await?;
    let what = (&meta, &info.tags);
    s3.commit(owner, &sources, (&i.bucket, &i.key, &path), what, i.if_match.as_ref(), i.if_none_match.as_ref()).await?;
    // Parts not listed go with the upload.
    if let Err(e) = s3.nn.delete(&dir, true, None).await {
        tracing::warn!(%dir, error = %e, "could not remove a completed upload's directory");
    }
    Ok(S3Response::new(done(etag(&meta))))
}

pub(super) async fn abort_multipart_upload(
    s3: &TarnS3,
    req: S3Request<dto::AbortMultipartUploadInput>,
) -> OpResult<dto::AbortMultipartUploadOutput> {
    let i = req.input;
    let (dir, _) = s3.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
    s3.nn.delete(&dir, true, None).await.map_err(ApiError::fs("abort upload"))?;
    Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(s3: &TarnS3, req: S3Request<dto::ListPartsInput>) -> OpResult<dto::ListPartsOutput> {
    let i = req.input;
    let (dir, _) = s3.upload_info(&i.bucket, &i.key, &i.upload_id).await?;
    let marker: i32 = i.part_number_marker.unwrap_or(0);
    let max = i.max_parts.unwrap_or(LIST_PAGE_MAX).clamp(0, LIST_PAGE_MAX) as usize;
    let all: Vec<_> = s3.parts(&dir).await?.into_iter().filter(|(n, _)| *n > marker).collect();
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

pub(super) async fn list_multipart_uploads(
    s3: &TarnS3,
    req: S3Request<dto::ListMultipartUploadsInput>,
) -> OpResult<dto::ListMultipartUploadsOutput> {
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let mut uploads = s3.uploads(&i.bucket, &prefix).await?;
    uploads.sort();
    let key_marker = i.key_marker.clone().unwrap_or_default();
    let id_marker = i.upload_id_marker.clone().unwrap_or_default();
    uploads.retain(|(k, id, _)| {
        key_marker.is_empty()
            || k.as_str() > key_marker.as_str()
            || (*k == key_marker && id.as_str() > id_marker.as_str())
    });
    let max = i.max_uploads.unwrap_or(LIST_PAGE_MAX).clamp(0, LIST_PAGE_MAX) as usize;
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

impl TarnS3 {
    /// The upload `upload_id` of `key` in `bucket`: its directory and description.
    async fn upload_info(&self, bucket: &str, key: &str, upload_id: &str) -> ApiResult<(String, UploadInfo)> {
        check_upload_id(upload_id)?;
        let dir = upload_dir(bucket, upload_id);
        let st = self.nn.get_file_info(&dir, true).await.map_err(ApiError::fs("upload lookup"))?;
        let info = st
            .as_ref()
            .and_then(|st| st.xattrs.get(UPLOAD_XATTR))
            .and_then(|v| serde_json::from_slice::<UploadInfo>(v).ok())
            .filter(|i| i.key == key)
            .ok_or_else(|| ApiError::NoSuchUpload(format!("no upload {upload_id} of {key:?} in bucket {bucket:?}")))?;
        Ok((dir, info))
    }

    /// The parts of an upload: (part number, status), by number.
    async fn parts(&self, dir: &str) -> ApiResult<Vec<(i32, FileStatus)>> {
        let opts = ListOptions { with_xattrs: true, ..Default::default() };
        let prefix = format!("{dir}/");
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) =
                self.nn.list_tree(&prefix, &after, 1000, &opts).await.map_err(ApiError::fs("list parts"))?;
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

    /// The uploads in progress in `bucket` of keys under `prefix`: (key, id, initiated ms).
    async fn uploads(&self, bucket: &str, prefix: &str) -> ApiResult<Vec<(String, String, u64)>> {
        let opts = ListOptions { collapse_directories: true, with_xattrs: true, ..Default::default() };
        let root = format!("{UPLOADS_DIR}/{bucket}/");
        let mut uploads = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = match self.nn.list_tree(&root, &after, 1000, &opts).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => (Vec::new(), false),
                Err(e) => return Err(ApiError::Fs { what: "list uploads", source: e }),
            };
            for st in page {
                after = st.path.clone();
                let Some(info) = st.xattrs.get(UPLOAD_XATTR).and_then(|v| serde_json::from_slice::<UploadInfo>(v).ok())
                else {
                    continue;
                };
                if !info.key.starts_with(prefix) {
                    continue;
                }
                let id = st.path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
                uploads.push((info.key, id, info.initiated_ms));
            }
            if !more {
                return Ok(uploads);
            }
        }
    }

    /// Makes a staged file part `n` of an upload (replacing an earlier upload of it).
    async fn finish_part(
        &self,
        bucket: &str,
        upload_id: &str,
        n: i32,
        mut staged: Staged,
    ) -> ApiResult<(ObjMeta, FileStatus)> {
        let m = ObjMeta { etag: hex::encode(staged.md5), checksums: staged.checksums.clone(), ..Default::default() };
        let mut o = ConcatOptions { overwrite: true, ..Default::default() };
        o.xattrs.insert(META_XATTR.into(), encode_meta(&m));
        let dst = part_path(bucket, upload_id, n);
        match self.nn.concat(&[(staged.path.clone(), staged.file_id)], &dst, &o).await {
            Ok(st) => {
                staged.guard.committed();
                Ok((m, st))
            }
            // The upload was completed or aborted meanwhile.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ParentNotFound) => {
                Err(ApiError::NoSuchUpload(format!("upload {upload_id} is gone")))
            }
            Err(e) => Err(ApiError::Fs { what: "store part", source: e }),
        }
    }
}
