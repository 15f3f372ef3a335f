//! Object listings: ListObjects, ListObjectsV2 and ListObjectVersions, all pages of
//! [`TarnS3::list_page`] over the namenode's `list_tree` (keys in byte order, as S3 lists
//! them), read as the key's user and bounded by `list_scan_keys_max` keys per request.

use s3s::dto;
use s3s::{S3Request, S3Response};
use tarn_client::{FileStatus, ListOptions, NamenodeClient};

use super::{etag, is_marker, meta_of, ts, AccessClass, ApiError, ApiResult, OpResult, TarnS3};
use crate::names::*;

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    ("ListObjects", AccessClass::Read { anonymous_read: true }),
    ("ListObjectsV2", AccessClass::Read { anonymous_read: true }),
    ("ListObjectVersions", AccessClass::Read { anonymous_read: true }),
];

/// Entries (keys and common prefixes) one page holds at most, as on S3.
const LIST_KEYS_MAX: i32 = 1000;
/// Keys one listing request reads from the namespace at most, by default
/// (`gateway.list_scan_keys_max`): with a delimiter other than '/' the gateway groups keys
/// itself, so without a bound one request could read a whole bucket.
pub const LIST_SCAN_KEYS_MAX: usize = 10_000;

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

/// Whether a listing asked for `encoding-type=url`.
fn url_encoding(e: Option<&dto::EncodingType>) -> bool {
    e.is_some_and(|e| e.as_str() == dto::EncodingType::URL)
}

pub(super) async fn list_objects(
    s3: &TarnS3,
    req: S3Request<dto::ListObjectsInput>,
) -> OpResult<dto::ListObjectsOutput> {
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let marker = i.marker.clone().unwrap_or_default();
    let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
    let url = url_encoding(i.encoding_type.as_ref());
    let nn = s3.nn_for(req.credentials.as_ref()).await?;
    let page = s3.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &marker, max).await?;
    let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
    Ok(S3Response::new(dto::ListObjectsOutput {
        name: Some(i.bucket.clone()),
        prefix: Some(enc(&prefix)),
        marker: Some(enc(&marker)),
        max_keys: Some(max),
        is_truncated: Some(page.truncated),
        next_marker: page.truncated.then(|| page.last.as_deref().map(enc)).flatten(),
        contents: Some(page.objects.iter().map(|(k, st)| object_entry(k, st, url)).collect()),
        common_prefixes: Some(page.prefixes.iter().map(|p| dto::CommonPrefix { prefix: Some(enc(p)) }).collect()),
        delimiter: i.delimiter.as_deref().map(enc),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_objects_v2(
    s3: &TarnS3,
    req: S3Request<dto::ListObjectsV2Input>,
) -> OpResult<dto::ListObjectsV2Output> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
    let url = url_encoding(i.encoding_type.as_ref());
    let after = match &i.continuation_token {
        // Paginators resuming inside the first page send an empty token.
        Some(t) if !t.is_empty() => {
            let invalid = || ApiError::InvalidArgument("the continuation token is invalid".into());
            let raw = b64.decode(t).map_err(|_| invalid())?;
            String::from_utf8(raw).map_err(|_| invalid())?
        }
        _ => i.start_after.clone().unwrap_or_default(),
    };
    let nn = s3.nn_for(req.credentials.as_ref()).await?;
    let page = s3.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &after, max).await?;
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
        contents: Some(page.objects.iter().map(|(k, st)| object_entry(k, st, url)).collect()),
        common_prefixes: Some(page.prefixes.iter().map(|p| dto::CommonPrefix { prefix: Some(enc(p)) }).collect()),
        delimiter: i.delimiter.as_deref().map(enc),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}

/// Versioning is never on: every object is its only ("null") version.
pub(super) async fn list_object_versions(
    s3: &TarnS3,
    req: S3Request<dto::ListObjectVersionsInput>,
) -> OpResult<dto::ListObjectVersionsOutput> {
    let i = req.input;
    s3.bucket_exists(&i.bucket).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let marker = i.key_marker.clone().unwrap_or_default();
    let max = i.max_keys.unwrap_or(LIST_KEYS_MAX);
    let url = url_encoding(i.encoding_type.as_ref());
    let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
    let nn = s3.nn_for(req.credentials.as_ref()).await?;
    let page = s3.list_page(&nn, &i.bucket, &prefix, i.delimiter.as_deref(), &marker, max).await?;
    let versions = page
        .objects
        .iter()
        .map(|(k, st)| {
            let o = object_entry(k, st, url);
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

/// An object of a listing.
fn object_entry(key: &str, st: &FileStatus, url: bool) -> dto::Object {
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

impl TarnS3 {
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
    ) -> ApiResult<Page> {
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
            if let Some(st) = nn.get_file_info(&dir, true).await.map_err(ApiError::fs("list"))? {
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
                nn.list_tree(&list_prefix, &start, want, &opts).await.map_err(ApiError::fs("list"))?;
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
}
