//! File permissions as HDFS has them: modes checked by the state machine as it applies a
//! change, listings and lookups limited to what the caller may see, groups kept in the
//! namespace, the sticky staging directory, and block access tokens on the datanodes.

use std::time::Duration;

use tarn_client::blocks::{FileReader, FileWriter};
use tarn_client::{
    CreateOptions, ErrorKind, ListOptions, NamenodeClient, RenameOptions, RetryPolicy, SetAttributes, Transport,
};
use tarn_proto::datanode as dpb;
use tarn_proto::datanode::data_transfer_client::DataTransferClient;
use tarn_security::Role;
use tarn_tests::{pki, Cluster};

fn quick() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

fn user(cl: &Cluster, name: &str) -> NamenodeClient {
    NamenodeClient::new(&cl.addrs, &pki().transport(Role::User, name)).unwrap().with_retry(quick())
}

/// `/home/USER`, made by the admin and given to the user, with `mode`.
async fn give_home(admin: &NamenodeClient, user: &str, mode: u32) {
    let path = format!("/home/{user}");
    admin.mkdirs(&path).await.unwrap();
    let own = SetAttributes { owner: Some(user.into()), mode: Some(mode), ..Default::default() };
    admin.set_attributes(&path, own).await.unwrap();
}

/// One namenode and one datanode (replication 1), and the admin's client, with
/// `/home/USER` made for each of `homes` with its mode.
async fn cluster(homes: &[(&str, u32)]) -> (Cluster, NamenodeClient) {
    let mut cl = Cluster::start(1, |c| c.files.default_replication = 1).await;
    cl.start_datanodes(1).await;
    let admin = cl.client();
    for (name, mode) in homes {
        give_home(&admin, name, *mode).await;
    }
    (cl, admin)
}

async fn write(c: &NamenodeClient, path: &str, mode: u32, bytes: &[u8]) {
    let opts = CreateOptions { mode, create_parent: true, ..Default::default() };
    let mut w = FileWriter::create(c, path, &opts).await.unwrap_or_else(|e| panic!("create {path}: {e}"));
    w.write(bytes).await.unwrap();
    w.close().await.unwrap();
}

fn denied<T: std::fmt::Debug>(r: Result<T, tarn_client::ClientError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{what}: {e}"),
        Ok(v) => panic!("{what} was allowed: {v:?}"),
    }
}

fn chmod(mode: u32) -> SetAttributes {
    SetAttributes { mode: Some(mode), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_lookups_show_only_what_the_caller_may_see() {
    let (cl, admin) = cluster(&[("alice", 0o755), ("bob", 0o700)]).await;
    let (alice, bob) = (user(&cl, "alice"), user(&cl, "bob"));
    write(&alice, "/home/alice/a/1", 0o644, b"a1").await;
    write(&bob, "/home/bob/b/1", 0o644, b"b1").await;
    write(&bob, "/home/bob/b/2", 0o644, b"b2").await;

    // A recursive listing (S3's and `ls -R`'s) passes over bob's private home: the
    // directory shows (its parent is listable), what is in it does not.
    let o = ListOptions { include_directories: true, ..Default::default() };
    let (seen, more) = alice.list_tree("/home/", "", 1000, &o).await.unwrap();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/home/", "/home/alice/", "/home/alice/a/", "/home/alice/a/1", "/home/bob/"], "more: {more}");
    // Pages of one entry still walk everything she may see, and nothing else.
    let mut after = String::new();
    let mut walked = Vec::new();
    loop {
        let (page, more) = alice.list_tree("/home/", &after, 1, &o).await.unwrap();
        assert!(page.len() == 1 || !more, "a page that says more must hold an entry");
        walked.extend(page.iter().map(|s| s.path.clone()));
        match page.last() {
            Some(s) if more => after = s.path.clone(),
            _ => break,
        }
    }
    assert_eq!(walked, paths);
    // Inside the private directory: nothing but the directory itself, and no error.
    let (inside, _) = alice.list_tree("/home/bob/", "", 1000, &o).await.unwrap();
    assert_eq!(inside.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/home/bob/"]);
    // The owner and the admin see it all.
    assert_eq!(bob.list_tree("/home/bob/", "", 1000, &o).await.unwrap().0.len(), 4);
    assert_eq!(admin.list_tree("/home/", "", 1000, &o).await.unwrap().0.len(), 8);

    // Lookups under a directory she may not search are refused, present or not, so they
    // tell nothing about what is there.
    denied(alice.get_file_info("/home/bob/b/1", false).await, "a file info under a private home");
    denied(alice.get_file_info("/home/bob/nothing", false).await, "a file info of an absent file");
    assert!(alice.get_file_info("/home/alice/nothing", false).await.unwrap().is_none());
    denied(alice.list_dir("/home/bob", "", 100).await, "listing a private home");
    // Counting a subtree needs r+x on every directory in it (HDFS's rule).
    denied(alice.content_summary("/home").await, "a content summary over a private home");
    assert_eq!(admin.content_summary("/home").await.unwrap().file_count, 3);
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_share_a_directory_and_owners_keep_the_rest() {
    let (cl, admin) = cluster(&[]).await;
    let (alice, bob, carol) = (user(&cl, "alice"), user(&cl, "bob"), user(&cl, "carol"));
    admin.change_group("analysts", &["alice".into(), "bob".into()], &[]).await.unwrap();
    let groups = admin.list_groups(Some("alice")).await.unwrap();
    assert_eq!(groups, vec![("analysts".to_string(), vec!["alice".to_string(), "bob".to_string()])]);
    // Only the admin keeps groups.
    denied(alice.change_group("analysts", &["carol".into()], &[]).await, "a user changing a group");

    // A shared directory: owned by bob, group analysts, rwxrwx---.
    admin.mkdirs("/shared").await.unwrap();
    let own = SetAttributes {
        owner: Some("bob".into()),
        group: Some("analysts".into()),
        mode: Some(0o770),
        ..Default::default()
    };
    admin.set_attributes("/shared", own).await.unwrap();
    // alice (a member) writes in it; what she makes belongs to the directory's group.
    write(&alice, "/shared/report", 0o640, b"q3").await;
    let st = admin.get_file_info("/shared/report", false).await.unwrap().unwrap();
    assert_eq!((st.owner.as_str(), st.group.as_str()), ("alice", "analysts"));
    // bob (a member, by the group bits) reads it; carol (not one) can neither read nor write.
    let r = FileReader::open(&bob, "/shared/report").await.unwrap();
    assert_eq!(r.read_at(0, 10).await.unwrap(), b"q3");
    denied(FileReader::open(&carol, "/shared/report").await.map(|_| ()), "a non-member reading");
    denied(carol.mkdirs("/shared/carol").await, "a non-member writing");
    // Removed from the group, bob loses the group's rights at once.
    admin.change_group("analysts", &[], &["bob".into()]).await.unwrap();
    // (bob still owns /shared, so he keeps the owner's bits on it; not on alice's file.)
    denied(FileReader::open(&bob, "/shared/report").await.map(|_| ()), "a former member reading");

    // Owners: a mode change is the owner's; a group change the owner's to a group of
    // theirs; the owner the admin's.
    let report = "/shared/report";
    denied(bob.set_attributes(report, chmod(0o666)).await, "chmod of another's file");
    alice.set_attributes(report, chmod(0o600)).await.unwrap();
    let chgrp = |g: &str| SetAttributes { group: Some(g.into()), ..Default::default() };
    denied(alice.set_attributes(report, chgrp("admins")).await, "chgrp to a group she is not in");
    assert_eq!(alice.set_attributes(report, chgrp("alice")).await.unwrap().group, "alice");
    let chown = SetAttributes { owner: Some("carol".into()), ..Default::default() };
    denied(alice.set_attributes(report, chown).await, "chown by a user");
    // Quotas and replication: the admin's, and the file writer's.
    denied(alice.set_quota("/shared", 10, 0).await, "a user setting a quota");
    denied(carol.set_replication("/shared/report", 2).await, "setrep of another's file");
    assert_eq!(alice.set_replication("/shared/report", 2).await.unwrap().replication, 2);
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staging_directory_is_sticky() {
    let (cl, admin) = cluster(&[("alice", 0o755)]).await;
    let (alice, bob) = (user(&cl, "alice"), user(&cl, "bob"));
    // Made by the leader through the log: everyone may stage files, nobody may list them.
    let tmp = tarn_tests::wait_for("/.tarn/tmp", Duration::from_secs(20), || async {
        admin.get_file_info("/.tarn/tmp", false).await.ok().flatten()
    })
    .await;
    assert_eq!(tmp.mode & 0o7777, 0o1733);
    write(&alice, "/.tarn/tmp/alice-staged", 0o644, b"staged").await;
    denied(bob.list_dir("/.tarn/tmp", "", 10).await, "listing the staging directory");
    // bob may stage too, but not remove, replace or move alice's file.
    write(&bob, "/.tarn/tmp/bob-staged", 0o644, b"mine").await;
    denied(bob.delete("/.tarn/tmp/alice-staged", false, None).await, "deleting another's staged file");
    let o = RenameOptions { overwrite: true, ..Default::default() };
    denied(bob.rename("/.tarn/tmp/bob-staged", "/.tarn/tmp/alice-staged", &o).await, "replacing it");
    denied(bob.rename("/.tarn/tmp/alice-staged", "/.tarn/tmp/taken", &o).await, "moving it");
    // alice publishes hers into her home with one rename.
    alice.rename("/.tarn/tmp/alice-staged", "/home/alice/published", &RenameOptions::default()).await.unwrap();
    assert!(bob.delete("/.tarn/tmp/bob-staged", false, None).await.unwrap());
    cl.shutdown().await;
}

/// Client names are not secret (file infos show who writes a file); a lease is held by a
/// user's client, so another user cannot extend, restamp or close the file under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_client_name_opens_nothing() {
    use tarn_proto::namenode::namenode_client::NamenodeClient as Raw;
    let (cl, _) = cluster(&[("alice", 0o777)]).await;
    let (alice, bob) = (user(&cl, "alice"), user(&cl, "bob"));
    let opts = CreateOptions { mode: 0o666, ..Default::default() };
    let mut w = FileWriter::create(&alice, "/home/alice/open", &opts).await.unwrap();
    w.write(b"alice writes").await.unwrap();
    w.hflush().await.unwrap();
    let st = bob.get_file_info("/home/alice/open", false).await.unwrap().unwrap();
    let shown = st.writer.clone().expect("being written");
    assert!(shown.ends_with(alice.client_name()), "{shown}");
    // bob sends alice's client name with each call a writer makes.
    let name = alice.client_name().to_string();
    let file_id = st.file_id;
    let complete = tarn_client::pb::CompleteRequest {
        path: "/home/alice/open".into(),
        file_id,
        client_name: name.clone(),
        ..Default::default()
    };
    let e = bob
        .call(|c| {
            let req = bob.request(complete.clone());
            async move { Raw::new(c).complete(req).await }
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLeaseHolder, "{e}");
    let add = tarn_client::pb::AddBlockRequest {
        path: "/home/alice/open".into(),
        file_id,
        client_name: name.clone(),
        previous_block_length: Some(1),
        ..Default::default()
    };
    let e = bob
        .call(|c| {
            let req = bob.request(add.clone());
            async move { Raw::new(c).add_block(req).await }
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotLeaseHolder, "{e}");
    // alice's write goes on and closes with what she wrote.
    w.write(b", undisturbed").await.unwrap();
    let done = w.close().await.unwrap();
    assert_eq!(done.length, 25);
    let r = FileReader::open(&alice, "/home/alice/open").await.unwrap();
    assert_eq!(r.read_at(0, 100).await.unwrap(), b"alice writes, undisturbed");
    cl.shutdown().await;
}

/// A datanode serves a block to a client only with the namenode's token for that block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanodes_want_a_block_access_token() {
    let (cl, _) = cluster(&[("alice", 0o755), ("bob", 0o700)]).await;
    let (alice, bob) = (user(&cl, "alice"), user(&cl, "bob"));
    write(&bob, "/home/bob/secret", 0o600, b"bob's secret").await;
    write(&alice, "/home/alice/mine", 0o600, b"alice's own").await;
    let secret = bob.get_blocks("/home/bob/secret", 0, 10).await.unwrap().blocks.remove(0);
    let mine = alice.get_blocks("/home/alice/mine", 0, 10).await.unwrap().blocks.remove(0);
    let dn_addr = secret.locations[0].addr.clone();
    let alice_t: Transport = pki().transport(Role::User, "alice");
    let mut dn = DataTransferClient::new(
        alice_t.channel(Transport::endpoint(&dn_addr).unwrap().connect_timeout(Duration::from_secs(2))),
    );
    let read = |lb: &tarn_client::LocatedBlock, token: Vec<u8>| {
        let b = &lb.block;
        dpb::ReadBlockRequest {
            block: Some(dpb::ExtendedBlock { block_id: b.block_id, gen_stamp: b.generation, length: b.length }),
            offset: 0,
            length: b.length,
            token,
        }
    };
    async fn first_bytes(
        dn: &mut DataTransferClient<tonic::transport::Channel>,
        req: dpb::ReadBlockRequest,
    ) -> Result<Vec<u8>, tonic::Status> {
        let call = tokio::time::timeout(Duration::from_secs(10), dn.read_block(req)).await.expect("bounded");
        let mut s = call?.into_inner();
        Ok(s.message().await?.map(|c| c.data.to_vec()).unwrap_or_default())
    }
    // Her own block, with her token.
    assert_eq!(first_bytes(&mut dn, read(&mine, mine.token.clone())).await.unwrap(), b"alice's own");
    // bob's block by id: without a token, with hers for another block, with bob's token
    // altered: refused, and nothing of it is sent.
    for (what, token) in [
        ("no token", Vec::new()),
        ("her token for her block", mine.token.clone()),
        ("bob's token with one bit flipped", {
            let mut t = secret.token.clone();
            let last = t.len() - 1;
            t[last] ^= 1;
            t
        }),
    ] {
        let s = first_bytes(&mut dn, read(&secret, token)).await.expect_err(what);
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{what}: {s:?}");
        assert!(s.message().contains("alice"), "{what}: {}", s.message());
    }
    // Nor may she have bob's replica file opened for her (short-circuit reads).
    let s = dn
        .open_local(dpb::LocalReplicaRequest { block: read(&secret, Vec::new()).block, token: mine.token.clone() })
        .await
        .expect_err("a local read of bob's block with her token");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let own = dn
        .open_local(dpb::LocalReplicaRequest { block: read(&mine, Vec::new()).block, token: mine.token.clone() })
        .await
        .expect("her own replica, from this host");
    assert!(own.into_inner().data_path.starts_with('/'));
    // Writing a replica needs a write token: a read token is not one.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let b = &mine.block;
    let header = dpb::WriteHeader {
        block: Some(dpb::ExtendedBlock { block_id: b.block_id + 1000, gen_stamp: 1, length: 0 }),
        expected_bytes: 1,
        client: "forger".into(),
        token: mine.token.clone(),
        ..Default::default()
    };
    tx.send(dpb::WritePacket { header: Some(header), ..Default::default() }).await.unwrap();
    let call =
        tokio::time::timeout(Duration::from_secs(10), dn.write_block(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .expect("bounded");
    let s = call.expect_err("a write without a write token");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // The namenode gives no token to who may not read the file.
    denied(alice.get_blocks("/home/bob/secret", 0, 10).await, "a token for bob's file");
    cl.shutdown().await;
}

/// A write token is for one generation of one block: once the block is closed, the token
/// that wrote it cannot reopen it (at that stamp or another) to rewrite its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_write_token_cannot_rewrite_a_closed_block() {
    use tarn_client::blocks::Pipeline;
    let (cl, _) = cluster(&[("alice", 0o755)]).await;
    let alice = user(&cl, "alice");
    let st = alice.create("/home/alice/f", &CreateOptions::default()).await.unwrap();
    let lb = alice.allocate_block("/home/alice/f", st.file_id, None, Vec::new(), "").await.unwrap();
    let (block, token) = (lb.block, lb.token);
    let targets: Vec<dpb::DatanodeLocation> = lb.locations.iter().map(dpb::DatanodeLocation::from).collect();
    let eb = dpb::ExtendedBlock { block_id: block.block_id, gen_stamp: block.generation, length: 0 };
    let t = alice.transport().clone();
    let (stage, name) = (dpb::WriteStage::Create, alice.client_name().to_string());
    let mut p = Pipeline::open(eb, targets.clone(), stage, 0, 1 << 20, &name, &token, &t).await.unwrap();
    p.write(bytes::Bytes::from_static(b"the real bytes")).await.unwrap();
    let len = p.finish().await.unwrap();
    drop(p);
    alice.complete("/home/alice/f", st.file_id, Some(len), Default::default()).await.unwrap();
    // Reopen the finalized replica with the same token: at its own stamp, and at the next.
    let recover = dpb::WriteStage::Recover;
    let same = Pipeline::open(eb, targets.clone(), recover, 0, 1 << 20, &name, &token, &t).await;
    let e = same.err().expect("a finalized replica reopened at its own stamp");
    assert!(e.message.contains("generation"), "{}", e.message);
    let next = dpb::ExtendedBlock { gen_stamp: block.generation + 1, ..eb };
    let later = Pipeline::open(next, targets, recover, 0, 1 << 20, &name, &token, &t).await;
    let e = later.err().expect("a write token used for another generation");
    assert!(e.message.contains("block access token"), "{}", e.message);
    let r = FileReader::open(&alice, "/home/alice/f").await.unwrap();
    assert_eq!(r.read_at(0, 100).await.unwrap(), b"the real bytes");
    cl.shutdown().await;
}

/// A lookup refused for permissions says so with the same kind and code whether it went
/// alone or in a batch (concurrent lookups of one client are batched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_lookups_are_refused_like_single_ones() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (cl, _admin) = cluster(&[("alice", 0o700)]).await;
        let eve = std::sync::Arc::new(user(&cl, "eve"));
        let single = eve.get_file_info("/home/alice/x", false).await.unwrap_err();
        assert_eq!((single.kind(), code(&single)), (ErrorKind::PermissionDenied, tonic::Code::PermissionDenied));
        let lookups = (0..32).map(|i| {
            let eve = eve.clone();
            tokio::spawn(async move { eve.get_file_info(&format!("/home/alice/f{i}"), false).await })
        });
        for r in futures::future::join_all(lookups).await {
            let e = r.unwrap().unwrap_err();
            assert_eq!((e.kind(), code(&e)), (ErrorKind::PermissionDenied, tonic::Code::PermissionDenied), "{e}");
        }
        cl.shutdown().await;
    })
    .await
    .expect("bounded");
}

fn code(e: &tarn_client::ClientError) -> tonic::Code {
    match e {
        tarn_client::ClientError::Refused { code, .. } => *code,
        other => panic!("not a refusal: {other}"),
    }
}

/// An exclusive mkdir by a user: made for that user only (giving it to another user or to
/// a group not theirs is the superuser's), where the user may create; over someone else's
/// directory it is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_mkdir_is_the_callers_own() {
    use tarn_client::MkdirOptions;
    let (cl, admin) = cluster(&[("alice", 0o755), ("bob", 0o755)]).await;
    let (alice, bob) = (user(&cl, "alice"), user(&cl, "bob"));
    let mine = bob.mkdir_exclusive("/home/bob/d", &MkdirOptions::default()).await.unwrap();
    assert_eq!((mine.owner.as_str(), mine.group.as_str()), ("bob", "supergroup"));
    let as_alice = MkdirOptions { owner: Some("alice".into()), ..Default::default() };
    denied(bob.mkdir_exclusive("/home/bob/e", &as_alice).await, "bob gives a directory to alice");
    let to_group = MkdirOptions { group: Some("analysts".into()), ..Default::default() };
    denied(bob.mkdir_exclusive("/home/bob/e", &to_group).await, "bob gives a directory to a group not his");
    admin.change_group("analysts", &["bob".into()], &[]).await.unwrap();
    let st = bob.mkdir_exclusive("/home/bob/e", &to_group).await.unwrap();
    assert_eq!(st.group, "analysts");
    denied(
        bob.mkdir_exclusive("/home/alice/x", &MkdirOptions::default()).await,
        "bob makes a directory in alice's home",
    );
    // Alice's own directory: bob is told it exists (he may see it), and it stays hers.
    alice.mkdir_exclusive("/home/alice/a", &MkdirOptions::default()).await.unwrap();
    let e = bob.mkdir_exclusive("/home/alice/a", &MkdirOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = alice.mkdir_exclusive("/home/alice/a", &MkdirOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyOwned, "{e}");
    assert_eq!(admin.get_file_info("/home/alice/a", false).await.unwrap().unwrap().owner, "alice");
    assert!(admin.get_file_info("/home/bob/e", false).await.unwrap().is_some());
    assert!(admin.get_file_info("/home/alice/x", false).await.unwrap().is_none());
    cl.shutdown().await;
}
