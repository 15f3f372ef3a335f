//! Block storage end to end: files written through datanode pipelines and read back, a
//! corrupt replica never served and replaced, replicas of deleted files removed, and (with
//! real processes) a datanode SIGKILLed during a write and another one whose replicas the
//! namenode restores by itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{CreateOptions, ErrorKind, NamenodeClient, RetryPolicy};
use tarn_tests::{block_tuning, wait_for, wait_healthy, wait_live_datanodes, Cluster, ProcCluster};

const BS: u64 = 1 << 20;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn opts(block_size: u64) -> CreateOptions {
    CreateOptions { create_parent: true, block_size, ..Default::default() }
}

/// Writes `data` to `path` in pieces of `piece` bytes.
async fn write_file(c: &NamenodeClient, path: &str, data: &[u8], piece: usize, block_size: u64) {
    let mut w = FileWriter::create(c, path, &opts(block_size)).await.expect("create");
    for p in data.chunks(piece.max(1)) {
        w.write(p).await.expect("write");
    }
    let st = w.close().await.expect("close");
    assert_eq!(st.length, data.len() as u64, "{path}: recorded length");
}

async fn read_file(c: &NamenodeClient, path: &str) -> Vec<u8> {
    let r = FileReader::open(c, path).await.expect("open for reading");
    r.read_at(0, r.length()).await.expect("read")
}

/// Fails a real-process test that timed out, with the datanodes' logs.
fn timed_out(pc: &ProcCluster, datanodes: usize) -> ! {
    for i in 1..=datanodes {
        eprintln!("--- datanode {i} ---\n{}", pc.datanode_log(i));
    }
    panic!("timed out");
}

/// Block files (not checksum files) under `dir`.
fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with("blk_") && !name.ends_with(".meta") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_at_block_edges_with_three_replicas() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let n = BS as usize;
        let sizes = [0, 1, n - 1, n, n + 1, 3 * n + 17];
        for (i, &len) in sizes.iter().enumerate() {
            let data = pattern(len, i as u64);
            let path = format!("/rt/f{i}");
            write_file(&c, &path, &data, 100_003, BS).await;
            assert_eq!(read_file(&c, &path).await, data, "{len} bytes round trip");
            // Positional reads inside blocks and across block edges.
            let r = FileReader::open(&c, &path).await.unwrap();
            for (off, l) in [(0, 1), (n - 3, 7), (len / 2, len / 3), (len.saturating_sub(5), 5)] {
                if off + l <= len {
                    assert_eq!(
                        r.read_at(off as u64, l as u64).await.unwrap(),
                        data[off..off + l],
                        "{off}+{l} of {len}"
                    );
                }
            }
            // Past the end: short, never an error or garbage.
            assert!(r.read_at(len as u64, 10).await.unwrap().is_empty());
            // The datanodes are on this host: those reads were short-circuit reads of the
            // replica files; over TLS the bytes are the same.
            assert_eq!(r.short_circuit_bytes() > 0, len > 0, "short-circuit bytes of a {len}-byte file");
            let remote = cl.client().with_short_circuit(false);
            let r = FileReader::open(&remote, &path).await.unwrap();
            assert_eq!(r.read_at(0, len as u64).await.unwrap(), data, "{len} bytes over TLS");
            assert_eq!(r.short_circuit_bytes(), 0);
        }
        let blocks = wait_healthy(&c, "/rt", Duration::from_secs(30)).await;
        assert_eq!(blocks, 1 + 1 + 1 + 2 + 4, "blocks of 0 B .. 3 MiB + 17 B files");
        let fsck = c.fsck("/rt/f5", "", 10).await.unwrap();
        assert!(fsck.files[0].blocks.iter().all(|b| b.live == 3), "{fsck:?}");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replica_is_never_served_and_is_replaced() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let data = pattern(3 * BS as usize / 2, 7);
        write_file(&c, "/c/f", &data, 1 << 20, BS).await;
        wait_healthy(&c, "/c", Duration::from_secs(30)).await;
        // Flip one byte of a replica underneath datanode 1, and delete datanode 2's copy of
        // the same block: one good replica is left.
        let victim = block_files(&cl.datanode_dirs[0]).into_iter().next().expect("a replica on datanode 1");
        let good = std::fs::read(&victim).unwrap();
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x01;
        std::fs::write(&victim, &bad).unwrap();
        let name = victim.file_name().unwrap().to_owned();
        let gone = block_files(&cl.datanode_dirs[1]).into_iter().find(|p| p.file_name() == Some(&name)).unwrap();
        std::fs::remove_file(&gone).unwrap();
        // Whichever replica a read starts with, it returns the right bytes.
        for _ in 0..5 {
            assert_eq!(read_file(&c, "/c/f").await, data);
        }
        // The block scanner finds both; the namenode copies the good replica over them (a
        // new replica is encrypted under a data key of its own, so its bytes differ).
        wait_for("the damaged replicas to be replaced", Duration::from_secs(60), || async {
            (std::fs::read(&victim).ok()? != bad && std::fs::read(&gone).ok()?.len() == good.len()).then_some(())
        })
        .await;
        wait_healthy(&c, "/c", Duration::from_secs(30)).await;
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A client that is not a datanode (the S3 gateway reading for a user, over TLS: no
/// short-circuit read) finds a flipped byte in a replica: the namenode accepts its report
/// (HDFS's reportBadBlocks), marks the replica and has it replaced. The datanodes' block
/// scanner is off here, so only the reader's report can get the replica replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_report_of_a_corrupt_replica_gets_it_replaced() {
    let mut cl = Cluster::start(1, block_tuning).await;
    // One scan at start (nothing stored yet), the next in an hour.
    cl.start_datanodes_with(3, |_, d| d.scan_interval_ms = 3_600_000).await;
    let c = cl.client();
    let gateway = NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(tarn_security::Role::Gateway, "gw"))
        .unwrap()
        .with_user("carol")
        .with_short_circuit(false);
    tokio::time::timeout(Duration::from_secs(120), async {
        let data = pattern(3 * BS as usize / 2, 17);
        write_file(&c, "/bad/f", &data, 1 << 20, BS).await;
        wait_healthy(&c, "/bad", Duration::from_secs(30)).await;
        // Three datanodes, three replicas: datanode 1 holds the first block.
        let first = c.get_blocks("/bad/f", 0, 1).await.unwrap().blocks[0].block.block_id;
        let victim = cl.corrupt_replica(1, first);
        let bad = std::fs::read(&victim).unwrap();
        // Readers try replicas in the order the namenode shuffled them: read until one
        // started with the corrupt replica, found it and reported it.
        wait_for("a reader to report the corrupt replica", Duration::from_secs(30), || async {
            let r = FileReader::open(&gateway, "/bad/f").await.unwrap();
            assert_eq!(r.read_at(0, r.length()).await.unwrap(), data, "a corrupt replica was served");
            assert_eq!(r.short_circuit_bytes(), 0);
            (r.corrupt_replicas_reported() > 0).then_some(())
        })
        .await;
        // The namenode replaces it from a good replica (a new replica has a data key of its
        // own, so its bytes differ from both).
        wait_for("the corrupt replica to be replaced", Duration::from_secs(60), || async {
            (std::fs::read(&victim).ok()? != bad).then_some(())
        })
        .await;
        wait_healthy(&c, "/bad", Duration::from_secs(30)).await;
        let f = c.fsck("/bad/f", "", 10).await.unwrap();
        assert!(f.files[0].blocks.iter().all(|b| b.live == 3 && b.corrupt == 0), "{f:?}");
        for _ in 0..5 {
            let r = FileReader::open(&gateway, "/bad/f").await.unwrap();
            assert_eq!(r.read_at(0, r.length()).await.unwrap(), data);
            assert_eq!(r.corrupt_replicas_reported(), 0, "every replica is good again");
        }
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_encrypted_at_rest_and_tampering_counts_as_corruption() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let marker = b"KNOWN-PLAINTEXT-PATTERN-";
        let data: Vec<u8> = marker.iter().copied().cycle().take(BS as usize + 12345).collect();
        write_file(&c, "/enc/f", &data, 1 << 20, BS).await;
        wait_healthy(&c, "/enc", Duration::from_secs(30)).await;
        // No file of any datanode (data or checksum files) holds the pattern.
        for d in &cl.datanode_dirs {
            let replicas = block_files(d);
            assert!(!replicas.is_empty());
            let metas =
                replicas.iter().map(|f| f.with_file_name(format!("{}.meta", f.file_name().unwrap().to_string_lossy())));
            for f in metas.chain(replicas.iter().cloned()).collect::<Vec<_>>() {
                let bytes = std::fs::read(&f).unwrap();
                assert!(!bytes.windows(marker.len()).any(|w| w == marker), "{} holds plaintext", f.display());
            }
        }
        // Tamper with one replica as an attacker would: change a byte and write the CRC of
        // the changed chunk into its record, so only the AES-GCM tag can tell.
        let victim = block_files(&cl.datanode_dirs[0]).into_iter().next().expect("a replica on datanode 1");
        let meta = victim.with_file_name(format!("{}.meta", victim.file_name().unwrap().to_string_lossy()));
        let mut bytes = std::fs::read(&victim).unwrap();
        bytes[100] ^= 0x20;
        let chunk0 = bytes.len().min(64 << 10);
        let crc = crc32c::crc32c(&bytes[..chunk0]);
        let mut m = std::fs::read(&meta).unwrap();
        m[128..132].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&victim, &bytes).unwrap();
        std::fs::write(&meta, &m).unwrap();
        for _ in 0..5 {
            assert_eq!(read_file(&c, "/enc/f").await, data);
        }
        wait_for("the tampered replica to be replaced", Duration::from_secs(60), || async {
            (std::fs::read(&victim).ok()? != bytes).then_some(())
        })
        .await;
        wait_healthy(&c, "/enc", Duration::from_secs(30)).await;
        assert_eq!(read_file(&c, "/enc/f").await, data);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_datanode_gets_no_new_blocks() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(2).start().await;
    // A third datanode whose disk counts as full: everything on it is below the reserve.
    let d = cl.datanode_dirs[0].parent().unwrap().join("dn-full");
    let mut cfg = tarn_tests::datanode_config(&d, &cl.addrs);
    cfg.reserved_bytes = u64::MAX / 4;
    let full = tarn_datanode::start(
        cfg,
        tarn_tests::pki().transport(tarn_security::Role::Datanode, "dn-full"),
        Some(tarn_tests::pki().master()),
    )
    .await
    .unwrap();
    let c = cl.client();
    wait_live_datanodes(&c, 3).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let r = c.datanode_report().await.unwrap();
        let me = r.datanodes.iter().find(|n| n.location.uuid == full.uuid).unwrap();
        assert!(me.full, "the datanode reports itself full: {me:?}");
        let data = pattern(3 * BS as usize, 5);
        let mut w = FileWriter::create(&c, "/full/f", &CreateOptions { replication: 3, ..opts(BS) }).await.unwrap();
        w.write(&data).await.expect("writes go to the datanodes with room");
        w.close().await.unwrap();
        assert_eq!(read_file(&c, "/full/f").await, data);
        assert!(block_files(&d).is_empty(), "nothing was placed on the full datanode");
        // Three replicas asked for, two datanodes with room: under-replicated, not refused.
        let f = c.fsck("/full/f", "", 10).await.unwrap();
        assert!(f.files[0].blocks.iter().all(|b| b.live == 2 && b.expected == 3), "{f:?}");
        let b = c.datanode_report().await.unwrap().blocks;
        assert_eq!((b.under_replicated, b.missing), (3, 0), "{b:?}");
    })
    .await
    .expect("timed out");
    full.stop().await;
    cl.shutdown().await;
}

/// Real processes: a datanode SIGKILLed while a client reads; the read carries on from the
/// other replicas and returns the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanode_killed_mid_read_the_read_completes() {
    let mut pc = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start_processes().await;
    let c = pc.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = pattern(8 * BS as usize, 21);
        write_file(&c, "/mr/f", &data, 1 << 20, BS).await;
        let r = FileReader::open(&c, "/mr/f").await.unwrap();
        let half = data.len() / 2;
        let first = r.read_at(0, half as u64).await.unwrap();
        for i in 1..=2 {
            pc.kill_datanode(i);
        }
        // The reader's locations still name the dead nodes; it falls over to the live one.
        let rest = r.read_at(half as u64, (data.len() - half) as u64).await.expect("read after the kills");
        assert_eq!([first, rest].concat(), data);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_file_deletes_its_replicas() {
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(2).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        write_file(&c, "/d/keep", &pattern(1000, 1), 1000, BS).await;
        write_file(&c, "/d/gone", &pattern(2 * BS as usize, 2), 1 << 20, BS).await;
        wait_healthy(&c, "/d", Duration::from_secs(30)).await;
        let count = |cl: &Cluster| cl.datanode_dirs.iter().map(|d| block_files(d).len()).sum::<usize>();
        assert_eq!(count(&cl), 2 * 3, "one block and two blocks, two replicas each");
        assert!(c.delete("/d/gone", false, None).await.unwrap());
        wait_for("replicas of the deleted file to go", Duration::from_secs(30), || async {
            (count(&cl) == 2).then_some(())
        })
        .await;
        assert_eq!(read_file(&c, "/d/keep").await, pattern(1000, 1));
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_datanode_means_a_clear_refusal() {
    let cl = Cluster::start(1, block_tuning).await;
    let c = cl.client();
    let mut w = FileWriter::create(&c, "/none/f", &opts(BS)).await.unwrap();
    let e = w.write(b"x").await.unwrap_err();
    assert!(e.to_string().contains("no datanode can take a new block"), "{e}");
    cl.shutdown().await;
}

/// A new leader knows only the datanodes that found it first: it places no block with
/// fewer replicas than the cluster holds while the others are still registering. (The
/// compose test once lost a file's only replica to a partition this way: written in the
/// first second of a new leader, on the one datanode that had registered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_places_blocks_on_every_datanode() {
    let mut cl = Cluster::builder().namenodes(3).tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    let r = tokio::time::timeout(Duration::from_secs(90), async {
        for round in 0..3 {
            let old = cl.leader().await;
            cl.stop(old).await;
            // At once: the client's retries find the new leader as soon as it is elected.
            let f = c.create(&format!("/nl/f{round}"), &opts(BS)).await.expect("create after the leader stopped");
            // The default replication, not the count of datanodes that found the new
            // leader first (a file keeps it for good).
            assert_eq!(f.replication, 3, "round {round}: a new leader's file got replication {}", f.replication);
            let b = c
                .allocate_block(&format!("/nl/f{round}"), f.file_id, None, Vec::new(), "")
                .await
                .expect("a block from the new leader");
            let targets: Vec<&str> = b.locations.iter().map(|l| l.uuid.as_str()).collect();
            assert_eq!(targets.len(), 3, "round {round}: a new leader placed a block on {targets:?} only");
            cl.restart(old).await;
        }
    })
    .await;
    r.expect("timed out");
    cl.shutdown().await;
}

/// Real processes: a datanode of the pipeline is SIGKILLed in the middle of a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanode_killed_mid_write_the_write_completes() {
    let mut pc = Cluster::builder().tune_namenodes(block_tuning).datanodes(4).start_processes().await;
    let c = pc.client();
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let bs = 4 * BS;
        let data = pattern(6 * bs as usize, 11);
        let mut w = FileWriter::create(&c, "/k/big", &opts(bs)).await.unwrap();
        let half = data.len() / 2 + 12345;
        w.write(&data[..half]).await.unwrap();
        w.hflush().await.unwrap();
        // The block being written and its pipeline.
        let f = c.fsck("/k/big", "", 1).await.unwrap();
        let open = f.files[0].blocks.iter().find(|b| b.under_construction).expect("an open block").clone();
        assert_eq!(open.locations.len(), 3, "{open:?}");
        let victim = pc.dn_addrs.iter().position(|a| *a == open.locations[1]).expect("a datanode of the pipeline") + 1;
        pc.kill_datanode(victim);
        w.write(&data[half..]).await.expect("the write carries on without the killed datanode");
        let st = w.close().await.expect("close");
        assert_eq!(st.length, data.len() as u64);
        assert_eq!(read_file(&c, "/k/big").await, data, "read back after the kill");
        // Once the killed node counts as dead, every block is back to 3 live replicas.
        wait_live_datanodes(&c, 3).await;
        wait_healthy(&c, "/k", Duration::from_secs(60)).await;
    })
    .await;
    if result.is_err() {
        timed_out(&pc, 4);
    }
}

/// Real processes: the replicas a SIGKILLed datanode held come back without any action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_datanode_replicas_are_restored() {
    let mut pc = Cluster::builder().tune_namenodes(block_tuning).datanodes(4).start_processes().await;
    let c = pc.client();
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..8 {
            write_file(&c, &format!("/r/f{i}"), &pattern(BS as usize + 1000, i), 1 << 20, BS).await;
        }
        wait_healthy(&c, "/r", Duration::from_secs(30)).await;
        let held = block_files(&pc.datanode_data(2)).len();
        assert!(held > 0, "datanode 2 holds replicas");
        pc.kill_datanode(2);
        // Dead after 2 s of silence, then re-replicated onto the other three.
        wait_live_datanodes(&c, 3).await;
        let blocks = wait_healthy(&c, "/r", Duration::from_secs(60)).await;
        assert_eq!(blocks, 16);
        let r = c.datanode_report().await.unwrap();
        assert_eq!(r.datanodes.iter().filter(|d| d.alive).count(), 3);
        let b = r.blocks;
        assert_eq!((b.under_replicated, b.missing), (0, 0), "{b:?}");
        for i in 0..8 {
            assert_eq!(read_file(&c, &format!("/r/f{i}")).await, pattern(BS as usize + 1000, i));
        }
    })
    .await;
    if result.is_err() {
        timed_out(&pc, 4);
    }
}

/// Real processes: one of three datanodes SIGKILLed. Its replicas no longer count, so every
/// block of a replication-3 file has 2 live replicas: fsck and the report say
/// under-replicated, and that it cannot be fixed (no third datanode to copy to), rather
/// than OK / HEALTHY. Once the datanode is back, they say healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replicas_of_a_dead_datanode_show_as_under_replicated() {
    let mut pc = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start_processes().await;
    let c = pc.client();
    let addr = pc.addrs[0].clone();
    let tarn = |args: &[&str]| {
        let o = std::process::Command::new(tarn_tests::tarn_bin())
            .args(args)
            .env("TARN_NAMENODE", &addr)
            .env("TARN_CONFIG", tarn_tests::admin_config())
            .output()
            .expect("run tarn");
        (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let data = pattern(5 * BS as usize / 2, 51);
        write_file(&c, "/lost/f", &data, 1 << 20, BS).await;
        assert_eq!(wait_healthy(&c, "/lost", Duration::from_secs(30)).await, 3);
        let (_, out) = tokio::task::block_in_place(|| tarn(&["admin", "fsck", "/lost"]));
        assert!(
            out.contains("Status: HEALTHY") && out.contains("under-replicated blocks (and small files): 0"),
            "{out}"
        );

        pc.kill_datanode(2);
        // Dead once the leader has not heard from it for dead_after (2 s).
        wait_live_datanodes(&c, 2).await;
        let f = c.fsck("/lost/f", "", 10).await.unwrap();
        assert_eq!(f.target_datanodes, 2, "{f:?}");
        for b in &f.files[0].blocks {
            assert_eq!((b.live, f.files[0].replication, b.cannot_fix), (2, 3, true), "{b:?}");
        }
        let b = c.datanode_report().await.unwrap().blocks;
        assert_eq!((b.under_replicated, b.under_replicated_unfixable, b.missing), (3, 3, 0), "{b:?}");

        let (code, out) = tokio::task::block_in_place(|| tarn(&["admin", "fsck", "/lost"]));
        assert_eq!(code, Some(0), "every block is readable: {out}");
        assert!(!out.contains("HEALTHY") && !out.contains(" OK"), "{out}");
        assert!(out.contains("Status: UNDER-REPLICATED"), "{out}");
        assert!(out.contains("target replicas is 3 but found 2 live replica(s)"), "{out}");
        assert!(out.contains("cannot be fixed: too few live datanodes (2 can take a replica)"), "{out}");
        assert!(out.contains("under-replicated blocks (and small files): 3,"), "{out}");
        assert!(out.contains("under-replicated blocks that cannot be fixed (too few live datanodes): 3"), "{out}");
        let (code, out) = tokio::task::block_in_place(|| tarn(&["admin", "report"]));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("datanodes: 2 live, 1 dead"), "{out}");
        assert!(out.contains("under-replicated 3 (3 cannot be fixed: too few live datanodes), missing 0"), "{out}");
        assert_eq!(read_file(&c, "/lost/f").await, data);

        // Back: its replicas count again (or are copied), and nothing is short.
        pc.restart_datanode(2).await;
        wait_live_datanodes(&c, 3).await;
        wait_healthy(&c, "/lost", Duration::from_secs(60)).await;
        wait_for("the report to count nothing short", Duration::from_secs(30), || async {
            let b = c.datanode_report().await.ok()?.blocks;
            (b.under_replicated, b.under_replicated_unfixable, b.missing).eq(&(0, 0, 0)).then_some(())
        })
        .await;
        let (_, out) = tokio::task::block_in_place(|| tarn(&["admin", "fsck", "/lost"]));
        assert!(out.contains("Status: HEALTHY"), "{out}");
    })
    .await;
    if result.is_err() {
        timed_out(&pc, 3);
    }
}

/// Real processes: every namenode and datanode SIGKILLed and started again. Safe mode
/// refuses changes until the datanodes have reported, ends by itself, and every file reads
/// back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_ends_safe_mode_by_itself() {
    let mut pc = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start_processes().await;
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let c = pc.client();
        let files: Vec<(String, Vec<u8>)> =
            (0..5).map(|i| (format!("/s/f{i}"), pattern(i as usize * BS as usize / 2 + 3, 100 + i))).collect();
        for (p, d) in &files {
            write_file(&c, p, d, 1 << 20, BS).await;
        }
        wait_healthy(&c, "/s", Duration::from_secs(30)).await;
        drop(c);
        for i in 1..=3 {
            pc.kill_datanode(i);
        }
        pc.kill(1);
        pc.restart(1).await;
        // No datanode yet: the namespace takes no change, with a message that says why.
        let quick = RetryPolicy { deadline: Duration::from_secs(1), ..Default::default() };
        let q = NamenodeClient::new(&pc.addrs, &tarn_tests::admin()).unwrap().with_retry(quick);
        let e = q.mkdirs("/after").await.expect_err("refused in safe mode");
        assert!(e.to_string().contains("safe mode"), "{e}");
        for i in 1..=3 {
            pc.restart_datanode(i).await;
        }
        let c = pc.client();
        wait_for("safe mode to end", Duration::from_secs(30), || async { c.mkdirs("/after").await.ok() }).await;
        assert!(!c.datanode_report().await.unwrap().safe_mode);
        for (p, d) in &files {
            assert_eq!(&read_file(&c, p).await, d, "{p} after the restart");
        }
    })
    .await;
    if result.is_err() {
        eprintln!("--- namenode ---\n{}", pc.log_tail(1));
        panic!("timed out");
    }
}

/// A writer that dies mid-block: past the hard limit the namenode recovers the open block
/// from its replicas, so everything the writer had flushed is kept, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_writers_last_block_is_recovered_from_its_replicas() {
    let mut cl = Cluster::start(1, |c| {
        block_tuning(c);
        c.leases.soft_limit_ms = 300;
        c.leases.hard_limit_ms = 1500;
    })
    .await;
    cl.start_datanodes(2).await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = pattern(3 * BS as usize / 2 + 777, 31);
        {
            let dead = NamenodeClient::new(&cl.addrs, &tarn_tests::admin()).unwrap();
            let mut w = FileWriter::create(&dead, "/dw/f", &opts(BS)).await.unwrap();
            w.write(&data).await.unwrap();
            w.hflush().await.unwrap();
            // The writer goes away without closing: its pipelines break, its lease lapses.
        }
        let st = wait_for("the namenode to close the file", Duration::from_secs(30), || async {
            c.get_file_info("/dw/f", false).await.ok().flatten().filter(|s| s.writer.is_none())
        })
        .await;
        assert_eq!(st.length, data.len() as u64, "the flushed bytes of the open block were kept");
        assert_eq!(read_file(&c, "/dw/f").await, data);
        wait_healthy(&c, "/dw", Duration::from_secs(30)).await;
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Decommissioning drains a datanode: its replicas are copied elsewhere while it still
/// serves them, it reports "decommissioned", and once it is stopped every block still has
/// its three replicas without any re-replication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioned_datanode_can_leave_without_losing_a_replica() {
    let mut cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(4).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(90), async {
        for i in 0..6 {
            write_file(&c, &format!("/dc/f{i}"), &pattern(BS as usize + 99, 40 + i), 1 << 20, BS).await;
        }
        wait_healthy(&c, "/dc", Duration::from_secs(30)).await;
        let victim = cl.datanodes[0].as_ref().unwrap().uuid.clone();
        let held = block_files(&cl.datanode_dirs[0]).len();
        assert!(held > 0);
        assert_eq!(c.decommission(&victim, true).await.unwrap(), victim);
        wait_for("the datanode to be decommissioned", Duration::from_secs(60), || async {
            let r = c.datanode_report().await.ok()?;
            let me = r.datanodes.iter().find(|n| n.location.uuid == victim)?;
            (me.decommission == tarn_client::Decommission::Decommissioned).then_some(())
        })
        .await;
        // New blocks avoid the draining node.
        write_file(&c, "/dc/late", &pattern(1000, 9), 1000, BS).await;
        cl.stop_datanode(1).await;
        wait_live_datanodes(&c, 3).await;
        let f = c.fsck("/dc", "", 100).await.unwrap();
        for file in &f.files {
            for b in &file.blocks {
                assert_eq!(b.live, 3, "{} block {}: {b:?}", file.path, b.block_id);
            }
        }
        for i in 0..6 {
            assert_eq!(read_file(&c, &format!("/dc/f{i}")).await, pattern(BS as usize + 99, 40 + i));
        }
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// With a topology table naming two racks, every block keeps replicas on both, and the
/// datanode report shows each node's rack from the table (not the one it reports itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_file_spreads_replicas_over_racks() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("topology");
    // Datanode i listens on 127.0.0.(i+1): loopback addresses tell the hosts apart.
    std::fs::write(&table, "# host rack\n127.0.0.2 /dc1/r1\n127.0.0.3 /dc1/r1\n127.0.0.4 /dc1/r1\n127.0.0.5 /dc1/r2\n")
        .unwrap();
    let t = table.clone();
    let mut cl = Cluster::start(1, move |c| {
        block_tuning(c);
        c.files.default_replication = 2;
        c.datanodes.topology_file = Some(t.clone());
    })
    .await;
    cl.start_datanodes_with(4, |i, d| d.listen = format!("127.0.0.{}:0", i + 1)).await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let r = c.datanode_report().await.unwrap();
        let mut racks: Vec<(String, String)> = r
            .datanodes
            .iter()
            .map(|d| {
                let l = d.location.clone();
                (l.addr.split(':').next().unwrap().to_string(), l.rack)
            })
            .collect();
        racks.sort();
        let want: Vec<(String, String)> =
            [("127.0.0.2", "/dc1/r1"), ("127.0.0.3", "/dc1/r1"), ("127.0.0.4", "/dc1/r1"), ("127.0.0.5", "/dc1/r2")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(racks, want);

        // Three of four nodes are on r1: without the rule, a random pair lands on r1 alone
        // half of the time, so 12 blocks would almost surely show one.
        let data = pattern(12 << 16, 11);
        write_file(&c, "/racks/f", &data, 1 << 16, 1 << 16).await;
        assert_eq!(read_file(&c, "/racks/f").await, data);
        let blocks = c.get_blocks("/racks/f", 0, 100).await.unwrap();
        assert_eq!(blocks.blocks.len(), 12);
        for b in &blocks.blocks {
            let racks: std::collections::HashSet<&str> = b.locations.iter().map(|l| l.rack.as_str()).collect();
            assert_eq!(b.locations.len(), 2, "{b:?}");
            assert_eq!(racks.len(), 2, "block on one rack only: {b:?}");
        }
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Blocks written while one rack was all there was are moved onto two racks once a second
/// rack appears (one copy off the rack, then one of the first rack's removed), keeping the
/// replication factor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_on_one_rack_spread_when_a_second_rack_appears() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("topology");
    std::fs::write(
        &table,
        "127.0.0.2 /r1
127.0.0.3 /r1
127.0.0.4 /r1
127.0.0.5 /r2
",
    )
    .unwrap();
    let t = table.clone();
    let mut cl = Cluster::start(1, move |c| {
        block_tuning(c);
        c.datanodes.topology_file = Some(t.clone());
    })
    .await;
    cl.start_datanodes_with(3, |i, d| d.listen = format!("127.0.0.{}:0", i + 1)).await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(90), async {
        let data = pattern(8 << 16, 12);
        write_file(&c, "/one-rack/f", &data, 1 << 16, 1 << 16).await;
        let on_r1 = c.get_blocks("/one-rack/f", 0, 100).await.unwrap();
        assert!(on_r1.blocks.iter().all(|b| b.locations.iter().all(|l| l.rack == "/r1")));
        cl.start_datanodes_with(1, |i, d| d.listen = format!("127.0.0.{}:0", i + 1)).await;
        wait_for("every block on two racks with 3 replicas", Duration::from_secs(60), || async {
            let blocks = c.get_blocks("/one-rack/f", 0, 100).await.ok()?;
            blocks
                .blocks
                .iter()
                .all(|b| {
                    let racks: std::collections::HashSet<&str> = b.locations.iter().map(|l| l.rack.as_str()).collect();
                    b.locations.len() == 3 && racks.len() == 2
                })
                .then_some(())
        })
        .await;
        assert_eq!(read_file(&c, "/one-rack/f").await, data);
        let r = c.datanode_report().await.unwrap();
        assert_eq!(r.blocks.under_replicated, 0);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Concat (S3's multipart complete) moves blocks of closed files into one new file: the
/// bytes read back in order, the sources are gone, the blocks keep their replicas, and a
/// failed condition changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concat_moves_blocks_without_copying() {
    use tarn_client::{ConcatOptions, ErrorKind};
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let sizes = [BS as usize + 5, 300 << 10, 7];
        let mut all = Vec::new();
        let mut sources = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let data = pattern(*n, 40 + i as u64);
            let path = format!("/.uploads/u1/{i}");
            write_file(&c, &path, &data, 64 << 10, BS).await;
            let id = c.get_file_info(&path, false).await.unwrap().unwrap().file_id;
            sources.push((path, id));
            all.extend_from_slice(&data);
        }
        let block_ids = |path: &'static str| {
            let c = &c;
            async move {
                let b = c.get_blocks(path, 0, 100).await.unwrap();
                b.blocks.iter().map(|l| l.block.block_id).collect::<Vec<_>>()
            }
        };
        let mut before = Vec::new();
        for (p, _) in &sources {
            let b = c.get_blocks(p, 0, 100).await.unwrap();
            before.extend(b.blocks.iter().map(|l| l.block.block_id));
        }

        // A wrong source id refuses the whole operation.
        let mut wrong = sources.clone();
        wrong[1].1 += 1000;
        let o = ConcatOptions { create_parent: true, ..Default::default() };
        let e = c.concat(&wrong, "/b/obj", &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e}");
        assert!(c.get_file_info("/b/obj", false).await.unwrap().is_none());

        // A required directory that is missing refuses it too (S3: a deleted bucket).
        let gone = ConcatOptions { create_parent: true, require_dir: Some("/b".into()), ..Default::default() };
        let e = c.concat(&sources, "/b/obj", &gone).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(c.get_file_info("/b", false).await.unwrap().is_none(), "the required directory was created");

        let mut o = o;
        o.xattrs.insert("s3.etag".into(), b"abc-3".to_vec());
        o.dst_must_be_absent = true;
        let st = c.concat(&sources, "/b/obj", &o).await.unwrap();
        assert_eq!(st.length, all.len() as u64);
        assert_eq!(read_file(&c, "/b/obj").await, all);
        assert_eq!(block_ids("/b/obj").await, before, "the same blocks, in order");
        for (p, _) in &sources {
            assert!(c.get_file_info(p, false).await.unwrap().is_none(), "{p} still there");
        }
        let info = c.get_file_info("/b/obj", true).await.unwrap().unwrap();
        assert_eq!(info.xattrs.get("s3.etag").map(Vec::as_slice), Some(&b"abc-3"[..]));
        // The moved blocks are healthy and reachable through the new file.
        assert_eq!(wait_healthy(&c, "/b", Duration::from_secs(30)).await, before.len());

        // The destination exists now: If-None-Match semantics refuse a second one.
        write_file(&c, "/.uploads/u2/0", b"x", 1, BS).await;
        let id = c.get_file_info("/.uploads/u2/0", false).await.unwrap().unwrap().file_id;
        let e = c.concat(&[("/.uploads/u2/0".into(), id)], "/b/obj", &o).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e}");
        assert_eq!(read_file(&c, "/b/obj").await, all);
        // With the current id (If-Match), it replaces the object.
        o.dst_must_be_absent = false;
        o.dst_expected_file_id = Some(st.file_id);
        c.concat(&[("/.uploads/u2/0".into(), id)], "/b/obj", &o).await.unwrap();
        assert_eq!(read_file(&c, "/b/obj").await, b"x");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A small write in two namenode operations: create with the first block allocated, and
/// complete with publish (the staged file becomes the destination in the same operation).
/// A failed publish condition leaves the staged file open and unpublished; an empty file
/// made with its first block still has replicas for that block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_file_is_published_as_it_completes() {
    use tarn_client::{ConcatOptions, ErrorKind};
    let cl = Cluster::builder().tune_namenodes(block_tuning).datanodes(3).start().await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        write_file(&c, "/pub/existing", b"old bytes", 1 << 16, BS).await;
        let opts = CreateOptions { create_parent: true, ..Default::default() };
        let mut w = FileWriter::create_with_block(&c, "/stage/a", &opts).await.unwrap();
        w.write(b"new bytes").await.unwrap();
        // Only if absent: the destination exists, so nothing happens, the staged file stays.
        let absent = ConcatOptions { dst_must_be_absent: true, ..Default::default() };
        let e = w.close_publish("/pub/existing", &absent).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e}");
        assert_eq!(read_file(&c, "/pub/existing").await, b"old bytes");
        let staged = c.get_file_info("/stage/a", false).await.unwrap().expect("still staged");
        assert!(staged.writer.is_some(), "the failed publish left the staged file open");

        let mut w = FileWriter::create_with_block(&c, "/stage/b", &opts).await.unwrap();
        w.write(b"new bytes").await.unwrap();
        let mut o = ConcatOptions { overwrite: true, create_parent: true, ..Default::default() };
        o.xattrs.insert("user.tag".into(), b"v2".to_vec());
        let st = w.close_publish("/pub/existing", &o).await.unwrap();
        assert_eq!((st.path.as_str(), st.length), ("/pub/existing", 9));
        assert_eq!(read_file(&c, "/pub/existing").await, b"new bytes");
        assert!(c.get_file_info("/stage/b", false).await.unwrap().is_none(), "the staged file moved");
        let x = c.get_file_info("/pub/existing", true).await.unwrap().unwrap().xattrs;
        assert_eq!(x.get("user.tag").map(Vec::as_slice), Some(&b"v2"[..]));

        // Nothing written: the first block gets empty replicas, the file is healthy.
        let w = FileWriter::create_with_block(&c, "/stage/empty", &opts).await.unwrap();
        let st = w.close_publish("/pub/empty", &o).await.unwrap();
        assert_eq!(st.length, 0);
        assert!(read_file(&c, "/pub/empty").await.is_empty());
        wait_healthy(&c, "/pub", Duration::from_secs(30)).await;
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Any authenticated caller may report replicas bad, so a report is taken only from a
/// reader of the file, about the generation the replicas have, and never for a block's
/// last good replica; what it marks is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_report_is_taken_only_from_readers_and_never_for_the_last_replica() {
    let mut cl = Cluster::start(1, block_tuning).await;
    cl.start_datanodes_with(3, |_, d| d.scan_interval_ms = 3_600_000).await;
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(120), async {
        let data = pattern(BS as usize / 2, 5);
        write_file(&c, "/rep/f", &data, 1 << 20, BS).await;
        wait_healthy(&c, "/rep", Duration::from_secs(30)).await;
        let lb = c.get_blocks("/rep/f", 0, 1).await.unwrap().blocks.remove(0);
        let b = lb.block;
        assert_eq!(lb.locations.len(), 3);
        let replicas = |generation: u64| -> Vec<_> {
            let block = tarn_client::Block { generation, ..b };
            lb.locations.iter().map(|l| (block, l.clone())).collect()
        };
        // A user who may not read the file is refused.
        let set_mode = tarn_client::SetAttributes { mode: Some(0o600), ..Default::default() };
        c.set_attributes("/rep/f", set_mode).await.unwrap();
        let mallory =
            NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(tarn_security::Role::User, "mallory")).unwrap();
        let e = mallory.report_bad_blocks(&replicas(b.generation), "not mine").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        // A generation the file does not have (a forged one) marks nothing.
        assert_eq!(c.report_bad_blocks(&replicas(b.generation + 1_000), "forged").await.unwrap(), 0);
        // All three named at once: two are taken, the last good one is not.
        assert_eq!(c.report_bad_blocks(&replicas(b.generation), "all of them").await.unwrap(), 2);
        let f = c.fsck("/rep/f", "", 10).await.unwrap();
        assert!(f.files[0].blocks.iter().all(|x| x.live >= 1), "the last replica stays live: {f:?}");
        // The two marked are replaced from the good one; the bytes never changed.
        wait_healthy(&c, "/rep", Duration::from_secs(60)).await;
        assert_eq!(read_file(&c, "/rep/f").await, data);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Real processes: a read that starts right after a restart, before the datanode is back
/// and has reported its replicas, waits for them briefly (as HDFS's client asks the
/// namenode again) instead of failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_just_after_a_restart_waits_for_the_block_report() {
    let mut pc = ProcCluster::start(1, |c| {
        block_tuning(c);
        c.files.default_replication = 1;
    })
    .await;
    pc.start_datanodes(1).await;
    let data = pattern(BS as usize + 1000, 7);
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        write_file(&pc.client(), "/restart/f", &data, 1 << 20, BS).await;
        pc.kill_datanode(1);
        pc.kill(1);
        pc.restart(1).await;
        // The namenode knows no replica now; the reader starts before the datanode is back.
        let c = pc.client();
        let reader = tokio::spawn(async move { read_file(&c, "/restart/f").await });
        pc.restart_datanode(1).await;
        reader.await.expect("the reader")
    })
    .await;
    match result {
        Ok(read) => assert!(read == data, "read {} bytes back, wrote {}", read.len(), data.len()),
        Err(_) => timed_out(&pc, 1),
    }
}
