//! Encryption at rest of small files kept in the namespace (their bytes travel in the
//! Raft log and live in the namenodes' RocksDB instead of in block replicas).
//!
//! The leader seals a file's bytes before proposing them, so the log, the state machine,
//! snapshots and followers only ever hold ciphertext; it opens them again to answer a
//! reader (over TLS).
//!
//! **Format v1**: `1 | master key id (8) | salt (32) | ciphertext | tag (16)`. The key is
//! derived from the master key for this one file: HKDF-SHA256 with the info
//! `"tarn small file v1" || salt`, the salt fresh and random. Each derived key seals exactly
//! one plaintext, so the all-zero nonce never repeats under a key (a repeat would need two
//! equal 256-bit salts). The header is the associated data: changing the key id or salt
//! fails the tag.
//!
//! **Format v0**: `0 | bytes`, stored in the clear: only by a namenode without a master key,
//! which the operator allowed with the dev flag (it warned at start-up).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{MasterKey, SecurityError};

const V0_CLEAR: u8 = 0;
const V1_SEALED: u8 = 1;
const HEADER_V1: usize = 1 + 8 + 32;
/// What sealing adds to the bytes, at most.
pub const OVERHEAD_MAX: usize = HEADER_V1 + 16;

fn file_key(master: &MasterKey, salt: &[u8]) -> LessSafeKey {
    let mut info = b"tarn small file v1".to_vec();
    info.extend_from_slice(salt);
    LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &master.derive(&info)).expect("AES-256 key"))
}

/// The bytes as they are kept: sealed under `master`, or (no master key: dev mode) clear.
pub fn seal(master: Option<&MasterKey>, plain: &[u8]) -> Vec<u8> {
    let Some(master) = master else {
        let mut out = Vec::with_capacity(1 + plain.len());
        out.push(V0_CLEAR);
        out.extend_from_slice(plain);
        return out;
    };
    let mut out = Vec::with_capacity(OVERHEAD_MAX + plain.len());
    out.push(V1_SEALED);
    out.extend_from_slice(&master.id());
    let mut salt = [0u8; 32];
    SystemRandom::new().fill(&mut salt).expect("system randomness");
    out.extend_from_slice(&salt);
    let header = out.clone();
    out.extend_from_slice(plain);
    let tag = file_key(master, &salt)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([0u8; 12]), Aad::from(&header), &mut out[HEADER_V1..])
        .expect("seal");
    out.extend_from_slice(tag.as_ref());
    out
}

/// The bytes [`seal`] kept. Refuses sealed bytes without the master key that sealed them
/// (naming both keys), and changed bytes.
pub fn open(master: Option<&MasterKey>, kept: &[u8]) -> Result<Vec<u8>, SecurityError> {
    open_among(master.into_iter(), kept)
}

/// The master key id that sealed `kept` (`None`: kept in the clear, or not a sealed file).
pub fn sealed_by(kept: &[u8]) -> Option<[u8; 8]> {
    match kept.first() {
        Some(&V1_SEALED) if kept.len() >= OVERHEAD_MAX => kept[1..9].try_into().ok(),
        _ => None,
    }
}

/// What identifies one sealing of a file's bytes (key id and fresh salt): the same prefix
/// means the very same kept bytes. For clear bytes, all of them.
pub fn seal_id(kept: &[u8]) -> &[u8] {
    match sealed_by(kept) {
        Some(_) => &kept[..HEADER_V1],
        None => kept,
    }
}

/// Like [`open`], with whichever of `keys` sealed the bytes (a namenode holds its master
/// key and, during a rotation, the previous ones).
pub fn open_among<'a>(
    keys: impl Iterator<Item = &'a MasterKey> + Clone,
    kept: &[u8],
) -> Result<Vec<u8>, SecurityError> {
    match kept.first() {
        Some(&V0_CLEAR) => Ok(kept[1..].to_vec()),
        Some(&V1_SEALED) if kept.len() >= OVERHEAD_MAX => {
            let id = &kept[1..9];
            let Some(master) = keys.clone().find(|k| k.id()[..] == *id) else {
                let held: Vec<String> = keys.map(|k| k.id_hex()).collect();
                return Err(SecurityError::Invalid(if held.is_empty() {
                    format!(
                        "a small file sealed under master key {} and this namenode has no master key",
                        hex::encode(id)
                    )
                } else {
                    format!(
                        "a small file sealed under master key {} and this namenode has master key {} \
                         (give the namenodes the old key in security.previous_master_key_files)",
                        hex::encode(id),
                        held.join(", ")
                    )
                }));
            };
            let (header, rest) = kept.split_at(HEADER_V1);
            let mut buf = rest.to_vec();
            let plain = file_key(master, &header[9..])
                .open_in_place(Nonce::assume_unique_for_key([0u8; 12]), Aad::from(header), &mut buf)
                .map_err(|_| {
                    SecurityError::Invalid("a small file's kept bytes fail their check (changed or corrupt)".into())
                })?;
            let n = plain.len();
            buf.truncate(n);
            Ok(buf)
        }
        Some(v) => {
            Err(SecurityError::Invalid(format!("a small file's kept bytes have unknown format {v} or are cut short")))
        }
        None => Err(SecurityError::Invalid("a small file's kept bytes are empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_small_files_open_only_with_their_master_key_and_unchanged() {
        let m = MasterKey::generate();
        let plain = b"a small object".repeat(100);
        let kept = seal(Some(&m), &plain);
        assert_eq!(kept.len(), plain.len() + OVERHEAD_MAX);
        assert!(!kept.windows(14).any(|w| w == b"a small object"), "no plaintext in what is kept");
        assert_eq!(open(Some(&m), &kept).unwrap(), plain);
        // Two seals of the same bytes differ (fresh salt, so a fresh key).
        assert_ne!(seal(Some(&m), &plain), kept);
        let other = MasterKey::generate();
        let e = open(Some(&other), &kept).unwrap_err().to_string();
        assert!(e.contains(&m.id_hex()) && e.contains(&other.id_hex()), "{e}");
        assert!(open(None, &kept).unwrap_err().to_string().contains("no master key"));
        for at in [1, 10, HEADER_V1 + 3, kept.len() - 1] {
            let mut bad = kept.clone();
            bad[at] ^= 1;
            assert!(open(Some(&m), &bad).is_err(), "a flipped byte at {at} is refused");
        }
        assert!(open(Some(&m), &kept[..kept.len() - 1]).is_err());
        assert!(open(Some(&m), &kept[..20]).is_err());
        assert!(open(Some(&m), &[]).is_err());
    }

    #[test]
    fn during_a_rotation_the_previous_key_still_opens() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let kept = seal(Some(&old), b"before the rotation");
        assert_eq!(sealed_by(&kept), Some(old.id()));
        assert_eq!(seal_id(&kept).len(), HEADER_V1);
        assert_ne!(seal_id(&seal(Some(&old), b"before the rotation")), seal_id(&kept), "fresh salt");
        assert_eq!(open_among([&new, &old].into_iter(), &kept).unwrap(), b"before the rotation");
        let e = open_among([&new].into_iter(), &kept).unwrap_err().to_string();
        assert!(e.contains(&old.id_hex()) && e.contains("previous_master_key_files"), "{e}");
        assert_eq!(sealed_by(&seal(None, b"dev")), None);
    }

    #[test]
    fn without_a_master_key_bytes_are_kept_clear_and_still_open_with_one() {
        let kept = seal(None, b"dev");
        assert_eq!(kept, b"\0dev");
        assert_eq!(open(None, &kept).unwrap(), b"dev");
        assert_eq!(open(Some(&MasterKey::generate()), &kept).unwrap(), b"dev");
        assert_eq!(open(None, &seal(None, b"")).unwrap(), b"");
    }
}
