//! `tarn s3`: S3 access keys and bucket grants, kept in the replicated namespace.

use std::path::PathBuf;

use tarn_client::NamenodeClient;
use tarn_gateway::keys::{self, BucketAccess, MasterKey};

use crate::config::default_data_dir;
use crate::out::outln;

#[derive(clap::Args)]
pub struct S3Args {
    #[command(flatten)]
    pub conn: crate::creds::ClientOpts,
    /// The cluster master key file (seals new secrets); `TARN_MASTER_KEY` (hex) wins.
    #[arg(long, global = true)]
    master_key_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: S3Cmd,
}

#[derive(clap::Subcommand)]
enum S3Cmd {
    /// Access keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Let an access key use a bucket (read and write, or read only).
    ///
    /// Example: `tarn s3 grant my-bucket TKABCDEFGHIJKLMNOPQR --read-only`
    Grant {
        bucket: String,
        access_key: String,
        #[arg(long)]
        read_only: bool,
    },
    /// Take a bucket away from an access key.
    Revoke { bucket: String, access_key: String },
    /// Let anyone read a bucket without signing (or stop it).
    ///
    /// Example: `tarn s3 anonymous-read public-data on`
    AnonymousRead {
        bucket: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Show who may use a bucket.
    Access { bucket: String },
}

#[derive(clap::Subcommand)]
enum KeysCmd {
    /// Create a key pair (the secret is printed once and stored sealed).
    ///
    /// Example: `tarn s3 keys create --user etl`
    Create {
        /// The user the key acts as.
        #[arg(long, default_value = "s3")]
        user: String,
        /// May do everything (create any bucket, use every bucket).
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their secrets).
    List,
    /// Delete a key (gateways stop accepting it within 5 s).
    Delete { access_key: String },
}

fn master_key(a: &S3Args) -> anyhow::Result<MasterKey> {
    if let Ok(hex) = std::env::var("TARN_MASTER_KEY") {
        return Ok(MasterKey::parse(&hex)?);
    }
    let path = a.master_key_file.clone().unwrap_or_else(|| default_data_dir().join("keys/master.key"));
    Ok(MasterKey::load(&path)?)
}

pub async fn run(a: S3Args) -> anyhow::Result<u8> {
    let nn = a.conn.connect()?;
    match &a.cmd {
        S3Cmd::Keys(KeysCmd::Create { user, admin }) => {
            let master = master_key(&a)?;
            let k = keys::create_key(&nn, &master, user, *admin).await?;
            outln!("access key: {}", k.access_key)?;
            outln!("secret key: {}", k.secret_key)?;
            outln!("(the secret is not shown again)")?;
        }
        S3Cmd::Keys(KeysCmd::List) => {
            outln!("{:<24} {:<16} {:<6} CREATED", "ACCESS KEY", "USER", "ADMIN")?;
            for k in keys::list_keys(&nn).await? {
                let created = chrono::DateTime::from_timestamp_millis(k.created_ms as i64)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                outln!("{:<24} {:<16} {:<6} {created}", k.access_key, k.user, if k.admin { "yes" } else { "no" })?;
            }
        }
        S3Cmd::Keys(KeysCmd::Delete { access_key }) => {
            keys::delete_key(&nn, access_key).await?;
            outln!("deleted {access_key}")?;
        }
        S3Cmd::Grant { bucket, access_key, read_only } => {
            let mut acc = current(&nn, bucket).await?;
            acc.grants.insert(access_key.clone(), if *read_only { "r" } else { "rw" }.into());
            keys::set_bucket_access(&nn, bucket, &acc).await?;
            outln!("{access_key} may {} {bucket}", if *read_only { "read" } else { "read and write" })?;
        }
        S3Cmd::Revoke { bucket, access_key } => {
            let mut acc = current(&nn, bucket).await?;
            if acc.grants.remove(access_key).is_none() {
                anyhow::bail!("{access_key} has no grant on {bucket}");
            }
            keys::set_bucket_access(&nn, bucket, &acc).await?;
            outln!("{access_key} may no longer use {bucket}")?;
        }
        S3Cmd::AnonymousRead { bucket, state } => {
            let mut acc = current(&nn, bucket).await?;
            acc.anonymous_read = state == "on";
            keys::set_bucket_access(&nn, bucket, &acc).await?;
            outln!("anonymous reads of {bucket}: {state}")?;
        }
        S3Cmd::Access { bucket } => {
            let acc = current(&nn, bucket).await?;
            outln!("anonymous read: {}", if acc.anonymous_read { "on" } else { "off" })?;
            for (k, g) in &acc.grants {
                outln!("{k:<24} {}", if g.contains('w') { "read, write" } else { "read" })?;
            }
        }
    }
    Ok(0)
}

async fn current(nn: &NamenodeClient, bucket: &str) -> anyhow::Result<BucketAccess> {
    keys::get_bucket_access(nn, bucket).await?.ok_or_else(|| anyhow::anyhow!("bucket {bucket} does not exist"))
}
