//! The output commit. Ballista and DataFusion write a `COPY ... TO` straight to its
//! target, and a task that is retried, or a job that fails half way, leaves partial files
//! there. A job's master therefore points each `COPY` at a staging path in the job's own
//! directory (`STAGING/a<attempt>/s<statement>/`), and only once every statement has
//! succeeded publishes each output with one namespace operation: a rename onto the
//! target (which must be absent, or an empty directory). A directory output gets its
//! `_SUCCESS` file in staging, so it appears with the data. A failed or killed job leaves
//! nothing at any target.
//!
//! The published output carries the extended attribute [`OUTPUT_XATTR`] (application and
//! statement): an attempt that runs again after its master died mid-publish finds the
//! outputs already published by this job and leaves them (no duplicate, no partial
//! file), and an output that someone else put there is refused rather than replaced.
//!
//! A `COPY` with the option [`APPEND_OPTION`] (what Spark's `mode("append")` becomes)
//! appends to an existing directory instead: its staged files are moved into the target
//! one by one (partition directories kept), so a reader sees each file whole, but may see
//! some of an append before the rest (as with Hadoop's committers). With
//! [`REPLACE_OPTION`] (Spark's `mode("overwrite")`) the output replaces what is at its
//! target, only once it is complete: the old output is moved aside (beside the target,
//! `TARGET.tarn-replaced-TAG`, out of reach of the job's cleanup) and the new one renamed
//! into its place, then the old one deleted. A job that fails leaves the old output as
//! it was (a master that dies between the renames leaves it aside, not deleted); a
//! reader may find no output between the two renames.
//!
//! Only outputs in the cluster's store (`tarn://`, `s3://`) are committed this way;
//! other schemes are written in place.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::logical_expr::dml::CopyTo;
use object_store::ObjectStoreExt;
use tarn_client::store::TarnStore;
use tarn_client::{ErrorKind, NamenodeClient, RenameOptions, SetAttributes};
use url::Url;

use crate::stores::TARN_SCHEMES;
use crate::{JobError, Result};

/// Names the job (`APP/STATEMENT`) whose output a published path is.
pub const OUTPUT_XATTR: &str = "tarn.job.output";
/// The marker of a complete directory output (Hadoop's and Spark's).
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// The `COPY` option (`'true'`) that appends the output's files to an existing directory;
/// read and removed before DataFusion sees the options.
pub const APPEND_OPTION: &str = "tarn.append";
/// The `COPY` option (`'true'`) that replaces an existing target once the output is
/// complete; read and removed as [`APPEND_OPTION`] is.
pub const REPLACE_OPTION: &str = "tarn.replace";
/// The options of Tarn's own that a `COPY` may carry.
pub const OPTIONS: [&str; 2] = [APPEND_OPTION, REPLACE_OPTION];

/// One `COPY` target of a job, and where its output is staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The target in the cluster (`/bucket/path`, no trailing `/`).
    pub target: String,
    /// Where the statement writes it (a path of the cluster).
    pub staged: String,
    /// A directory of files (else one file).
    pub dir: bool,
    /// The value of [`OUTPUT_XATTR`] on the published output.
    pub tag: String,
    /// Its files go into the target directory if it exists ([`APPEND_OPTION`]).
    pub append: bool,
    /// It replaces what is at the target ([`REPLACE_OPTION`]).
    pub replace: bool,
}

/// The cluster path a URL names (`s3://b/k` and `tarn://b/k` are `/b/k`; `tarn:///p` is
/// `/p`), with whether it ends in `/`; `None` for other stores.
pub fn cluster_path(url: &str) -> Option<(String, bool)> {
    let u = Url::parse(url).ok()?;
    if !TARN_SCHEMES.contains(&u.scheme()) {
        return None;
    }
    let host = u.host_str().unwrap_or("");
    let path = format!("/{host}{}", u.path()).replace("//", "/");
    let slash = path.ends_with('/');
    let path = path.trim_end_matches('/').to_string();
    Some((if path.is_empty() { "/".into() } else { path }, slash))
}

/// Whether DataFusion writes `url` as one file: told by `single_file_output`, else a path
/// without a trailing `/` whose last part has an extension.
fn single_file(copy: &CopyTo, slash: bool, target: &str) -> bool {
    match copy.options.get("single_file_output").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => !slash && target.rsplit('/').next().is_some_and(|last| last.contains('.')),
    }
}

/// Points `copy` at the staging directory `staging` (of statement `stmt` of `app`) and
/// returns its [`Output`]; `None` (and `copy` unchanged) for a target outside the cluster.
pub fn stage(copy: &mut CopyTo, staging: &str, app: &str, stmt: usize) -> Result<Option<Output>> {
    let append = copy.options.remove(APPEND_OPTION).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let replace = copy.options.remove(REPLACE_OPTION).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if append && replace {
        return Err(JobError::Plan(format!("COPY TO {}: an output appends or replaces, not both", copy.output_url)));
    }
    let Some((target, slash)) = cluster_path(&copy.output_url) else {
        if append {
            return Err(JobError::Plan(format!(
                "COPY TO {}: only outputs in the cluster are appended to",
                copy.output_url
            )));
        }
        return Ok(None);
    };
    check_place(&target, &copy.output_url)?;
    let dir = !single_file(copy, slash, &target);
    if append && !dir {
        return Err(JobError::Plan(format!("COPY TO {}: only a directory output is appended to", copy.output_url)));
    }
    let name = target.rsplit('/').next().unwrap_or("out").to_string();
    let staged = format!("{staging}/{name}");
    // Written exactly as staged: the mode DataFusion would have inferred from the target.
    copy.options.insert("single_file_output".into(), (!dir).to_string());
    copy.output_url = format!("tarn://{staged}{}", if dir { "/" } else { "" });
    Ok(Some(Output { target, staged, dir, tag: format!("{app}/{stmt}"), append, replace }))
}

/// Refuses a target that would replace a bucket or the root whole (with its owner,
/// grants and attributes), or lies in the system's own directory.
pub fn check_place(target: &str, url: &str) -> Result<()> {
    if target.matches('/').count() < 2 || target.starts_with("/.tarn") {
        return Err(JobError::Plan(format!(
            "COPY TO {url}: not a place for a job's output (name a path inside a bucket)"
        )));
    }
    Ok(())
}

/// Why `o`'s target cannot take the output, if it cannot: it exists and is neither an
/// empty directory nor this job's own published output.
pub async fn check_target(nn: &NamenodeClient, target: &str, tag: Option<&str>) -> Result<()> {
    let what = format!("look up {target}");
    let Some(st) = nn.get_file_info(target, true).await.map_err(JobError::cluster(what))? else { return Ok(()) };
    if tag.is_some_and(|t| st.xattrs.get(OUTPUT_XATTR).is_some_and(|v| v == t.as_bytes())) {
        return Ok(());
    }
    if st.is_dir() {
        let (entries, _) = nn.list_dir(target, "", 1).await.map_err(JobError::cluster(format!("list {target}")))?;
        if entries.is_empty() {
            return Ok(());
        }
    }
    Err(JobError::Plan(format!("the output {target} exists: remove it (`tarn fs rm -r {target}`) or write elsewhere")))
}

/// Why `o`'s target cannot take it, if it cannot: for an append, a target that is a
/// file; else as [`check_target`] says.
pub async fn check_output(nn: &NamenodeClient, o: &Output) -> Result<()> {
    if o.replace {
        return Ok(());
    }
    if !o.append {
        return check_target(nn, &o.target, Some(&o.tag)).await;
    }
    let what = format!("look up {}", o.target);
    match nn.get_file_info(&o.target, false).await.map_err(JobError::cluster(what))? {
        Some(st) if !st.is_dir() => {
            Err(JobError::Plan(format!("the output {} is a file: only a directory is appended to", o.target)))
        }
        _ => Ok(()),
    }
}

/// Moves the files of the staged output `o` into its existing target directory, each
/// under its path in the output (partition directories made as needed).
async fn append_files(nn: &Arc<NamenodeClient>, o: &Output) -> Result<()> {
    let prefix = format!("{}/", o.staged);
    let files = match nn.list_recursive_all(&prefix, false).await {
        Ok(files) => files,
        // An output of no rows.
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(JobError::Cluster { what: format!("list {}", o.staged), source: e }),
    };
    let absent = RenameOptions { dst_must_be_absent: true, ..Default::default() };
    for f in files {
        let rel = f.path.strip_prefix(&prefix).unwrap_or(&f.path).trim_start_matches('/');
        if rel == SUCCESS_FILE || rel.is_empty() {
            continue;
        }
        let dst = format!("{}/{rel}", o.target);
        if let Some((parent, _)) = dst.rsplit_once('/') {
            nn.mkdirs(parent).await.map_err(JobError::cluster(format!("make {parent}")))?;
        }
        match nn.rename(&f.path, &dst, &absent).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::ConditionFailed) => {
                return Err(JobError::Plan(format!("appending to {}: the file {dst} is already there", o.target)))
            }
            Err(e) => return Err(JobError::Cluster { what: format!("append {} as {dst}", f.path), source: e }),
        }
    }
    let _ = nn.delete(&o.staged, true, None).await;
    Ok(())
}

/// Publishes a staged output onto its target; a target this job already published is
/// left as it is. An append onto an existing directory moves the files in.
pub async fn publish(nn: &Arc<NamenodeClient>, o: &Output) -> Result<()> {
    let cluster = |what: String| JobError::cluster(what);
    if o.append {
        let what = format!("look up {}", o.target);
        if nn.get_file_info(&o.target, false).await.map_err(cluster(what))?.is_some_and(|st| st.is_dir()) {
            return append_files(nn, o).await;
        }
    }
    let mut aside = None;
    if let Some(st) = nn.get_file_info(&o.target, true).await.map_err(cluster(format!("look up {}", o.target)))? {
        if st.xattrs.get(OUTPUT_XATTR).is_some_and(|v| v == o.tag.as_bytes()) {
            return Ok(());
        }
        if o.replace {
            // The old output goes aside (one rename), to be deleted once the new one is
            // in its place, or put back if it cannot be.
            let to = format!("{}.tarn-replaced-{}", o.target, o.tag.replace('/', "-"));
            let absent = RenameOptions { dst_must_be_absent: true, ..Default::default() };
            nn.rename(&o.target, &to, &absent)
                .await
                .map_err(cluster(format!("move {} aside to replace it", o.target)))?;
            aside = Some(to);
        }
    }
    let published = publish_new(nn, o).await;
    if let Some(to) = aside {
        match &published {
            Ok(()) => {
                if let Err(e) = nn.delete(&to, true, None).await {
                    tracing::warn!(old = %to, error = %e, "could not delete a replaced output");
                }
            }
            Err(_) => {
                let absent = RenameOptions { dst_must_be_absent: true, ..Default::default() };
                if let Err(e) = nn.rename(&to, &o.target, &absent).await {
                    tracing::warn!(old = %to, target = %o.target, error = %e, "could not put a replaced output back");
                }
            }
        }
    }
    published
}

/// Publishes `o` onto its target, which is absent or an empty directory.
async fn publish_new(nn: &Arc<NamenodeClient>, o: &Output) -> Result<()> {
    let cluster = |what: String| JobError::cluster(what);
    if let Some(st) = nn.get_file_info(&o.target, true).await.map_err(cluster(format!("look up {}", o.target)))? {
        check_target(nn, &o.target, None).await?;
        // An empty directory: the output takes its place (if it is still that one).
        nn.delete(&o.target, false, Some(st.file_id)).await.map_err(cluster(format!("replace {}", o.target)))?;
    }
    if o.dir {
        // An output of no rows is an empty directory, as DataFusion would leave it.
        nn.mkdirs(&o.staged).await.map_err(cluster(format!("make {}", o.staged)))?;
        let marker = format!("{}/{SUCCESS_FILE}", o.staged);
        let loc = object_store::path::Path::parse(marker.trim_start_matches('/'))
            .map_err(|e| JobError::Invalid(format!("{marker}: {e}")))?;
        TarnStore::new(nn.clone())
            .put(&loc, bytes::Bytes::new().into())
            .await
            .map_err(|e| JobError::Run(format!("write {marker}: {e}")))?;
    }
    let tag = SetAttributes {
        set_xattrs: BTreeMap::from([(OUTPUT_XATTR.to_string(), o.tag.clone().into_bytes())]),
        ..Default::default()
    };
    nn.set_attributes(&o.staged, tag).await.map_err(cluster(format!("tag {}", o.staged)))?;
    if let Some((parent, _)) = o.target.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
        nn.mkdirs(parent).await.map_err(cluster(format!("make {parent}")))?;
    }
    let absent = RenameOptions { dst_must_be_absent: true, ..Default::default() };
    match nn.rename(&o.staged, &o.target, &absent).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::ConditionFailed) => {
            Err(JobError::Plan(format!("the output {} appeared while the job was publishing", o.target)))
        }
        Err(e) => Err(JobError::Cluster { what: format!("publish {} as {}", o.staged, o.target), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_paths() {
        assert_eq!(cluster_path("s3://b/out/"), Some(("/b/out".into(), true)));
        assert_eq!(cluster_path("s3://b/out/q1.parquet"), Some(("/b/out/q1.parquet".into(), false)));
        assert_eq!(cluster_path("tarn:///warehouse/t"), Some(("/warehouse/t".into(), false)));
        assert_eq!(cluster_path("file:///tmp/x"), None);
    }
}
