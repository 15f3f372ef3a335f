//! The `tarn` command line against a running namenode: output, messages and exit codes.

use std::process::{Command, Output};

use tarn_tests::{tarn_bin, Cluster};

fn tarn(addr: &str, args: &[&str]) -> Output {
    Command::new(tarn_bin()).args(args).env("TARN_NAMENODE", addr).output().expect("run tarn")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_and_admin_commands() {
    let cluster = Cluster::start(1, |_| {}).await;
    let addr = cluster.addrs[0].clone();
    let run = move |args: Vec<&'static str>| {
        let addr = addr.clone();
        async move { tokio::task::spawn_blocking(move || tarn(&addr, &args)).await.unwrap() }
    };
    let o = run(vec!["fs", "mkdir", "/a/b"]).await;
    assert_eq!(o.status.code(), Some(1), "mkdir without -p and no parent: {}", text(&o));
    assert!(text(&o).contains("use -p"), "{}", text(&o));
    assert!(run(vec!["fs", "mkdir", "-p", "/a/b"]).await.status.success());
    assert!(run(vec!["fs", "touch", "/a/b/f.parquet"]).await.status.success());
    let o = run(vec!["fs", "ls", "-R", "/a"]).await;
    assert!(o.status.success());
    assert!(text(&o).contains("/a/b/f.parquet"), "{}", text(&o));
    let o = run(vec!["fs", "rm", "/a"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not empty"), "{}", text(&o));
    assert!(run(vec!["fs", "mv", "/a/b/f.parquet", "/a"]).await.status.success());
    let o = run(vec!["fs", "stat", "/a/f.parquet"]).await;
    assert!(text(&o).contains("type:        file"), "{}", text(&o));
    let o = run(vec!["fs", "stat", "/nope"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("/nope: no such file or directory"), "{}", text(&o));
    let o = run(vec!["fs", "ls", "relative"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("must be absolute"), "{}", text(&o));
    let o = run(vec!["admin", "set-quota", "/a", "--namespace", "10"]).await;
    assert!(text(&o).contains("namespace quota 10 (used 3), space quota none"), "{}", text(&o));
    let o = run(vec!["admin", "status"]).await;
    assert!(o.status.success() && text(&o).contains("voter"), "{}", text(&o));
    let o = run(vec!["fs", "frobnicate"]).await;
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
    cluster.shutdown().await;
}

#[test]
fn init_writes_one_config_per_namenode() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let conf_s = conf.to_str().unwrap();
    let nodes = "10.0.0.1:8020,10.0.0.2:8020,10.0.0.3:8020";
    let o = Command::new(tarn_bin()).args(["init", "--dir", conf_s, "--namenodes", nodes]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for id in 1..=3 {
        let t = std::fs::read_to_string(conf.join(format!("namenode-{id}.toml"))).unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        let nn = &v["namenode"];
        assert_eq!(nn["node_id"].as_integer(), Some(id));
        assert_eq!(nn["advertise"].as_str(), Some(format!("10.0.0.{id}:8020").as_str()));
        let members: Vec<&str> =
            nn["initial_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert_eq!(members, ["1@10.0.0.1:8020", "2@10.0.0.2:8020", "3@10.0.0.3:8020"]);
    }
    // A second run refuses to overwrite without --force.
    let o = Command::new(tarn_bin()).args(["init", "--dir", conf_s, "--namenodes", nodes]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--force"), "{}", text(&o));
}
