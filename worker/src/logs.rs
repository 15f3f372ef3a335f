//! Log aggregation (YARN's): when an application has ended and none of its containers
//! runs here any more, the worker copies each container's `stdout` and `stderr` into the
//! file system as the application's user, under
//! `/.tarn/logs/<user>/<app>/<container>/` (the user's directory 0700), then removes the
//! application's local directories.
//!
//! The container directories belong to the application's uid, which may have put links
//! or other files where its logs were: every file is opened relative to its directory's
//! descriptor without following links (`openat`, `O_NOFOLLOW`), and only regular files
//! with a single link are copied, each up to the size it had when opened, so a container
//! can never have the worker copy a file it could not read, nor keep it copying forever.
//! A copy that fails is tried again a few times; then the directories stay on the node.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tarn_client::blocks::FileWriter;
use tarn_client::{CreateOptions, NamenodeClient, SetAttributes};
use tokio::io::AsyncReadExt;

/// Where the logs go in the file system (the namenodes make it, mode 1777).
pub const LOGS_DIR: &str = "/.tarn/logs";
/// The files of a container that are kept.
const LOG_FILES: [&str; 2] = ["stdout", "stderr"];
/// Bytes read per write to the file system.
const CHUNK: usize = 1 << 20;
/// Tries at keeping an application's logs (1, 2, 4, 8 s apart).
const KEEP_TRIES: u32 = 5;

/// Keeps ended applications' logs; one copy per application at a time.
pub struct LogKeeper {
    /// `None`: no namenode configured; local directories are kept.
    client: Option<Arc<NamenodeClient>>,
    local_dir: PathBuf,
    /// How long the local directories stay after the logs were kept.
    delete_delay: Duration,
    busy: Mutex<HashSet<String>>,
}

impl LogKeeper {
    pub fn new(client: Option<Arc<NamenodeClient>>, local_dir: PathBuf, delete_delay: Duration) -> Arc<Self> {
        Arc::new(LogKeeper { client, local_dir, delete_delay, busy: Mutex::default() })
    }

    /// Copies application `app`'s logs (as `user`) and removes its directories, in the
    /// background. On failure the directories stay (and are logged).
    pub fn keep(self: &Arc<Self>, app: String, user: String) {
        let Some(client) = self.client.clone() else {
            tracing::warn!(%app, "no namenodes configured (worker.namenodes): the logs stay on this node");
            return;
        };
        if !self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(app.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let app_dir = me.local_dir.join("apps").join(&app);
            let mut pause = Duration::from_secs(1);
            let mut result = keep_logs(&client, &app_dir, &app, &user).await;
            for _ in 1..KEEP_TRIES {
                let Err(e) = &result else { break };
                tracing::info!(%app, error = %e, ?pause, "keeping the application's logs failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                result = keep_logs(&client, &app_dir, &app, &user).await;
            }
            match result {
                Ok(files) => {
                    tracing::info!(%app, %user, files, "application logs kept in the file system");
                    tokio::time::sleep(me.delete_delay).await;
                    if let Err(e) = std::fs::remove_dir_all(&app_dir) {
                        tracing::warn!(%app, error = %e, "could not remove the application's directory");
                    }
                }
                Err(e) => tracing::warn!(%app, %user, error = %e, "could not keep the application's logs"),
            }
            me.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&app);
        });
    }
}

/// The directory of `user`'s logs of `app` in the file system.
pub fn app_logs_dir(user: &str, app: &str) -> String {
    format!("{LOGS_DIR}/{user}/{app}")
}

fn name_ok(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

/// Opens `name` in directory `dir` without following a link.
fn open_at(dir: RawFd, name: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| std::io::Error::other("a name with NUL"))?;
    // SAFETY: openat(2) with a valid directory descriptor and a NUL-terminated name; the
    // returned descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `name` is a container id of application `app` (`<app>_NN_NNNNNN`, or
/// `<app>_NN_eE_NNNNNN` when a resource manager of epoch E > 1 made it): what else a
/// container made in the application's directory is not a container's log.
fn container_of(app: &str, name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_prefix(app).and_then(|r| r.strip_prefix('_')) else { return false };
    let (attempt, rest) = rest.split_once('_').unwrap_or(("", ""));
    let seq = match rest.strip_prefix('e').and_then(|r| r.split_once('_')) {
        Some((epoch, seq)) if digits(epoch) => seq,
        Some(_) => return false,
        None => rest,
    };
    attempt.len() == 2 && seq.len() == 6 && digits(attempt) && digits(seq)
}

/// The container directories of an application and their log files, opened safely:
/// (container, file name, open file).
fn open_logs(app_dir: &Path, app: &str) -> std::io::Result<Vec<(String, &'static str, std::fs::File)>> {
    let path = CString::new(app_dir.as_os_str().as_encoded_bytes()).map_err(|_| std::io::Error::other("path"))?;
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is owned below.
    let fd =
        unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let app_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(app_dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| name_ok(n) && container_of(app, n))
        .collect();
    names.sort();
    for cid in names {
        let Ok(cdir) = open_at(app_fd.as_raw_fd(), &cid, libc::O_RDONLY | libc::O_DIRECTORY) else { continue };
        for f in LOG_FILES {
            let Ok(fd) = open_at(cdir.as_raw_fd(), f, libc::O_RDONLY | libc::O_NONBLOCK) else { continue };
            let file = std::fs::File::from(fd);
            // A regular file with one link: not a device or fifo, nor another name of a
            // file the container could not read (a hard link).
            use std::os::unix::fs::MetadataExt;
            if file.metadata().map(|m| m.file_type().is_file() && m.nlink() == 1).unwrap_or(false) {
                out.push((cid.clone(), f, file));
            }
        }
    }
    Ok(out)
}

/// Copies the application's logs into the file system as `user`; returns the files copied.
async fn keep_logs(client: &NamenodeClient, app_dir: &Path, app: &str, user: &str) -> Result<usize, String> {
    if !name_ok(app) || !name_ok(user) {
        return Err(format!("{app:?} of {user:?}: not names a directory can have"));
    }
    let files = match open_logs(app_dir, app) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", app_dir.display())),
    };
    let c = client.for_user(user);
    let home = format!("{LOGS_DIR}/{user}");
    if c.get_file_info(&home, false).await.map_err(|e| e.to_string())?.is_none() {
        c.mkdirs(&home).await.map_err(|e| format!("mkdir {home}: {e}"))?;
        let private = SetAttributes { mode: Some(0o700), ..Default::default() };
        c.set_attributes(&home, private).await.map_err(|e| format!("chmod {home}: {e}"))?;
    }
    let base = app_logs_dir(user, app);
    // Made even when no file is kept: its presence says the worker is done.
    c.mkdirs(&base).await.map_err(|e| format!("mkdir {base}: {e}"))?;
    // /.tarn/logs is everyone's (1777): a directory someone else made under another
    // user's name is not that user's, and nothing of theirs goes in it.
    for d in [&home, &base] {
        match c.get_file_info(d, false).await.map_err(|e| e.to_string())? {
            Some(st) if st.is_dir() && st.owner == user => {}
            Some(st) => return Err(format!("{d} is {}'s, not {user}'s: the logs stay on the node", st.owner)),
            None => return Err(format!("{d} vanished")),
        }
    }
    let opts = CreateOptions { overwrite: true, create_parent: true, mode: 0o640, ..Default::default() };
    let mut n = 0;
    for (cid, name, file) in files {
        let path = format!("{base}/{cid}/{name}");
        let mut w = FileWriter::create(&c, &path, &opts).await.map_err(|e| format!("create {path}: {e}"))?;
        // What it held when opened, no more (a process still writing cannot keep the copy going).
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut src = tokio::fs::File::from_std(file).take(len);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let k = src.read(&mut buf).await.map_err(|e| format!("read {cid}/{name}: {e}"))?;
            if k == 0 {
                break;
            }
            w.write(&buf[..k]).await.map_err(|e| format!("write {path}: {e}"))?;
        }
        w.close().await.map_err(|e| format!("close {path}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_applications_container_ids_are_containers() {
        let app = "app-1-0001";
        assert!(container_of(app, "app-1-0001_01_000002"));
        // Made by a resource manager after a takeover (epoch 2, 12).
        assert!(container_of(app, "app-1-0001_01_e2_000002"));
        assert!(container_of(app, "app-1-0001_02_e12_000007"));
        for other in [
            "decoy",
            "app-1-0001",
            "app-1-0001_1_000002",
            "app-1-0001_01_00002x",
            "app-1-0002_01_000002",
            "app-1-0001_01_e_000002",
            "app-1-0001_01_ex_000002",
            "app-1-0001_01_e2_00002",
            "app-1-0001_01_x2_000002",
        ] {
            assert!(!container_of(app, other), "{other}");
        }
    }
}
