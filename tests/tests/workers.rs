//! The resource manager and its workers: workers register with their label and capacity,
//! a silent one is declared lost and comes back by registering again, and a worker speaks
//! only for itself.

use std::time::Duration;

use tarn_client::rm::{NodeLabel, Resources, WorkerState};
use tarn_proto::rm as pb;
use tarn_proto::rm::resource_tracker_client::ResourceTrackerClient;
use tarn_security::{Role, Transport};
use tarn_tests::{pki, wait_for, Cluster};

fn state_of(ws: &[tarn_client::rm::WorkerReport], id: &str) -> Option<WorkerState> {
    ws.iter().find(|w| w.worker_id == id).map(|w| w.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_and_a_silent_one_is_lost_until_it_registers_again() {
    let mut cl = Cluster::builder().workers(1, 1).tune_workers(|i, w| w.vcores = i as u32).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let ws = rm.workers().await.unwrap();
        let seen: Vec<(&str, NodeLabel, Resources, WorkerState)> =
            ws.iter().map(|w| (w.worker_id.as_str(), w.label, w.capacity, w.state)).collect();
        assert_eq!(
            seen,
            [
                ("w1", NodeLabel::Core, Resources::new(1, 2048), WorkerState::Running),
                ("w2", NodeLabel::Task, Resources::new(2, 2048), WorkerState::Running),
            ]
        );
        // w2 falls silent: lost after the expiry (1 s here), while w1 keeps running.
        cl.stop_worker(2).await;
        wait_for("the silent worker to be lost", Duration::from_secs(10), || async {
            (state_of(&rm.workers().await.ok()?, "w2")? == WorkerState::Lost).then_some(())
        })
        .await;
        assert_eq!(state_of(&rm.workers().await.unwrap(), "w1"), Some(WorkerState::Running));
        // Back, it registers again.
        cl.start_worker(2).await;
        wait_for("the worker back", Duration::from_secs(10), || async {
            (state_of(&rm.workers().await.ok()?, "w2")? == WorkerState::Running).then_some(())
        })
        .await;
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

fn tracker(t: &Transport, addr: &str) -> ResourceTrackerClient<tonic::transport::Channel> {
    ResourceTrackerClient::new(t.channel(Transport::endpoint(addr).unwrap().connect_timeout(Duration::from_secs(2))))
}

fn registration(id: &str, label: pb::NodeLabel) -> pb::RegisterWorkerRequest {
    pb::RegisterWorkerRequest {
        worker_id: id.into(),
        host: "h".into(),
        rack: "/r".into(),
        label: label as i32,
        capacity: Some(pb::Resources { vcores: 1, memory_mib: 512 }),
        version: "test".into(),
        containers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_speaks_only_for_itself_and_only_workers_register() {
    let cl = Cluster::builder().workers(1, 0).start().await;
    let addr = cl.rm.as_ref().unwrap().addr.clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut w1 = tracker(&pki().transport(Role::Worker, "w1"), &addr);
        let e = w1.register_worker(registration("w9", pb::NodeLabel::Task)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.message().contains("w9"), "{e}");
        let e = w1.register_worker(registration("w1", pb::NodeLabel::Unspecified)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let mut alice = tracker(&pki().transport(Role::User, "alice"), &addr);
        let e = alice.register_worker(registration("alice", pb::NodeLabel::Core)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        // Nothing of those was taken.
        let ids: Vec<String> = cl.rm_client().workers().await.unwrap().into_iter().map(|w| w.worker_id).collect();
        assert_eq!(ids, ["w1"]);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A `[role]` table and the `[security]` of `name`, as a config file in `dir`.
fn role_file<T: serde::Serialize>(dir: &std::path::Path, table: &str, value: &T, role: Role, name: &str) {
    let mut doc = toml::Table::new();
    doc.insert(table.into(), toml::Value::try_from(value).unwrap());
    doc.insert("security".into(), toml::Value::try_from(pki().security(role, name)).unwrap());
    std::fs::write(dir.join("tarn.toml"), toml::to_string(&doc).unwrap()).unwrap();
}

/// `tarn workers` against a running resource manager.
fn list(addr: &str) -> String {
    let o = std::process::Command::new(tarn_tests::tarn_bin())
        .arg("workers")
        .arg("--config")
        .arg(tarn_tests::admin_config())
        .args(["--resource-manager", addr])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The roles as real processes: `tarn resource-manager`, `tarn worker` (SIGKILLed: lost),
/// and `tarn workers` showing both states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_register_and_a_killed_one_is_lost() {
    tarn_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (rm_dir, w_dir) = (dir.path().join("rm"), dir.path().join("w"));
    std::fs::create_dir_all(&rm_dir).unwrap();
    std::fs::create_dir_all(&w_dir).unwrap();
    role_file(&rm_dir, "resource_manager", &tarn_tests::rm_config(), Role::ResourceManager, "prm");
    let (mut rm, addr) = tarn_tests::spawn_role("resource-manager", &rm_dir, "info").await;
    let w = tarn_worker::WorkerConfig {
        resource_managers: vec![addr.clone()],
        label: "task".into(),
        vcores: 3,
        memory_mib: 1024,
        local_dir: w_dir.join("local"),
        ..Default::default()
    };
    role_file(&w_dir, "worker", &w, Role::Worker, "pw1");
    let log = std::fs::File::create(w_dir.join("worker.log")).unwrap();
    let mut worker = std::process::Command::new(tarn_tests::tarn_bin())
        .arg("worker")
        .arg("--config")
        .arg(w_dir.join("tarn.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let rmc = tarn_client::rm::RmClient::new(std::slice::from_ref(&addr), &tarn_tests::admin()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        wait_for("the worker process to register", Duration::from_secs(20), || async {
            (state_of(&rmc.workers().await.ok()?, "pw1")? == WorkerState::Running).then_some(())
        })
        .await;
        let text = list(&addr);
        let row = text.lines().find(|l| l.starts_with("pw1")).unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains("task") && row.contains("running") && row.contains("0/3"), "{row}");
        worker.kill().unwrap();
        worker.wait().unwrap();
        wait_for("the killed worker to be lost", Duration::from_secs(20), || async {
            (state_of(&rmc.workers().await.ok()?, "pw1")? == WorkerState::Lost).then_some(())
        })
        .await;
        let text = list(&addr);
        assert!(text.contains("LOST") && text.contains("workers: 0 running, 1 lost"), "{text}");
    })
    .await;
    let _ = worker.kill();
    let _ = rm.kill();
    let _ = rm.wait();
    result.expect("timed out");
}

/// The resource manager's REST API (YARN's `/ws/v1/cluster/...`) with curl and client
/// certificates: nodes with their labels, metrics, a user's own applications only (an
/// admin's: all), YARN's error shape; no certificate, no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_answers_curl_with_a_client_certificate() {
    let cl = Cluster::builder().workers(1, 1).start().await;
    let rest = cl.rm.as_ref().unwrap().rest_addr.expect("a REST address").to_string();
    let curl = |who: Option<(Role, &str)>, path: &str, extra: &[&str]| {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--cacert"]).arg(pki().ca().cert_path());
        if let Some((role, name)) = who {
            let p = pki().paths(role, name);
            c.arg("--cert").arg(&p.cert).arg("--key").arg(&p.key);
        }
        let o = c.args(extra).arg(format!("https://{rest}{path}")).output().expect("curl");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    let json =
        |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")) };
    tokio::time::timeout(Duration::from_secs(60), async {
        let rm_alice = tarn_client::rm::RmClient::new(
            &[cl.rm.as_ref().unwrap().addr.clone()],
            &pki().transport(Role::User, "alice"),
        )
        .unwrap();
        let mine = rm_alice.submit(&app_sleeping()).await.unwrap();
        let theirs = cl.rm_client().submit(&app_sleeping()).await.unwrap();
        let admin = Some((Role::Admin, "tester"));
        let (ok, text) = curl(admin, "/ws/v1/cluster/nodes", &[]);
        assert!(ok, "{text}");
        let nodes = json(&text)["nodes"]["node"].as_array().cloned().unwrap_or_default();
        let labels: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n["id"].as_str().unwrap().into(), n["nodeLabels"][0].as_str().unwrap().into()))
            .collect();
        assert_eq!(labels, [("w1".into(), "core".into()), ("w2".into(), "task".into())]);
        let (_, text) = curl(admin, "/ws/v1/cluster/metrics", &[]);
        let m = &json(&text)["clusterMetrics"];
        assert_eq!((m["activeNodes"].as_u64(), m["appsSubmitted"].as_u64()), (Some(2), Some(2)), "{text}");
        // alice sees hers only; the admin both.
        let ids = |text: &str| -> Vec<String> {
            json(text)["apps"]["app"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect()
        };
        let alice = Some((Role::User, "alice"));
        assert_eq!(ids(&curl(alice, "/ws/v1/cluster/apps", &[]).1), vec![mine]);
        assert_eq!(ids(&curl(admin, "/ws/v1/cluster/apps", &[]).1).len(), 2);
        let (_, text) = curl(alice, &format!("/ws/v1/cluster/apps/{theirs}"), &[]);
        assert_eq!(json(&text)["RemoteException"]["exception"], "ForbiddenException", "{text}");
        let (_, text) = curl(alice, "/ws/v1/cluster/nothing", &[]);
        assert_eq!(json(&text)["RemoteException"]["exception"], "NotFoundException", "{text}");
        let (_, text) = curl(admin, "/ws/v1/cluster/apps", &["-X", "DELETE"]);
        assert!(text.contains("read only"), "{text}");
        // Without a certificate: refused at the handshake.
        let (ok, text) = curl(None, "/ws/v1/cluster/info", &[]);
        assert!(!ok, "answered without a certificate: {text}");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

fn app_sleeping() -> tarn_client::rm::AppSubmission {
    tarn_client::rm::AppSubmission {
        name: "sleeper".into(),
        am_resources: Resources::new(1, 64),
        am_spec: tarn_client::rm::ContainerSpec { command: vec!["sleep".into(), "60".into()], ..Default::default() },
        ..Default::default()
    }
}
