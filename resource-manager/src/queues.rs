//! Queues (YARN's CapacityScheduler): a tree of queues, each with a guaranteed share of
//! its parent (`capacity`, percent), the most of the cluster it may use when others leave
//! room (`max_capacity`, percent of the cluster), how far one user may go (`user_limit_factor`
//! times the queue's guarantee), how much of it masters may hold (`max_am_share`), who may
//! submit (`submit_users`) and which nodes it may use (`labels`). Applications go to leaf
//! queues. An admin loads the tree from TOML (`tarn admin refresh-queues FILE`); the
//! resource manager keeps it on record beside the applications, so a standby taking over
//! schedules with the same one.
//!
//! ```toml
//! [queue.etl]
//! capacity = 70
//! [queue.adhoc]
//! capacity = 30
//! max_capacity = 60
//! user_limit_factor = 2.0
//! submit_users = ["alice", "bob"]
//! [queue."etl.daily"]     # a child of etl
//! capacity = 100
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tarn_client::rm::{NodeLabel, Resources};

/// The name of the only queue when none were loaded.
pub const DEFAULT_QUEUE: &str = "default";
/// Most queues in a tree.
const QUEUES_MAX: usize = 1000;

/// The TOML file: `[queue.NAME]` tables, NAME a dotted path below the root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesFile {
    #[serde(default)]
    pub queue: BTreeMap<String, QueueConf>,
}

/// One queue's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConf {
    /// Percent of its parent guaranteed (siblings' add up to 100).
    pub capacity: f64,
    /// Percent of the cluster it may use at most (default 100: all that is idle).
    pub max_capacity: f64,
    /// One user may use up to this many times the queue's guarantee (and never more
    /// than its maximum).
    pub user_limit_factor: f64,
    /// Of the queue's guarantee, the share masters may hold (one master always may run).
    pub max_am_share: f64,
    /// Who may submit to it (empty: everyone; an admin always may).
    pub submit_users: Vec<String>,
    /// The node labels its containers may use (empty: any).
    pub labels: Vec<String>,
}

impl Default for QueueConf {
    fn default() -> Self {
        QueueConf {
            capacity: 0.0,
            max_capacity: 100.0,
            user_limit_factor: 1.0,
            max_am_share: 0.5,
            submit_users: Vec::new(),
            labels: Vec::new(),
        }
    }
}

/// A leaf queue, compiled: fractions of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Its dotted path below the root.
    pub path: String,
    /// Guaranteed fraction of the cluster (the product of the capacities above it).
    pub guarantee: f64,
    /// The most of the cluster it may use.
    pub max: f64,
    pub user_limit_factor: f64,
    pub max_am_share: f64,
    /// `None`: everyone.
    pub users: Option<BTreeSet<String>>,
    /// `None`: any node.
    pub labels: Option<Vec<NodeLabel>>,
    /// Its parents (paths, nearest first) with their maximum fraction.
    pub parents: Vec<(String, f64)>,
}

/// A compiled tree: its leaves (in path order), and the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Queues {
    pub leaves: Vec<Leaf>,
    /// The TOML loaded (empty for the default tree).
    pub source: String,
}

impl Default for Queues {
    /// One leaf, `default`, with the whole cluster.
    fn default() -> Self {
        Queues {
            leaves: vec![Leaf {
                path: DEFAULT_QUEUE.into(),
                guarantee: 1.0,
                max: 1.0,
                user_limit_factor: 1.0,
                max_am_share: 0.5,
                users: None,
                labels: None,
                parents: Vec::new(),
            }],
            source: String::new(),
        }
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Queues {
    /// Parses and checks a tree; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Queues, String> {
        let file: QueuesFile = toml::from_str(text).map_err(|e| format!("not a queues file: {e}"))?;
        let q = &file.queue;
        if q.is_empty() {
            return Err("no [queue.NAME] table: name at least one queue".into());
        }
        if q.len() > QUEUES_MAX {
            return Err(format!("{} queues; at most {QUEUES_MAX}", q.len()));
        }
        for (name, c) in q {
            if !name.split('.').all(valid_segment) {
                return Err(format!(
                    "queue {name:?}: a name is dotted parts of letters, digits, '_' and '-' (up to 64 each)"
                ));
            }
            if let Some((parent, _)) = name.rsplit_once('.') {
                if !q.contains_key(parent) {
                    return Err(format!("queue {name:?}: its parent {parent:?} has no [queue.{parent}] table"));
                }
            }
            if !(0.0..=100.0).contains(&c.capacity) || !(0.0..=100.0).contains(&c.max_capacity) {
                return Err(format!("queue {name:?}: capacity and max_capacity are percents (0 to 100)"));
            }
            if !(c.user_limit_factor > 0.0 && c.user_limit_factor <= 100.0) {
                return Err(format!("queue {name:?}: user_limit_factor must be more than 0 (at most 100)"));
            }
            if !(c.max_am_share > 0.0 && c.max_am_share <= 1.0) {
                return Err(format!("queue {name:?}: max_am_share is a fraction, more than 0 and at most 1"));
            }
            if let Some(l) = c.labels.iter().find(|l| NodeLabel::parse(l).is_none()) {
                return Err(format!("queue {name:?}: label {l:?} is not core or task"));
            }
        }
        // Siblings' capacities add up to 100.
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for name in q.keys() {
            children.entry(name.rsplit_once('.').map(|(p, _)| p).unwrap_or("")).or_default().push(name);
        }
        for (parent, kids) in &children {
            let sum: f64 = kids.iter().map(|k| q[*k].capacity).sum();
            if (sum - 100.0).abs() > 0.01 {
                let under = if parent.is_empty() { "the root".to_string() } else { format!("queue {parent:?}") };
                return Err(format!(
                    "the capacities of the queues under {under} ({}) add up to {sum}, not 100",
                    kids.join(", ")
                ));
            }
        }
        // Absolute guarantee and maximum of each queue (fractions of the cluster).
        let abs = |name: &str| {
            let (mut g, mut m, mut at) = (q[name].capacity / 100.0, q[name].max_capacity / 100.0, name);
            while let Some((p, _)) = at.rsplit_once('.') {
                g *= q[p].capacity / 100.0;
                m = m.min(q[p].max_capacity / 100.0);
                at = p;
            }
            (g, m)
        };
        let defaults = QueueConf::default();
        for (name, c) in q {
            let (g, m) = abs(name);
            if m + 1e-9 < g {
                return Err(format!(
                    "queue {name:?}: its max_capacity (or a parent's) is below its guarantee ({:.1}% of the cluster)",
                    g * 100.0
                ));
            }
            let parent = children.contains_key(name.as_str());
            let leaf_only = c.user_limit_factor != defaults.user_limit_factor
                || c.max_am_share != defaults.max_am_share
                || !c.submit_users.is_empty()
                || !c.labels.is_empty();
            if parent && leaf_only {
                return Err(format!(
                    "queue {name:?} has queues under it: only capacity and max_capacity apply to it (users, \
                     labels and limits are set on leaf queues)"
                ));
            }
            if !parent && !c.labels.is_empty() && !c.labels.iter().any(|l| l == "core") {
                return Err(format!(
                    "queue {name:?}: its labels must include core (an application's master runs on a core node)"
                ));
            }
        }
        let mut leaves = Vec::new();
        for (name, c) in q {
            if children.contains_key(name.as_str()) {
                continue;
            }
            let mut guarantee = c.capacity / 100.0;
            let mut max = c.max_capacity / 100.0;
            let mut parents = Vec::new();
            let mut at = name.as_str();
            while let Some((p, _)) = at.rsplit_once('.') {
                guarantee *= q[p].capacity / 100.0;
                let pmax = q[p].max_capacity / 100.0;
                max = max.min(pmax);
                parents.push((p.to_string(), pmax));
                at = p;
            }
            if max + 1e-9 < guarantee {
                return Err(format!(
                    "queue {name:?}: its max_capacity (or a parent's) is below its guarantee ({:.1}% of the cluster)",
                    guarantee * 100.0
                ));
            }
            let labels = match c.labels.is_empty() {
                true => None,
                false => Some(c.labels.iter().filter_map(|l| NodeLabel::parse(l)).collect()),
            };
            leaves.push(Leaf {
                path: name.clone(),
                guarantee,
                max,
                user_limit_factor: c.user_limit_factor,
                max_am_share: c.max_am_share,
                users: (!c.submit_users.is_empty()).then(|| c.submit_users.iter().cloned().collect()),
                labels,
                parents,
            });
        }
        Ok(Queues { leaves, source: text.to_string() })
    }

    /// The leaf a submission names: its path, or its last part if no other leaf ends so.
    pub fn find(&self, name: &str) -> Result<usize, String> {
        let name = if name.is_empty() { DEFAULT_QUEUE } else { name };
        if let Some(i) = self.leaves.iter().position(|l| l.path == name) {
            return Ok(i);
        }
        let by_last: Vec<usize> =
            (0..self.leaves.len()).filter(|i| self.leaves[*i].path.rsplit('.').next() == Some(name)).collect();
        match by_last.as_slice() {
            [i] => Ok(*i),
            [] => Err(format!(
                "no queue {name:?} (leaf queues: {})",
                self.leaves.iter().map(|l| l.path.as_str()).collect::<Vec<_>>().join(", ")
            )),
            _ => Err(format!("queue {name:?} is ambiguous: name it by its path")),
        }
    }

    /// Where an application of queue `name` is scheduled (the first leaf if the name is
    /// gone: only a tree taken over from a damaged record lacks a live queue).
    pub fn index(&self, name: &str) -> usize {
        self.find(name).unwrap_or(0)
    }
}

/// The share of `total` that `r` is: its dominant resource's (DRF).
pub fn share(r: Resources, total: Resources) -> f64 {
    let v = if total.vcores == 0 { 0.0 } else { r.vcores as f64 / total.vcores as f64 };
    let m = if total.memory_mib == 0 { 0.0 } else { r.memory_mib as f64 / total.memory_mib as f64 };
    v.max(m)
}

/// `a + b`.
pub fn plus(a: Resources, b: Resources) -> Resources {
    Resources { vcores: a.vcores + b.vcores, memory_mib: a.memory_mib + b.memory_mib }
}

/// `a - b` (never below zero).
pub fn minus(a: Resources, b: Resources) -> Resources {
    Resources { vcores: a.vcores.saturating_sub(b.vcores), memory_mib: a.memory_mib.saturating_sub(b.memory_mib) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_compiles_to_leaves_with_absolute_shares() {
        let q = Queues::parse(
            r#"
            [queue.etl]
            capacity = 70
            max_capacity = 90
            [queue."etl.daily"]
            capacity = 60
            [queue."etl.hourly"]
            capacity = 40
            max_capacity = 50
            [queue.adhoc]
            capacity = 30
            user_limit_factor = 2.0
            submit_users = ["alice"]
            labels = ["core", "task"]
            "#,
        )
        .unwrap();
        let paths: Vec<&str> = q.leaves.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["adhoc", "etl.daily", "etl.hourly"]);
        let daily = &q.leaves[q.find("daily").unwrap()];
        assert!((daily.guarantee - 0.42).abs() < 1e-9 && (daily.max - 0.9).abs() < 1e-9, "{daily:?}");
        let hourly = &q.leaves[q.find("etl.hourly").unwrap()];
        assert!((hourly.guarantee - 0.28).abs() < 1e-9 && (hourly.max - 0.5).abs() < 1e-9);
        let adhoc = &q.leaves[q.find("adhoc").unwrap()];
        assert_eq!(adhoc.labels, Some(vec![NodeLabel::Core, NodeLabel::Task]));
        assert!(adhoc.users.as_ref().unwrap().contains("alice"));
        assert!(q.find("gold").unwrap_err().contains("leaf queues: adhoc, etl.daily, etl.hourly"));
        assert!(q.find("etl").is_err(), "a parent takes no applications");
    }

    #[test]
    fn a_bad_tree_is_refused_with_what_is_wrong() {
        let bad = |text: &str, says: &str| {
            let e = Queues::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        };
        bad("[queue.a]\ncapacity = 70\n[queue.b]\ncapacity = 20\n", "add up to 90");
        bad("[queue.a]\ncapacity = 100\nmax_capacity = 50\n", "below its guarantee");
        bad("[queue.\"x.y\"]\ncapacity = 100\n", "its parent \"x\"");
        bad("[queue.a]\ncapacity = 100\nlabels = [\"gpu\"]\n", "not core or task");
        bad("[queue.a]\ncapacity = 100\nuser_limit_factor = 0\n", "user_limit_factor");
        bad("[queue.a]\ncapacity = 100\ncolour = 1\n", "not a queues file");
        bad("", "at least one queue");
        bad("[queue.\"a b\"]\ncapacity = 100\n", "a name is dotted parts");
        bad("[queue.a]\ncapacity = 100\nlabels = [\"task\"]\n", "must include core");
        bad("[queue.a]\ncapacity = 100\nsubmit_users = [\"x\"]\n[queue.\"a.b\"]\ncapacity = 100\n", "only capacity");
        bad("[queue.a]\ncapacity = 100\nmax_capacity = 40\n[queue.\"a.b\"]\ncapacity = 100\n", "below its guarantee");
    }

    #[test]
    fn shares_are_dominant() {
        let total = Resources::new(10, 10_000);
        assert!((share(Resources::new(1, 5_000), total) - 0.5).abs() < 1e-9);
        assert!((share(Resources::new(5, 1_000), total) - 0.5).abs() < 1e-9);
        assert_eq!(share(Resources::new(1, 1), Resources::default()), 0.0);
    }
}
