//! Re-replication: on the namenode's command, copy a finalized replica to other datanodes
//! through a write pipeline, reading and verifying it piece by piece.

use std::sync::Arc;

use bytes::Bytes;
use tarn_client::blocks::Pipeline;
use tarn_proto::datanode as pb;

use crate::transfer::{Event, Shared, READ_PIECE_BYTES};

/// Starts copying `t.block` to `t.targets` in the background.
pub fn spawn(shared: Arc<Shared>, t: pb::TransferCommand) {
    tokio::spawn(async move {
        let Some(block) = t.block else { return };
        match copy(&shared, &block, t.targets.clone()).await {
            Ok(()) => tracing::info!(block_id = block.block_id, targets = t.targets.len(), "replica copied"),
            Err(e) => {
                tracing::warn!(block_id = block.block_id, error = %e, "replica copy failed (the namenode will retry)")
            }
        }
    });
}

async fn copy(
    shared: &Arc<Shared>,
    block: &pb::ExtendedBlock,
    targets: Vec<pb::DatanodeLocation>,
) -> Result<(), String> {
    let store = shared.store.clone();
    let (id, gs) = (block.block_id, block.gen_stamp);
    let reader = tokio::task::spawn_blocking(move || store.open_reader(id, gs))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            if e.is_corruption() {
                shared.event_corrupt(id, gs, &e.to_string());
            }
            e.to_string()
        })?;
    let reader = Arc::new(reader);
    let length = reader.length();
    let eb = pb::ExtendedBlock { block_id: id, gen_stamp: reader.gen_stamp(), length };
    let mut p =
        Pipeline::open(eb, targets, pb::WriteStage::Transfer, 0, length, "re-replication", &[], &shared.transport)
            .await
            .map_err(|f| f.message)?;
    let mut off = 0u64;
    while off < length {
        let len = (length - off).min(READ_PIECE_BYTES as u64) as usize;
        let r = reader.clone();
        let piece = tokio::task::spawn_blocking(move || r.read_at(off, len)).await.map_err(|e| e.to_string())?;
        let piece = piece.map_err(|e| {
            if e.is_corruption() {
                shared.event_corrupt(id, gs, &e.to_string());
            }
            e.to_string()
        })?;
        p.write(Bytes::from(piece)).await.map_err(|f| f.message)?;
        off += len as u64;
    }
    p.finish().await.map_err(|f| f.message)?;
    Ok(())
}

impl Shared {
    fn event_corrupt(&self, block_id: u64, gen_stamp: u64, reason: &str) {
        let _ = self.events.send(Event::Corrupt { block_id, gen_stamp, reason: reason.to_string() });
    }
}
