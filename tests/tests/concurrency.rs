//! Concurrent clients creating, renaming and deleting in overlapping directories (under
//! quotas) leave a namespace that some serial order could have produced: both indexes
//! agree, every entry's parent exists, names are unique, and quota counters match a recount.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tarn_client::{CreateOptions, ErrorKind, NamenodeClient, RenameOptions};
use tarn_tests::Cluster;

const DIRS: [&str; 4] = ["/c/d0", "/c/d1", "/c/d1/sub", "/c/d2"];

async fn churn(c: Arc<NamenodeClient>, seed: u64, ops: usize) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut done = 0;
    for _ in 0..ops {
        let dir = DIRS[rng.random_range(0..DIRS.len())];
        let name = format!("n{}", rng.random_range(0..8));
        let path = format!("{dir}/{name}");
        let r = match rng.random_range(0..10) {
            0..=3 => c
                .create(
                    &path,
                    &CreateOptions { overwrite: rng.random_bool(0.3), create_parent: true, ..Default::default() },
                )
                .await
                .map(|_| ()),
            4 => c.mkdirs(&path).await.map(|_| ()),
            5..=6 => {
                let dst = format!("{}/n{}", DIRS[rng.random_range(0..DIRS.len())], rng.random_range(0..8));
                c.rename(&path, &dst, &RenameOptions { overwrite: rng.random_bool(0.5), ..Default::default() })
                    .await
                    .map(|_| ())
            }
            7..=8 => c.delete(&path, rng.random_bool(0.5), None).await.map(|_| ()),
            _ => {
                // Move a whole directory between the overlapping trees and back.
                let (a, b) = if rng.random_bool(0.5) { ("/c/d1/sub", "/c/d2/sub") } else { ("/c/d2/sub", "/c/d1/sub") };
                c.rename(a, b, &RenameOptions::default()).await.map(|_| ())
            }
        };
        match r {
            Ok(()) => done += 1,
            // Refusals are expected under contention; anything else is a bug.
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::AlreadyExists
                        | ErrorKind::NotFound
                        | ErrorKind::ParentNotFound
                        | ErrorKind::NotADirectory
                        | ErrorKind::IsADirectory
                        | ErrorKind::DirectoryNotEmpty
                        | ErrorKind::LeaseConflict
                        | ErrorKind::QuotaExceeded
                        | ErrorKind::RenameIntoSelf
                ),
                "unexpected error: {e}"
            ),
        }
    }
    done
}

fn parent_key(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((p, _)) => format!("{p}/"),
        None => "/".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_leave_a_consistent_namespace() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let cluster = Cluster::start(3, |_| {}).await;
        let setup = cluster.client();
        for d in DIRS {
            setup.mkdirs(d).await.unwrap();
        }
        setup.set_quota("/c/d1", 12, -1).await.unwrap();
        setup.set_quota("/c", 40, -1).await.unwrap();
        let tasks: Vec<_> = (0..8u64).map(|i| tokio::spawn(churn(Arc::new(cluster.client()), i, 150))).collect();
        let mut succeeded = 0;
        for t in tasks {
            succeeded += t.await.unwrap();
        }
        assert!(succeeded > 300, "too few operations succeeded ({succeeded}) for the test to mean much");

        let c = cluster.client();
        let all = c.list_recursive_all("/", true).await.unwrap();
        let keys: BTreeSet<String> = all.iter().map(|s| s.path.clone()).collect();
        assert_eq!(keys.len(), all.len(), "duplicate paths");
        let ids: BTreeSet<u64> = all.iter().map(|s| s.file_id).collect();
        assert_eq!(ids.len(), all.len(), "one inode under two paths");
        for s in &all {
            let p = parent_key(&s.path);
            assert!(p == "/" || keys.contains(&p), "{} has no parent {p}", s.path);
            assert_eq!(s.is_dir(), s.path.ends_with('/'), "{} has the wrong kind", s.path);
        }
        // The directory index (children by name) agrees with the path index.
        let mut from_dirs = BTreeSet::new();
        let mut stack = vec!["/".to_string()];
        while let Some(dir) = stack.pop() {
            for e in c.list_dir_all(&dir).await.unwrap() {
                let full = if dir == "/" { format!("/{}", e.path) } else { format!("{dir}/{}", e.path) };
                from_dirs.insert(if e.is_dir() { format!("{full}/") } else { full.clone() });
                if e.is_dir() {
                    stack.push(full);
                }
            }
        }
        assert_eq!(from_dirs, keys, "directory entries and path index disagree");
        // Quota counters match a recount.
        for q in ["/c", "/c/d1"] {
            let st = c.get_file_info(q, false).await.unwrap().unwrap();
            let quota = st.quota.expect("quota");
            let recount = keys.iter().filter(|k| k.starts_with(&format!("{q}/"))).count() as u64;
            assert_eq!(quota.namespace_used, recount, "{q}: namespace usage {quota:?} != recount {recount}");
            assert!(quota.namespace_used <= quota.namespace_quota.unwrap(), "{q}: over quota");
        }
        let summary: BTreeMap<&str, u64> =
            BTreeMap::from([("files", all.iter().filter(|s| !s.is_dir()).count() as u64)]);
        let cs = c.content_summary("/").await.unwrap();
        assert_eq!(cs.file_count, summary["files"]);
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}
