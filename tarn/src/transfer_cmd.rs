//! `tarn fs put / get / cat`: bytes between local files and the cluster.
//!
//! Directories are copied recursively; several files move at once (`-j`); one progress
//! bar counts the bytes of all of them (shown only on a terminal). A `put` that fails
//! deletes the partial file, so nothing half-written is left visible.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{CreateOptions, NamenodeClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read from a local file or the cluster per call.
const IO_BYTES: usize = 4 << 20;
/// Reads of one file in flight (read-ahead).
const READ_AHEAD: usize = 4;

fn progress(total: u64) -> ProgressBar {
    crate::out::progress(ProgressBar::new(total), "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Local files under `src` (or `src` itself) with their cluster destinations.
fn plan_put(src: &Path, dst: &str, out: &mut Vec<(PathBuf, String, u64)>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .with_context(|| format!("list {}", src.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("list {}", src.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            plan_put(&e.path(), &join(dst, &name), out)?;
        }
    } else {
        out.push((src.to_path_buf(), dst.to_string(), meta.len()));
    }
    Ok(())
}

fn base_name(p: &str) -> String {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string()
}

pub async fn put(
    c: &NamenodeClient,
    srcs: &[String],
    dst: &str,
    force: bool,
    parallel: usize,
    replication: u32,
) -> anyhow::Result<()> {
    let dst_is_dir = dst.ends_with('/') || c.get_file_info(dst, false).await?.is_some_and(|s| s.is_dir());
    if srcs.len() > 1 && !dst_is_dir {
        anyhow::bail!("{dst}: not a directory (several sources need a directory destination)");
    }
    let mut plan = Vec::new();
    for s in srcs {
        let local = Path::new(s);
        let target = if dst_is_dir { join(dst, &base_name(s)) } else { dst.to_string() };
        plan_put(local, &target, &mut plan)?;
    }
    let pb = progress(plan.iter().map(|p| p.2).sum());
    let opts = CreateOptions { overwrite: force, create_parent: true, replication, ..Default::default() };
    stream::iter(plan.into_iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(parallel.max(1), |(local, remote, _)| {
            let (pb, opts) = (pb.clone(), opts.clone());
            async move { put_file(c, &local, &remote, &opts, &pb).await }
        })
        .await?;
    pb.finish_and_clear();
    Ok(())
}

async fn put_file(
    c: &NamenodeClient,
    local: &Path,
    remote: &str,
    opts: &CreateOptions,
    pb: &ProgressBar,
) -> anyhow::Result<()> {
    let mut f = tokio::fs::File::open(local).await.with_context(|| format!("open {}", local.display()))?;
    let mut w = FileWriter::create(c, remote, opts).await.with_context(|| format!("create {remote}"))?;
    let file_id = w.status.file_id;
    let copied: anyhow::Result<()> = async {
        let mut buf = vec![0u8; IO_BYTES];
        loop {
            let n = f.read(&mut buf).await.with_context(|| format!("read {}", local.display()))?;
            if n == 0 {
                return Ok(());
            }
            w.write(&buf[..n]).await.with_context(|| format!("write {remote}"))?;
            pb.inc(n as u64);
        }
    }
    .await;
    match copied {
        Ok(()) => {
            w.close().await.with_context(|| format!("complete {remote}"))?;
            Ok(())
        }
        Err(e) => {
            // Leave nothing half-written behind.
            drop(w);
            if let Err(d) = c.delete(remote, false, Some(file_id)).await {
                tracing::warn!(path = %remote, error = %d, "could not delete the partial file");
            }
            Err(e)
        }
    }
}

/// Cluster files under `src` (or `src` itself) with their local destinations.
async fn plan_get(c: &NamenodeClient, src: &str, local: &Path) -> anyhow::Result<Vec<(String, PathBuf, u64)>> {
    let st = c.get_file_info(src, false).await?.with_context(|| format!("{src}: no such file or directory"))?;
    if !st.is_dir() {
        return Ok(vec![(st.path, local.to_path_buf(), st.length)]);
    }
    let prefix = if st.path.ends_with('/') { st.path.clone() } else { format!("{}/", st.path) };
    let mut out = Vec::new();
    for f in c.list_recursive_all(&prefix, false).await? {
        let rel = f.path.strip_prefix(&prefix).unwrap_or(&f.path).to_string();
        out.push((f.path.clone(), local.join(rel), f.length));
    }
    Ok(out)
}

pub async fn get(c: &NamenodeClient, src: &str, local: &str, force: bool, parallel: usize) -> anyhow::Result<()> {
    let local = Path::new(local);
    let target = if local.is_dir() { local.join(base_name(src)) } else { local.to_path_buf() };
    let plan = plan_get(c, src, &target).await?;
    for (_, l, _) in &plan {
        if l.exists() && !force {
            anyhow::bail!("{}: exists (use -f to replace it)", l.display());
        }
    }
    let pb = progress(plan.iter().map(|p| p.2).sum());
    stream::iter(plan.into_iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(parallel.max(1), |(remote, l, _)| {
            let pb = pb.clone();
            async move { get_file(c, &remote, &l, &pb).await }
        })
        .await?;
    pb.finish_and_clear();
    Ok(())
}

async fn get_file(c: &NamenodeClient, remote: &str, local: &Path, pb: &ProgressBar) -> anyhow::Result<()> {
    if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("create {}", dir.display()))?;
    }
    // Written to a temporary name and renamed, so a failed copy leaves no partial file.
    let tmp = local.with_extension("tarn-partial");
    let r: anyhow::Result<()> = async {
        let reader = FileReader::open(c, remote).await?;
        let mut out = tokio::fs::File::create(&tmp).await.with_context(|| format!("create {}", tmp.display()))?;
        let mut pieces = std::pin::pin!(reader.read_pieces(0, reader.length(), IO_BYTES as u64, READ_AHEAD));
        while let Some(data) = pieces.next().await {
            for b in data.with_context(|| format!("read {remote}"))? {
                out.write_all(&b).await.with_context(|| format!("write {}", tmp.display()))?;
                pb.inc(b.len() as u64);
            }
        }
        out.sync_all().await.with_context(|| format!("fsync {}", tmp.display()))?;
        tokio::fs::rename(&tmp, local).await.with_context(|| format!("rename to {}", local.display()))?;
        Ok(())
    }
    .await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

pub async fn cat(c: &NamenodeClient, path: &str) -> anyhow::Result<()> {
    let reader = FileReader::open(c, path).await?;
    let mut stdout = tokio::io::stdout();
    let mut pieces = std::pin::pin!(reader.read_pieces(0, reader.length(), IO_BYTES as u64, READ_AHEAD));
    while let Some(data) = pieces.next().await {
        for b in data.with_context(|| format!("read {path}"))? {
            stdout.write_all(&b).await.map_err(crate::out::error)?;
        }
    }
    stdout.flush().await.map_err(crate::out::error)?;
    Ok(())
}

/// Copies `src` (a file or a directory tree) to `dst` inside the cluster. Each file is
/// written under a temporary name beside its destination and renamed into place, so a
/// failed copy leaves no partial file.
pub async fn cp(c: &NamenodeClient, src: &str, dst: &str, force: bool, parallel: usize) -> anyhow::Result<()> {
    let st = c.get_file_info(src, false).await?.with_context(|| format!("{src}: no such file or directory"))?;
    let dst_is_dir = dst.ends_with('/') || c.get_file_info(dst, false).await?.is_some_and(|s| s.is_dir());
    let target = if dst_is_dir { join(dst, &base_name(&st.path)) } else { dst.trim_end_matches('/').to_string() };
    let plan: Vec<(String, String, u64)> = if st.is_dir() {
        let prefix = format!("{}/", st.path.trim_end_matches('/'));
        c.list_recursive_all(&prefix, false)
            .await?
            .into_iter()
            .map(|f| {
                let rel = f.path.strip_prefix(&prefix).unwrap_or(&f.path).to_string();
                (f.path.clone(), join(&target, &rel), f.length)
            })
            .collect()
    } else {
        vec![(st.path.clone(), target, st.length)]
    };
    let pb = progress(plan.iter().map(|p| p.2).sum());
    stream::iter(plan.into_iter().map(Ok::<_, anyhow::Error>))
        .try_for_each_concurrent(parallel.max(1), |(from, to, _)| {
            let pb = pb.clone();
            async move { cp_file(c, &from, &to, force, &pb).await }
        })
        .await?;
    pb.finish_and_clear();
    Ok(())
}

async fn cp_file(c: &NamenodeClient, from: &str, to: &str, force: bool, pb: &ProgressBar) -> anyhow::Result<()> {
    if !force && c.get_file_info(to, false).await?.is_some() {
        anyhow::bail!("{to}: exists (use -f to replace it)");
    }
    let (dir, name) = to.rsplit_once('/').unwrap_or(("", to));
    let tmp = format!("{dir}/.{name}.tarn-copying-{:08x}", rand::random::<u32>());
    let opts = CreateOptions { create_parent: true, ..Default::default() };
    let reader = FileReader::open(c, from).await.with_context(|| format!("open {from}"))?;
    let mut w = FileWriter::create(c, &tmp, &opts).await.with_context(|| format!("create {tmp}"))?;
    let file_id = w.status.file_id;
    let copied: anyhow::Result<()> = async {
        let mut pieces = std::pin::pin!(reader.read_pieces(0, reader.length(), IO_BYTES as u64, READ_AHEAD));
        while let Some(data) = pieces.next().await {
            for b in data.with_context(|| format!("read {from}"))? {
                w.write(&b).await.with_context(|| format!("write {to}"))?;
                pb.inc(b.len() as u64);
            }
        }
        w.close().await.with_context(|| format!("complete {to}"))?;
        let rename = tarn_client::RenameOptions { overwrite: force, dst_must_be_absent: !force, ..Default::default() };
        c.rename(&tmp, to, &rename).await.with_context(|| format!("rename into {to}"))?;
        Ok(())
    }
    .await;
    if copied.is_err() {
        let _ = c.delete(&tmp, false, Some(file_id)).await;
    }
    copied
}
