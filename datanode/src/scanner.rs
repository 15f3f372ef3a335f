//! The block scanner: re-reads every finalized replica at a bounded rate and verifies its
//! checksums, so that a replica that rotted on disk is found (and restored from another
//! one by the namenode) before a reader needs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::ReplicaState;
use crate::transfer::{Event, Shared, READ_PIECE_BYTES};

/// How fast and how often the scanner reads.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Bytes verified per second at most.
    pub bytes_per_sec: u64,
    /// Pause between two passes over every replica.
    pub pass_interval: Duration,
}

/// Runs until `shutdown`.
pub async fn run(shared: Arc<Shared>, limits: ScanLimits, shutdown: CancellationToken) {
    loop {
        let pass = scan_pass(&shared, limits, &shutdown);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            n = pass => tracing::debug!(replicas = n, "block scanner pass done"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(limits.pass_interval) => {}
        }
    }
}

/// One pass; returns the replicas verified.
async fn scan_pass(shared: &Arc<Shared>, limits: ScanLimits, shutdown: &CancellationToken) -> usize {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0;
    for r in shared.store.report() {
        if r.state != ReplicaState::Finalized || shutdown.is_cancelled() {
            continue;
        }
        let store = shared.store.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let reader = store.open_reader(r.block_id, r.gen_stamp)?;
            let mut off = 0;
            while off < reader.length() {
                let len = (reader.length() - off).min(READ_PIECE_BYTES as u64) as usize;
                reader.read_at(off, len)?;
                off += len as u64;
            }
            Ok::<u64, crate::DatanodeError>(reader.length())
        })
        .await;
        match verified {
            Ok(Ok(len)) => bytes += len,
            Ok(Err(e)) if e.is_corruption() => {
                tracing::warn!(block_id = r.block_id, error = %e, "block scanner found a corrupt replica");
                let _ = shared.events.send(Event::Corrupt {
                    block_id: r.block_id,
                    gen_stamp: r.gen_stamp,
                    reason: e.to_string(),
                });
            }
            // Deleted meanwhile, or replaced: nothing to report.
            Ok(Err(_)) | Err(_) => {}
        }
        n += 1;
        // Stay under the rate: sleep until the bytes read so far are due.
        let due = Duration::from_secs_f64(bytes as f64 / limits.bytes_per_sec.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::select! {
                _ = shutdown.cancelled() => return n,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    n
}
