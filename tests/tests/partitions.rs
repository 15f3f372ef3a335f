//! Network partitions between nodes of one cluster (the harness's proxies cut the links for
//! real: connections stall, nothing is refused): a namenode leader cut off from its
//! followers is replaced and what it could not commit never appears; a datanode cut off
//! from the namenodes is declared dead and its replicas are made again elsewhere.

use std::time::Duration;

use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{CreateOptions, NamenodeClient, RetryPolicy};
use tarn_tests::{block_tuning, same_state, wait_for, wait_healthy, Cluster, Node};

/// A client that gives up on a node after a second (a cut node stalls, it does not refuse).
fn quick(c: NamenodeClient, deadline: Duration) -> NamenodeClient {
    c.with_retry(RetryPolicy { deadline, attempt_timeout: Duration::from_secs(1), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_followers_is_replaced_and_its_uncommitted_writes_vanish() {
    let cl = Cluster::builder().namenodes(3).partitionable().start().await;
    let c = quick(cl.client(), Duration::from_secs(30));
    tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..10 {
            c.mkdirs(&format!("/p/before-{i}")).await.expect("write before the cut");
        }
        let old = cl.leader().await;
        cl.isolate(Node::Namenode(old));
        // A client that knows only the old leader cannot get a write committed there.
        let pinned = quick(
            NamenodeClient::new(&[cl.addrs[old as usize - 1].clone()], &tarn_tests::admin()).unwrap(),
            Duration::from_secs(3),
        );
        assert!(pinned.mkdirs("/p/minority").await.is_err(), "a cut-off leader committed a write");
        // The majority elects another leader (the cut-off one, hearing nothing, still thinks
        // it leads) and writes go on through it.
        let majority: Vec<String> = (1..=3).filter(|&i| i != old).map(|i| cl.addrs[i as usize - 1].clone()).collect();
        let new = wait_for("a leader on the majority side", Duration::from_secs(30), || async {
            let mut seen = Vec::new();
            for a in &majority {
                seen.push(c.cluster_status_of(a).await.ok()?.leader_id.filter(|l| *l != old)?);
            }
            seen.iter().all(|l| *l == seen[0]).then_some(seen[0])
        })
        .await;
        for i in 0..10 {
            c.mkdirs(&format!("/p/during-{i}")).await.expect("write during the cut");
        }
        // Healed, the old leader follows the new one and holds exactly what it committed.
        cl.rejoin(Node::Namenode(old));
        let back = NamenodeClient::new(&[cl.addrs[old as usize - 1].clone()], &tarn_tests::admin()).unwrap();
        wait_for("the old leader to follow another", Duration::from_secs(30), || async {
            let s = back.cluster_status_of(&cl.addrs[old as usize - 1]).await.ok()?;
            // The new leader, or a later one (an election on a busy machine), not the old.
            (s.leader_id.is_some_and(|l| l != old) && s.state != "Leader").then_some(())
        })
        .await;
        tracing::info!(new, "the cut-off leader follows again");
        same_state(&cl.nodes.iter().flatten().collect::<Vec<_>>()).await;
        let names: Vec<String> = c.list_dir_all("/p").await.unwrap().into_iter().map(|s| s.path).collect();
        let want: Vec<String> = (0..10)
            .map(|i| format!("before-{i}"))
            .chain((0..10).map(|i| format!("during-{i}")))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, want, "acknowledged writes kept, the cut-off leader's uncommitted one gone");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_cut_off_from_the_namenode_is_declared_dead_and_its_replicas_made_again() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(4).partitionable().start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let data = tarn_tests::noise(3 << 20, 9);
        let opts = CreateOptions { create_parent: true, block_size: 1 << 20, ..Default::default() };
        let mut w = FileWriter::create(&c, "/cut/f", &opts).await.unwrap();
        w.write(&data).await.unwrap();
        w.close().await.unwrap();
        wait_healthy(&c, "/cut", Duration::from_secs(30)).await;
        // A datanode holding the first block loses its link to the namenode only.
        let holder = c.get_blocks("/cut/f", 0, 1).await.unwrap().blocks[0].locations[0].uuid.clone();
        let i = 1 + cl.datanodes.iter().position(|d| d.as_ref().is_some_and(|d| d.uuid == holder)).unwrap();
        cl.partition(Node::Datanode(i), Node::Namenode(1));
        wait_for("the cut datanode to be declared dead", Duration::from_secs(30), || async {
            let r = c.datanode_report().await.ok()?;
            r.datanodes.iter().any(|d| d.location.uuid == holder && !d.alive).then_some(())
        })
        .await;
        // Its replicas are made again on the others: three live replicas without it.
        wait_healthy(&c, "/cut", Duration::from_secs(60)).await;
        let blocks = c.get_blocks("/cut/f", 0, 10).await.unwrap().blocks;
        assert!(blocks.iter().all(|b| b.locations.len() == 3 && b.locations.iter().all(|l| l.uuid != holder)));
        let r = FileReader::open(&c, "/cut/f").await.unwrap();
        assert_eq!(r.read_at(0, r.length()).await.unwrap(), data);
        // Healed, it is live again and reports the replicas it kept (three blocks)...
        cl.heal(Node::Datanode(i), Node::Namenode(1));
        wait_for("the datanode back with its replicas", Duration::from_secs(60), || async {
            let r = c.datanode_report().await.ok()?;
            r.datanodes.iter().any(|d| d.location.uuid == holder && d.alive && d.replicas >= 1).then_some(())
        })
        .await;
        // ...which are one too many: the extra ones go, three replicas a block stay.
        wait_for("no block over-replicated", Duration::from_secs(60), || async {
            let r = c.datanode_report().await.ok()?;
            let blocks = c.get_blocks("/cut/f", 0, 10).await.ok()?.blocks;
            let three = blocks.iter().all(|b| b.locations.len() == 3);
            (three && r.blocks.over_replicated == 0 && r.blocks.under_replicated == 0).then_some(())
        })
        .await;
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A call that gives up on a node that does not answer leaves the client on the next node:
/// the next call starts there, not at the silent one again. (Found on the compose cluster:
/// a resource manager's lease beats, each with a deadline shorter than one attempt at a
/// killed master, all went to that master, and no resource manager could serve.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_gives_up_on_a_silent_node_sends_the_next_call_elsewhere() {
    let cl = Cluster::start(1, |_| {}).await;
    // Accepts connections and never says a word (a cut or frozen host).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let retry = RetryPolicy {
        deadline: Duration::from_millis(100),
        attempt_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let c = NamenodeClient::new(&[silent_addr, cl.addrs[0].clone()], &tarn_tests::admin()).unwrap().with_retry(retry);
    tokio::time::timeout(Duration::from_secs(30), async {
        let first = c.mkdirs("/moved-on/first").await;
        assert!(first.is_err(), "the silent node answered: {first:?}");
        c.mkdirs("/moved-on/second").await.expect("the next call goes to the node that answers");
    })
    .await
    .expect("within 30 s");
    hold.abort();
    cl.shutdown().await;
}
