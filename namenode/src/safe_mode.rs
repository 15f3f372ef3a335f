//! Safe mode: the namenode's refusal of changes after a start until enough of the
//! blocks have a reported replica (see [`SafeMode`]). Its state is part of
//! [`crate::state::NodeState`]; the block monitor and the services ask it.

use std::time::{Duration, Instant};

use crate::blocks::BlockManager;
use crate::kv::{Db, SnapView};
use crate::namespace::Namespace;

/// Safe mode: after the namenode starts, it accepts no change to the namespace until a
/// fraction of the blocks (`safe_mode_threshold`) has a reported replica, so that nothing
/// is written, deleted or re-replicated on the strength of a half-known cluster. It ends
/// by itself. Reads are served throughout.
pub struct SafeMode {
    inner: std::sync::Mutex<SafeInner>,
    threshold: f64,
}

struct SafeInner {
    on: bool,
    /// Blocks in the namespace, counted once when first needed.
    total: Option<u64>,
    /// The term in which this node last became leader, and when it noticed.
    leading: Option<(u64, Instant)>,
}

impl SafeMode {
    pub fn new(threshold: f64) -> Self {
        SafeMode { inner: std::sync::Mutex::new(SafeInner { on: true, total: None, leading: None }), threshold }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SafeInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Like [`SafeMode::settled`], without noting a new term.
    pub(crate) fn is_settled(&self, term: u64, now: Instant, grace: Duration) -> bool {
        matches!(self.lock().leading, Some((t, since)) if t == term && now.saturating_duration_since(since) >= grace)
    }

    /// How long this node has led in `term` (zero when it only now notices the term).
    pub(crate) fn led_for(&self, term: u64, now: Instant) -> Duration {
        let mut g = self.lock();
        match g.leading {
            Some((t, since)) if t == term => now.saturating_duration_since(since),
            _ => {
                g.leading = Some((term, now));
                Duration::ZERO
            }
        }
    }

    /// Whether this node has led in `term` for at least `grace`.
    pub(crate) fn settled(&self, term: u64, now: Instant, grace: Duration) -> bool {
        let mut g = self.lock();
        match g.leading {
            Some((t, since)) if t == term => now.saturating_duration_since(since) >= grace,
            _ => {
                g.leading = Some((term, now));
                false
            }
        }
    }

    /// Leaves safe mode at once (an operator's decision: some blocks have no replica left).
    pub fn leave(&self) {
        let mut g = self.lock();
        if g.on {
            g.on = false;
            tracing::warn!("safe mode left on an operator's command");
        }
    }

    /// `Some(why)` while the namenode is in safe mode (checked, and left, on the spot):
    /// the namespace in `db` says how many blocks there are, `blocks` how many have a
    /// reported replica.
    pub fn message(&self, db: &Db, blocks: &BlockManager) -> Option<String> {
        let mut g = self.lock();
        if !g.on {
            return None;
        }
        let total = match g.total {
            Some(t) => t,
            None => {
                // Complete blocks only: the open last block of a file being written may never
                // have reached a datanode.
                let view = SnapView::new(db);
                let ns = Namespace::new(&view, 0);
                let mut n = 0u64;
                let mut current: Option<crate::records::Inode> = None;
                if let Err(e) = ns.visit_blocks(&mut |file, b| {
                    if current.as_ref().map(|i| i.id) != Some(file) {
                        current = ns.get_inode(file)?;
                    }
                    let open = current.as_ref().is_some_and(|i| i.last_block_open && b.index + 1 == i.block_count);
                    n += u64::from(!open);
                    Ok(true)
                }) {
                    return Some(format!("namenode is in safe mode: counting blocks failed: {e}"));
                }
                g.total = Some(n);
                n
            }
        };
        let reported = blocks.reported_blocks() as u64;
        let needed = (total as f64 * self.threshold).ceil() as u64;
        if reported >= needed {
            g.on = false;
            tracing::info!(total, reported, "leaving safe mode");
            return None;
        }
        Some(format!(
            "namenode is in safe mode: {reported} of {total} blocks have a reported replica ({needed} needed); \
         it ends by itself as datanodes report"
        ))
    }
}
