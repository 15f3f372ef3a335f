//! The datanode's conversation with the namenode leader: register, send a full block
//! report, then heartbeat; report finalized and deleted replicas as they happen; carry out
//! the commands that come back (delete replicas). A leader that does not know this node (it
//! restarted, or leadership moved) answers `reregister`, and the cycle starts again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tarn_client::NamenodeClient;
use tarn_proto::datanode as pb;
use tarn_proto::datanode::datanode_protocol_client::DatanodeProtocolClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transfer::{report_of, Event, Shared};

/// Pause before registering again after the namenodes could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Replicas per block report message (a report of millions is sent in parts).
const REPORT_REPLICAS_MAX: usize = 100_000;

pub struct Link {
    pub shared: Arc<Shared>,
    pub nn: NamenodeClient,
    pub me: pb::DatanodeLocation,
    pub heartbeat_interval: Duration,
    /// Corruption reports not yet delivered (a full report does not carry them, so they
    /// survive a lost connection and a new registration).
    pub unsent_corrupt: std::sync::Mutex<Vec<Event>>,
}

fn stub(c: tonic::transport::Channel) -> DatanodeProtocolClient<tonic::transport::Channel> {
    DatanodeProtocolClient::new(c).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

macro_rules! dn_rpc {
    ($link:expr, $method:ident, $msg:expr) => {{
        let msg = $msg;
        $link
            .nn
            .call(|c| {
                let req = $link.nn.request(msg.clone());
                async move { stub(c).$method(req).await }
            })
            .await
    }};
}

impl Link {
    fn storages(&self) -> Vec<pb::StorageReport> {
        let used = self.shared.store.used_bytes();
        let usage = self.shared.store.usage().unwrap_or_default();
        let full = !self.shared.store.has_room_for(0);
        self.shared
            .store
            .storage_ids()
            .iter()
            .zip(usage)
            .enumerate()
            .map(|(i, (id, u))| pb::StorageReport {
                storage_id: id.clone(),
                capacity_bytes: u.capacity_bytes,
                free_bytes: u.free_bytes,
                // Replica bytes are not tracked per directory yet: all on the first.
                used_bytes: if i == 0 { used } else { 0 },
                full,
            })
            .collect()
    }

    /// Runs until `shutdown`.
    pub async fn run(self, mut events: mpsc::UnboundedReceiver<Event>, shutdown: CancellationToken) {
        loop {
            let cycle = self.cycle(&mut events);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = cycle => if let Err(e) = r {
                    tracing::warn!(error = %e, "lost the namenodes; registering again");
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }

    /// Register, report, heartbeat until the leader asks for a new registration.
    async fn cycle(&self, events: &mut mpsc::UnboundedReceiver<Event>) -> Result<(), tarn_client::ClientError> {
        let reg = pb::RegisterRequest { node: Some(self.me.clone()), storages: self.storages() };
        let r = dn_rpc!(self, register, reg)?;
        self.set_block_keys(&r.block_keys);
        tracing::info!(namenode = r.namenode_id, uuid = %self.me.uuid, "registered with the namenode leader");
        let interval = if r.heartbeat_interval_ms > 0 {
            Duration::from_millis(r.heartbeat_interval_ms)
        } else {
            self.heartbeat_interval
        };
        // Finalized replicas that arrived before registering are in the full report;
        // corruption reports are not, and go out after it.
        while let Ok(e) = events.try_recv() {
            if matches!(e, Event::Corrupt { .. }) {
                self.lock_unsent().push(e);
            }
        }
        self.full_report().await?;
        let unsent = std::mem::take(&mut *self.lock_unsent());
        if !unsent.is_empty() {
            self.report_events(unsent).await?;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.heartbeat().await? {
                        return Ok(());
                    }
                }
                Some(e) = events.recv() => {
                    let mut batch = vec![e];
                    while let Ok(e) = events.try_recv() {
                        batch.push(e);
                    }
                    self.report_events(batch).await?;
                }
            }
        }
    }

    async fn full_report(&self) -> Result<(), tarn_client::ClientError> {
        let all = self.shared.store.report();
        let parts: Vec<&[crate::ReplicaInfo]> =
            if all.is_empty() { vec![&[][..]] } else { all.chunks(REPORT_REPLICAS_MAX).collect() };
        for (i, part) in parts.into_iter().enumerate() {
            let req = pb::BlockReportRequest {
                node: Some(self.me.clone()),
                replicas: part.iter().map(report_of).collect(),
                // Later parts add to the first; the first replaces what the leader knew.
                replaces: i == 0,
            };
            let r = dn_rpc!(self, block_report, req)?;
            self.execute(r.commands).await?;
        }
        tracing::info!(replicas = all.len(), "full block report sent");
        Ok(())
    }

    /// One heartbeat; `false` when the leader wants a new registration.
    async fn heartbeat(&self) -> Result<bool, tarn_client::ClientError> {
        let req = pb::HeartbeatRequest {
            node: Some(self.me.clone()),
            storages: self.storages(),
            transfers_in_flight: self.shared.in_flight.load(Ordering::Relaxed),
        };
        let r = dn_rpc!(self, heartbeat, req)?;
        self.set_block_keys(&r.block_keys);
        if r.reregister {
            return Ok(false);
        }
        self.execute(r.commands).await?;
        Ok(true)
    }

    fn set_block_keys(&self, keys: &[pb::BlockKey]) {
        if !keys.is_empty() {
            let keys = keys
                .iter()
                .map(|k| tarn_security::BlockKey { id: k.id, secret: k.secret.clone(), created_ms: k.created_ms })
                .collect();
            self.shared.block_keys.merge(keys);
        }
    }

    fn lock_unsent(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.unsent_corrupt.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn report_events(&self, batch: Vec<Event>) -> Result<(), tarn_client::ClientError> {
        let mut received = Vec::new();
        let mut corrupt = Vec::new();
        for e in batch {
            match e {
                Event::Received(info) => received.push(report_of(&info)),
                c @ Event::Corrupt { .. } => corrupt.push(c),
            }
        }
        let mut pending = corrupt.into_iter();
        while let Some(e) = pending.next() {
            let Event::Corrupt { block_id, gen_stamp, ref reason } = e else { continue };
            tracing::warn!(block_id, %reason, "corrupt replica reported to the namenode");
            let req = pb::ReportBadReplicasRequest {
                node: Some(self.me.clone()),
                blocks: vec![pb::ExtendedBlock { block_id, gen_stamp, length: 0 }],
                reason: reason.clone(),
            };
            if let Err(err) = dn_rpc!(self, report_bad_replicas, req) {
                // Kept for the next connection, with the ones after it.
                let mut unsent = self.lock_unsent();
                unsent.push(e);
                unsent.extend(pending);
                return Err(err);
            }
        }
        if !received.is_empty() {
            self.incremental(received, Vec::new()).await?;
        }
        Ok(())
    }

    async fn incremental(
        &self,
        received: Vec<pb::ReplicaReport>,
        deleted: Vec<u64>,
    ) -> Result<(), tarn_client::ClientError> {
        let req = pb::IncrementalBlockReportRequest { node: Some(self.me.clone()), received, deleted };
        dn_rpc!(self, incremental_block_report, req)?;
        Ok(())
    }

    async fn execute(&self, commands: Vec<pb::DatanodeCommand>) -> Result<(), tarn_client::ClientError> {
        for c in commands {
            match c.command {
                Some(pb::datanode_command::Command::Invalidate(inv)) => {
                    let store = self.shared.store.clone();
                    let ids: Vec<(u64, u64)> = inv.blocks.iter().map(|b| (b.block_id, b.gen_stamp)).collect();
                    let deleted = tokio::task::spawn_blocking(move || {
                        let mut gone = Vec::new();
                        for (id, gs) in ids {
                            match store.delete_if(id, gs) {
                                Ok(Some(_)) => gone.push(id),
                                Ok(None) => {}
                                Err(e) => tracing::warn!(block_id = id, error = %e, "could not delete a replica"),
                            }
                        }
                        gone
                    })
                    .await
                    .unwrap_or_default();
                    if !deleted.is_empty() {
                        tracing::debug!(replicas = deleted.len(), "deleted replicas on the namenode's command");
                        self.incremental(Vec::new(), deleted).await?;
                    }
                }
                Some(pb::datanode_command::Command::Transfer(t)) => {
                    crate::replicate::spawn(self.shared.clone(), t);
                }
                None => {}
            }
        }
        Ok(())
    }
}
