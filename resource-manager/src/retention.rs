//! Log retention: the active resource manager deletes applications' aggregated logs
//! (`/.tarn/logs/USER/APP`, kept by the workers when an application ends) once they are
//! older than `resource_manager.log_retention_secs` (YARN's
//! `yarn.log-aggregation.retain-seconds`). It acts for each user: their directories are
//! theirs alone (0700), and the resource manager may act for users, never as the superuser.

use std::sync::Arc;
use std::time::Duration;

use tarn_client::{ClientError, ErrorKind, NamenodeClient};
use tokio_util::sync::CancellationToken;

use crate::state::{now_ms, RmState};

/// Where workers keep applications' logs (the namenodes make it, mode 1777).
pub const LOGS_DIR: &str = "/.tarn/logs";

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Sweeps every `keep / 4` (between 1 s and 15 min) while this resource manager is the
/// active one, until `shutdown`.
pub async fn run(nn: Arc<NamenodeClient>, state: Arc<RmState>, keep: Duration, shutdown: CancellationToken) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(900));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !state.is_serving() {
            continue;
        }
        match sweep(&nn, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(applications = n, "old applications' logs deleted"),
            Err(e) => tracing::warn!(error = %e, "could not sweep old applications' logs"),
        }
    }
}

/// Deletes the logs of applications kept longer ago than `keep`; returns how many.
pub async fn sweep(nn: &NamenodeClient, keep: Duration) -> Result<usize, ClientError> {
    let cutoff = now_ms().saturating_sub(keep.as_millis() as u64);
    let users = match nn.list_dir_all(LOGS_DIR).await {
        Ok(u) => u,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for u in users.iter().filter(|u| u.is_dir()) {
        let user = name(&u.path);
        let as_user = nn.for_user(user);
        let dir = format!("{LOGS_DIR}/{user}");
        let apps = match as_user.list_dir_all(&dir).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%user, error = %e, "could not list the user's application logs");
                continue;
            }
        };
        for a in apps.iter().filter(|a| a.mtime_ms < cutoff) {
            let path = format!("{dir}/{}", name(&a.path));
            match as_user.delete(&path, true, Some(a.file_id)).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%path, error = %e, "could not delete old application logs"),
            }
        }
    }
    Ok(removed)
}
