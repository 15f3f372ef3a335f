//! Bucket operations: CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
//! GetBucketVersioning and ListBuckets. Bucket `b` is the directory `/b`, its creation
//! time the `s3.bucket` attribute, its grants the `s3.access` attribute.

use std::collections::BTreeMap;

use s3s::dto;
use s3s::{S3Request, S3Response};
use tarn_client::{ErrorKind, ListOptions, MkdirOptions};

use super::{now_ms, ts, AccessClass, ApiError, OpResult, TarnS3, BUCKET_XATTR};
use crate::names::*;

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    // Any key may create buckets (S3's rule); the bucket is its user's, with its grant.
    ("CreateBucket", AccessClass::Signed { verb: "create buckets" }),
    ("DeleteBucket", AccessClass::Write),
    ("HeadBucket", AccessClass::Read { anonymous_read: true }),
    ("GetBucketLocation", AccessClass::Read { anonymous_read: true }),
    ("GetBucketVersioning", AccessClass::Read { anonymous_read: true }),
    // A key sees the buckets it may use; anonymous callers nothing.
    ("ListBuckets", AccessClass::Signed { verb: "list buckets" }),
];

pub(super) async fn create_bucket(
    s3: &TarnS3,
    req: S3Request<dto::CreateBucketInput>,
) -> OpResult<dto::CreateBucketOutput> {
    let caller = s3.restricted_caller(req.credentials.as_ref()).await?;
    let bucket = req.input.bucket;
    let path = bucket_path(&bucket);
    // Any key may create buckets (S3's rule): the gateway makes the directory for the
    // key's user, with the key's grant, in one operation that fails if anything is
    // there, so of concurrent creators exactly one succeeds and an existing directory
    // is never taken over.
    let owner = s3.owner_for(req.credentials.as_ref()).await?;
    let mut xattrs = BTreeMap::new();
    xattrs.insert(BUCKET_XATTR.to_string(), now_ms().to_string().into_bytes());
    if let Some(ak) = caller.filter(|a| !a.is_empty()) {
        // A key that is not an admin's may use the bucket it made.
        let mut access = crate::keys::BucketAccess::default();
        access.grants.insert(ak, "rw".into());
        xattrs.insert(crate::keys::ACCESS_XATTR.to_string(), serde_json::to_vec(&access).expect("serializes"));
    }
    let opts = MkdirOptions { owner: owner.clone(), group: owner, xattrs, ..Default::default() };
    match s3.nn.mkdir_exclusive(&path, &opts).await {
        Ok(_) => s3.keys.forget_bucket(&bucket),
        // The namenode compared the owner there with the one asked for (for an admin
        // key: the gateway itself).
        Err(e) if e.kind() == ErrorKind::AlreadyOwned => return Err(ApiError::BucketAlreadyOwnedByYou(bucket)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(ApiError::BucketAlreadyExists(bucket)),
        Err(e) => return Err(ApiError::Fs { what: "create bucket", source: e }),
    }
    Ok(S3Response::new(dto::CreateBucketOutput { location: Some(format!("/{bucket}")) }))
}

pub(super) async fn delete_bucket(
    s3: &TarnS3,
    req: S3Request<dto::DeleteBucketInput>,
) -> OpResult<dto::DeleteBucketOutput> {
    let bucket = req.input.bucket;
    s3.bucket_exists(&bucket).await?;
    match s3.nn.delete(&bucket_path(&bucket), false, None).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => return Err(ApiError::BucketNotEmpty(bucket)),
        Err(e) => return Err(ApiError::Fs { what: "delete bucket", source: e }),
    }
    // Uploads in progress go with the bucket.
    let _ = s3.nn.delete(&format!("{UPLOADS_DIR}/{bucket}"), true, None).await;
    Ok(S3Response::new(dto::DeleteBucketOutput {}))
}

pub(super) async fn head_bucket(s3: &TarnS3, req: S3Request<dto::HeadBucketInput>) -> OpResult<dto::HeadBucketOutput> {
    s3.bucket_exists(&req.input.bucket).await?;
    Ok(S3Response::new(dto::HeadBucketOutput {
        bucket_region: req.region.map(|r| r.to_string()),
        ..Default::default()
    }))
}

pub(super) async fn get_bucket_location(
    s3: &TarnS3,
    req: S3Request<dto::GetBucketLocationInput>,
) -> OpResult<dto::GetBucketLocationOutput> {
    s3.bucket_exists(&req.input.bucket).await?;
    Ok(S3Response::new(dto::GetBucketLocationOutput { location_constraint: None }))
}

/// Versioning is never on: the answer has no status.
pub(super) async fn get_bucket_versioning(
    s3: &TarnS3,
    req: S3Request<dto::GetBucketVersioningInput>,
) -> OpResult<dto::GetBucketVersioningOutput> {
    s3.bucket_exists(&req.input.bucket).await?;
    Ok(S3Response::new(dto::GetBucketVersioningOutput::default()))
}

/// Buckets one ListBuckets page holds at most (S3's bound on `max-buckets`).
const LIST_BUCKETS_MAX: i32 = 10_000;

/// The buckets the caller may use (an admin key: all of them), in name order (S3's;
/// the namespace's path order differs where a name is another's prefix), after the
/// continuation token (the previous page's last name, base64), starting with `prefix`,
/// at most `max-buckets` of them. Every page reads all bucket directories: there are
/// few.
pub(super) async fn list_buckets(
    s3: &TarnS3,
    req: S3Request<dto::ListBucketsInput>,
) -> OpResult<dto::ListBucketsOutput> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let caller = s3.restricted_caller(req.credentials.as_ref()).await?;
    let i = req.input;
    let max = match i.max_buckets {
        Some(m) if !(1..=LIST_BUCKETS_MAX).contains(&m) => {
            return Err(ApiError::InvalidArgument(format!("max-buckets is 1 to {LIST_BUCKETS_MAX}, not {m}")));
        }
        m => m.unwrap_or(LIST_BUCKETS_MAX) as usize,
    };
    let start_after = match &i.continuation_token {
        Some(t) => b64
            .decode(t)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(|| ApiError::InvalidArgument("the continuation token is invalid".into()))?,
        None => String::new(),
    };
    let prefix = i.prefix.clone().unwrap_or_default();
    let opts = ListOptions { collapse_directories: true, with_xattrs: true, ..Default::default() };
    let mut buckets = Vec::new();
    let mut after = String::new();
    loop {
        let (page, more) = s3.nn.list_tree("/", &after, 1000, &opts).await.map_err(ApiError::fs("list buckets"))?;
        for st in page {
            after = st.path.clone();
            let name = st.path.trim_matches('/');
            if !st.is_dir()
                || name.starts_with('.')
                || !name.starts_with(prefix.as_str())
                || name <= start_after.as_str()
            {
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
            buckets.push((name.to_string(), created));
        }
        if !more {
            break;
        }
    }
    buckets.sort();
    let truncated = buckets.len() > max;
    buckets.truncate(max);
    let continuation_token = truncated.then(|| buckets.last().map(|(n, _)| b64.encode(n))).flatten();
    let buckets = buckets
        .into_iter()
        .map(|(name, created)| dto::Bucket { name: Some(name), creation_date: Some(ts(created)), ..Default::default() })
        .collect();
    Ok(S3Response::new(dto::ListBucketsOutput {
        buckets: Some(buckets),
        continuation_token,
        prefix: i.prefix,
        ..Default::default()
    }))
}
