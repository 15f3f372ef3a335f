//! `tarn fs`: file system commands in the spirit of `hdfs dfs`: namespace commands, and
//! `put` / `get` / `cat` moving bytes through the datanodes (with progress bars, several
//! files at a time).

use anyhow::Context;
use tarn_client::{ClientError, CreateOptions, ErrorKind, FileStatus, NamenodeClient, RenameOptions, SetAttributes};

use crate::out::{self, outln};
use crate::{EXIT_FAILED, EXIT_UNAVAILABLE};

#[derive(clap::Args)]
pub struct FsArgs {
    #[command(flatten)]
    pub conn: crate::creds::ClientOpts,
    #[command(subcommand)]
    cmd: FsCmd,
}

#[derive(clap::Subcommand)]
enum FsCmd {
    /// List a directory (or show a file).
    ///
    /// Example: `tarn fs ls -R -h /data`
    Ls {
        path: String,
        /// Recurse into subdirectories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Human-readable sizes.
        #[arg(short = 'H', long = "human")]
        human: bool,
    },
    /// Create a directory.
    ///
    /// Example: `tarn fs mkdir -p /data/2026/11`
    Mkdir {
        path: String,
        /// Create missing parents; no error if it exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Show a file's or directory's attributes.
    Stat { path: String },
    /// Remove files or directories.
    ///
    /// Example: `tarn fs rm -r /tmp/job-42`
    Rm {
        paths: Vec<String>,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
        /// No error if a path does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Move or rename (into DST if DST is a directory).
    Mv { src: String, dst: String },
    /// Create an empty file.
    Touch { path: String },
    /// Count directories, files and bytes under a path.
    Count { path: String },
    /// Set a file's replication factor.
    Setrep { replication: u32, path: String },
    /// Copy local files or directories into the cluster (into DST if it is a directory).
    ///
    /// Example: `tarn fs put -f data/*.parquet /warehouse/raw/`
    Put {
        /// Local files or directories, then the destination path.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        /// Replace existing files.
        #[arg(short, long)]
        force: bool,
        /// Files copied at once.
        #[arg(short = 'j', long, default_value_t = 4)]
        parallel: usize,
        /// Replication factor for new files (default: the cluster's).
        #[arg(long, default_value_t = 0)]
        replication: u32,
    },
    /// Copy files or directories out of the cluster (into LOCAL if it is a directory).
    ///
    /// Example: `tarn fs get /warehouse/raw ./raw`
    Get {
        src: String,
        local: String,
        /// Replace existing local files.
        #[arg(short, long)]
        force: bool,
        /// Files copied at once.
        #[arg(short = 'j', long, default_value_t = 4)]
        parallel: usize,
    },
    /// Write files to standard output.
    Cat { paths: Vec<String> },
    /// Copy files or directories within the cluster (into DST if it is a directory).
    ///
    /// Example: `tarn fs cp -f /raw/2026-11-24 /archive/`
    Cp {
        src: String,
        dst: String,
        /// Replace existing files.
        #[arg(short, long)]
        force: bool,
        /// Files copied at once.
        #[arg(short = 'j', long, default_value_t = 4)]
        parallel: usize,
    },
    /// Change a file's or directory's mode (octal), like `chmod` (its owner, or the admin).
    ///
    /// Example: `tarn fs chmod 700 /home/alice`
    Chmod { mode: String, path: String },
    /// Change the owner (and with OWNER:GROUP the group) of a file or directory (the admin
    /// only).
    ///
    /// Example: `tarn fs chown alice:analysts /home/alice`
    Chown { owner: String, path: String },
    /// Change the group of a file or directory (its owner, to one of their groups; or the
    /// admin).
    ///
    /// Example: `tarn fs chgrp analysts /warehouse/sales`
    Chgrp { group: String, path: String },
    /// Space used under each entry of a directory: bytes, and bytes on disk with replicas.
    ///
    /// Example: `tarn fs du -s -H /warehouse`
    Du {
        path: String,
        /// One line for PATH itself instead of one per entry.
        #[arg(short, long)]
        summary: bool,
        /// Human-readable sizes.
        #[arg(short = 'H', long = "human")]
        human: bool,
    },
}

pub async fn run(a: FsArgs) -> anyhow::Result<u8> {
    let client = a.conn.connect()?;
    match exec(&client, a.cmd).await {
        Ok(()) => Ok(0),
        // For `main` to end quietly.
        Err(e) if out::is_closed(&e) => Err(e),
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ce @ ClientError::Unavailable { .. }) => {
                eprintln!("tarn fs: {ce}");
                Ok(EXIT_UNAVAILABLE)
            }
            _ => {
                eprintln!("tarn fs: {e:#}");
                Ok(EXIT_FAILED)
            }
        },
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn mode_string(s: &FileStatus) -> String {
    let mut out = String::from(if s.is_dir() { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (s.mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    // The sticky bit, as `ls` shows it: t over x, T without.
    if s.mode & 0o1000 != 0 {
        out.pop();
        out.push(if s.mode & 1 != 0 { 't' } else { 'T' });
    }
    out
}

fn time_string(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, (rem % 3600) / 60)
}

fn print_entry(s: &FileStatus, path: &str, h: bool) -> anyhow::Result<()> {
    let size = if h { human(s.length) } else { s.length.to_string() };
    let rep = if s.is_dir() { "-".to_string() } else { s.replication.to_string() };
    outln!(
        "{} {:>3} {:<8} {:<10} {:>10} {} {}",
        mode_string(s),
        rep,
        s.owner,
        s.group,
        size,
        time_string(s.mtime_ms),
        path
    )
}

fn child(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

async fn ls(c: &NamenodeClient, path: &str, recursive: bool, h: bool) -> anyhow::Result<()> {
    let st = c.get_file_info(path, false).await?.with_context(|| format!("{path}: no such file or directory"))?;
    if !st.is_dir() {
        print_entry(&st, &st.path, h)?;
        return Ok(());
    }
    let mut stack = vec![st.path.clone()];
    while let Some(dir) = stack.pop() {
        let entries = c.list_dir_all(&dir).await?;
        if !recursive && dir == st.path {
            outln!("Found {} items", entries.len())?;
        }
        let mut subdirs = Vec::new();
        for e in &entries {
            let p = child(&dir, &e.path);
            print_entry(e, &p, h)?;
            if recursive && e.is_dir() {
                subdirs.push(p);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn parent_of(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

async fn exec(c: &NamenodeClient, cmd: FsCmd) -> anyhow::Result<()> {
    match cmd {
        FsCmd::Ls { path, recursive, human } => ls(c, &path, recursive, human).await?,
        FsCmd::Mkdir { path, parents } => {
            if !parents {
                if c.get_file_info(&path, false).await?.is_some() {
                    anyhow::bail!("{path}: already exists");
                }
                let parent = parent_of(&path);
                if c.get_file_info(&parent, false).await?.is_none() {
                    anyhow::bail!("{parent}: no such directory (use -p to create parents)");
                }
            }
            c.mkdirs(&path).await?;
        }
        FsCmd::Chmod { mode, path } => {
            let mode = u32::from_str_radix(&mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .with_context(|| format!("{mode:?} is not an octal mode (like 640)"))?;
            c.set_attributes(&path, SetAttributes { mode: Some(mode), ..Default::default() }).await?;
        }
        FsCmd::Chown { owner, path } => {
            let (user, group) = match owner.split_once(':') {
                Some((u, g)) => (u.to_string(), g.to_string()),
                None => (owner.clone(), String::new()),
            };
            let a = SetAttributes {
                owner: Some(user).filter(|u| !u.is_empty()),
                group: Some(group).filter(|g| !g.is_empty()),
                ..Default::default()
            };
            c.set_attributes(&path, a).await?;
        }
        FsCmd::Chgrp { group, path } => {
            c.set_attributes(&path, SetAttributes { group: Some(group), ..Default::default() }).await?;
        }
        FsCmd::Stat { path } => {
            let s =
                c.get_file_info(&path, true).await?.with_context(|| format!("{path}: no such file or directory"))?;
            outln!("path:        {}", s.path)?;
            outln!("type:        {}", if s.is_dir() { "directory" } else { "file" })?;
            outln!("file id:     {}", s.file_id)?;
            outln!("length:      {} ({})", s.length, human(s.length))?;
            if !s.is_dir() {
                outln!("replication: {}", s.replication)?;
                outln!("block size:  {}", human(s.block_size))?;
                outln!("blocks:      {}", s.block_count)?;
            }
            outln!("permission:  {} {:o}", mode_string(&s), s.mode)?;
            outln!("owner:group: {}:{}", s.owner, s.group)?;
            outln!("modified:    {} UTC", time_string(s.mtime_ms))?;
            if let Some(w) = &s.writer {
                outln!("being written by: {w}")?;
            }
            if let Some(q) = &s.quota {
                let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
                outln!(
                    "quota:       namespace {} (used {}), space {} (used {})",
                    show(q.namespace_quota),
                    q.namespace_used,
                    show(q.space_quota),
                    q.space_used
                )?;
            }
            for (k, v) in &s.xattrs {
                outln!("xattr {k}: {}", String::from_utf8_lossy(v))?;
            }
        }
        FsCmd::Rm { paths, recursive, force } => {
            for p in paths {
                match c.delete(&p, recursive, None).await {
                    Ok(true) => {}
                    Ok(false) if force => {}
                    Ok(false) => anyhow::bail!("{p}: no such file or directory"),
                    Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => anyhow::bail!("{e} (use -r)"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        FsCmd::Mv { src, dst } => {
            let target = match c.get_file_info(&dst, false).await? {
                Some(d) if d.is_dir() => {
                    let name = src.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
                    child(&d.path, &name)
                }
                _ => dst,
            };
            c.rename(&src, &target, &RenameOptions::default()).await?;
        }
        FsCmd::Touch { path } => {
            if c.get_file_info(&path, false).await?.is_none() {
                let f = c.create(&path, &CreateOptions::default()).await?;
                c.complete(&path, f.file_id, None, Default::default()).await?;
            }
        }
        FsCmd::Count { path } => {
            let s = c.content_summary(&path).await?;
            outln!("{:>12} {:>12} {:>16} PATHNAME", "DIR_COUNT", "FILE_COUNT", "CONTENT_SIZE")?;
            outln!("{:>12} {:>12} {:>16} {}", s.directory_count, s.file_count, s.length, path)?;
        }
        FsCmd::Setrep { replication, path } => {
            c.set_replication(&path, replication).await?;
            outln!("Replication {replication} set: {path}")?;
        }
        FsCmd::Put { mut paths, force, parallel, replication } => {
            let dst = paths.pop().expect("clap requires two paths");
            crate::transfer_cmd::put(c, &paths, &dst, force, parallel, replication).await?;
        }
        FsCmd::Get { src, local, force, parallel } => {
            crate::transfer_cmd::get(c, &src, &local, force, parallel).await?;
        }
        FsCmd::Cat { paths } => {
            for p in paths {
                crate::transfer_cmd::cat(c, &p).await?;
            }
        }
        FsCmd::Cp { src, dst, force, parallel } => crate::transfer_cmd::cp(c, &src, &dst, force, parallel).await?,
        FsCmd::Du { path, summary, human: h } => {
            let st =
                c.get_file_info(&path, false).await?.with_context(|| format!("{path}: no such file or directory"))?;
            let targets: Vec<String> = if summary || !st.is_dir() {
                vec![st.path.clone()]
            } else {
                c.list_dir_all(&st.path).await?.iter().map(|e| child(&st.path, &e.path)).collect()
            };
            let show = |n: u64| if h { human(n) } else { n.to_string() };
            for t in targets {
                let s = c.content_summary(&t).await?;
                outln!("{:>12}  {:>12}  {}", show(s.length), show(s.space_consumed), t)?;
            }
        }
    }
    Ok(())
}
