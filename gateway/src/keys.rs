//! S3 identities: access keys kept in the replicated namespace, their secrets sealed with
//! the cluster master key, and per-bucket grants.
//!
//! - A key is the file `/.tarn/s3/keys/<access key>`; its `s3.key` extended attribute
//!   holds the user it acts as, whether it is an admin key, and the secret sealed with
//!   AES-256-GCM under a key derived (HKDF-SHA256) from the master key, with the access
//!   key as associated data (a sealed secret copied onto another key does not open).
//!   Nonces are random 96-bit values, one per sealing; a secret is sealed once, when its
//!   key is created, so a (key, nonce) pair repeats only by a 2^-96-scale collision.
//! - A bucket's grants are the `s3.access` attribute of its directory: access key →
//!   read / write, and whether anonymous requests may read.
//! - Keys in the gateway's configuration (`gateway.access_keys`) are admin keys: the
//!   bootstrap credential, like a root user.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tarn_client::blocks::FileWriter;
use tarn_client::{CreateOptions, ErrorKind, ListOptions, NamenodeClient};

pub const KEYS_DIR: &str = "/.tarn/s3/keys";
const KEY_XATTR: &str = "s3.key";
pub const ACCESS_XATTR: &str = "s3.access";
/// How long a gateway trusts what it looked up (a deleted key or a revoked grant stops
/// working within this time).
pub const CACHE_TTL: Duration = Duration::from_secs(5);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("access key {0}: the sealed secret does not open with this master key (wrong key, or tampered)")]
    Unseal(String),
    #[error("access key {0} does not exist")]
    NoSuchKey(String),
    #[error("access key {0} exists")]
    Exists(String),
    #[error("user name: {0}")]
    BadUser(String),
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("stored record of {what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error(transparent)]
    Client(#[from] tarn_client::ClientError),
}

pub use tarn_security::MasterKey;

/// What the master key seals S3 secrets for (its derived key serves nothing else).
const SECRETS_PURPOSE: &[u8] = b"tarn s3 secret keys v1";

/// `nonce || ciphertext || tag` of `secret`, bound to `access_key`.
pub fn seal_secret(master: &MasterKey, access_key: &str, secret: &str) -> Vec<u8> {
    master.seal(SECRETS_PURPOSE, access_key.as_bytes(), secret.as_bytes())
}

pub fn open_secret(master: &MasterKey, access_key: &str, sealed: &[u8]) -> Result<String, KeyError> {
    let plain = master
        .open(SECRETS_PURPOSE, access_key.as_bytes(), sealed)
        .ok_or_else(|| KeyError::Unseal(access_key.into()))?;
    String::from_utf8(plain).map_err(|_| KeyError::Unseal(access_key.into()))
}

/// A key as stored (never with its secret in the clear).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub access_key: String,
    pub user: String,
    pub admin: bool,
    pub created_ms: u64,
    /// Base64 of the sealed secret.
    sealed: String,
}

/// Who may do what in a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketAccess {
    /// Access key → "r" or "rw".
    #[serde(default)]
    pub grants: BTreeMap<String, String>,
    #[serde(default)]
    pub anonymous_read: bool,
}

impl BucketAccess {
    pub fn can_read(&self, ak: &str) -> bool {
        self.grants.get(ak).is_some_and(|g| g.contains('r'))
    }
    pub fn can_write(&self, ak: &str) -> bool {
        self.grants.get(ak).is_some_and(|g| g.contains('w'))
    }
}

fn key_path(ak: &str) -> String {
    format!("{KEYS_DIR}/{ak}")
}

fn check_access_key(ak: &str) -> Result<(), KeyError> {
    if ak.len() < 3 || ak.len() > 128 || !ak.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyError::NoSuchKey(ak.into()));
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Creates a key for `user` (a new random pair); returns it with its secret.
pub async fn create_key(
    nn: &NamenodeClient,
    master: &MasterKey,
    user: &str,
    admin: bool,
) -> Result<crate::AccessKey, KeyError> {
    // The user a key acts as is a file owner on the namenode: the same rules as a
    // certificate's name.
    tarn_security::Identity::new(tarn_security::Role::User, user).map_err(|e| KeyError::BadUser(e.to_string()))?;
    let key = crate::AccessKey::generate();
    let rec = KeyRecord {
        access_key: key.access_key.clone(),
        user: user.to_string(),
        admin,
        created_ms: now_ms(),
        sealed: B64.encode(seal_secret(master, &key.access_key, &key.secret_key)),
    };
    let mut xattrs = BTreeMap::new();
    xattrs.insert(KEY_XATTR.to_string(), serde_json::to_vec(&rec).expect("serializes"));
    let opts = CreateOptions { create_parent: true, mode: 0o600, xattrs, ..Default::default() };
    let w = FileWriter::create(nn, &key_path(&key.access_key), &opts).await.map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => KeyError::Exists(key.access_key.clone()),
        _ => KeyError::Client(e),
    })?;
    w.close().await?;
    Ok(key)
}

/// Master key rotation for S3 keys: seals every stored secret with `new` instead of `old`
/// (keys already under `new` are left alone, so a rerun finishes an interrupted one).
/// Returns how many were re-sealed. Gateways must be given `new` afterwards.
pub async fn reseal_secrets(nn: &NamenodeClient, old: &MasterKey, new: &MasterKey) -> Result<usize, KeyError> {
    let mut n = 0;
    for mut rec in list_keys(nn).await? {
        let sealed = B64
            .decode(&rec.sealed)
            .map_err(|e| KeyError::Corrupt { what: key_path(&rec.access_key), why: e.to_string() })?;
        if open_secret(new, &rec.access_key, &sealed).is_ok() {
            continue;
        }
        let secret = open_secret(old, &rec.access_key, &sealed)?;
        rec.sealed = B64.encode(seal_secret(new, &rec.access_key, &secret));
        let mut xattrs = HashMap::new();
        xattrs.insert(KEY_XATTR.to_string(), serde_json::to_vec(&rec).expect("serializes"));
        let path = key_path(&rec.access_key);
        let set_xattrs = xattrs.into_iter().collect();
        nn.set_attributes(&path, tarn_client::SetAttributes { set_xattrs, ..Default::default() }).await?;
        n += 1;
    }
    Ok(n)
}

pub async fn delete_key(nn: &NamenodeClient, ak: &str) -> Result<(), KeyError> {
    check_access_key(ak)?;
    if !nn.delete(&key_path(ak), false, None).await? {
        return Err(KeyError::NoSuchKey(ak.into()));
    }
    Ok(())
}

pub async fn list_keys(nn: &NamenodeClient) -> Result<Vec<KeyRecord>, KeyError> {
    let opts = ListOptions { with_xattrs: true, ..Default::default() };
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (page, more) = match nn.list_tree(&format!("{KEYS_DIR}/"), &after, 1000, &opts).await {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for st in page {
            after = st.path.clone();
            if let Some(v) = st.xattrs.get(KEY_XATTR) {
                out.push(
                    serde_json::from_slice(v)
                        .map_err(|e| KeyError::Corrupt { what: st.path.clone(), why: e.to_string() })?,
                );
            }
        }
        if !more {
            return Ok(out);
        }
    }
}

async fn get_key(nn: &NamenodeClient, ak: &str) -> Result<Option<KeyRecord>, KeyError> {
    if check_access_key(ak).is_err() {
        return Ok(None);
    }
    let Some(st) = nn.get_file_info(&key_path(ak), true).await? else { return Ok(None) };
    let Some(v) = st.xattrs.get(KEY_XATTR) else { return Ok(None) };
    let rec: KeyRecord =
        serde_json::from_slice(v).map_err(|e| KeyError::Corrupt { what: key_path(ak), why: e.to_string() })?;
    Ok(Some(rec))
}

pub async fn get_bucket_access(nn: &NamenodeClient, bucket: &str) -> Result<Option<BucketAccess>, KeyError> {
    let Some(st) = nn.get_file_info(&format!("/{bucket}"), true).await? else { return Ok(None) };
    if !st.is_dir() {
        return Ok(None);
    }
    match st.xattrs.get(ACCESS_XATTR) {
        Some(v) => serde_json::from_slice(v)
            .map(Some)
            .map_err(|e| KeyError::Corrupt { what: format!("/{bucket}"), why: e.to_string() }),
        None => Ok(Some(BucketAccess::default())),
    }
}

pub async fn set_bucket_access(nn: &NamenodeClient, bucket: &str, access: &BucketAccess) -> Result<(), KeyError> {
    let path = format!("/{bucket}");
    match nn.get_file_info(&path, false).await? {
        Some(st) if st.is_dir() => {}
        _ => return Err(KeyError::NoSuchBucket(bucket.into())),
    }
    let mut xattrs = HashMap::new();
    xattrs.insert(ACCESS_XATTR.to_string(), serde_json::to_vec(access).expect("serializes"));
    let set_xattrs = xattrs.into_iter().collect();
    nn.set_attributes(&path, tarn_client::SetAttributes { set_xattrs, ..Default::default() }).await?;
    Ok(())
}

/// What the gateway knows about a caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub access_key: String,
    pub user: String,
    pub admin: bool,
    pub secret: String,
}

/// The gateway's view of keys and grants: configured admin keys, then the namespace,
/// with answers cached for [`CACHE_TTL`].
pub struct KeyStore {
    nn: std::sync::Arc<NamenodeClient>,
    master: Option<MasterKey>,
    configured: Vec<crate::AccessKey>,
    keys: Mutex<HashMap<String, (Instant, Option<Identity>)>>,
    buckets: Mutex<HashMap<String, (Instant, Option<BucketAccess>)>>,
}

impl KeyStore {
    pub fn new(
        nn: std::sync::Arc<NamenodeClient>,
        master: Option<MasterKey>,
        configured: Vec<crate::AccessKey>,
    ) -> Self {
        KeyStore { nn, master, configured, keys: Mutex::default(), buckets: Mutex::default() }
    }

    /// The identity of `ak` (None: no such key).
    pub async fn identity(&self, ak: &str) -> Result<Option<Identity>, KeyError> {
        // Configured keys: every entry is compared, so timing does not tell which matched.
        let mut found = None;
        for k in &self.configured {
            if crate::ct_eq(k.access_key.as_bytes(), ak.as_bytes()) {
                found = Some(Identity {
                    access_key: k.access_key.clone(),
                    user: "admin".into(),
                    admin: true,
                    secret: k.secret_key.clone(),
                });
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        if let Some((at, v)) = self.keys.lock().expect("key cache").get(ak) {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
        let id = match get_key(&self.nn, ak).await? {
            Some(rec) => {
                let master = self.master.as_ref().ok_or_else(|| {
                    KeyError::MasterKey(format!(
                        "access key {ak} is stored sealed but this gateway has no master key (gateway.master_key_file or TARN_MASTER_KEY)"
                    ))
                })?;
                let sealed = B64.decode(&rec.sealed).map_err(|_| KeyError::Unseal(ak.into()))?;
                let secret = open_secret(master, ak, &sealed)?;
                Some(Identity { access_key: rec.access_key, user: rec.user, admin: rec.admin, secret })
            }
            None => None,
        };
        self.keys.lock().expect("key cache").insert(ak.to_string(), (Instant::now(), id.clone()));
        Ok(id)
    }

    /// A bucket's grants (None: no such bucket).
    pub async fn bucket(&self, bucket: &str) -> Result<Option<BucketAccess>, KeyError> {
        if let Some((at, v)) = self.buckets.lock().expect("bucket cache").get(bucket) {
            if at.elapsed() < CACHE_TTL {
                return Ok(v.clone());
            }
        }
        let v = get_bucket_access(&self.nn, bucket).await?;
        self.buckets.lock().expect("bucket cache").insert(bucket.to_string(), (Instant::now(), v.clone()));
        Ok(v)
    }

    /// Forgets a bucket's cached grants (after this gateway changed them).
    pub fn forget_bucket(&self, bucket: &str) {
        self.buckets.lock().expect("bucket cache").remove(bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_master_key_and_access_key() {
        let m = MasterKey::generate();
        let sealed = seal_secret(&m, "TKAAA", "secret-value");
        assert!(!sealed.windows(12).any(|w| w == b"secret-value"));
        assert_eq!(open_secret(&m, "TKAAA", &sealed).unwrap(), "secret-value");
        assert!(matches!(open_secret(&m, "TKBBB", &sealed), Err(KeyError::Unseal(_))));
        assert!(matches!(open_secret(&MasterKey::generate(), "TKAAA", &sealed), Err(KeyError::Unseal(_))));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(matches!(open_secret(&m, "TKAAA", &tampered), Err(KeyError::Unseal(_))));
        // Two sealings of one secret differ (fresh nonces).
        assert_ne!(seal_secret(&m, "TKAAA", "secret-value"), sealed);
    }
}
