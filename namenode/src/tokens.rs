//! Block access tokens on the namenode: the leader signs one for each block it hands out
//! (read tokens with locations, write tokens with new blocks and pipelines), for the user
//! whose permissions it checked. Keys live in the replicated namespace
//! ([`crate::namespace::META_BLOCK_KEYS`]); this node keeps a copy to sign with, and the
//! leader makes the first key and a new one every [`KEY_ROLL_MS`] (see
//! [`tarn_security::block_token`]).

use tarn_security::block_token::{self, KEY_ROLL_MS};
use tarn_security::BlockKey;

use crate::error::FsError;
use crate::kv::SnapView;
use crate::namespace::Namespace;
use crate::state::{NodeState, StateError};
use crate::types::Op;

pub use tarn_security::block_token::{READ, WRITE};

/// Copies the replicated keys into this node's signer.
pub fn load(s: &NodeState) -> Result<(), FsError> {
    let view = SnapView::new(&s.db);
    let keys = Namespace::new(&view, 0).block_keys()?;
    s.block_keys.set(keys);
    Ok(())
}

fn fresh(k: Option<&BlockKey>, now_ms: u64) -> bool {
    k.is_some_and(|k| k.created_ms.saturating_add(KEY_ROLL_MS) > now_ms)
}

/// Makes sure this node (the leader) signs with a key that is not due to roll: loads the
/// replicated keys, and if the newest is missing or old, proposes a new one.
pub async fn ensure_key(s: &NodeState) -> Result<(), StateError> {
    let now = block_token::now_ms();
    if fresh(s.block_keys.newest().as_ref(), now) {
        return Ok(());
    }
    let _one_at_a_time = s.block_key_lock.lock().await;
    load(s)?;
    let newest = s.block_keys.newest();
    if fresh(newest.as_ref(), now) {
        return Ok(());
    }
    let id = newest.map(|k| k.id.wrapping_add(1)).unwrap_or(1);
    let op = Op::AddBlockKey { key: BlockKey::generate(id, now) };
    s.propose(op).await?;
    tracing::info!(key_id = id, "new block key");
    Ok(load(s)?)
}

/// A token letting `user` use `block_id` for `modes` (a write token for generation
/// `gen_stamp` only; 0: any). Empty if no key exists yet; the datanode then refuses the
/// client with a message saying so.
pub fn issue(s: &NodeState, block_id: u64, gen_stamp: u64, modes: u8, user: &str) -> Vec<u8> {
    s.block_keys.issue(block_id, gen_stamp, modes, user, block_token::now_ms()).unwrap_or_default()
}

/// The keys as the datanode protocol carries them.
pub fn keys_pb(s: &NodeState) -> Vec<tarn_proto::datanode::BlockKey> {
    s.block_keys
        .get()
        .into_iter()
        .map(|k| tarn_proto::datanode::BlockKey { id: k.id, secret: k.secret, created_ms: k.created_ms })
        .collect()
}
