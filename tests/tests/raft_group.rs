//! The namenode group in one process: replication to every member, followers redirecting
//! clients, a follower that missed thousands of entries catching up by snapshot, and a
//! full stop and restart with the namespace intact.

use std::collections::BTreeMap;
use std::time::Duration;

use tarn_client::{CreateOptions, NamenodeClient};
use tarn_tests::{same_state, wait_for, Cluster};

async fn touch(c: &NamenodeClient, path: &str) {
    let f = c.create(path, &CreateOptions { create_parent: true, ..Default::default() }).await.expect("create");
    c.complete(path, f.file_id, None, BTreeMap::new()).await.expect("complete");
}

/// Everything the tests made (the system's own `/.tarn` exists from the start).
async fn full_listing(c: &NamenodeClient) -> Vec<(String, u64)> {
    let all = c.list_recursive_all("/", true).await.expect("list");
    all.into_iter().filter(|s| !s.path.starts_with("/.tarn/")).map(|s| (s.path, s.file_id)).collect()
}

/// Waits until `nodes` have applied the same entries and returns the index and the digest
/// of the state machine they then share; fails the test if their contents differ.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_and_replicate() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = Cluster::start(3, |_| {}).await;
        let leader = cluster.leader().await;
        // A client that only knows a follower is redirected to the leader.
        let follower = (1..=3).find(|i| *i != leader).unwrap();
        let c = NamenodeClient::new(&[cluster.addrs[follower as usize - 1].clone()], &tarn_tests::admin()).unwrap();
        for i in 0..50 {
            touch(&c, &format!("/r/f{i:03}")).await;
        }
        let listing = full_listing(&c).await;
        assert_eq!(listing.len(), 51);
        // Every member applies the same entries: equal state machines, byte for byte.
        same_state(&cluster.nodes.iter().flatten().collect::<Vec<_>>()).await;
        let status = c.cluster_status().await.unwrap();
        assert_eq!(status.members.len(), 3);
        assert!(status.members.iter().all(|m| m.voter));
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(3, |c| {
            c.raft.snapshot_after_entries = 200;
            c.raft.logs_kept_after_snapshot = 20;
            // One operation per entry, so entries pile up fast.
            c.batch.ops_per_entry_max = 1;
        })
        .await;
        let leader = cluster.leader().await;
        let lagging = (1..=3).find(|i| *i != leader).unwrap();
        cluster.stop(lagging).await;
        let c = cluster.client();
        // Thousands of entries (one operation each) while it is away, in parallel streams.
        let c = std::sync::Arc::new(c);
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in (w..2000).step_by(4) {
                        c.mkdirs(&format!("/lag/d{i:04}")).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        // The leader has snapshotted and purged what the stopped follower lacks.
        let lh = cluster.nodes[leader as usize - 1].as_ref().unwrap().raft.clone();
        wait_for("leader snapshot and purge", Duration::from_secs(30), || async {
            let m = lh.metrics().borrow().clone();
            (m.purged.map(|p| p.index).unwrap_or(0) > 1500).then_some(())
        })
        .await;
        cluster.restart(lagging).await;
        let target = lh.metrics().borrow().last_applied.map(|l| l.index);
        let fh = cluster.nodes[lagging as usize - 1].as_ref().unwrap();
        fh.raft.wait(Some(Duration::from_secs(60))).applied_index_at_least(target, "caught up").await.unwrap();
        let m = fh.raft.metrics().borrow().clone();
        assert!(
            m.snapshot.map(|s| s.index).unwrap_or(0) > 1500,
            "follower did not install a snapshot: {:?}",
            m.snapshot
        );
        // The caught-up follower holds the very namespace the leader holds (its own state
        // machine, not a listing some other member might answer).
        let (lead, follow) = (cluster.nodes[leader as usize - 1].as_ref().unwrap(), fh);
        let (index, digest) = same_state(&[lead, follow]).await;
        assert!(index > 2000, "compared at index {index}");
        assert_eq!(follow.state_digest().unwrap(), (index, digest));
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_all_and_restart_keeps_the_namespace() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3, |c| c.raft.snapshot_after_entries = 50).await;
        let c = cluster.client();
        for i in 0..120 {
            touch(&c, &format!("/keep/{}/f{i}", i % 7)).await;
        }
        c.rename("/keep/3", "/keep/three", &Default::default()).await.unwrap();
        c.delete("/keep/5", true, None).await.unwrap();
        let before = full_listing(&c).await;
        for i in 1..=3 {
            cluster.stop(i).await;
        }
        for i in 1..=3 {
            cluster.restart(i).await;
        }
        cluster.leader().await;
        let c = cluster.client();
        assert_eq!(full_listing(&c).await, before);
        touch(&c, "/keep/after-restart").await;
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_through_the_admin_api() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3, |_| {}).await;
        let c = cluster.client();
        for i in 0..20 {
            touch(&c, &format!("/m/f{i}")).await;
        }
        // A fourth namenode joins as a learner: it receives the log but does not vote.
        let addr4 = cluster.start_unjoined(4).await;
        let s = c.add_learner(4, &addr4).await.unwrap();
        let m4 = s.members.iter().find(|m| m.node_id == 4).expect("member 4");
        assert!(!m4.voter);
        // Promoted, it votes; then the old leader is removed and the group goes on.
        let s = c.change_membership(vec![1, 2, 3, 4], false).await.unwrap();
        assert_eq!(s.members.iter().filter(|m| m.voter).count(), 4);
        let leader = cluster.leader().await;
        let remaining: Vec<u64> = (1..=4).filter(|i| *i != leader).collect();
        let s = c.change_membership(remaining.clone(), false).await.unwrap();
        assert_eq!(s.members.iter().map(|m| m.node_id).collect::<Vec<_>>(), remaining);
        cluster.stop(leader).await;
        let addrs: Vec<String> = remaining.iter().map(|i| cluster.addrs[*i as usize - 1].clone()).collect();
        let c = NamenodeClient::new(&addrs, &tarn_tests::admin()).unwrap();
        touch(&c, "/m/after-removal").await;
        assert_eq!(full_listing(&c).await.len(), 22, "/m/, 20 files and the one written after the removal");
        // The new member answers with the whole namespace once it leads or follows.
        let status = c.cluster_status_of(&addr4).await.unwrap();
        assert!(status.last_applied > 0);
        // A snapshot can be forced on any member.
        assert!(c.trigger_snapshot_on(&addr4).await.unwrap() > 0);
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}

/// A snapshot's files are renamed into place; a rename is durable only once the directory
/// is fsynced, so each published file (data, metadata, the `current` pointer) is followed
/// by an fsync of the snapshot directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_snapshot_fsyncs_its_directory() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let cluster = Cluster::start(1, |_| {}).await;
        let c = cluster.client();
        touch(&c, "/s/f").await;
        let dir = cluster.configs[0].data_dir.join("snapshots");
        let before = tarn_namenode::store::dir_syncs(&dir);
        assert!(c.trigger_snapshot_on(&cluster.addrs[0]).await.unwrap() > 0);
        let synced = tarn_namenode::store::dir_syncs(&dir) - before;
        assert!(synced >= 3, "the snapshot directory was fsynced {synced} times for 3 renames");
        cluster.shutdown().await;
    })
    .await
    .expect("timed out");
}
