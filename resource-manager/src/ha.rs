//! High availability: one active resource manager, standbys ready to take over, and the
//! applications' records that let a standby carry on where the active one stopped (YARN's
//! RM HA and its state store, kept in the namenodes' replicated namespace instead of
//! ZooKeeper).
//!
//! Everything lives under `/.tarn/rm` (the namenodes make it, owned by the
//! `resource-manager` role):
//!
//! - `active`: the lease, a directory whose attributes name its holder and a beat counter.
//!   The holder beats every sixth of the lease time with a write conditional on the
//!   directory's id. A standby that sees neither the id nor the beat change for a whole
//!   lease time removes it (conditionally on that id) and makes its own (exclusively);
//!   whoever makes it holds it. The holder serves only until half a lease after the start
//!   of its last successful beat, so it has stopped (its clock, paused or not, says so)
//!   well before any standby can take over.
//! - `apps-E`: one directory per application, its record (an `AppRecord` protobuf) in an
//!   attribute. `E` is the epoch: each takeover renames the directory to the next epoch
//!   before reading it, so a writer of an earlier epoch (an active one paused past its
//!   lease) finds its path gone and cannot overwrite what the new one decides: the path is
//!   the fencing token.
//!
//! Containers are not recorded: workers report what they run when they register with the
//! new active one, which adopts them (YARN's work-preserving restart).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tarn_client::rm::{AppState, ContainerStatus};
use tarn_client::{ClientError, ErrorKind, MkdirOptions, NamenodeClient, RenameOptions, SetAttributes};
use tarn_proto::rm as pb;
use tokio_util::sync::CancellationToken;

use crate::cluster::{AppRecord, AttemptRecord, ClusterState};
use crate::state::RmState;

/// The resource managers' directory (made by the namenodes).
pub const RM_DIR: &str = "/.tarn/rm";
/// The lease.
pub const LEASE: &str = "/.tarn/rm/active";
const X_HOLDER: &str = "tarn.rm.holder";
const X_BEAT: &str = "tarn.rm.beat";
/// The attribute holding an application's record.
pub const X_RECORD: &str = "tarn.rm.record";
/// The attribute of the records' directory holding the set of workers.
pub const X_WORKERS: &str = "tarn.rm.workers";
/// The attribute of the records' directory holding the queues (their TOML, as loaded).
pub const X_QUEUES: &str = "tarn.rm.queues";
/// The records' format this build writes (and the oldest it reads).
pub const RECORD_FORMAT: u32 = 1;
/// The largest record kept (an attribute's room, with margin).
pub const RECORD_MAX: usize = 48 * 1024;

/// The records directory of epoch `e`.
pub fn apps_dir(e: u64) -> String {
    format!("{RM_DIR}/apps-{e}")
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {path}: {why}")]
    Corrupt { path: String, why: String },
}

/// Why a takeover was given up.
#[derive(Debug, thiserror::Error)]
enum TakeoverError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the lease was taken by another before the records were moved")]
    Lost,
    #[error("moving the records took {0:?}, more than half a lease")]
    Slow(Duration),
}

/// Encodes an application's record.
pub fn encode(r: &AppRecord) -> Vec<u8> {
    let m = pb::AppRecord {
        format: RECORD_FORMAT,
        app_id: r.id.clone(),
        user: r.user.clone(),
        submission: Some((&r.sub).into()),
        state: r.state.to_pb(),
        diagnostics: r.diagnostics.clone(),
        attempts: r
            .attempts
            .iter()
            .map(|t| pb::AttemptRecord {
                attempt: t.n,
                container_id: t.container.clone(),
                worker_id: t.worker.clone(),
                status: Some((&t.status).into()),
                registered: t.registered,
                tracking_url: t.tracking_url.clone(),
            })
            .collect(),
    };
    m.encode_to_vec()
}

/// Encodes the set of workers (with the drained ones' deadlines).
pub fn encode_workers(workers: &[(String, Option<u64>)]) -> Vec<u8> {
    pb::WorkerSetRecord {
        format: RECORD_FORMAT,
        worker_ids: workers.iter().map(|(id, _)| id.clone()).collect(),
        drains: workers
            .iter()
            .filter_map(|(id, d)| d.map(|until_ms| pb::DrainRecord { worker_id: id.clone(), until_ms }))
            .collect(),
    }
    .encode_to_vec()
}

/// The workers on record, and the drained ones with their deadline (ms since the epoch).
pub type RecordedWorkers = (Vec<String>, Vec<(String, u64)>);

/// Decodes a set of workers written by this build or an earlier one.
pub fn decode_workers(path: &str, bytes: &[u8]) -> Result<RecordedWorkers, RecordError> {
    let bad = |why: String| RecordError::Corrupt { path: path.to_string(), why };
    let m = pb::WorkerSetRecord::decode(bytes).map_err(|e| bad(format!("not a set of workers: {e}")))?;
    if m.format == 0 || m.format > RECORD_FORMAT {
        return Err(bad(format!("format {} (this build reads 1..={RECORD_FORMAT})", m.format)));
    }
    Ok((m.worker_ids, m.drains.into_iter().map(|d| (d.worker_id, d.until_ms)).collect()))
}

/// Decodes a record written by this build or an earlier one.
pub fn decode(path: &str, bytes: &[u8]) -> Result<AppRecord, RecordError> {
    let bad = |why: String| RecordError::Corrupt { path: path.to_string(), why };
    let m = pb::AppRecord::decode(bytes).map_err(|e| bad(format!("not an application record: {e}")))?;
    if m.format == 0 || m.format > RECORD_FORMAT {
        return Err(bad(format!("format {} (this build reads 1..={RECORD_FORMAT})", m.format)));
    }
    if m.app_id.is_empty() || m.user.is_empty() {
        return Err(bad("no application id or user".into()));
    }
    let sub = m.submission.ok_or_else(|| bad("no submission".into()))?.into();
    if m.attempts.iter().enumerate().any(|(i, t)| t.attempt as usize != i + 1) {
        return Err(bad("attempts are not numbered 1, 2, ... in order".into()));
    }
    Ok(AppRecord {
        id: m.app_id,
        user: m.user,
        sub,
        state: AppState::from_pb(m.state),
        diagnostics: m.diagnostics,
        attempts: m
            .attempts
            .into_iter()
            .map(|t| AttemptRecord {
                n: t.attempt,
                container: t.container_id,
                worker: t.worker_id,
                status: t.status.map(ContainerStatus::from).unwrap_or_else(|| ContainerStatus::running("")),
                registered: t.registered,
                tracking_url: t.tracking_url,
            })
            .collect(),
    })
}

/// How a resource manager with high availability runs.
pub struct Ha {
    pub nn: Arc<NamenodeClient>,
    pub state: Arc<RmState>,
    pub lease: Duration,
    /// A new, empty core (for a takeover, or after stepping down).
    pub fresh: Box<dyn Fn() -> ClusterState + Send + Sync>,
    /// How long masters wait after a takeover, at least, before they register again.
    pub settle: Duration,
}

/// What a standby saw of the lease.
struct Seen {
    file_id: u64,
    beat: Vec<u8>,
    since: Instant,
}

fn kind(e: &ClientError) -> ErrorKind {
    e.kind()
}

impl Ha {
    /// Watches the lease as a standby, takes it over when its holder stops beating, serves
    /// while it holds it; until `shutdown` (then it gives the lease up at once).
    pub async fn run(self, shutdown: CancellationToken) {
        let instance = format!("{}#{:016x}", self.state.addr, rand::random::<u64>());
        let tick = self.lease / 6;
        let mut seen: Option<Seen> = None;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            first = false;
            let lease = match self.nn.get_file_info(LEASE, true).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the resource managers' lease");
                    continue;
                }
            };
            let now = Instant::now();
            if let Some(l) = lease {
                let beat = l.xattrs.get(X_BEAT).cloned().unwrap_or_default();
                let holder = String::from_utf8_lossy(l.xattrs.get(X_HOLDER).map(|v| v.as_slice()).unwrap_or_default())
                    .to_string();
                if seen.as_ref().is_none_or(|s| s.file_id != l.file_id || s.beat != beat) {
                    seen = Some(Seen { file_id: l.file_id, beat, since: now });
                    let addr = holder.split('#').next().unwrap_or_default().to_string();
                    self.state.stand_by((!addr.is_empty()).then_some(addr), &self.fresh);
                }
                let since = seen.as_ref().map(|s| s.since).unwrap_or(now);
                if now.saturating_duration_since(since) < self.lease {
                    continue;
                }
                tracing::warn!(%holder, silent = ?now.saturating_duration_since(since), "the active resource manager stopped renewing its lease: taking over");
                match self.nn.delete(LEASE, false, Some(l.file_id)).await {
                    Ok(_) => {}
                    Err(e) if matches!(kind(&e), ErrorKind::NotFound | ErrorKind::ConditionFailed) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not remove the stale lease");
                        continue;
                    }
                }
            }
            seen = None;
            let started = Instant::now();
            let mut xattrs = BTreeMap::new();
            xattrs.insert(X_HOLDER.to_string(), instance.clone().into_bytes());
            xattrs.insert(X_BEAT.to_string(), b"0".to_vec());
            let o = MkdirOptions { mode: 0o700, xattrs, ..Default::default() };
            let lease_id = match self.nn.mkdir_exclusive(LEASE, &o).await {
                Ok(st) => st.file_id,
                Err(e) if matches!(kind(&e), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not take the lease");
                    continue;
                }
            };
            let lost = CancellationToken::new();
            match self.take_over(lease_id, started).await {
                Ok((epoch, core, until)) => {
                    tracing::info!(epoch, took = ?started.elapsed(), "this resource manager is the active one");
                    self.state.activate(core, until);
                    let persister =
                        tokio::spawn(persist(self.nn.clone(), self.state.clone(), apps_dir(epoch), lost.clone()));
                    self.hold(lease_id, &lost, &shutdown).await;
                    lost.cancel();
                    let _ = persister.await;
                }
                Err(e) => tracing::warn!(error = %e, "taking over failed; giving the lease back"),
            }
            self.state.stand_by(None, &self.fresh);
            if shutdown.is_cancelled() || !lost.is_cancelled() {
                // Gone for good, or the takeover failed: a standby may take over at once.
                let _ = self.nn.delete(LEASE, false, Some(lease_id)).await;
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One beat of the lease: `Ok(false)` when it is no longer this one's.
    async fn beat(&self, lease_id: u64, n: u64) -> Result<bool, ClientError> {
        let mut set_xattrs = BTreeMap::new();
        set_xattrs.insert(X_BEAT.to_string(), n.to_string().into_bytes());
        let a = SetAttributes { set_xattrs, expected_file_id: Some(lease_id), ..Default::default() };
        match self.nn.set_attributes(LEASE, a).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(kind(&e), ErrorKind::NotFound | ErrorKind::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// With the lease just taken: moves the records to the next epoch (fencing an earlier
    /// active one's writes) and reads them into a new core. Returns the epoch, the core
    /// and until when it may serve.
    async fn take_over(&self, lease_id: u64, started: Instant) -> Result<(u64, ClusterState, Instant), TakeoverError> {
        let dirs = self.nn.list_dir_all(RM_DIR).await?;
        let latest =
            dirs.iter().filter_map(|d| d.path.rsplit('/').next()?.strip_prefix("apps-")?.parse::<u64>().ok()).max();
        let epoch = latest.unwrap_or(0) + 1;
        let dir = apps_dir(epoch);
        // A standby waits a whole lease after this beat before it may take over; the
        // rename follows within half of it, or this takeover is given up.
        let at = Instant::now();
        if !self.beat(lease_id, 1).await? {
            return Err(TakeoverError::Lost);
        }
        match latest {
            Some(e) => {
                let o = RenameOptions { dst_must_be_absent: true, ..Default::default() };
                self.nn.rename(&apps_dir(e), &dir, &o).await?;
            }
            None => {
                self.nn.mkdir_exclusive(&dir, &MkdirOptions { mode: 0o700, ..Default::default() }).await?;
            }
        }
        if at.elapsed() >= self.lease / 2 {
            return Err(TakeoverError::Slow(at.elapsed()));
        }
        let records = read_records(&self.nn, &dir).await?;
        let attrs = self.nn.get_file_info(&dir, true).await?.map(|d| d.xattrs).unwrap_or_default();
        let (workers, drains) = match attrs.get(X_WORKERS) {
            Some(b) => decode_workers(&dir, b).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the set of workers is unreadable: waiting for none");
                (Vec::new(), Vec::new())
            }),
            None => (Vec::new(), Vec::new()),
        };
        let mut core = (self.fresh)();
        core.persist(epoch);
        if let Some(text) = attrs.get(X_QUEUES).filter(|t| !t.is_empty()) {
            match crate::queues::Queues::parse(&String::from_utf8_lossy(text)) {
                Ok(q) => core.load_queues(q),
                Err(e) => tracing::error!(error = %e, "the queues on record are unreadable: the default queue serves"),
            }
        }
        // Workers find this one once their calls to the one before time out and they
        // follow the lease's new holder: that long more before a worker is lost.
        let now = Instant::now();
        core.recover(records, workers, now, self.settle, self.lease + tarn_client::rm::RM_ATTEMPT_MAX);
        core.restore_drains(drains, now, crate::state::now_ms());
        tracing::debug!(took = ?started.elapsed(), "records read");
        Ok((epoch, core, at + self.lease / 2))
    }

    /// Beats the lease while it is this one's, extending its service; returns when it is
    /// lost (another took over, or the records' writer was fenced) or at `shutdown`.
    async fn hold(&self, lease_id: u64, lost: &CancellationToken, shutdown: &CancellationToken) {
        let tick = self.lease / 6;
        let mut n = 1u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            n += 1;
            let at = Instant::now();
            match self.beat(lease_id, n).await {
                Ok(true) if self.state.extend(at, at + self.lease / 2) => {}
                Ok(true) => {
                    // It had stopped serving before this beat started: a standby may
                    // have removed the lease already. Give it up and take it anew.
                    tracing::warn!("the lease lapsed before it was renewed: standing by");
                    let _ = self.nn.delete(LEASE, false, Some(lease_id)).await;
                    lost.cancel();
                    return;
                }
                Ok(false) => {
                    tracing::warn!("another resource manager holds the lease now: standing by");
                    lost.cancel();
                    return;
                }
                // It stops serving by itself half a lease after its last beat; the next
                // beat that works resumes (nobody took over meanwhile, or it would fail).
                Err(e) => tracing::warn!(error = %e, "could not renew the lease"),
            }
        }
    }
}

/// Reads every record of directory `dir`. A record that cannot be read is skipped (and
/// said, loudly): one bad record must not keep the cluster without a resource manager.
async fn read_records(nn: &NamenodeClient, dir: &str) -> Result<Vec<AppRecord>, ClientError> {
    let prefix = format!("{dir}/");
    let o = tarn_client::ListOptions { include_directories: true, collapse_directories: true, with_xattrs: true };
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (page, more) = nn.list_tree(&prefix, &after, 1000, &o).await?;
        for e in &page {
            let Some(bytes) = e.xattrs.get(X_RECORD) else { continue };
            match decode(&e.path, bytes) {
                Ok(r) => out.push(r),
                Err(err) => tracing::error!(error = %err, "an application's record is unreadable: skipped"),
            }
        }
        after = page.last().map(|e| e.path.clone()).unwrap_or_default();
        if !more || page.is_empty() {
            return Ok(out);
        }
    }
}

/// Writes changed records into `dir` while this one is active; cancels `lost` when its
/// writes are fenced (another took over).
async fn persist(nn: Arc<NamenodeClient>, state: Arc<RmState>, dir: String, lost: CancellationToken) {
    let mut known = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = lost.cancelled() => return,
            _ = state.persist_now.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let (core, d) = {
            let mut c = state.core();
            (c.id(), c.take_dirty())
        };
        if d.records.is_empty() && d.workers.is_none() && d.queues.is_none() && d.removed.is_empty() {
            state.note_durable(core, d.gen);
            continue;
        }
        if !state.is_serving() {
            state.core().redo(d.records.into_iter().map(|r| r.id), d.workers.is_some(), d.queues.is_some());
            continue;
        }
        let writes = d.records.iter().map(|r| write_record(&nn, &dir, r, known.contains(&r.id)));
        // The set of workers and the queues: attributes of the epoch's directory.
        let workers = async {
            let mut set_xattrs = BTreeMap::new();
            if let Some(w) = &d.workers {
                set_xattrs.insert(X_WORKERS.to_string(), encode_workers(w));
            }
            if let Some(q) = &d.queues {
                set_xattrs.insert(X_QUEUES.to_string(), q.clone().into_bytes());
            }
            if set_xattrs.is_empty() {
                return Ok(());
            }
            nn.set_attributes(&dir, SetAttributes { set_xattrs, ..Default::default() }).await.map(|_| ())
        };
        // Forgotten applications' records go (a delete names the epoch's directory: one of
        // an earlier epoch finds nothing to delete).
        let removals = d.removed.iter().map(|id| {
            let path = format!("{dir}/{id}");
            let nn = &nn;
            async move {
                match nn.delete(&path, false, None).await {
                    Ok(_) => Ok(()),
                    Err(e) if kind(&e) == ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                }
            }
        });
        let (results, workers, removals) =
            tokio::join!(futures::future::join_all(writes), workers, futures::future::join_all(removals));
        let mut failed: Vec<String> = Vec::new();
        for (id, r) in d.removed.iter().zip(removals) {
            if let Err(e) = r {
                tracing::warn!(app = %id, error = %e, "could not delete a forgotten application's record; retrying");
                failed.push(id.clone());
            }
        }
        let fenced = |e: &ClientError| matches!(kind(e), ErrorKind::NotFound | ErrorKind::ParentNotFound);
        let workers_failed = match workers {
            Ok(()) => false,
            Err(e) if fenced(&e) => {
                tracing::warn!(error = %e, "the records moved on: another resource manager took over");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not write the set of workers or the queues; retrying");
                true
            }
        };
        for (r, res) in d.records.iter().zip(results) {
            match res {
                Ok(()) => {
                    known.insert(r.id.clone());
                }
                Err(e) if fenced(&e) => {
                    tracing::warn!(error = %e, "the records moved on: another resource manager took over");
                    lost.cancel();
                    return;
                }
                // Refused as it is (it cannot fit, say): retrying would hold every later
                // change back. Said loudly; the application goes on in memory.
                Err(e) if kind(&e) == ErrorKind::InvalidArgument => {
                    tracing::error!(app = %r.id, error = %e, "the application's record was refused: not on record");
                }
                Err(e) => {
                    tracing::warn!(app = %r.id, error = %e, "could not write the application's record; retrying");
                    failed.push(r.id.clone());
                }
            }
        }
        if failed.is_empty() && !workers_failed {
            state.note_durable(core, d.gen);
        } else {
            state.core().redo(failed, workers_failed && d.workers.is_some(), workers_failed && d.queues.is_some());
        }
    }
}

/// Writes one record: a new one is made (only if the epoch's directory is still there),
/// a known one updated in place (only where the path still exists).
async fn write_record(nn: &NamenodeClient, dir: &str, r: &AppRecord, known: bool) -> Result<(), ClientError> {
    let path = format!("{dir}/{}", r.id);
    let mut xattrs = BTreeMap::new();
    xattrs.insert(X_RECORD.to_string(), encode(r));
    if !known {
        let o = MkdirOptions {
            mode: 0o700,
            xattrs: xattrs.clone(),
            require_dir: Some(dir.to_string()),
            ..Default::default()
        };
        match nn.mkdir_exclusive(&path, &o).await {
            Ok(_) => return Ok(()),
            // Made before (by this one, whose answer was lost, or by the one before).
            Err(e) if matches!(kind(&e), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {}
            Err(e) => return Err(e),
        }
    }
    nn.set_attributes(&path, SetAttributes { set_xattrs: xattrs, ..Default::default() }).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tarn_client::rm::{AppSubmission, ContainerSpec, ExitReason, LocalFile, Resources};

    fn record() -> AppRecord {
        let mut env = BTreeMap::new();
        env.insert("MODE".to_string(), "nightly".to_string());
        AppRecord {
            id: "app-1765000000000-0007".into(),
            user: "alice".into(),
            sub: AppSubmission {
                name: "etl".into(),
                queue: "default".into(),
                am_resources: Resources::new(1, 512),
                am_spec: ContainerSpec {
                    command: vec!["tarn".into(), "app".into(), "shell-master".into()],
                    env,
                    files: vec![LocalFile {
                        path: "/user/alice/job.sh".into(),
                        name: "job.sh".into(),
                        executable: true,
                    }],
                },
                max_attempts: 2,
                submission_id: String::new(),
            },
            state: AppState::Running,
            diagnostics: "attempt 1 failed: container app-1765000000000-0007_01_000001 worker lost".into(),
            attempts: vec![
                AttemptRecord {
                    n: 1,
                    container: "app-1765000000000-0007_01_000001".into(),
                    worker: "w1".into(),
                    status: ContainerStatus::ended(
                        "app-1765000000000-0007_01_000001",
                        ExitReason::WorkerLost,
                        -1,
                        "worker w1 was lost",
                    ),
                    registered: true,
                    tracking_url: "http://w1:4040".into(),
                },
                AttemptRecord {
                    n: 2,
                    container: "app-1765000000000-0007_02_000001".into(),
                    worker: "w2".into(),
                    status: ContainerStatus::running("app-1765000000000-0007_02_000001"),
                    registered: false,
                    tracking_url: String::new(),
                },
            ],
        }
    }

    fn golden(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1").join(name)
    }

    /// A record written by format 1 (committed, never rewritten) decodes to what was
    /// written, and encodes back to the same bytes.
    #[test]
    fn the_golden_application_record_decodes() {
        let bytes = std::fs::read(golden("app-record.pb")).expect("golden app-record.pb");
        let r = decode("golden", &bytes).unwrap();
        assert_eq!(r, record());
        assert_eq!(encode(&r), bytes, "format 1 encodes back to the same bytes");
    }

    #[test]
    fn a_record_of_a_later_format_or_garbage_is_refused_with_its_path() {
        let mut m = pb::AppRecord::decode(encode(&record()).as_slice()).unwrap();
        m.format = RECORD_FORMAT + 1;
        let e = decode("/.tarn/rm/apps-3/x", &m.encode_to_vec()).unwrap_err().to_string();
        assert!(e.contains("/.tarn/rm/apps-3/x") && e.contains("format 2"), "{e}");
        assert!(decode("p", b"\xff\xff\xff").is_err());
        assert!(decode("p", &pb::AppRecord { format: 1, ..Default::default() }.encode_to_vec()).is_err());
    }

    #[test]
    #[ignore = "writes golden fixtures; run by hand with TARN_GOLDEN_OUT"]
    #[allow(clippy::disallowed_methods)] // a tool run by hand, told where to write
    fn write_rm_goldens() {
        let out = std::path::PathBuf::from(std::env::var("TARN_GOLDEN_OUT").expect("TARN_GOLDEN_OUT"));
        assert!(!out.exists(), "{} exists: fixtures are never rewritten", out.display());
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("app-record.pb"), encode(&record())).unwrap();
    }
}
