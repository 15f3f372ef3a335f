//! Namespace semantics through the client library against a single-node group: the
//! operations, their conditions, listings in both orders, quotas and refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use tarn_client::{CreateOptions, ErrorKind, NamenodeClient, RenameOptions};
use tarn_tests::Cluster;

async fn with_cluster<F, Fut>(f: F)
where
    F: FnOnce(NamenodeClient) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // A datanode to place blocks on (add_block needs one).
    let mut cluster = Cluster::start(1, |_| {}).await;
    cluster.start_datanodes(1).await;
    let client = cluster.client();
    tokio::time::timeout(Duration::from_secs(60), f(client)).await.expect("test timed out");
    cluster.shutdown().await;
}

async fn touch(c: &NamenodeClient, path: &str) -> u64 {
    let f = c.create(path, &CreateOptions { create_parent: true, ..Default::default() }).await.expect("create");
    c.complete(path, f.file_id, None, BTreeMap::new()).await.expect("complete");
    f.file_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_write_blocks_and_complete() {
    with_cluster(|c| async move {
        c.mkdirs("/data/in").await.unwrap();
        let f =
            c.create("/data/in/a.parquet", &CreateOptions { block_size: 1024, ..Default::default() }).await.unwrap();
        // The lease holder: the caller's user and client name.
        assert_eq!(f.writer, Some(format!("tester/{}", c.client_name())));
        let b1 = c.add_block("/data/in/a.parquet", f.file_id, None).await.unwrap();
        let b2 = c.add_block("/data/in/a.parquet", f.file_id, Some(1024)).await.unwrap();
        assert_ne!(b1.block_id, b2.block_id);
        assert!(b2.generation > b1.generation);
        assert_eq!((b1.index, b2.index), (0, 1));
        // Adding a block without the previous block's length is refused.
        let e = c.add_block("/data/in/a.parquet", f.file_id, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let done = c
            .complete("/data/in/a.parquet", f.file_id, Some(100), BTreeMap::from([("etag".into(), b"x1".to_vec())]))
            .await
            .unwrap();
        assert_eq!(done.length, 1124);
        assert_eq!(done.writer, None);
        let info = c.get_file_info("/data/in/a.parquet", true).await.unwrap().unwrap();
        assert_eq!(info.length, 1124);
        assert_eq!(info.block_count, 2);
        assert_eq!(info.xattrs.get("etag").map(Vec::as_slice), Some(&b"x1"[..]));
        let blocks = c.get_blocks("/data/in/a.parquet", 0, 0).await.unwrap();
        assert_eq!(blocks.blocks.iter().map(|b| b.block.length).collect::<Vec<_>>(), vec![1024, 100]);
        // A closed file takes no more blocks.
        let e = c.add_block("/data/in/a.parquet", f.file_id, Some(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotLeaseHolder, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_file() {
    with_cluster(|c| async move {
        let other = NamenodeClient::new(&[c_addr(&c).await], &tarn_tests::admin()).unwrap();
        let f = c.create("/f", &CreateOptions::default()).await.unwrap();
        let e = other.create("/f", &CreateOptions { overwrite: true, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LeaseConflict, "{e}");
        let e = other.add_block("/f", f.file_id, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotLeaseHolder, "{e}");
        // Lease recovery closes the file; the new writer may then replace it.
        assert!(other.recover_lease("/f").await.unwrap());
        let g = other.create("/f", &CreateOptions { overwrite: true, ..Default::default() }).await.unwrap();
        assert_ne!(g.file_id, f.file_id);
        let e = c.complete("/f", f.file_id, None, BTreeMap::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotLeaseHolder, "{e}");
    })
    .await;
}

async fn c_addr(c: &NamenodeClient) -> String {
    c.cluster_status().await.unwrap().leader_addr.expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_create_replace_and_rename() {
    with_cluster(|c| async move {
        let id1 = touch(&c, "/t/_delta_log/0.json").await;
        // Create-if-absent refuses an existing file.
        let e = c.create("/t/_delta_log/0.json", &CreateOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        // Replace-if-version: wrong id refused, right id accepted.
        let e = c
            .create("/t/_delta_log/0.json", &CreateOptions { expected_file_id: Some(id1 + 100), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e}");
        let f2 = c
            .create("/t/_delta_log/0.json", &CreateOptions { expected_file_id: Some(id1), ..Default::default() })
            .await
            .unwrap();
        c.complete("/t/_delta_log/0.json", f2.file_id, None, BTreeMap::new()).await.unwrap();
        // Replace-if-version on a missing file is refused.
        let e = c
            .create("/t/missing", &CreateOptions { expected_file_id: Some(1), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed);
        // Rename onto a path only if absent (the job commit / S3 If-None-Match shape).
        let tmp = touch(&c, "/t/_tmp/1.json").await;
        let e = c
            .rename(
                "/t/_tmp/1.json",
                "/t/_delta_log/0.json",
                &RenameOptions { dst_must_be_absent: true, ..Default::default() },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed, "{e}");
        c.rename(
            "/t/_tmp/1.json",
            "/t/_delta_log/1.json",
            &RenameOptions { dst_must_be_absent: true, ..Default::default() },
        )
        .await
        .unwrap();
        assert_eq!(c.get_file_info("/t/_delta_log/1.json", false).await.unwrap().unwrap().file_id, tmp);
        // Rename onto a path only if it is still the version we read.
        let tmp2 = touch(&c, "/t/_tmp/2.json").await;
        let e = c
            .rename(
                "/t/_tmp/2.json",
                "/t/_delta_log/1.json",
                &RenameOptions { dst_expected_file_id: Some(f2.file_id), ..Default::default() },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed);
        c.rename(
            "/t/_tmp/2.json",
            "/t/_delta_log/1.json",
            &RenameOptions { dst_expected_file_id: Some(tmp), ..Default::default() },
        )
        .await
        .unwrap();
        assert_eq!(c.get_file_info("/t/_delta_log/1.json", false).await.unwrap().unwrap().file_id, tmp2);
        assert!(c.get_file_info("/t/_tmp/2.json", false).await.unwrap().is_none());
        // Conditional delete.
        let e = c.delete("/t/_delta_log/1.json", false, Some(tmp)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConditionFailed);
        assert!(c.delete("/t/_delta_log/1.json", false, Some(tmp2)).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_in_both_orders_with_pagination() {
    with_cluster(|c| async move {
        let keys = ["a/x", "a+b/x", "a-b/x", "a.b", "a/y/z", "a0", "é/x", "z"];
        for k in keys {
            touch(&c, &format!("/bkt/{k}")).await;
        }
        // S3 order: byte order of the whole key, across directories.
        let all = c.list_recursive_all("/bkt/", false).await.unwrap();
        let got: Vec<&str> = all.iter().map(|s| s.path.strip_prefix("/bkt/").unwrap()).collect();
        let mut want: Vec<&str> = keys.to_vec();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(got[..3], ["a+b/x", "a-b/x", "a.b"], "a+b/x must sort before a/x");
        // Paginated, one entry at a time, resuming after the last key.
        let mut paged = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = c.list_recursive("/bkt/", &after, 1, false).await.unwrap();
            assert!(page.len() <= 1);
            if let Some(p) = page.last() {
                after = p.path.clone();
                paged.push(p.path.clone());
            }
            if !more {
                break;
            }
        }
        assert_eq!(paged, all.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
        // A key prefix that is not a directory boundary.
        let (pre, _) = c.list_recursive("/bkt/a", "", 100, false).await.unwrap();
        assert_eq!(pre.len(), 6);
        // Directories included, with a trailing '/'.
        let (with_dirs, _) = c.list_recursive("/bkt/a/", "", 100, true).await.unwrap();
        let names: Vec<&str> = with_dirs.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(names, ["/bkt/a/", "/bkt/a/x", "/bkt/a/y/", "/bkt/a/y/z"]);
        // Directory listing: children by name, paginated.
        let (page1, more) = c.list_dir("/bkt", "", 3).await.unwrap();
        assert!(more);
        let (page2, more2) = c.list_dir("/bkt", &page1[2].path, 100).await.unwrap();
        assert!(!more2);
        let names: Vec<String> = page1.iter().chain(page2.iter()).map(|s| s.path.clone()).collect();
        assert_eq!(names, ["a", "a+b", "a-b", "a.b", "a0", "z", "é"]);
        // Collapsed (S3's delimiter '/'): each directory once, its contents skipped, in
        // S3 order, resumable one entry at a time, also after a directory.
        let o = tarn_client::ListOptions { collapse_directories: true, ..Default::default() };
        let want = ["/bkt/a+b/", "/bkt/a-b/", "/bkt/a.b", "/bkt/a/", "/bkt/a0", "/bkt/z", "/bkt/é/"];
        let (top, more) = c.list_tree("/bkt/", "", 100, &o).await.unwrap();
        assert!(!more);
        assert_eq!(top.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), want);
        let mut paged = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = c.list_tree("/bkt/", &after, 1, &o).await.unwrap();
            if let Some(p) = page.last() {
                after = p.path.clone();
                paged.push(p.path.clone());
            }
            if !more {
                break;
            }
        }
        assert_eq!(paged, want);
        let (under_a, _) = c.list_tree("/bkt/a/", "", 100, &o).await.unwrap();
        assert_eq!(under_a.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/bkt/a/x", "/bkt/a/y/"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_delete_subtrees() {
    with_cluster(|c| async move {
        for k in ["/job/_temporary/p1/f1", "/job/_temporary/p1/f2", "/job/_temporary/p2/sub/f3"] {
            touch(&c, k).await;
        }
        c.rename("/job/_temporary", "/job/output", &RenameOptions::default()).await.unwrap();
        let all = c.list_recursive_all("/job/", false).await.unwrap();
        let got: Vec<&str> = all.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(got, ["/job/output/p1/f1", "/job/output/p1/f2", "/job/output/p2/sub/f3"]);
        assert!(c.get_file_info("/job/output/p2/sub/f3", false).await.unwrap().is_some());
        assert!(c.list_recursive_all("/job/_temporary/", true).await.unwrap().is_empty());
        // Into its own subtree: refused.
        let e = c.rename("/job/output", "/job/output/p1/inner", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RenameIntoSelf, "{e}");
        // Non-recursive delete of a non-empty directory: refused, nothing removed.
        let e = c.delete("/job/output", false, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DirectoryNotEmpty);
        assert_eq!(c.list_recursive_all("/job/", false).await.unwrap().len(), 3);
        assert!(c.delete("/job/output", true, None).await.unwrap());
        let left: Vec<String> =
            c.list_recursive_all("/job/", true).await.unwrap().into_iter().map(|s| s.path).collect();
        assert_eq!(left, ["/job/"], "only the directory itself remains");
        assert!(!c.delete("/job/output", true, None).await.unwrap(), "deleting a missing path reports false");
        assert!(c.list_dir_all("/job").await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_and_account() {
    with_cluster(|c| async move {
        c.mkdirs("/q").await.unwrap();
        // The directory counts itself: quota 3 leaves room for two more inodes.
        c.set_quota("/q", 3, -1).await.unwrap();
        touch(&c, "/q/a").await;
        touch(&c, "/q/b").await;
        let e = c.create("/q/c", &CreateOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
        assert!(e.to_string().contains("/q"), "{e}");
        let e = c.mkdirs("/q/d/e").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert!(c.get_file_info("/q/d", false).await.unwrap().is_none(), "refused mkdirs left a directory behind");
        // Moving a file out frees room; moving it back in is refused when full.
        c.rename("/q/a", "/a", &RenameOptions::default()).await.unwrap();
        touch(&c, "/q/c").await;
        let e = c.rename("/a", "/q/a", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        let q = c.get_file_info("/q", false).await.unwrap().unwrap().quota.unwrap();
        assert_eq!(q.namespace_used, 3);
        // Space quota: a block charges block_size * replication while open.
        c.set_quota("/q", -1, 1000).await.unwrap();
        c.delete("/q/b", false, None).await.unwrap();
        let f =
            c.create("/q/big", &CreateOptions { block_size: 600, replication: 2, ..Default::default() }).await.unwrap();
        let e = c.add_block("/q/big", f.file_id, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
        let g = c
            .create("/q/small", &CreateOptions { block_size: 400, replication: 2, ..Default::default() })
            .await
            .unwrap();
        c.add_block("/q/small", g.file_id, None).await.unwrap();
        c.complete("/q/small", g.file_id, Some(100), BTreeMap::new()).await.unwrap();
        let q = c.get_file_info("/q", false).await.unwrap().unwrap().quota.unwrap();
        assert_eq!(q.space_used, 200);
        let s = c.content_summary("/q").await.unwrap();
        assert_eq!(s.space_consumed, 200);
        assert_eq!(s.file_count + s.directory_count, q.namespace_used);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors() {
    with_cluster(|c| async move {
        touch(&c, "/file").await;
        let cases: Vec<(&str, ErrorKind)> = vec![
            ("relative/path", ErrorKind::InvalidPath),
            ("/a//b", ErrorKind::InvalidPath),
            ("/a/../b", ErrorKind::InvalidPath),
            ("/a/./b", ErrorKind::InvalidPath),
            ("/nul\0byte", ErrorKind::InvalidPath),
        ];
        for (p, kind) in &cases {
            let e = c.mkdirs(p).await.unwrap_err();
            assert_eq!(e.kind(), *kind, "{p:?}: {e}");
            let e = c.create(p, &CreateOptions::default()).await.unwrap_err();
            assert_eq!(e.kind(), *kind, "{p:?}: {e}");
        }
        let long = format!("/{}", "n".repeat(256));
        assert_eq!(c.mkdirs(&long).await.unwrap_err().kind(), ErrorKind::InvalidPath);
        let e = c.create("/no/such/parent/f", &CreateOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ParentNotFound, "{e}");
        let e = c.create("/file/child", &CreateOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory, "{e}");
        let e = c.mkdirs("/file").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        let e = c.rename("/missing", "/x", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = c.rename("/", "/x", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = c.delete("/", true, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = c.create("/r", &CreateOptions { replication: 100_000, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let e = c.set_quota("/file", 5, 0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory);
        let big = BTreeMap::from([("k".to_string(), vec![0u8; 70 * 1024])]);
        let e = c.create("/x", &CreateOptions { xattrs: big, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        // Nothing of the refused operations exists (beside the system's own directory).
        let all = c.list_recursive_all("/", true).await.unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.path.as_str()).filter(|p| !p.starts_with("/.tarn/")).collect();
        assert_eq!(names, ["/file"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_writers_lose_their_leases() {
    let mut cluster = Cluster::start(1, |c| {
        c.leases.soft_limit_ms = 300;
        c.leases.hard_limit_ms = 1500;
    })
    .await;
    cluster.start_datanodes(1).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let addr = cluster.addrs[0].clone();
        let dead = NamenodeClient::new(std::slice::from_ref(&addr), &tarn_tests::admin()).unwrap();
        let next = NamenodeClient::new(std::slice::from_ref(&addr), &tarn_tests::admin()).unwrap();
        // Past the soft limit another writer may take the file over.
        let f = dead.create("/soft", &CreateOptions::default()).await.unwrap();
        dead.add_block("/soft", f.file_id, None).await.unwrap();
        let soft = tarn_tests::wait_for("the soft limit to pass", Duration::from_secs(10), || async {
            next.create("/soft", &CreateOptions { overwrite: true, ..Default::default() }).await.ok()
        })
        .await;
        assert_ne!(soft.file_id, f.file_id);
        assert_eq!(soft.writer, Some(format!("tester/{}", next.client_name())));
        // Past the hard limit the namenode closes the file by itself.
        let g = dead.create("/hard", &CreateOptions::default()).await.unwrap();
        dead.add_block("/hard", g.file_id, None).await.unwrap();
        let closed = tarn_tests::wait_for("the hard limit to close the file", Duration::from_secs(20), || async {
            c_info(&next, "/hard").await.filter(|s| s.writer.is_none())
        })
        .await;
        assert_eq!(closed.file_id, g.file_id);
        // The unacknowledged open block was dropped (no datanode reported a length).
        assert_eq!(closed.block_count, 0);
        let e = dead.complete("/hard", g.file_id, Some(10), BTreeMap::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotLeaseHolder);
    })
    .await
    .expect("test timed out");
    cluster.shutdown().await;
}

async fn c_info(c: &NamenodeClient, path: &str) -> Option<tarn_client::FileStatus> {
    c.get_file_info(path, false).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_each_get_their_own_answer() {
    with_cluster(|c| async move {
        for i in 0..50 {
            touch(&c, &format!("/look/f{i}")).await;
        }
        let c = std::sync::Arc::new(c);
        // Many lookups at once on one client share GetFileInfos calls.
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    let path = match i % 3 {
                        0 => format!("/look/f{}", i % 50),
                        1 => format!("/look/missing{i}"),
                        _ => format!("/look/../bad{i}"),
                    };
                    (i, path.clone(), c.get_file_info(&path, false).await)
                })
            })
            .collect();
        for t in tasks {
            let (i, path, r) = t.await.unwrap();
            match i % 3 {
                0 => assert_eq!(r.unwrap().expect("exists").path, path),
                1 => assert!(r.unwrap().is_none(), "{path} should be missing"),
                _ => assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidPath, "{path}"),
            }
        }
    })
    .await;
}

/// An exclusive mkdir is one operation: it makes the directory with its owner, group, mode
/// and attributes only if nothing is at the path; otherwise it is refused and the existing
/// entry keeps its owner, group, mode, attributes and id. The refusal tells a directory of
/// the asked-for owner (`AlreadyOwned`) from anything else (`AlreadyExists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_mkdir_refuses_an_existing_path_and_changes_nothing() {
    use tarn_client::MkdirOptions;
    with_cluster(|c| async move {
        let opts = |owner: &str, tag: &[u8]| MkdirOptions {
            mode: 0o750,
            owner: Some(owner.into()),
            group: Some("analysts".into()),
            xattrs: BTreeMap::from([("s3.bucket".into(), tag.to_vec())]),
            require_dir: None,
        };
        let made = c.mkdir_exclusive("/b/deep/dir", &opts("alice", b"first")).await.unwrap();
        assert_eq!((made.owner.as_str(), made.group.as_str(), made.mode & 0o7777), ("alice", "analysts", 0o750));
        let made = c.get_file_info("/b/deep/dir", true).await.unwrap().unwrap();
        assert_eq!(made.xattrs.get("s3.bucket").map(Vec::as_slice), Some(&b"first"[..]));
        // Missing directories above it were made for the same owner.
        let above = c.get_file_info("/b/deep", false).await.unwrap().unwrap();
        assert_eq!((above.owner.as_str(), above.mode & 0o7777), ("alice", 0o755));

        let e = c.mkdir_exclusive("/b/deep/dir", &opts("bob", b"second")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        let e = c.mkdir_exclusive("/b/deep/dir", &opts("alice", b"third")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyOwned, "{e}");
        let now = c.get_file_info("/b/deep/dir", true).await.unwrap().unwrap();
        assert_eq!((now.owner.as_str(), now.group.as_str(), now.mode & 0o7777), ("alice", "analysts", 0o750));
        assert_eq!(now.xattrs, made.xattrs);
        assert_eq!((now.file_id, now.mtime_ms), (made.file_id, made.mtime_ms));

        // A file in the way, whoever owns it, is AlreadyExists and stays a file.
        let f = touch(&c, "/b/file").await;
        let e = c.mkdir_exclusive("/b/file", &opts("tester", b"x")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        let st = c.get_file_info("/b/file", true).await.unwrap().unwrap();
        assert!(!st.is_dir() && st.file_id == f && st.xattrs.is_empty(), "{st:?}");
        // Under a file: not a directory; the root: exists.
        let e = c.mkdir_exclusive("/b/file/sub", &MkdirOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory, "{e}");
        let e = c.mkdir_exclusive("/", &MkdirOptions::default()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

        // `require_dir`: only while that directory exists, and then nothing is made.
        let req = |d: &str| MkdirOptions { require_dir: Some(d.into()), ..Default::default() };
        let e = c.mkdir_exclusive("/gone/x/y", &req("/gone")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(c.get_file_info("/gone", false).await.unwrap().is_none(), "require_dir made its directory");
        c.mkdir_exclusive("/b/x/y", &req("/b")).await.unwrap();

        // Bad input: precise errors, nothing made.
        let bad_owner = MkdirOptions { owner: Some("no body".into()), ..Default::default() };
        let e = c.mkdir_exclusive("/bad", &bad_owner).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let huge = BTreeMap::from([("k".to_string(), vec![0u8; 70 * 1024])]);
        let e = c.mkdir_exclusive("/bad", &MkdirOptions { xattrs: huge, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(c.get_file_info("/bad", false).await.unwrap().is_none());
        // Plain mkdirs still succeeds on an existing directory, and changes nothing in it.
        let again = c.mkdirs("/b/deep/dir").await.unwrap();
        assert_eq!((again.owner.as_str(), again.file_id), ("alice", made.file_id));
    })
    .await;
}
