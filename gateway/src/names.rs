//! How S3 names map onto the namespace.
//!
//! Bucket `b` is the directory `/b`; key `x/y.parquet` is the file `/b/x/y.parquet`, so
//! what S3 clients write, jobs read, and the other way round. Keys are paths, so a key
//! must be one: no empty segment (`a//b`, a leading `/`), no `.` or `..` segment, no NUL.
//! Such keys are refused with `InvalidArgument` rather than encoded, so that every object
//! keeps the path a job would look for. A key ending in `/` is a directory marker: the
//! directory itself, flagged so that listings show it.

use crate::s3::ApiError;

/// Where the gateway keeps staged uploads and multipart parts (not a valid bucket name).
pub const SYSTEM_DIR: &str = "/.tarn/s3";
pub const TMP_DIR: &str = "/.tarn/s3/tmp";
pub const UPLOADS_DIR: &str = "/.tarn/s3/uploads";

/// The path of object `key` in `bucket`, and whether the key is a directory marker.
pub fn object_path(bucket: &str, key: &str) -> Result<(String, bool), ApiError> {
    if key.is_empty() {
        return Err(ApiError::InvalidArgument("the object key is empty".into()));
    }
    if key.contains('\0') {
        return Err(ApiError::InvalidArgument(format!("object key {key:?} contains NUL")));
    }
    let (body, marker) = match key.strip_suffix('/') {
        Some(b) => (b, true),
        None => (key, false),
    };
    if body.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(ApiError::InvalidArgument(format!(
            "object key {key:?} is not a path: Tarn stores keys as paths, so a key may not have an empty, '.' or '..' segment"
        )));
    }
    Ok((format!("/{bucket}/{body}"), marker))
}

pub fn bucket_path(bucket: &str) -> String {
    format!("/{bucket}")
}

/// The key of `path` (a `list_tree` entry; directories end in '/') under bucket root
/// `root` (`/b/`).
pub fn key_of<'p>(root: &str, path: &'p str) -> Option<&'p str> {
    path.strip_prefix(root)
}

/// Multipart upload ids are 32 lowercase hex digits (they become path names).
pub fn check_upload_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::NoSuchUpload(format!("no upload {id:?}")))
    }
}

pub fn upload_dir(bucket: &str, upload_id: &str) -> String {
    format!("{UPLOADS_DIR}/{bucket}/{upload_id}")
}

pub fn part_path(bucket: &str, upload_id: &str, part: i32) -> String {
    format!("{}/{part:05}", upload_dir(bucket, upload_id))
}

/// Percent-encodes a key for `encoding-type=url` listings (everything but unreserved
/// characters and '/').
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_paths_or_are_refused() {
        assert_eq!(object_path("b", "x/y.parquet").unwrap(), ("/b/x/y.parquet".into(), false));
        assert_eq!(object_path("b", "dir/").unwrap(), ("/b/dir".into(), true));
        assert_eq!(object_path("b", "é +-.x").unwrap().0, "/b/é +-.x");
        for bad in ["", "/a", "a//b", "a/../b", "..", "./a", "a/.", "a\0b", "//"] {
            assert!(object_path("b", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
    }

    #[test]
    fn upload_ids_are_hex() {
        assert!(check_upload_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_upload_id("../../etc/passwd0123456789abcdef").is_err());
        assert!(check_upload_id("ABC").is_err());
    }
}
