//! Faults that need real processes: SIGKILL of the leader during a stream of creates,
//! SIGKILL of every node followed by a restart, and a leader frozen (SIGSTOP) while the
//! others move on, which must not answer reads from its stale lease when it wakes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tarn_client::{CreateOptions, NamenodeClient, RetryPolicy};
use tarn_tests::{wait_for, Cluster, ProcCluster};

/// Creates `/w/<writer>/f<n>` one after another until `stop`, recording acknowledged ones.
async fn writer(
    c: Arc<NamenodeClient>,
    id: usize,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<tokio::sync::Notify>,
    n_max: usize,
) {
    let opts = CreateOptions { create_parent: true, ..Default::default() };
    for n in 0..n_max {
        let path = format!("/w/{id}/f{n:05}");
        let create = c.create(&path, &opts);
        tokio::select! {
            r = create => {
                r.unwrap_or_else(|e| panic!("create {path} failed: {e}"));
                acked.lock().unwrap().push(path);
            }
            _ = stop.notified() => return,
        }
    }
}

async fn all_paths(c: &NamenodeClient, prefix: &str) -> BTreeSet<String> {
    c.list_recursive_all(prefix, false).await.expect("list").into_iter().map(|s| s.path).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leader_during_creates_loses_nothing_acknowledged() {
    let mut pc = Cluster::builder().namenodes(3).start_processes().await;
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let c = Arc::new(pc.client());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let writers: Vec<_> =
            (0..4).map(|i| tokio::spawn(writer(c.clone(), i, acked.clone(), stop.clone(), 100_000))).collect();
        wait_for("creates before the kill", Duration::from_secs(30), || async {
            (acked.lock().unwrap().len() >= 400).then_some(())
        })
        .await;
        let leader = c.cluster_status().await.expect("status").leader_id.expect("a leader");
        pc.kill(leader);
        let at_kill = acked.lock().unwrap().len();
        // Writers carry on through the election; a new leader must serve them.
        wait_for("creates after the kill", Duration::from_secs(30), || async {
            (acked.lock().unwrap().len() >= at_kill + 400).then_some(())
        })
        .await;
        let new_leader = c.cluster_status().await.expect("status").leader_id;
        assert_ne!(new_leader, Some(leader), "the killed node cannot lead");
        stop.notify_waiters();
        for w in writers {
            w.abort();
            let _ = w.await;
        }
        let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
        let present = all_paths(&c, "/w/").await;
        let missing: Vec<&String> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged creates lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // The killed node comes back and catches up.
        pc.restart(leader).await;
        let back = NamenodeClient::new(&[pc.addrs[leader as usize - 1].clone()], &tarn_tests::admin()).unwrap();
        wait_for("the restarted node to rejoin", Duration::from_secs(30), || async {
            back.cluster_status_of(&pc.addrs[leader as usize - 1])
                .await
                .ok()
                .filter(|s| s.leader_id.is_some())
                .map(|_| ())
        })
        .await;
        assert!(all_paths(&c, "/w/").await.is_superset(&acked));
    })
    .await;
    if result.is_err() {
        for i in 1..=3 {
            eprintln!("--- namenode {i} ---\n{}", pc.log_tail(i));
        }
        panic!("timed out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_everything_and_restart_keeps_the_namespace() {
    let mut pc = ProcCluster::start(3, |c| c.raft.snapshot_after_entries = 100).await;
    tokio::time::timeout(Duration::from_secs(120), async {
        let c = pc.client();
        for i in 0..300 {
            let p = format!("/keep/d{}/f{i}", i % 10);
            let f = c.create(&p, &CreateOptions { create_parent: true, ..Default::default() }).await.unwrap();
            if i % 2 == 0 {
                c.complete(&p, f.file_id, None, Default::default()).await.unwrap();
            }
        }
        c.rename("/keep/d1", "/keep/moved", &Default::default()).await.unwrap();
        let before: Vec<_> = c.list_recursive_all("/", true).await.unwrap();
        drop(c);
        for i in 1..=3 {
            pc.kill(i);
        }
        for i in 1..=3 {
            pc.restart(i).await;
        }
        let c = pc.client();
        let after = c.list_recursive_all("/", true).await.unwrap();
        assert_eq!(after, before, "namespace changed across a crash of every node");
    })
    .await
    .expect("timed out");
}

/// Leader-lease reads are safe: a leader frozen past its lease while the others elect a
/// new leader and commit a write does not answer a read from its stale state when it wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_leader_does_not_serve_stale_reads_after_waking() {
    let pc = Cluster::builder().namenodes(3).start_processes().await;
    let result = tokio::time::timeout(Duration::from_secs(90), async {
        let c = pc.client();
        c.mkdirs("/lease").await.expect("mkdirs");
        let old = c.cluster_status().await.expect("status").leader_id.expect("a leader");
        let old_addr = pc.addrs[old as usize - 1].clone();
        // A client that only knows the old leader; its reads are served under the lease.
        let at_old = NamenodeClient::new(&[old_addr], &tarn_tests::admin()).unwrap();
        for _ in 0..20 {
            assert!(at_old.get_file_info("/lease/x", false).await.expect("read").is_none());
        }
        pc.pause(old);
        let others: Vec<String> = (1..=3).filter(|&i| i != old).map(|i| pc.addrs[i as usize - 1].clone()).collect();
        // Short attempts: until the election, followers point at the frozen leader.
        let retry = RetryPolicy { attempt_timeout: Duration::from_secs(1), ..Default::default() };
        let c2 = NamenodeClient::new(&others, &tarn_tests::admin()).unwrap().with_retry(retry);
        // The create retries through the election until a new leader commits it.
        let x = c2.create("/lease/x", &CreateOptions::default()).await.expect("create on the new leader");
        assert_ne!(c2.cluster_status().await.expect("status").leader_id, Some(old));
        pc.resume(old);
        let seen = at_old.get_file_info("/lease/x", false).await.expect("read after waking");
        assert_eq!(seen.map(|s| s.file_id), Some(x.file_id), "the woken old leader served a stale read");
    })
    .await;
    if result.is_err() {
        for i in 1..=3 {
            eprintln!("--- namenode {i} ---\n{}", pc.log_tail(i));
        }
        panic!("timed out");
    }
}
