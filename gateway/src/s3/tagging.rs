//! Tagging: Put/Get/DeleteObjectTagging, Put/Get/DeleteBucketTagging, and the tags a
//! PutObject, CopyObject or CreateMultipartUpload sets (`x-amz-tagging`).
//!
//! An object's tags are its file's `s3.tags` attribute ([`ObjectTags`], versioned JSON),
//! written with the object in the operation that publishes it, or alone (changing no
//! other attribute and not its modification time) on the file the request looked up: a
//! concurrent overwrite makes the request fail rather than tag the newer object. A
//! bucket's tags are part of its configuration record (`BucketConfig`, the bucket
//! directory's `s3.config` attribute). S3's limits apply: 10 tags per object, 50 per
//! bucket, keys of 1-128 characters and values of at most 256, no key twice, no `aws:`
//! prefix, only letters, digits, white space and `+ - = . _ : / @`.

use std::collections::BTreeMap;

use s3s::dto;
use s3s::{S3Request, S3Response};
use serde::{Deserialize, Serialize};
use tarn_client::{FileStatus, SetAttributes};

use super::config::{config_of, decode, update_config};
use super::{AccessClass, ApiError, ApiResult, OpResult, TarnS3};

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    // Tags are not part of what a bucket open to anonymous reads shows.
    ("GetObjectTagging", AccessClass::Read { anonymous_read: false }),
    ("PutObjectTagging", AccessClass::Write),
    ("DeleteObjectTagging", AccessClass::Write),
    ("GetBucketTagging", AccessClass::Read { anonymous_read: false }),
    ("PutBucketTagging", AccessClass::Write),
    ("DeleteBucketTagging", AccessClass::Write),
];

/// The attribute holding an object's tags.
pub(super) const TAGS_XATTR: &str = "s3.tags";

const OBJECT_TAGS_MAX: usize = 10;
const BUCKET_TAGS_MAX: usize = 50;
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;

/// Tags by key.
pub type Tags = BTreeMap<String, String>;

/// An object's tags as stored. `v` is the record's format: a reader refuses a newer one
/// rather than misread it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectTags {
    pub v: u32,
    pub tags: Tags,
}

impl ObjectTags {
    pub const VERSION: u32 = 1;
}

/// The tags of an object's attributes (none if it has no `s3.tags`).
pub(super) fn tags_of(xattrs: &BTreeMap<String, Vec<u8>>) -> ApiResult<Tags> {
    match xattrs.get(TAGS_XATTR) {
        Some(b) => Ok(decode::<ObjectTags>("object tags", b, ObjectTags::VERSION)?.tags),
        None => Ok(Tags::new()),
    }
}

/// The `s3.tags` attribute for `tags`.
pub(super) fn encode_tags(tags: &Tags) -> Vec<u8> {
    serde_json::to_vec(&ObjectTags { v: ObjectTags::VERSION, tags: tags.clone() }).expect("serializes")
}

/// S3's tag characters: letters, digits, space separators (`\p{Z}`, not tabs or line
/// breaks) and `+ - = . _ : / @`.
fn allowed_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "+-=._:/@".contains(c)
}

/// Where a tag set came from: S3 answers a repeated key differently for each.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The `x-amz-tagging` header (InvalidArgument).
    Header,
    /// A `Tagging` document (InvalidTag).
    Document,
}

/// Checks a tag set against S3's limits (`max` tags: BadRequest beyond, as S3 answers).
fn check(tags: &[(String, String)], max: usize, source: Source) -> ApiResult<Tags> {
    let bad = |m: String| Err(ApiError::InvalidTag(m));
    if tags.len() > max {
        let what = if max == OBJECT_TAGS_MAX { "Object" } else { "Bucket" };
        return Err(ApiError::BadRequest(format!("{what} tags cannot be greater than {max} ({} given)", tags.len())));
    }
    let mut out = Tags::new();
    for (k, v) in tags {
        let n = k.chars().count();
        if n == 0 || n > TAG_KEY_MAX {
            return bad(format!("a tag key has 1 to {TAG_KEY_MAX} characters, not {n}"));
        }
        if v.chars().count() > TAG_VALUE_MAX {
            return bad(format!("the value of tag {k:?} is longer than {TAG_VALUE_MAX} characters"));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return bad(format!("tag key {k:?}: the aws: prefix is reserved"));
        }
        if !k.chars().chain(v.chars()).all(allowed_char) {
            return bad(format!(
                "tag {k:?}={v:?}: keys and values have letters, digits, white space and + - = . _ : / @ only"
            ));
        }
        if out.insert(k.clone(), v.clone()).is_some() {
            if source == Source::Header {
                return Err(ApiError::InvalidArgument(format!(
                    "the header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters \
                     without tag name duplicates: {k:?} is given twice"
                )));
            }
            return bad(format!("tag key {k:?} is given twice"));
        }
    }
    Ok(out)
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded), for an object.
pub(super) fn parse_header(header: Option<&str>) -> ApiResult<Tags> {
    let Some(h) = header.filter(|h| !h.is_empty()) else { return Ok(Tags::new()) };
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(h.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    check(&pairs, OBJECT_TAGS_MAX, Source::Header)
}

/// The tags of a request's `Tagging` document.
fn from_dto(t: &dto::Tagging, max: usize) -> ApiResult<Tags> {
    let mut pairs = Vec::with_capacity(t.tag_set.len());
    for tag in &t.tag_set {
        let Some(k) = tag.key.clone() else {
            return Err(ApiError::MalformedXml("a Tag without a Key".into()));
        };
        pairs.push((k, tag.value.clone().unwrap_or_default()));
    }
    check(&pairs, max, Source::Document)
}

fn to_dto(tags: &Tags) -> dto::TagSet {
    tags.iter().map(|(k, v)| dto::Tag { key: Some(k.clone()), value: Some(v.clone()) }).collect()
}

/// Refuses a version id other than "null" (versioning is never on).
fn null_version(v: Option<&str>) -> ApiResult<()> {
    match v {
        Some(v) if v != "null" => Err(ApiError::NoSuchVersion),
        _ => Ok(()),
    }
}

/// Sets (or with `None` removes) the tags of the object looked up as `st` at `path`.
async fn set_object_tags(s3: &TarnS3, path: &str, st: &FileStatus, tags: Option<&Tags>) -> ApiResult<()> {
    let mut a = SetAttributes { expected_file_id: Some(st.file_id), ..Default::default() };
    match tags {
        Some(t) => {
            a.set_xattrs.insert(TAGS_XATTR.into(), encode_tags(t));
        }
        None => a.remove_xattrs.push(TAGS_XATTR.into()),
    }
    s3.nn.set_attributes(path, a).await.map_err(|e| match e.kind() {
        tarn_client::ErrorKind::ConditionFailed => {
            ApiError::PreconditionFailed("the object was replaced while its tags were set; retry".into())
        }
        _ => ApiError::Fs { what: "set tags", source: e },
    })?;
    Ok(())
}

pub(super) async fn get_object_tagging(
    s3: &TarnS3,
    req: S3Request<dto::GetObjectTaggingInput>,
) -> OpResult<dto::GetObjectTaggingOutput> {
    let i = req.input;
    null_version(i.version_id.as_deref())?;
    let (_, st) = s3.head(&i.bucket, &i.key).await?;
    let tags = tags_of(&st.xattrs)?;
    Ok(S3Response::new(dto::GetObjectTaggingOutput { tag_set: to_dto(&tags), version_id: None }))
}

pub(super) async fn put_object_tagging(
    s3: &TarnS3,
    req: S3Request<dto::PutObjectTaggingInput>,
) -> OpResult<dto::PutObjectTaggingOutput> {
    let i = req.input;
    null_version(i.version_id.as_deref())?;
    let tags = from_dto(&i.tagging, OBJECT_TAGS_MAX)?;
    let (path, st) = s3.head(&i.bucket, &i.key).await?;
    set_object_tags(s3, &path, &st, Some(&tags)).await?;
    Ok(S3Response::new(dto::PutObjectTaggingOutput { version_id: None }))
}

pub(super) async fn delete_object_tagging(
    s3: &TarnS3,
    req: S3Request<dto::DeleteObjectTaggingInput>,
) -> OpResult<dto::DeleteObjectTaggingOutput> {
    let i = req.input;
    null_version(i.version_id.as_deref())?;
    let (path, st) = s3.head(&i.bucket, &i.key).await?;
    if st.xattrs.contains_key(TAGS_XATTR) {
        set_object_tags(s3, &path, &st, None).await?;
    }
    Ok(S3Response::new(dto::DeleteObjectTaggingOutput { version_id: None }))
}

pub(super) async fn get_bucket_tagging(
    s3: &TarnS3,
    req: S3Request<dto::GetBucketTaggingInput>,
) -> OpResult<dto::GetBucketTaggingOutput> {
    let bucket = req.input.bucket;
    let c = config_of(&s3.bucket_exists(&bucket).await?.xattrs)?;
    if c.tags.is_empty() {
        return Err(ApiError::NoSuchTagSet(format!("bucket {bucket:?} has no tags")));
    }
    Ok(S3Response::new(dto::GetBucketTaggingOutput { tag_set: to_dto(&c.tags) }))
}

pub(super) async fn put_bucket_tagging(
    s3: &TarnS3,
    req: S3Request<dto::PutBucketTaggingInput>,
) -> OpResult<dto::PutBucketTaggingOutput> {
    let i = req.input;
    let tags = from_dto(&i.tagging, BUCKET_TAGS_MAX)?;
    update_config(s3, &i.bucket, |c| c.tags = tags).await?;
    Ok(S3Response::new(dto::PutBucketTaggingOutput::default()))
}

pub(super) async fn delete_bucket_tagging(
    s3: &TarnS3,
    req: S3Request<dto::DeleteBucketTaggingInput>,
) -> OpResult<dto::DeleteBucketTaggingOutput> {
    update_config(s3, &req.input.bucket, |c| c.tags.clear()).await?;
    Ok(S3Response::new(dto::DeleteBucketTaggingOutput::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn refused(r: ApiResult<Tags>) -> String {
        match r {
            Err(ApiError::InvalidTag(m)) => m,
            other => panic!("expected InvalidTag, got {other:?}"),
        }
    }

    const D: Source = Source::Document;

    #[test]
    fn tag_sets_keep_to_s3s_limits() {
        let t = check(&pairs(&[("team", "sales"), ("cost center", "a/b:c@d.e_f+g=h-i")]), 10, D).unwrap();
        assert_eq!(t.len(), 2);
        let eleven: Vec<(String, String)> = (0..11).map(|n| (format!("k{n}"), String::new())).collect();
        assert!(matches!(check(&eleven, 10, D), Err(ApiError::BadRequest(m)) if m.contains("greater than 10")));
        assert_eq!(check(&eleven, 50, D).unwrap().len(), 11);
        assert!(refused(check(&pairs(&[("a", "1"), ("a", "2")]), 10, D)).contains("twice"));
        assert!(refused(check(&pairs(&[("", "1")]), 10, D)).contains("1 to 128"));
        assert!(refused(check(&[("k".repeat(129), String::new())], 10, D)).contains("1 to 128"));
        assert!(check(&[("é".repeat(128), "v".repeat(256))], 10, D).is_ok(), "limits count characters");
        assert!(refused(check(&[("k".into(), "v".repeat(257))], 10, D)).contains("256"));
        assert!(refused(check(&pairs(&[("AWS:x", "1")]), 10, D)).contains("reserved"));
        assert!(refused(check(&pairs(&[("a", "b;c")]), 10, D)).contains("letters, digits"));
        assert!(refused(check(&pairs(&[("a", "b\tc")]), 10, D)).contains("letters, digits"), "a tab is no space");
        assert!(check(&pairs(&[("a", "b\u{a0}c")]), 10, D).is_ok(), "a no-break space is one");
    }

    #[test]
    fn the_tagging_header_is_url_encoded() {
        let t = parse_header(Some("a=1&b%20c=x%2Fy&empty=")).unwrap();
        assert_eq!(
            t,
            Tags::from([("a".into(), "1".into()), ("b c".into(), "x/y".into()), ("empty".into(), "".into())])
        );
        assert!(parse_header(None).unwrap().is_empty() && parse_header(Some("")).unwrap().is_empty());
        assert!(matches!(parse_header(Some("a=1&a=2")), Err(ApiError::InvalidArgument(_))));
    }

    #[test]
    fn a_newer_record_is_refused_not_misread() {
        let x = |v: &[u8]| BTreeMap::from([(TAGS_XATTR.to_string(), v.to_vec())]);
        assert_eq!(tags_of(&x(br#"{"v":1,"tags":{"a":"1"}}"#)).unwrap().len(), 1);
        let e = tags_of(&x(br#"{"v":2,"tags":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");
        assert!(tags_of(&x(b"not json")).is_err());
        assert!(config_of(&BTreeMap::new()).unwrap().tags.is_empty());
    }
}
