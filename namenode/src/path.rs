//! Path validation and splitting. A valid path is absolute, `/`-separated, with non-empty
//! UTF-8 components that are not `.` or `..`, contain no NUL, and are at most
//! [`NAME_BYTES_MAX`] bytes; the whole path is at most [`PATH_BYTES_MAX`] bytes. One trailing
//! `/` is accepted and ignored (`/a/b/` is `/a/b`).

use crate::error::FsError;

/// Longest component, as on most local file systems (and HDFS's default).
pub const NAME_BYTES_MAX: usize = 255;
/// Longest path: room for an S3 bucket name plus S3's 1024-byte key limit.
pub const PATH_BYTES_MAX: usize = 4096;
/// Deepest path.
pub const DEPTH_MAX: usize = 1000;

/// Validates `path` and returns its components (empty for `/`).
pub fn components(path: &str) -> Result<Vec<&str>, FsError> {
    if path.len() > PATH_BYTES_MAX {
        // Quote the start of it in the message, cut on a character boundary.
        let mut cut = 64;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(FsError::invalid_path(&path[..cut], format!("longer than {PATH_BYTES_MAX} bytes")));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(FsError::invalid_path(path, "must be absolute (start with '/')"));
    };
    // One trailing '/' is ignored, but "//" is an empty component, not the root.
    let rest = if rest.len() > 1 { rest.strip_suffix('/').unwrap_or(rest) } else { rest };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() > DEPTH_MAX {
        return Err(FsError::invalid_path(path, format!("deeper than {DEPTH_MAX} components")));
    }
    for part in &parts {
        check_name(path, part)?;
    }
    Ok(parts)
}

/// Validates a single name (a path component).
pub fn check_name(path: &str, name: &str) -> Result<(), FsError> {
    if name.is_empty() {
        return Err(FsError::invalid_path(path, "empty component ('//')"));
    }
    if name == "." || name == ".." {
        return Err(FsError::invalid_path(path, format!("component {name:?} is not allowed")));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(FsError::invalid_path(path, format!("component longer than {NAME_BYTES_MAX} bytes")));
    }
    if name.contains('\0') {
        return Err(FsError::invalid_path(path, "contains NUL"));
    }
    Ok(())
}

/// The normalized form of a path: `/` or `/a/b` (no trailing slash).
pub fn normalize(path: &str) -> Result<String, FsError> {
    let parts = components(path)?;
    Ok(join(&parts))
}

/// Joins components into a normalized path.
pub fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut s = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

/// `true` if `inner` is `outer` or lies beneath it (both normalized).
pub fn is_within(inner: &str, outer: &str) -> bool {
    if outer == "/" {
        return true;
    }
    inner == outer || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize("/a+b/ü.parquet").unwrap(), "/a+b/ü.parquet");
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["", "a/b", "/a//b", "/a/../b", "/./a", "/a\0b", "//"] {
            assert!(matches!(components(bad), Err(FsError::InvalidPath { .. })), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(NAME_BYTES_MAX + 1));
        assert!(components(&long).is_err());
        let ok = format!("/{}", "x".repeat(NAME_BYTES_MAX));
        assert!(components(&ok).is_ok());
        let huge = "/a".repeat(PATH_BYTES_MAX);
        assert!(components(&huge).is_err());
        // Cutting a long path for the message respects character boundaries.
        let wide = format!("/{}", "é".repeat(PATH_BYTES_MAX));
        assert!(matches!(components(&wide), Err(FsError::InvalidPath { .. })));
    }

    #[test]
    fn within() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
    }
}
