//! The cluster master key: 32 random bytes, kept hex-encoded in a file readable by its
//! owner only (or given as `TARN_MASTER_KEY`). It never encrypts data itself: keys for
//! each purpose are derived from it (HKDF-SHA256), and it seals small secrets (S3 secret
//! keys, the data keys of block replicas) with AES-256-GCM.
//!
//! **Nonces.** A sealing uses a fresh random 96-bit nonce. Each sealed value is sealed once
//! when it is made (a key is created, a replica is created), far below the 2^32
//! sealings per key that random nonces allow, so a repeated (key, nonce) pair would take a
//! 2^-96-scale collision.

use std::path::Path;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::SecurityError;

/// The environment variable that gives the master key instead of a file.
pub const MASTER_KEY_ENV: &str = "TARN_MASTER_KEY";

#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id_hex())
    }
}

fn bad(why: impl Into<String>) -> SecurityError {
    SecurityError::Invalid(format!("master key: {}", why.into()))
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system randomness");
        MasterKey(k)
    }

    pub fn parse(hex_text: &str) -> Result<MasterKey, SecurityError> {
        let raw = hex::decode(hex_text.trim()).map_err(|_| bad("not hex (64 hex digits expected)"))?;
        let k: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| bad(format!("{} bytes, 32 expected", v.len())))?;
        Ok(MasterKey(k))
    }

    /// Reads a key file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<MasterKey, SecurityError> {
        crate::pki::check_private(path).map_err(|e| bad(e.to_string()))?;
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        MasterKey::parse(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// The key given as `hex` (the binary passes `TARN_MASTER_KEY`) if any, else the file
    /// at `path` (if any).
    pub fn from_hex_or_file(hex: Option<&str>, path: Option<&Path>) -> Result<Option<MasterKey>, SecurityError> {
        if let Some(hex) = hex {
            return MasterKey::parse(hex).map(Some).map_err(|e| bad(format!("{MASTER_KEY_ENV}: {e}")));
        }
        path.map(MasterKey::load).transpose()
    }

    /// Writes a new key file (mode 0600); refuses to replace one.
    pub fn create(path: &Path) -> Result<MasterKey, SecurityError> {
        if path.exists() {
            return Err(bad(format!("{} exists", path.display())));
        }
        let key = MasterKey::generate();
        crate::pki::write_private(path, &hex::encode(key.0), 0o600)?;
        Ok(key)
    }

    /// A fingerprint naming this key (not secret): stored beside what it sealed, so a
    /// datanode given another key says so instead of calling its data corrupt.
    pub fn id(&self) -> [u8; 8] {
        let k = self.derive(b"tarn master key id v1");
        let mut id = [0u8; 8];
        id.copy_from_slice(&k[..8]);
        id
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id())
    }

    /// A 32-byte key for one purpose (`info`), independent of the keys for other purposes.
    pub fn derive(&self, info: &[u8]) -> [u8; 32] {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tarn");
        let prk = salt.extract(&self.0);
        let info = [info];
        let okm = prk.expand(&info, &aead::AES_256_GCM).expect("hkdf length");
        let mut k = [0u8; 32];
        okm.fill(&mut k).expect("hkdf fill");
        k
    }

    fn aead(&self, purpose: &[u8]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &self.derive(purpose)).expect("AES-256 key"))
    }

    /// `nonce || ciphertext || tag` of `plain` under the key for `purpose`, bound to `aad`
    /// (a sealed value moved elsewhere does not open).
    pub fn seal(&self, purpose: &[u8], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        SystemRandom::new().fill(&mut nonce).expect("system randomness");
        let mut buf = plain.to_vec();
        self.aead(purpose)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .expect("seal");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens what [`MasterKey::seal`] made; `None` if the key, purpose or `aad` differ or
    /// the bytes were changed.
    pub fn open(&self, purpose: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, rest) = sealed.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self.aead(purpose).open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_purpose_and_binding() {
        let m = MasterKey::generate();
        let sealed = m.seal(b"p1", b"a", b"secret");
        assert_eq!(m.open(b"p1", b"a", &sealed).unwrap(), b"secret");
        assert!(m.open(b"p2", b"a", &sealed).is_none());
        assert!(m.open(b"p1", b"b", &sealed).is_none());
        assert!(MasterKey::generate().open(b"p1", b"a", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered[14] ^= 1;
        assert!(m.open(b"p1", b"a", &tampered).is_none());
        assert_ne!(m.seal(b"p1", b"a", b"secret"), sealed, "a fresh nonce per sealing");
        assert_ne!(m.id(), MasterKey::generate().id());
    }

    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let k = MasterKey::create(&p).unwrap();
        assert_eq!(MasterKey::load(&p).unwrap().id(), k.id());
        assert!(MasterKey::create(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MasterKey::load(&p).unwrap_err().to_string().contains("chmod 600"));
    }
}
