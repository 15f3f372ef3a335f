//! `deploy/ssh/tarn-cluster` over bare hosts (containers with a shell and no tarn, reached
//! through its docker transport as it reaches real hosts through ssh): it lays out the
//! cluster, installs and starts it, adds a core node, removes one (decommissioned first),
//! and upgrades every host in turn while a client on a master keeps writing and reading
//! files; nothing the client was told was written is lost, no request fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarn_tests::hosts::HostBed;
use tokio::io::AsyncBufReadExt;

/// The client: files of ~330 KB (through the datanodes, not kept in the namespace), each
/// put and read back, until /tmp/stop-load exists. One line per file: `ok N` or `FAIL ...`.
const LOAD: &str = r#"
export TARN_CONFIG=/etc/tarn/admin.toml
tarn fs mkdir -p /load || { echo "FAIL mkdir"; exit 1; }
i=0
while [ ! -e /tmp/stop-load ]; do
  i=$((i + 1))
  seq "$i" 3 $((i * 3 + 150000)) >/tmp/load-in
  if out=$(tarn fs put /tmp/load-in "/load/f$i" 2>&1); then
    if tarn fs cat "/load/f$i" 2>/tmp/load-err | cmp -s - /tmp/load-in; then
      echo "ok $i"
    else
      echo "FAIL read $i: $(cat /tmp/load-err)"
    fi
  else
    echo "FAIL write $i: $out"
  fi
done
echo "done $i"
"#;

/// Reads every file the client wrote back again (its first argument: how many), in one
/// `tarn fs get`.
const VERIFY: &str = r#"
export TARN_CONFIG=/etc/tarn/admin.toml
n=$1; i=1; bad=0
rm -rf /tmp/got && mkdir /tmp/got && tarn fs get /load /tmp/got || exit 1
d=/tmp/got/load; [ -d $d ] || d=/tmp/got
while [ "$i" -le "$n" ]; do
  seq "$i" 3 $((i * 3 + 150000)) >/tmp/verify-in
  cmp -s "$d/f$i" /tmp/verify-in || { echo "differs: /load/f$i"; bad=$((bad + 1)); }
  i=$((i + 1))
done
echo "verified $n, $bad differ"
"#;

const STEP: Duration = Duration::from_secs(300);

/// The processes of a host's roles, from their pid files (each one alive).
async fn pids(bed: &HostBed, host: &str) -> Vec<String> {
    let script = "for p in /var/lib/tarn/run/*.pid; do pid=$(cat $p); kill -0 $pid && echo $pid; done";
    let o = bed.sh(host, script, Duration::from_secs(30)).await;
    assert!(o.ok(), "{host}: {}", o.stderr);
    o.text().split_whitespace().map(str::to_string).collect()
}

fn oks(lines: &Mutex<Vec<String>>) -> usize {
    lines.lock().unwrap().iter().filter(|l| l.starts_with("ok ")).count()
}

/// Waits (bounded) until the client has written `n` more files than `from`.
async fn client_progress(lines: &Mutex<Vec<String>>, from: usize, n: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while oks(lines) < from + n {
        assert!(Instant::now() < deadline, "the client wrote no {n} files {when}: {:?}", lines.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_script_installs_grows_shrinks_and_upgrades_a_cluster_under_load() {
    let mut bed = HostBed::start().await;
    // Two releases, without debug info (what is copied to each host). By default the tarn
    // beside the tests and the same with a byte appended: another file, another release
    // id, the same program (an ELF's trailing bytes are not loaded). TARN_UPGRADE_FROM=OLD
    // makes it an upgrade from an older build to this one (README, "Upgrading").
    let r1 = bed.dir().join("tarn-r1");
    let r2 = bed.dir().join("tarn-r2");
    let strip = |from: &std::path::Path, to: &std::path::Path| {
        let o = std::process::Command::new("objcopy").arg("--strip-debug").arg(from).arg(to).output().expect("objcopy");
        assert!(o.status.success(), "objcopy {}: {}", from.display(), String::from_utf8_lossy(&o.stderr));
    };
    match std::env::var_os("TARN_UPGRADE_FROM") {
        Some(old) => {
            strip(std::path::Path::new(&old), &r1);
            strip(&tarn_tests::tarn_bin(), &r2);
        }
        None => {
            strip(&tarn_tests::tarn_bin(), &r1);
            let mut bytes = std::fs::read(&r1).unwrap();
            bytes.push(0);
            std::fs::write(&r2, bytes).unwrap();
            std::fs::set_permissions(&r2, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
    }
    bed.set_binary(&r1);

    let line = |h: &str, role: &str, rack: &str| format!("{h} {role} {rack} {}\n", bed.container(h));
    let inventory = [
        "# the test bed: masters, core nodes on two racks, a task node, a gateway\n".to_string(),
        line("m1", "master", "-"),
        line("m2", "master", "-"),
        line("m3", "master", "-"),
        line("c1", "core", "/r1"),
        line("c2", "core", "/r2"),
        line("c3", "core", "/r2"),
        line("t1", "task", "-"),
        line("gw", "gateway", "-"),
    ]
    .concat();
    std::fs::write(bed.dir().join("inventory"), inventory).unwrap();

    let t0 = Instant::now();
    let o = bed.deploy(&["up"], STEP).await;
    assert!(o.ok(), "up failed");
    assert!(o.text().contains("healthy"), "up ends healthy: {}", o.text());
    let up_time = t0.elapsed();
    // Nothing was there before: the script put the binary on every host.
    let o = bed.sh("c2", "readlink /usr/local/bin/tarn && ls /etc/tarn", Duration::from_secs(30)).await;
    assert!(o.ok() && o.text().contains("/opt/tarn/releases/"), "{}{}", o.text(), o.stderr);
    assert!(o.text().contains("datanode-2.toml") && o.text().contains("worker-2.toml"), "{}", o.text());
    let o = bed
        .sh("c2", "test ! -e /etc/tarn/tls/ca-key.pem && test ! -e /etc/tarn/admin.toml", Duration::from_secs(30))
        .await;
    assert!(o.ok(), "the CA key and the admin's certificate stay off core nodes");
    let o = bed.sh("t1", "test ! -e /etc/tarn/keys/master.key && ls /etc/tarn", Duration::from_secs(30)).await;
    assert!(o.ok(), "a task node does not get the master key: {}", o.text());

    // The client, on a master, for the rest of the test.
    let mut load = bed.spawn_sh("m1", LOAD);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        let mut out = tokio::io::BufReader::new(load.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                lines.lock().unwrap().push(l);
            }
        })
    };
    client_progress(&lines, 0, 2, "after up").await;

    // A core node joins: files and a certificate of its own, on rack /r1.
    let o = bed.deploy(&["add", "c4", "core", "/r1", bed.container("c4")], STEP).await;
    assert!(o.ok(), "add failed");
    let report = bed.deploy(&["admin", "admin", "report"], Duration::from_secs(60)).await;
    assert!(report.ok());
    let c4 = report.text().lines().find(|l| l.contains("c4:9866")).map(str::to_string);
    assert!(
        c4.as_deref().is_some_and(|l| l.contains("/r1") && l.contains("live")),
        "c4 joined on /r1: {}",
        report.text()
    );
    let n = oks(&lines);
    client_progress(&lines, n, 1, "after add").await;

    // A core node leaves: its datanode decommissioned (replicas copied) before it stops.
    let o = bed.deploy(&["remove", "c1"], STEP).await;
    assert!(o.ok(), "remove failed");
    let report = bed.deploy(&["admin", "admin", "report"], Duration::from_secs(60)).await;
    // Decommissioned before it stopped (dead, once 30 s have passed without it).
    let c1 = report.text().lines().find(|l| l.contains("c1:9866")).map(str::to_string);
    assert!(
        c1.as_deref().is_some_and(|l| l.contains("decommissioned") || l.contains(" dead ")),
        "c1 decommissioned: {}",
        report.text()
    );
    // Health fails, saying why, when the cluster is not what it is asked to be.
    let o = bed.deploy(&["admin", "admin", "health", "--datanodes", "4"], Duration::from_secs(60)).await;
    assert_eq!(o.code, Some(1), "{}", o.text());
    assert!(o.text().contains("unhealthy: datanodes: 3 live in service, 4 wanted"), "{}", o.text());
    assert!(!std::fs::read_to_string(bed.dir().join("inventory")).unwrap().contains("\nc1 "), "c1 left the inventory");
    let n = oks(&lines);
    client_progress(&lines, n, 1, "after remove").await;

    // A rolling upgrade to release 2, the client writing all along.
    let mut pids_before = std::collections::HashMap::new();
    for h in ["m1", "m2", "m3", "c2", "c3", "c4", "t1", "gw"] {
        pids_before.insert(h, pids(&bed, h).await);
    }
    let t1 = Instant::now();
    // Each worker drained first (health after each host would fail on one left draining),
    // the finalize left to the operator.
    let o = bed
        .deploy(&["upgrade", "--drain", "20", "--no-finalize", r2.to_str().unwrap()], Duration::from_secs(600))
        .await;
    assert!(o.ok(), "upgrade failed");
    let upgrade_time = t1.elapsed();
    assert!(o.stderr.contains("drain the worker on c2") && o.stderr.contains("not finalized"), "{}", o.stderr);
    let o = bed.deploy(&["admin", "admin", "finalize-upgrade"], Duration::from_secs(60)).await;
    assert!(o.ok(), "finalize-upgrade: {}", o.text());
    let o = bed.deploy(&["upgrade", "--drain", "x", r2.to_str().unwrap()], Duration::from_secs(60)).await;
    assert!(o.code == Some(1) && o.stderr.contains("a number of seconds"), "{}", o.stderr);
    let r2_id = {
        let o = std::process::Command::new("sha256sum").arg(&r2).output().expect("sha256sum");
        String::from_utf8_lossy(&o.stdout)[..16].to_string()
    };
    // Every host's link names the new release and every role is a new process, started
    // after the switch (root in a container may not read another user's /proc/PID/exe).
    for h in ["m1", "m2", "m3", "c2", "c3", "c4", "t1", "gw"] {
        let o = bed.sh(h, "readlink /usr/local/bin/tarn", Duration::from_secs(30)).await;
        assert!(o.text().contains(&r2_id), "{h} runs release {r2_id}: {}", o.text());
        let now = pids(&bed, h).await;
        let old = &pids_before[h];
        assert!(!now.is_empty() && now.iter().all(|p| !old.contains(p)), "{h}: roles {old:?} before, {now:?} after");
    }
    let n = oks(&lines);
    client_progress(&lines, n, 1, "after the upgrade").await;

    // The client stops; every request it made succeeded, every file reads back.
    let o = bed.sh("m1", "touch /tmp/stop-load", Duration::from_secs(30)).await;
    assert!(o.ok());
    let status = tokio::time::timeout(Duration::from_secs(120), load.wait()).await.expect("the client stops").unwrap();
    reader.await.unwrap();
    let lines = lines.lock().unwrap().clone();
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(status.success() && failed.is_empty(), "client failures: {failed:?}");
    let written = lines.iter().filter(|l| l.starts_with("ok ")).count();
    let o = bed.sh("m1", &format!("set -- {written}; {VERIFY}"), Duration::from_secs(300)).await;
    assert!(o.text().contains(&format!("verified {written}, 0 differ")), "{}{}", o.text(), o.stderr);
    let fsck = bed.deploy(&["admin", "admin", "fsck", "/"], Duration::from_secs(60)).await;
    assert!(fsck.text().contains("Status: HEALTHY"), "{}", fsck.text());

    let o = bed.deploy(&["stop"], STEP).await;
    assert!(o.ok(), "stop failed");
    for h in ["m1", "c2", "t1", "gw"] {
        let o = bed.sh(h, "ls /var/lib/tarn/run/", Duration::from_secs(30)).await;
        assert!(o.ok() && o.text().trim().is_empty(), "{h}: roles still recorded running: {}", o.text());
    }
    eprintln!(
        "deploy: up in {up_time:.1?}, rolling upgrade of 8 hosts in {upgrade_time:.1?}, {written} files \
         written and read by the client, none failed"
    );
}

/// A stand-in for the aws cli: records every call (one line of arguments) in $AWS_LOG and
/// answers as EC2 does for the queries deploy/ec2/tarn-ec2 makes (`--output text`: ids
/// separated by tabs, one instance per line).
const AWS_STUB: &str = r#"#!/usr/bin/env bash
set -eu
echo "$*" >>"$AWS_LOG"
[ "$1" = --region ] && shift 2
op=$2
arg() { local want=$1; shift; while (($#)); do [ "$1" = "$want" ] && { echo "$2"; return; }; shift; done; }
case $op in
  create-vpc) echo vpc-0a1 ;;
  create-subnet) echo subnet-0b2 ;;
  create-internet-gateway) echo igw-0c3 ;;
  describe-route-tables) echo rtb-0d4 ;;
  create-security-group) echo "sg-$(arg --group-name "$@")" ;;
  describe-security-groups) echo '[]' ;;
  run-instances)
    count=$(arg --count "$@")
    role=$(arg --tag-specifications "$@" | sed 's/.*tarn:role,Value=\([a-z]*\).*/\1/')
    ids=(); for i in $(seq 1 "$count"); do ids+=("i-$role-$i"); done
    (IFS=$'\t'; echo "${ids[*]}") ;;
  describe-instances)
    n=0; on=
    for a in "$@"; do
      case $a in --instance-ids) on=1; continue ;; --*) on= ;; esac
      [ -n "$on" ] || continue
      n=$((n + 1)); role=${a#i-}; role=${role%-*}
      printf 'ip-10-42-0-%d.ec2.internal\t%s\tus-east-1a\t203.0.113.%d\n' "$n" "$role" "$n"
    done ;;
esac
"#;

fn ec2(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let o = std::process::Command::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ec2/tarn-ec2"))
        .args(args)
        .env("PATH", path)
        .env("AWS_LOG", dir.join("aws.log"))
        .output()
        .expect("tarn-ec2");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
}

/// deploy/ec2 cannot reach EC2 here: its calls go to a stand-in that records them. The
/// network, the security groups (only each role's ports, clients only where they are
/// served), spot task nodes with the interruption watcher, the inventory tarn-cluster
/// reads, and the teardown.
#[test]
fn the_ec2_launch_opens_only_each_roles_ports_and_writes_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("aws");
    std::fs::write(&stub, AWS_STUB).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let log = || std::fs::read_to_string(dir.path().join("aws.log")).unwrap_or_default();

    // Refused before any call: who may ssh in must be said.
    let (code, text) = ec2(dir.path(), &["launch", "--name", "t", "--ami", "ami-1", "--key-name", "k"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("--ssh-cidr"), "{text}");
    assert!(log().is_empty(), "no call before the arguments are checked: {}", log());

    let (code, text) = ec2(
        dir.path(),
        &[
            "launch",
            "--name",
            "t",
            "--ami",
            "ami-1",
            "--key-name",
            "k",
            "--ssh-cidr",
            "198.51.100.7/32",
            "--client-cidr",
            "198.51.100.0/24",
            "--region",
            "us-east-1",
            "--out",
            out_s,
        ],
    );
    assert_eq!(code, Some(0), "{text}\n{}", log());
    let calls = log();
    assert!(calls.lines().all(|l| l.starts_with("--region us-east-1 ec2 ")), "{calls}");
    assert!(calls.contains("create-vpc --cidr-block 10.42.0.0/16"), "{calls}");
    assert!(calls.contains("Key=tarn:cluster,Value=t"), "{calls}");
    assert!(calls.contains("--enable-dns-hostnames"), "{calls}");

    // Ingress rules: (group, from port, to port, source).
    let mut rules = std::collections::BTreeSet::new();
    for l in calls.lines().filter(|l| l.contains("authorize-security-group-ingress")) {
        let group = l.split("--group-id ").nth(1).unwrap().split(' ').next().unwrap().trim_start_matches("sg-t-");
        let field = |k: &str| l.split(k).nth(1).unwrap().split([',', ' ']).next().unwrap().to_string();
        let source = if l.contains("UserIdGroupPairs") {
            "cluster".to_string()
        } else {
            field("CidrIp=").replace(['}', ']'], "")
        };
        rules.insert((group.to_string(), field("FromPort="), field("ToPort="), source));
    }
    let want: std::collections::BTreeSet<(String, String, String, String)> = [
        ("master", "22", "22", "198.51.100.7/32"),
        ("master", "8020", "8020", "cluster"),
        ("master", "8032", "8032", "cluster"),
        ("master", "8020", "8020", "198.51.100.0/24"),
        ("master", "8088", "8088", "198.51.100.0/24"),
        ("master", "15002", "15002", "198.51.100.0/24"),
        ("core", "22", "22", "198.51.100.7/32"),
        ("core", "9866", "9866", "cluster"),
        ("core", "9866", "9866", "198.51.100.0/24"),
        ("core", "32768", "60999", "cluster"),
        ("task", "22", "22", "198.51.100.7/32"),
        ("task", "32768", "60999", "cluster"),
        ("gateway", "22", "22", "198.51.100.7/32"),
        ("gateway", "9000", "9000", "198.51.100.0/24"),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
    .collect();
    assert_eq!(rules, want, "{calls}");
    assert!(!calls.contains("0.0.0.0/0,") && !calls.contains("CidrIp=0.0.0.0/0"), "nothing open to the world");

    // Instance groups: task nodes alone are spot; each group has its own group and user data.
    let runs: Vec<&str> = calls.lines().filter(|l| l.contains("run-instances")).collect();
    assert_eq!(runs.len(), 4, "{calls}");
    for l in &runs {
        let role = l.split("tarn:role,Value=").nth(1).unwrap().split('}').next().unwrap();
        assert!(l.contains(&format!("--security-group-ids sg-t-{role}")), "{l}");
        assert!(l.contains(&format!("user-data/{role}.sh")), "{l}");
        assert!(l.contains("HttpTokens=required"), "{l}");
        assert_eq!(l.contains("MarketType=spot"), role == "task", "{l}");
    }
    for (role, spot) in [("master", false), ("core", false), ("task", true), ("gateway", false)] {
        let f = out.join(format!("user-data/{role}.sh"));
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text.contains("spot/instance-action"), spot, "{role}: {text}");
        let o = std::process::Command::new("sh").arg("-n").arg(&f).output().unwrap();
        assert!(o.status.success(), "{role}'s user data is not a valid script: {}", String::from_utf8_lossy(&o.stderr));
    }

    // The inventory: private DNS names, core nodes on their zone's rack, ssh addresses;
    // tarn-cluster reads it.
    let inv = std::fs::read_to_string(out.join("inventory")).unwrap();
    let o = std::process::Command::new(tarn_tests::hosts::script())
        .args(["-i", out.join("inventory").to_str().unwrap(), "hosts"])
        .output()
        .unwrap();
    let hosts = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{inv}\n{}", String::from_utf8_lossy(&o.stderr));
    let count = |role: &str| hosts.lines().filter(|l| l.split(' ').nth(1) == Some(role)).count();
    assert_eq!([count("master"), count("core"), count("task"), count("gateway")], [3, 3, 2, 1], "{hosts}");
    assert!(
        hosts.lines().filter(|l| l.contains(" core ")).all(|l| l.contains(" /us-east-1a admin@203.0.113.")),
        "{hosts}"
    );
    assert!(hosts.lines().all(|l| l.starts_with("ip-10-42-0-") && l.contains(".ec2.internal ")), "{hosts}");

    // Teardown: instances first, then what they used.
    std::fs::write(dir.path().join("aws.log"), "").unwrap();
    let (code, text) = ec2(dir.path(), &["destroy", "--out", out_s]);
    assert_eq!(code, Some(0), "{text}");
    let calls = log();
    let at = |op: &str| calls.find(op).unwrap_or_else(|| panic!("no {op}: {calls}"));
    assert!(at("terminate-instances") < at("delete-security-group"), "{calls}");
    assert!(at("delete-security-group") < at("delete-subnet") && at("delete-subnet") < at("delete-vpc"), "{calls}");
    assert!(calls.contains("i-task-2") && calls.contains("i-master-3"), "{calls}");
    assert!(!out.join("resources.env").exists() && out.join("resources.env.destroyed").exists());
}
