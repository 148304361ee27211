//! RFC 6750 `Authorization: Bearer` parsing, and the token types that keep the secret out of
//! logs: [`BearerToken`] (redacted `Debug`) and [`TokenHash`] (the SHA-256 used as cache key).

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

/// Default upper bound on the length of a bearer token, in bytes (4 KiB).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 4096;

/// A bearer token borrowed from a request header.
///
/// The token is a secret: its `Debug` and `Display` output never show it. Use
/// [`BearerToken::expose`] where the raw value is really needed (sending it to the gateway).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a>(&'a [u8]);

impl<'a> BearerToken<'a> {
    /// Wraps a token that the caller has already validated (see [`parse_token`]).
    pub(crate) fn new_unchecked(token: &'a str) -> Self {
        BearerToken(token.as_bytes())
    }

    /// The raw token. Only the gateway client should need this.
    pub fn expose(&self) -> &'a str {
        // Validated as ASCII by `parse_token`, so this never falls back; it is done here, off
        // the cache-hit path, which only hashes the bytes.
        std::str::from_utf8(self.0).unwrap_or_default()
    }

    /// The SHA-256 of the token, used as the cache key.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// Length of the token in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a parsed bearer token is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// SHA-256 of a bearer token: the only form in which a token is kept (cache keys, negative
/// cache, invalidation). Its `Debug` shows an 8-hex-digit fingerprint, never the token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenHash([u8; 32]);

impl std::hash::Hash for TokenHash {
    // A SHA-256 digest is already uniform and not attacker-steerable: feed its first 8 bytes
    // to the table hasher as one word (no length prefix, no 32-byte pass).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

impl TokenHash {
    /// Hashes a token with SHA-256.
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// A digest built from raw bytes, for tests of the cache's collision handling.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short, non-reversible fingerprint (first 4 digest bytes in hex) for correlating logs.
    pub fn fingerprint(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", self.fingerprint())
    }
}

/// Why a request's credentials could not be used, before any gateway call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// More than one `Authorization` header line (RFC 6750 §3.1 `invalid_request`, 400).
    #[error("the request carries more than one Authorization header")]
    DuplicateHeader,
    /// The `Bearer` scheme is present but the token is empty, has bytes outside the RFC 6750
    /// `b64token` alphabet, or the header is not visible ASCII (`invalid_token`, 401).
    #[error("the bearer token is malformed")]
    Malformed,
    /// The token is longer than the configured maximum (`invalid_token`, 401).
    #[error("the bearer token is longer than the allowed maximum")]
    TooLong,
}

/// Reads the bearer token from the request headers.
///
/// * `Ok(None)`: no `Authorization` header, or one with another scheme (`Basic`, `DPoP`...):
///   the request carries no usable credentials.
/// * `Ok(Some(token))`: `Bearer`, case-insensitive, then one or more spaces, then a token in the
///   `b64token` alphabet (`A-Z a-z 0-9 - . _ ~ + /` then optional `=` padding), at most
///   `max_len` bytes. Trailing spaces and tabs are ignored.
/// * `Err(_)`: see [`TokenError`].
pub fn bearer_from_headers(headers: &HeaderMap, max_len: usize) -> Result<Option<BearerToken<'_>>, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::DuplicateHeader);
    }
    parse_authorization(value.as_bytes(), max_len)
}

/// Parses one `Authorization` header value; see [`bearer_from_headers`].
pub fn parse_authorization(value: &[u8], max_len: usize) -> Result<Option<BearerToken<'_>>, TokenError> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Ok(None);
    }
    let rest = &value[SCHEME.len()..];
    match rest.first() {
        // `Bearer` alone: the scheme with no token is a malformed credential.
        None => return Err(TokenError::Malformed),
        Some(b' ') => {}
        // `Bearerx...` is another scheme name, not ours.
        Some(_) => return Ok(None),
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let mut token = &rest[start..];
    while let [head @ .., b' ' | b'\t'] = token {
        token = head;
    }
    parse_token(token, max_len).map(Some)
}

/// Validates raw token bytes against the RFC 6750 `b64token` grammar and the length bound.
pub fn parse_token(token: &[u8], max_len: usize) -> Result<BearerToken<'_>, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Malformed);
    }
    if token.len() > max_len {
        return Err(TokenError::TooLong);
    }
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    if body_len == 0 || !token[..body_len].iter().all(|&b| B64TOKEN[usize::from(b)]) {
        return Err(TokenError::Malformed);
    }
    Ok(BearerToken(token))
}

/// RFC 6750 `b64token` characters (`ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`), as a
/// table: one load per byte on the hot path.
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(v: &str) -> Result<Option<&str>, TokenError> {
        parse_authorization(v.as_bytes(), 64).map(|t| t.map(|t| t.expose()))
    }

    #[test]
    fn accepts_bearer_case_insensitively_with_one_or_more_spaces() {
        assert_eq!(parse("Bearer abc"), Ok(Some("abc")));
        assert_eq!(parse("bearer abc"), Ok(Some("abc")));
        assert_eq!(parse("BEARER   abc=="), Ok(Some("abc==")));
        assert_eq!(parse("bEaReR a-._~+/9 \t"), Ok(Some("a-._~+/9")));
    }

    #[test]
    fn other_schemes_are_no_credentials() {
        assert_eq!(parse("Basic dXNlcjpwYXNz"), Ok(None));
        assert_eq!(parse("DPoP abc"), Ok(None));
        assert_eq!(parse("Bearerabc"), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
            "Bearer a=b",
            "Bearer \"a\"",
            "Bearer é",
        ] {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(parse(&format!("Bearer {}", "a".repeat(65))), Err(TokenError::TooLong));
        assert_eq!(
            parse(&format!("Bearer {}", "a".repeat(64))).map(|t| t.map(str::len)),
            Ok(Some(64))
        );
    }

    #[test]
    fn duplicate_headers_are_invalid_requests() {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_from_headers(&headers, 64), Err(TokenError::DuplicateHeader));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = parse_token(b"oat_secretvalue", 64).unwrap_or_else(|_| unreachable!());
        let shown = format!("{token:?} {:?}", token.hash());
        assert!(!shown.contains("secretvalue"), "{shown}");
    }
}
