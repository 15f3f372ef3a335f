//! Writer leases, as soft state on the leader (like HDFS's LeaseManager): which client holds
//! which open file is replicated (the inode's `writer`, the `uc` column family), but renewal
//! times are not. A new leader gives every holder a fresh lease from the moment it took
//! over. Past the soft limit another writer may take the file over; past the hard limit
//! the leader closes the file itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct LeaseLimits {
    pub soft: Duration,
    pub hard: Duration,
}

impl Default for LeaseLimits {
    fn default() -> Self {
        LeaseLimits { soft: Duration::from_secs(60), hard: Duration::from_secs(20 * 60) }
    }
}

pub struct Leases {
    limits: LeaseLimits,
    inner: Mutex<Inner>,
}

struct Inner {
    renewed: HashMap<String, Instant>,
    /// When this node last became leader: holders it has not heard from count from here.
    epoch: Instant,
}

impl Leases {
    pub fn new(limits: LeaseLimits) -> Self {
        Leases { limits, inner: Mutex::new(Inner { renewed: HashMap::new(), epoch: Instant::now() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn renew(&self, holder: &str) {
        if holder.is_empty() {
            return;
        }
        self.lock().renewed.insert(holder.to_string(), Instant::now());
    }

    /// Forgets renewals: called when this node becomes leader.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.renewed.clear();
        g.epoch = Instant::now();
    }

    fn age(&self, holder: &str) -> Duration {
        let g = self.lock();
        g.renewed.get(holder).copied().unwrap_or(g.epoch).elapsed()
    }

    pub fn soft_expired(&self, holder: &str) -> bool {
        self.age(holder) > self.limits.soft
    }

    pub fn hard_expired(&self, holder: &str) -> bool {
        self.age(holder) > self.limits.hard
    }
}
