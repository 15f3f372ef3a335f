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
    /// A scan of open files ran after the epoch's hard limit passed.
    epoch_scanned: bool,
    /// When the current scan of open files started.
    scan_started: Instant,
}

impl Leases {
    pub fn new(limits: LeaseLimits) -> Self {
        Leases {
            limits,
            inner: Mutex::new(Inner {
                renewed: HashMap::new(),
                epoch: Instant::now(),
                epoch_scanned: false,
                scan_started: Instant::now(),
            }),
        }
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
        g.epoch_scanned = false;
    }

    /// Whether a lease may have passed the hard limit since the last full scan of open
    /// files: cheap (one pass over holders, not files), so the monitor scans files only then.
    pub fn scan_due(&self) -> bool {
        let g = self.lock();
        let hard = self.limits.hard;
        (!g.epoch_scanned && g.epoch.elapsed() > hard) || g.renewed.values().any(|t| t.elapsed() > hard)
    }

    /// A full scan of open files starts now.
    pub fn scan_begin(&self) {
        self.lock().scan_started = Instant::now();
    }

    /// A full scan of open files finished: every lease that had expired when it started was
    /// found and recovered, so those holders are forgotten (one that writes again is renewed
    /// afresh). Holders that expired during the scan wait for the next one.
    pub fn scan_done(&self) {
        let mut g = self.lock();
        let (hard, started) = (self.limits.hard, g.scan_started);
        if g.epoch + hard < started {
            g.epoch_scanned = true;
        }
        g.renewed.retain(|_, t| *t + hard >= started);
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
