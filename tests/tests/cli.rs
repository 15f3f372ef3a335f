//! The `tarn` command line against a running namenode: output, messages and exit codes.

use std::process::{Command, Output};

use tarn_tests::{tarn_bin, Cluster};

fn tarn(addr: &str, args: &[&str]) -> Output {
    Command::new(tarn_bin())
        .args(args)
        .env("TARN_NAMENODE", addr)
        .env("TARN_CONFIG", tarn_tests::admin_config())
        .output()
        .expect("run tarn")
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
    assert!(run(vec!["fs", "chmod", "750", "/a/b"]).await.status.success());
    assert!(run(vec!["fs", "chown", "alice:staff", "/a/b"]).await.status.success());
    let o = run(vec!["fs", "ls", "/a"]).await;
    assert!(
        text(&o).contains("drwxr-x---") && text(&o).contains("alice") && text(&o).contains("staff"),
        "{}",
        text(&o)
    );
    // Groups: kept by the admin; chgrp gives a file to one.
    let o = run(vec!["admin", "groups", "add", "analysts", "alice", "bob"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(vec!["admin", "groups", "list", "--user", "bob"]).await;
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "analysts: alice bob", "{}", text(&o));
    assert!(run(vec!["fs", "chgrp", "analysts", "/a/b/f.parquet"]).await.status.success());
    assert!(run(vec!["fs", "chmod", "1777", "/a"]).await.status.success());
    let o = run(vec!["fs", "ls", "/a/b"]).await;
    assert!(text(&o).contains("analysts"), "{}", text(&o));
    let o = run(vec!["fs", "ls", "/"]).await;
    assert!(text(&o).contains("drwxrwxrwt"), "the sticky bit shows as t: {}", text(&o));
    let o = run(vec!["admin", "groups", "add", "bad group", "alice"]).await;
    assert!(o.status.code() == Some(1) && text(&o).contains("group name"), "{}", text(&o));
    let o = run(vec!["fs", "chmod", "9x", "/a/b"]).await;
    assert!(o.status.code() == Some(1) && text(&o).contains("octal"), "{}", text(&o));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_cat_report_and_fsck() {
    let mut cluster = Cluster::start(1, tarn_tests::block_tuning).await;
    let addr = cluster.addrs[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("in");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(local.join("big.bin"), &big).unwrap();
    std::fs::write(local.join("sub/small.txt"), b"hello tarn\n").unwrap();
    std::fs::write(local.join("sub/empty"), b"").unwrap();
    let run = move |args: Vec<String>| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || tarn(&addr, &args.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .unwrap()
        }
    };
    let arg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let local_s = local.to_str().unwrap().to_string();
    // No datanode yet: a clear error and nothing left behind.
    let o = run(arg(&["fs", "put", &format!("{local_s}/sub/small.txt"), "/x.txt"])).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no datanode can take a new block"), "{}", text(&o));
    assert!(!run(arg(&["fs", "stat", "/x.txt"])).await.status.success(), "the partial file was removed");

    cluster.start_datanodes(3).await;
    let o = run(arg(&["fs", "put", &local_s, "/up"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(arg(&["fs", "cat", "/up/sub/small.txt"])).await;
    assert_eq!(o.stdout, b"hello tarn\n", "{}", text(&o));
    let o = run(arg(&["fs", "put", &format!("{local_s}/big.bin"), "/up/big.bin"])).await;
    assert_eq!(o.status.code(), Some(1), "put onto an existing file without -f");
    let back = dir.path().join("back");
    let o = run(arg(&["fs", "get", "/up", back.to_str().unwrap()])).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(back.join("sub/empty")).unwrap(), b"");
    tarn_tests::wait_healthy(&cluster.client(), "/up", std::time::Duration::from_secs(30)).await;
    let o = run(arg(&["admin", "fsck", "/up"])).await;
    assert!(o.status.success() && text(&o).contains("Status: HEALTHY"), "{}", text(&o));
    assert!(text(&o).contains("files: 3"), "{}", text(&o));
    // cp within the cluster, du.
    let o = run(arg(&["fs", "cp", "/up", "/copy"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = run(arg(&["fs", "cat", "/copy/sub/small.txt"])).await;
    assert_eq!(o.stdout, b"hello tarn\n", "{}", text(&o));
    let o = run(arg(&["fs", "cp", "/up/big.bin", "/copy/big.bin"])).await;
    assert_eq!(o.status.code(), Some(1), "cp onto an existing file without -f: {}", text(&o));
    let o = run(arg(&["fs", "du", "-s", "/copy"])).await;
    assert!(o.status.success(), "{}", text(&o));
    let want = format!("{}", 3_000_000 + 11);
    assert!(text(&o).split_whitespace().next() == Some(want.as_str()), "{}", text(&o));
    let o = run(arg(&["fs", "ls", "/copy"])).await;
    assert!(!text(&o).contains("tarn-copying"), "no temporary file is left: {}", text(&o));
    let o = run(arg(&["admin", "report"])).await;
    assert!(o.status.success() && text(&o).contains("datanodes: 3 live, 0 dead"), "{}", text(&o));
    assert!(text(&o).contains("under-replicated 0, missing 0"), "{}", text(&o));
    cluster.shutdown().await;
}

/// `tarn init --host-dir --racks`, then `--extend` (deploy/ssh's `add`): paths in the
/// files are the hosts', new hosts get the next numbers and their own certificates, and
/// nothing that was there changes; masters cannot change this way.
#[test]
fn init_extends_a_directory_keeping_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let conf_s = conf.to_str().unwrap();
    let init = |more: &[&str]| {
        let o = Command::new(tarn_bin())
            .args(["init", "--dir", conf_s, "--host-dir", "/etc/tarn", "--namenodes", "m1:8020"])
            .args(["--resource-managers", "m1", "--connect", "m1"])
            .args(more)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, out) = init(&["--datanodes", "c1,c2", "--workers", "c1,c2", "--racks", "c1=/r1,c2=/r2"]);
    assert_eq!(code, Some(0), "{out}");
    let read = |f: &str| std::fs::read_to_string(conf.join(f)).unwrap();
    let dn2 = read("datanode-2.toml");
    assert!(dn2.contains("rack = \"/r2\"") && dn2.contains("\"/etc/tarn/tls/datanode-dn2.pem\""), "{dn2}");
    assert!(read("worker-1.toml").contains("rack = \"/r1\""));
    assert!(!dn2.contains(conf_s), "no path of the operator's machine in a host's file: {dn2}");
    let before: Vec<(String, String)> = [
        "namenode-1.toml",
        "datanode-1.toml",
        "datanode-2.toml",
        "worker-2.toml",
        "admin.toml",
        "tls/datanode-dn1.pem",
    ]
    .iter()
    .map(|f| (f.to_string(), read(f)))
    .collect();

    let (code, out) = init(&["--datanodes", "c1,c2,c3", "--workers", "c1,c2,c3", "--task-workers", "t1", "--extend"]);
    assert_eq!(code, Some(0), "{out}");
    for (f, text) in &before {
        assert_eq!(&read(f), text, "{f} changed");
    }
    let hosts = read("hosts.txt");
    for line in
        ["c3 datanode-3.toml", "c3 worker-3.toml", "t1 worker-4.toml", "c1 datanode-1.toml", "m1 namenode-1.toml"]
    {
        assert!(hosts.lines().any(|l| l == line), "{line} in {hosts}");
    }
    assert!(read("worker-4.toml").contains("label = \"task\""));
    assert!(conf.join("tls/datanode-dn3.pem").exists());

    let (code, out) = init(&["--datanodes", "c1", "--racks", "c9=/r1", "--extend"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("c9 is not one of"), "{out}");
    let o = Command::new(tarn_bin())
        .args(["init", "--dir", conf_s, "--namenodes", "m1:8020,m2:8020,m3:8020", "--extend"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("namenode hosts must stay"), "{}", text(&o));
    let empty = dir.path().join("empty");
    let o = Command::new(tarn_bin()).args(["init", "--dir", empty.to_str().unwrap(), "--extend"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("make the directory with tarn init first"), "{}", text(&o));
}

#[test]
fn init_writes_one_config_and_certificate_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let conf_s = conf.to_str().unwrap();
    let nodes = "10.0.0.1:8020,10.0.0.2:8020,10.0.0.3:8020";
    let init = ["init", "--dir", conf_s, "--namenodes", nodes, "--datanodes", "dn1.example,dn2.example"];
    let o = Command::new(tarn_bin())
        .args(init)
        .args(["--gateways", "s3.example", "--connect", "10.0.0.1,10.0.0.2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("export SPARK_REMOTE=\"sc://10.0.0.1:15002/;use_ssl=true;token="), "{}", text(&o));
    // One certificate per node from one CA; private keys readable by their owner only.
    let load = |file: &str| -> tarn_security::TlsPaths {
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(conf.join(file)).unwrap()).unwrap();
        v["security"]["tls"].clone().try_into().unwrap()
    };
    let expect = [
        ("namenode-2.toml", "namenode 2"),
        ("datanode-2.toml", "datanode dn2"),
        ("gateway-1.toml", "gateway gw1"),
        ("connect-2.toml", "gateway connect2"),
        ("admin.toml", "admin admin"),
    ];
    for (file, who) in expect {
        let paths = load(file);
        assert_eq!(paths.ca, conf.canonicalize().unwrap().join("tls/ca.pem"), "{file}");
        let t = tarn_client::Transport::tls(&paths).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(t.identity().unwrap().to_string(), who);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
    }
    let master = conf.join("keys/master.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o777, 0o600);
    // More nodes later: a certificate from the same CA.
    let out = dir.path().join("w1");
    let o = Command::new(tarn_bin())
        .args(["admin", "issue-cert", "--role", "worker", "--name", "w1", "--host", "w1.example", "--ca-dir"])
        .arg(conf.join("tls"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let paths = tarn_security::TlsPaths {
        ca: conf.join("tls/ca.pem"),
        cert: out.join("worker-w1.pem"),
        key: out.join("worker-w1-key.pem"),
        container_ca: None,
    };
    assert_eq!(tarn_client::Transport::tls(&paths).unwrap().identity().unwrap().to_string(), "worker w1");
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
    // Each master's endpoint: served on 15002 with its own certificate, the same token.
    let connect = |i: usize| -> toml::Value {
        let v: toml::Value =
            toml::from_str(&std::fs::read_to_string(conf.join(format!("connect-{i}.toml"))).unwrap()).unwrap();
        v["connect"].clone()
    };
    let (c1, c2) = (connect(1), connect(2));
    assert_eq!(c1["listen"].as_str(), Some("0.0.0.0:15002"));
    assert_eq!(c1["namenodes"].as_array().unwrap().len(), 3);
    assert_ne!(c1["tls"]["cert"], c2["tls"]["cert"]);
    assert_eq!(c1["access_keys"], c2["access_keys"]);
    assert!(c1.get("insecure_dev").and_then(|v| v.as_bool()) != Some(true));
    // A second run refuses to overwrite without --force.
    let o = Command::new(tarn_bin()).args(init).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--force"), "{}", text(&o));
}

/// `tarn ... | head`: a reader that stops reading (or never starts) must not make `tarn`
/// panic ("failed printing to stdout: Broken pipe" and a backtrace). Every command ends
/// quietly with status 0, whatever it was printing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_every_command_quietly() {
    use std::io::BufRead as _;
    let cluster = Cluster::start(1, |_| {}).await;
    let addr = cluster.addrs[0].clone();
    let c = cluster.client();
    // Over 300 KB of `ls -R` output: far more than a pipe holds, so `tarn` is still writing
    // when the reader goes.
    let long = "x".repeat(240);
    let made = futures::future::join_all((0..1000).map(|i| {
        let (c, p) = (&c, format!("/many/{i:04}-{long}"));
        async move { c.mkdirs(&p).await }
    }))
    .await;
    assert!(made.iter().all(|r| r.is_ok()), "{:?}", made.iter().find(|r| r.is_err()));
    let o = tarn_client::ConcatOptions { create_parent: true, ..Default::default() };
    c.put_small("/small/f", bytes::Bytes::from(vec![b'z'; 60_000]), 1, &o).await.unwrap();

    let quiet = |what: &str, status: std::process::ExitStatus, stderr: &[u8]| {
        let err = String::from_utf8_lossy(stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("backtrace"),
            "{what}: {err}"
        );
        assert!(err.trim().is_empty(), "{what} wrote to stderr: {err}");
        assert_eq!(status.code(), Some(0), "{what}: {status}, {err}");
    };
    let addr2 = addr.clone();
    tokio::task::spawn_blocking(move || {
        let tarn = |args: &[&str]| {
            let mut cmd = Command::new(tarn_bin());
            cmd.args(args)
                .env("TARN_NAMENODE", &addr2)
                .env("TARN_CONFIG", tarn_tests::admin_config())
                .env("RUST_BACKTRACE", "1");
            cmd
        };
        // Like `| head -1`: one line read, then the reader is gone.
        let mut child = tarn(&["fs", "ls", "-R", "/"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("drwx"), "a directory's line: {first}");
        let o = child.wait_with_output().unwrap();
        quiet("ls -R | head -1", o.status, &o.stderr);
        // A reader gone before anything was written: every kind of output (lines,
        // tables, a file's bytes) hits the closed pipe.
        let commands: [&[&str]; 6] = [
            &["fs", "ls", "-R", "/"],
            &["fs", "stat", "/small/f"],
            &["fs", "cat", "/small/f"],
            &["admin", "report"],
            &["admin", "fsck", "/", "-v"],
            &["admin", "status"],
        ];
        for args in commands {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let o = tarn(args).stdout(writer).output().unwrap();
            quiet(&args.join(" "), o.status, &o.stderr);
        }
    })
    .await
    .unwrap();
    // Output to a reader that stays is whole.
    let o = tokio::task::spawn_blocking(move || tarn(&addr, &["fs", "ls", "/many"])).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1001, "{}", text(&o));
    cluster.shutdown().await;
}

/// Runs `tarn demo --data-dir DATA ARGS` with `env`, within ten minutes; (stdout, stderr)
/// (fails the test unless it exits 0).
async fn demo(data: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> (String, String) {
    let mut cmd = tokio::process::Command::new(tarn_bin());
    cmd.arg("demo").arg("--data-dir").arg(data).args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = tokio::time::timeout(std::time::Duration::from_secs(600), cmd.output())
        .await
        .expect("tarn demo within 10 minutes")
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    assert!(o.status.success(), "tarn demo {args:?} failed:\n{out}\n{err}");
    (out, err)
}

/// The summary's lines from its first table to the agreement of PySpark and SQL.
fn results(summary: &str) -> Vec<String> {
    summary
        .lines()
        .skip_while(|l| !l.starts_with("Top customers"))
        .take_while(|l| !l.starts_with("Results"))
        .map(str::to_string)
        .collect()
}

/// `tarn demo` on a fresh directory, twice. The first run starts the appliance, uploads
/// the shop's month through S3, runs the seed's script verbatim and the analyses as
/// PySpark and as a SQL job (it fails if the two disagree), sums up and stops the
/// appliance: its top customers are the ones DataFusion finds in the files it generated.
/// The second run finds a `tarn up` already serving the directory (given its endpoints,
/// as a remote cluster's), clears the first run's outputs and says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_seed_pipeline_and_runs_again() {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (data, local) = (dir.path().join("data"), dir.path().join("local"));
    let py = tarn_tests::venv_bin("python").display().to_string();
    let args = ["--size-mb", "1", "--seed", "7", "--executors", "1", "--python", &py];
    let local_arg = local.display().to_string();
    let (first, err) =
        demo(&data, &[&args[..], &["--listen", "127.0.0.1:0", "--write-local", &local_arg]].concat(), &[]).await;
    for step in ["[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]", "stopping the appliance"] {
        assert!(err.contains(step), "progress {step}: {err}");
    }
    let summary = results(&first);
    assert!(
        first.contains("PySpark and the SQL job agree on cart_abandonment (")
            && first.contains("customer_lifetime_value (")
            && first.contains("also_bought ("),
        "{first}"
    );

    // The top customers, as DataFusion sums the generated purchases.
    let ctx = SessionContext::new();
    let purchases = local.join("customer-data");
    ctx.register_parquet("p", purchases.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let want = ctx
        .sql("SELECT customer_id, sum(purchase_amount) AS t FROM p GROUP BY customer_id ORDER BY t DESC, customer_id LIMIT 5")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let want = datafusion::arrow::util::pretty::pretty_format_batches(&want).unwrap().to_string();
    let want: Vec<(String, String)> = want
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("customer_id"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect();
    let got: Vec<(String, String)> = summary
        .iter()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("| ") && !l.contains("customer_id"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[4].to_string())
        })
        .collect();
    assert_eq!(got.len(), 5, "{first}");
    assert_eq!(got, want, "the seed script's top customers are DataFusion's: {first}");

    // Again, on the appliance serving the same directory.
    let mut up = tokio::process::Command::new(tarn_bin());
    up.args(["up", "--data-dir"]).arg(&data).kill_on_drop(true).stdout(std::process::Stdio::piped());
    for flag in ["--listen", "--s3-listen", "--rm-listen", "--connect-listen"] {
        up.args([flag, "127.0.0.1:0"]);
    }
    let mut up = up.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let mut banner = std::collections::BTreeMap::new();
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("Stop with Ctrl-C") {
                break;
            }
            if let Some((k, v)) = l.trim().split_once(':') {
                banner.insert(k.trim().to_string(), v.trim().to_string());
            }
            if let Some(v) = l.split("export ").nth(1).and_then(|v| v.split_once('=')) {
                banner.insert(v.0.to_string(), v.1.trim_matches('"').to_string());
            }
        }
    })
    .await
    .expect("tarn up serves within 2 minutes");
    let env = [
        ("AWS_ACCESS_KEY_ID", banner["S3 access key"].clone()),
        ("AWS_SECRET_ACCESS_KEY", banner["S3 secret key"].clone()),
        ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", banner["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"].clone()),
    ];
    let s3 = banner["S3 endpoint"].clone();
    let remote = banner["SPARK_REMOTE"].clone();
    let (second, err) =
        demo(&data, &[&args[..], &["--s3-endpoint", &s3, "--spark-remote", &remote]].concat(), &env).await;
    assert!(err.contains("using the cluster of") && !err.contains("stopping the appliance"), "{err}");
    assert_eq!(results(&second), summary, "the same data, the same results:\n{second}");
    up.kill().await.unwrap();
}

/// deploy/systemd's units pass `systemd-analyze verify` (no unknown or misplaced key, the
/// program they start exists), keep the hardening and restart policy they promise, and
/// start commands `tarn` takes: each role, given a configuration that is not there, fails
/// reading it (exit 1, naming the file), not on its arguments (exit 2).
#[test]
fn the_systemd_units_verify_and_start_real_commands() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = tarn_bin().display().to_string();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "service") {
            units.push(p);
        }
    }
    units.sort();
    let roles = ["connect", "datanode", "gateway", "namenode", "resource-manager", "worker"];
    let names: Vec<String> = units.iter().map(|u| u.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let want: Vec<String> = roles.iter().map(|r| format!("tarn-{r}@.service")).collect();
    assert_eq!(names, want, "a unit (template) per role: instance N runs the host's ROLE-N.toml");
    let mut copies = Vec::new();
    for (u, role) in units.iter().zip(roles) {
        let unit = std::fs::read_to_string(u).unwrap();
        let home = if role == "worker" { "ProtectHome=read-only" } else { "ProtectHome=yes" };
        let state = format!("StateDirectory=tarn/{role}");
        for key in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            home,
            &state,
            "PrivateTmp=yes",
            "Restart=on-failure",
            "StandardError=journal",
        ] {
            assert!(unit.lines().any(|l| l == key), "{role}: {key}");
        }
        assert!(unit.contains(&format!("SyslogIdentifier=tarn-{role}-%i\n")), "{role}: its log name");
        assert!(unit.contains(&format!(" --config /etc/tarn/{role}-%i.toml\n")), "{role}: init's file name");
        let user = if role == "worker" { "User=root" } else { "User=tarn" };
        assert!(unit.lines().any(|l| l == user), "{role}: {user}");
        let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/local/bin/tarn");
        // The command line with the configuration swapped for one that is not there.
        let missing = dir.path().join(format!("{role}-missing.toml"));
        let args: Vec<String> = args[1..]
            .iter()
            .map(|a| if a.starts_with("/etc/tarn/") { missing.display().to_string() } else { a.to_string() })
            .collect();
        let o = Command::new(tarn_bin()).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{role}: tarn {args:?}: {}", text(&o));
        assert!(text(&o).contains(&missing.display().to_string()), "{role}: names the file: {}", text(&o));
        let copy = dir.path().join(u.file_name().unwrap());
        std::fs::write(&copy, unit.replace("/usr/local/bin/tarn", &bin)).unwrap();
        copies.push(copy);
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze (scripts/setup installs systemd)");
    assert!(o.status.success() && o.stderr.is_empty(), "systemd-analyze verify: {}", text(&o));
}
