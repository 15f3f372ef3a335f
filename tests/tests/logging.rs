//! Log levels: ERROR means a person must look. A failure that the system answers and its
//! clients retry, such as an S3 request while no namenode is up, is a WARN. The harness
//! (`Cluster::shutdown`) fails any test that logs an unexpected ERROR from Tarn's crates.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, RetryConfig};
use tarn_gateway::GatewayConfig;
use tarn_security::Role;
use tarn_tests::{error_lines, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_request_while_no_namenode_is_up_is_answered_without_an_error_line() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut cl = Cluster::start(1, |_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = tarn_tests::gateway_tls(dir.path());
        let cfg = GatewayConfig {
            listen: "127.0.0.1:0".into(),
            namenodes: cl.addrs.clone(),
            tls: Some(tls.clone()),
            // Opens the secrets of stored keys: an unknown key is looked up in the namespace.
            master_key_file: tarn_tests::pki().security(Role::Gateway, "gw").master_key_file,
            ..GatewayConfig::default()
        };
        let gw = tarn_gateway::start(cfg, tarn_tests::pki().transport(Role::Gateway, "gw")).await.unwrap();
        // The namenode goes away: the gateway cannot look up the access key.
        cl.stop(1).await;
        let options = ClientOptions::new()
            .with_root_certificate(object_store::Certificate::from_pem(&std::fs::read(&tls.cert).unwrap()).unwrap())
            .with_timeout(Duration::from_secs(60));
        let s3 = AmazonS3Builder::new()
            .with_endpoint(gw.endpoint())
            .with_bucket_name("sales")
            .with_region("us-east-1")
            // A key the gateway's configuration does not hold: it is looked up in the namespace.
            .with_access_key_id("AKTARNUNKNOWN0000000")
            .with_secret_access_key("not-a-secret")
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
            .build()
            .unwrap();
        let s3: Arc<dyn object_store::ObjectStore> = Arc::new(s3);
        let e = s3.get(&Path::from("a")).await.unwrap_err().to_string();
        assert!(e.contains("500") || e.contains("InternalError"), "the client is told the server failed: {e}");
        assert!(error_lines().is_empty(), "a retried lookup is no ERROR: {:?}", error_lines());
        gw.stop().await;
        cl.shutdown().await;
    })
    .await
    .expect("bounded");
}
