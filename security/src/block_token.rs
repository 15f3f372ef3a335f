//! Block access tokens (HDFS's): the namenode, having checked a caller's permissions on a
//! file, hands out with each block's locations a token that lets that caller read (or
//! write) that block on a datanode until the token expires. Datanodes serve a block to a
//! client only with a valid token, so a certificate of the cluster cannot read a block by
//! id past the file's permissions.
//!
//! A token is `version | key id | expiry | block id | generation stamp | modes | user |
//! HMAC-SHA256` under a block key. A write token names the generation stamp it was given
//! for (a new block, or a pipeline restamped after a failure), so it cannot reopen the
//! block later at that stamp; a read token names none (0) and reads any generation. Block keys are random, made by the namenode leader and kept in the
//! replicated namespace (so every namenode signs with the same keys after a failover);
//! datanodes get them with every heartbeat answer over mutual TLS. The leader adds a new
//! key every [`KEY_ROLL_MS`] and signs with the newest; the three newest are accepted, so a
//! token outlives the key roll that follows it.

use std::sync::RwLock;

use ring::hmac;
use serde::{Deserialize, Serialize};

/// How long a token is good for (HDFS: 10 hours).
pub const TOKEN_LIFETIME_MS: u64 = 10 * 3600 * 1000;
/// How often the leader makes a new block key.
pub const KEY_ROLL_MS: u64 = 10 * 3600 * 1000;
/// Keys kept (and accepted): a key signs for one roll interval, and tokens it signed live
/// one lifetime more.
pub const KEYS_KEPT: usize = 3;
/// A new key signs only once it is this old: datanodes hear of it with their heartbeats
/// first (every second or so), so no token reaches a datanode before its key.
pub const KEY_ACTIVATION_MS: u64 = 30_000;

/// May read the block.
pub const READ: u8 = 1;
/// May write the block (a new replica, pipeline recovery).
pub const WRITE: u8 = 2;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;

/// A secret that signs tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockKey {
    pub id: u32,
    pub secret: Vec<u8>,
    /// When the key was made (the leader's clock).
    pub created_ms: u64,
}

impl std::fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockKey").field("id", &self.id).field("created_ms", &self.created_ms).finish_non_exhaustive()
    }
}

impl BlockKey {
    /// A new random key.
    pub fn generate(id: u32, created_ms: u64) -> BlockKey {
        use ring::rand::SecureRandom;
        let mut secret = vec![0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).expect("system randomness");
        BlockKey { id, secret, created_ms }
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.secret)
    }
}

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub block_id: u64,
    /// The generation stamp a write token is for (0: any, for reads).
    pub gen_stamp: u64,
    pub modes: u8,
    pub user: String,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no block access token was presented")]
    Missing,
    #[error("the block access token does not parse")]
    Malformed,
    #[error("the block access token was signed with key {0}, which this datanode does not have (yet, or any more)")]
    UnknownKey(u32),
    #[error("the block access token's signature is wrong")]
    BadSignature,
    #[error("the block access token expired")]
    Expired,
    #[error("the block access token is for block {token}, not block {wanted}")]
    OtherBlock { token: u64, wanted: u64 },
    #[error("the block access token is for generation {token} of the block, not {wanted}")]
    OtherGeneration { token: u64, wanted: u64 },
    #[error("the block access token does not allow {0}")]
    NotAllowed(&'static str),
    #[error("this datanode has no block keys from the namenode yet")]
    NoKeys,
}

/// Signs a token for `claims` with `key`.
pub fn sign(key: &BlockKey, claims: &TokenClaims) -> Vec<u8> {
    let user = claims.user.as_bytes();
    let user = &user[..user.len().min(255)];
    let mut out = Vec::with_capacity(FIXED_LEN + user.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&key.id.to_be_bytes());
    out.extend_from_slice(&claims.expires_ms.to_be_bytes());
    out.extend_from_slice(&claims.block_id.to_be_bytes());
    out.extend_from_slice(&claims.gen_stamp.to_be_bytes());
    out.push(claims.modes);
    out.push(user.len() as u8);
    out.extend_from_slice(user);
    let tag = hmac::sign(&key.hmac(), &out);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Bytes before the user name: version, key id, expiry, block, generation, modes, name length.
const FIXED_LEN: usize = 1 + 4 + 8 + 8 + 8 + 1 + 1;

fn parse(token: &[u8]) -> Result<(u32, TokenClaims, usize), TokenError> {
    let fixed = FIXED_LEN;
    if token.len() < fixed + TAG_LEN || token[0] != VERSION {
        return Err(TokenError::Malformed);
    }
    let u64_at = |i: usize| u64::from_be_bytes(token[i..i + 8].try_into().expect("8 bytes"));
    let key_id = u32::from_be_bytes(token[1..5].try_into().expect("4 bytes"));
    let user_len = token[fixed - 1] as usize;
    let signed = fixed + user_len;
    if token.len() != signed + TAG_LEN {
        return Err(TokenError::Malformed);
    }
    let user = std::str::from_utf8(&token[fixed..signed]).map_err(|_| TokenError::Malformed)?.to_string();
    let claims =
        TokenClaims { expires_ms: u64_at(5), block_id: u64_at(13), gen_stamp: u64_at(21), modes: token[29], user };
    Ok((key_id, claims, signed))
}

/// The block keys a process holds: the namenode signs with the newest, datanodes verify
/// with any.
#[derive(Default)]
pub struct BlockKeys {
    keys: RwLock<Vec<BlockKey>>,
}

impl BlockKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the keys (newest last).
    pub fn set(&self, mut keys: Vec<BlockKey>) {
        keys.sort_by_key(|k| k.id);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    pub fn get(&self) -> Vec<BlockKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn newest(&self) -> Option<BlockKey> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).last().cloned()
    }

    /// A token for `user` to use `block_id` (generation `gen_stamp`, 0 for any) with
    /// `modes` until `now_ms` + the lifetime; `None` before the first key exists.
    pub fn issue(&self, block_id: u64, gen_stamp: u64, modes: u8, user: &str, now_ms: u64) -> Option<Vec<u8>> {
        let key = self.signing_key(now_ms)?;
        let claims = TokenClaims {
            block_id,
            gen_stamp,
            modes,
            user: user.to_string(),
            expires_ms: now_ms.saturating_add(TOKEN_LIFETIME_MS),
        };
        Some(sign(&key, &claims))
    }

    /// The key to sign with: the newest that every datanode has had the time to receive
    /// (older than [`KEY_ACTIVATION_MS`]), or the newest if there is no such key yet.
    pub fn signing_key(&self, now_ms: u64) -> Option<BlockKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().rev().find(|k| k.created_ms.saturating_add(KEY_ACTIVATION_MS) <= now_ms).or(keys.last()).cloned()
    }

    /// Adds `keys` to the ones held (a datanode hears them from whichever namenode leads,
    /// and a leader that has not caught up must not take newer keys away); keeps the
    /// [`KEYS_KEPT`] newest.
    pub fn merge(&self, keys: Vec<BlockKey>) {
        let mut held = self.keys.write().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if !held.iter().any(|h| h.id == k.id) {
                held.push(k);
            }
        }
        held.sort_by_key(|k| k.id);
        let drop = held.len().saturating_sub(KEYS_KEPT);
        held.drain(..drop);
    }

    /// Checks that `token` lets its holder use generation `gen_stamp` of `block_id` for
    /// `mode` at `now_ms`.
    pub fn verify(
        &self,
        token: &[u8],
        block_id: u64,
        gen_stamp: u64,
        mode: u8,
        now_ms: u64,
    ) -> Result<TokenClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (key_id, claims, signed) = parse(token)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        if keys.is_empty() {
            return Err(TokenError::NoKeys);
        }
        let key = keys.iter().find(|k| k.id == key_id).ok_or(TokenError::UnknownKey(key_id))?;
        // Constant-time comparison of the tag.
        hmac::verify(&key.hmac(), &token[..signed], &token[signed..]).map_err(|_| TokenError::BadSignature)?;
        if claims.expires_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        if claims.block_id != block_id {
            return Err(TokenError::OtherBlock { token: claims.block_id, wanted: block_id });
        }
        if claims.gen_stamp != 0 && claims.gen_stamp != gen_stamp {
            return Err(TokenError::OtherGeneration { token: claims.gen_stamp, wanted: gen_stamp });
        }
        if claims.modes & mode != mode {
            return Err(TokenError::NotAllowed(if mode == WRITE { "writing" } else { "reading" }));
        }
        Ok(claims)
    }
}

/// Milliseconds since the Unix epoch, for token expiry.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BlockKeys {
        let k = BlockKeys::new();
        k.set(vec![BlockKey::generate(1, 0), BlockKey::generate(2, 0)]);
        k
    }

    #[test]
    fn a_token_allows_what_it_says_and_nothing_else() {
        let k = keys();
        let t = k.issue(7, 0, READ, "alice", 1_000).expect("a key exists");
        let c = k.verify(&t, 7, 5, READ, 2_000).expect("valid");
        assert_eq!(c.user, "alice");
        assert_eq!(k.verify(&t, 8, 5, READ, 2_000), Err(TokenError::OtherBlock { token: 7, wanted: 8 }));
        assert_eq!(k.verify(&t, 7, 5, WRITE, 2_000), Err(TokenError::NotAllowed("writing")));
        assert_eq!(k.verify(&t, 7, 5, READ, 1_000 + TOKEN_LIFETIME_MS), Err(TokenError::Expired));
        assert_eq!(k.verify(&[], 7, 5, READ, 2_000), Err(TokenError::Missing));
        // A write token is for one generation of the block.
        let w = k.issue(7, 5, WRITE, "alice", 1_000).expect("a key exists");
        k.verify(&w, 7, 5, WRITE, 2_000).expect("valid");
        assert_eq!(k.verify(&w, 7, 6, WRITE, 2_000), Err(TokenError::OtherGeneration { token: 5, wanted: 6 }));
    }

    #[test]
    fn a_new_key_signs_once_datanodes_had_time_to_hear_of_it() {
        let k = BlockKeys::new();
        k.set(vec![BlockKey::generate(1, 0)]);
        // The only key signs at once (a new cluster).
        assert_eq!(k.signing_key(10).map(|k| k.id), Some(1));
        k.merge(vec![BlockKey::generate(2, 100_000)]);
        assert_eq!(k.signing_key(100_000 + KEY_ACTIVATION_MS - 1).map(|k| k.id), Some(1));
        assert_eq!(k.signing_key(100_000 + KEY_ACTIVATION_MS).map(|k| k.id), Some(2));
        // Merging keeps newer keys a lagging leader does not know, and the newest few.
        k.merge(vec![BlockKey::generate(1, 0)]);
        k.merge(vec![BlockKey::generate(3, 0), BlockKey::generate(4, 0)]);
        assert_eq!(k.get().iter().map(|k| k.id).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn a_changed_token_or_another_key_is_refused() {
        let k = keys();
        let t = k.issue(7, 0, READ | WRITE, "alice", 0).expect("a key exists");
        // Every byte of the token matters: claims, key id and tag.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(k.verify(&bad, 7, 1, READ, 1).is_err(), "byte {i} flipped and still accepted");
        }
        let other = BlockKeys::new();
        other.set(vec![BlockKey::generate(2, 0)]);
        assert_eq!(other.verify(&t, 7, 1, READ, 1), Err(TokenError::BadSignature));
        let none = BlockKeys::new();
        assert_eq!(none.verify(&t, 7, 1, READ, 1), Err(TokenError::NoKeys));
        let older = BlockKeys::new();
        older.set(vec![BlockKey::generate(1, 0)]);
        assert_eq!(older.verify(&t, 7, 1, READ, 1), Err(TokenError::UnknownKey(2)));
        assert_eq!(k.verify(&t[..t.len() - 1], 7, 1, READ, 1), Err(TokenError::Malformed));
    }
}
