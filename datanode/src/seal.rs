//! Encryption at rest: every replica has its own random data key, wrapped (sealed) by the
//! cluster master key and kept in the replica's checksum file; its bytes are encrypted
//! chunk by chunk with AES-256-GCM (ring), each chunk authenticated by its 16-byte tag.
//!
//! **Why a (key, nonce) pair never encrypts two different plaintexts.** A data key is made
//! (random, 256 bits) for one replica file and used for nothing else; a re-replicated copy
//! gets a key of its own. A chunk's nonce is `(chunk index, session, chunk length)`:
//! - within one *session* (the life of one writer of the replica) bytes are only appended,
//!   so the first `n` bytes of chunk `i` never change: encrypting chunk `i` again at
//!   length `n` (a flush, then the same flush after a retry) encrypts the same plaintext,
//!   and a longer chunk has another length, so another nonce;
//! - a new session starts only by reopening the replica (pipeline or block recovery, which
//!   may rewrite bytes past the recovered length); it takes the next session number,
//!   written to the header and made durable (fsync) *before* anything is encrypted under
//!   it, so a crash cannot hand a used session number out again.
//!
//! Tampering changes a tag check into a failure, and the replica is treated as corrupt
//! (reported, deleted, re-replicated) like one whose CRC fails.

use ring::rand::{SecureRandom, SystemRandom};
use tarn_security::chunk_cipher::ChunkKey;
use tarn_security::MasterKey;

use crate::error::{DatanodeError, Result};

/// What the master key seals data keys for (its derived key serves nothing else).
const DATA_KEY_PURPOSE: &[u8] = b"tarn block data keys v1";
/// A sealed data key: 12-byte nonce, 32-byte key, 16-byte tag.
pub const WRAPPED_BYTES: usize = 60;
pub const TAG_BYTES: usize = tarn_security::chunk_cipher::TAG_BYTES;

/// How a replica's data key is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealHeader {
    /// The id of the master key that sealed the data key.
    pub key_id: [u8; 8],
    /// The current writer session (see the module docs).
    pub session: u32,
    pub wrapped: [u8; WRAPPED_BYTES],
}

impl std::fmt::Debug for SealHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealHeader(key {}, session {})", hex_id(&self.key_id), self.session)
    }
}

pub fn hex_id(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// One replica's data key.
pub struct DataKey {
    key: ChunkKey,
    raw: [u8; 32],
    block_id: u64,
}

impl DataKey {
    /// A new random key for a new replica of `block_id`, and how to store it.
    pub fn generate(master: &MasterKey, block_id: u64) -> (DataKey, SealHeader) {
        let mut raw = [0u8; 32];
        SystemRandom::new().fill(&mut raw).expect("system randomness");
        let sealed = master.seal(DATA_KEY_PURPOSE, &block_id.to_le_bytes(), &raw);
        let mut wrapped = [0u8; WRAPPED_BYTES];
        wrapped.copy_from_slice(&sealed);
        let key = DataKey::from_raw(&raw, block_id);
        (key, SealHeader { key_id: master.id(), session: 0, wrapped })
    }

    /// Opens a stored key. `master` must be the one named in the header.
    pub fn open(master: Option<&MasterKey>, block_id: u64, h: &SealHeader) -> Result<DataKey> {
        let Some(master) = master else {
            return Err(DatanodeError::WrongMasterKey {
                block_id,
                detail: format!(
                    "the replica is encrypted (master key {}) and this datanode has no master key",
                    hex_id(&h.key_id)
                ),
            });
        };
        if master.id() != h.key_id {
            return Err(DatanodeError::WrongMasterKey {
                block_id,
                detail: format!(
                    "the replica's data key is sealed by master key {}, this datanode has {}",
                    hex_id(&h.key_id),
                    master.id_hex()
                ),
            });
        }
        let raw = master.open(DATA_KEY_PURPOSE, &block_id.to_le_bytes(), &h.wrapped).ok_or_else(|| {
            DatanodeError::Corrupt { block_id, detail: "the sealed data key does not open (tampered)".into() }
        })?;
        Ok(DataKey::from_raw(&raw, block_id))
    }

    /// The same data key sealed by `new` instead of `old` (master key rotation: the data
    /// is not touched). `None` if `old` does not open it.
    pub fn rewrap(old: &MasterKey, new: &MasterKey, block_id: u64, h: &SealHeader) -> Option<SealHeader> {
        let raw = old.open(DATA_KEY_PURPOSE, &block_id.to_le_bytes(), &h.wrapped)?;
        let sealed = new.seal(DATA_KEY_PURPOSE, &block_id.to_le_bytes(), &raw);
        let mut wrapped = [0u8; WRAPPED_BYTES];
        wrapped.copy_from_slice(&sealed);
        Some(SealHeader { key_id: new.id(), session: h.session, wrapped })
    }

    fn from_raw(raw: &[u8], block_id: u64) -> DataKey {
        let mut r = [0u8; 32];
        r.copy_from_slice(raw);
        DataKey { key: ChunkKey::new(raw, block_id).expect("a 32-byte AES-256 key"), raw: r, block_id }
    }

    /// The raw key, for a reader on this host that was allowed the replica's bytes
    /// (short-circuit reads): it could read the plaintext anyway, and the key is this
    /// replica's alone.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Encrypts chunk `chunk` (all of `buf`) in place; returns its tag.
    pub fn seal(&self, chunk: u64, session: u32, buf: &mut [u8]) -> [u8; TAG_BYTES] {
        self.key.seal(chunk, session, buf)
    }

    /// Decrypts chunk `chunk` in place, checking its tag.
    pub fn open_chunk(&self, chunk: u64, session: u32, buf: &mut [u8], tag: &[u8; TAG_BYTES]) -> Result<()> {
        self.key.open(chunk, session, buf, tag).map_err(|_| DatanodeError::Corrupt {
            block_id: self.block_id,
            detail: format!("chunk {chunk} fails authentication (tampered ciphertext)"),
        })
    }
}
