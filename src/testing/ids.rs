//! Credential-shaped random strings and the token hash used for look-ups.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Returns a new opaque OAuth access token shaped like the ones Wacht issues:
/// `oat_` followed by 43 base64url characters (32 random bytes, no padding).
///
/// The bytes come from SHA-256 over several randomly keyed std hashers, a process-wide
/// counter and the clock. That is unpredictable enough for tests and demos, but it is not a
/// cryptographically secure generator: never use it to mint real credentials.
#[must_use]
pub fn generate_token() -> String {
    format!("oat_{}", base64url(&random_bytes::<32>()))
}

/// Returns a new API key shaped like Wacht's: `prefix`, `_`, then 43 base64url characters (32
/// random bytes). Same randomness caveat as [`generate_token`].
#[must_use]
pub fn generate_api_key(prefix: &str) -> String {
    format!("{prefix}_{}", base64url(&random_bytes::<32>()))
}

/// Returns a new public OAuth client id shaped like Wacht's: `oc_` followed by 32 base64url
/// characters (24 random bytes). Same randomness caveat as [`generate_token`].
#[must_use]
pub fn generate_client_id() -> String {
    format!("oc_{}", base64url(&random_bytes::<24>()))
}

/// Returns `prefix` followed by 43 base64url characters (32 random bytes): the dev issuer's
/// authorization codes, refresh tokens and client secrets. Same randomness caveat as
/// [`generate_token`].
pub(crate) fn generate_secret(prefix: &str) -> String {
    format!("{prefix}{}", base64url(&random_bytes::<32>()))
}

/// Returns a random positive decimal id shaped like Wacht's snowflake ids (a JWT's `jti` or
/// `sid`). Same randomness caveat as [`generate_token`].
pub(crate) fn generate_decimal_id() -> String {
    let bytes = random_bytes::<8>();
    let id = u64::from_le_bytes(bytes) >> 2;
    (id.max(1)).to_string()
}

/// Returns the gateway's look-up key for a credential: lower-case hex SHA-256 of the UTF-8
/// bytes of the value with surrounding whitespace trimmed (64 characters).
///
/// [`RecordedRequest::token_sha256`](super::RecordedRequest::token_sha256) holds this value,
/// so tests can compare it with `hash_token(&token)`.
#[must_use]
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.trim().as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn random_bytes<const N: usize>() -> [u8; N] {
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(count.to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    // Each `RandomState` carries fresh keys seeded from the operating system.
    for round in 0u64..4 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(count);
        h.write_u64(round);
        h.write_u128(nanos);
        hasher.update(h.finish().to_le_bytes());
    }
    let digest = hasher.finalize();
    let mut out = [0u8; N];
    for (dst, src) in out.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    out
}

/// Unpadded base64url encoding.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let n = (b0 << 16) | (b1 << 8) | b2;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn hash_is_sha256_hex_of_trimmed_value() {
        assert_eq!(
            hash_token("  abc\n"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
