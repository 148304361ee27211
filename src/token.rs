//! RFC 6750 `Authorization: Bearer` parsing, and the token types that keep the secret out of
//! logs: [`BearerToken`] (redacted `Debug`) and [`TokenHash`] (the SHA-256 used as cache key).

use std::fmt;

use std::ops::Range;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// Default upper bound on the length of a bearer token, in bytes (4 KiB).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 4096;

/// A bearer token borrowed from a request header.
///
/// The token is a secret: its `Debug` never shows it, and it has no `Display`. Use
/// [`BearerToken::expose`] where the raw value is really needed (sending it to the gateway).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a>(&'a [u8]);

impl<'a> BearerToken<'a> {
    /// The raw token. Only the gateway client should need this.
    pub fn expose(&self) -> &'a str {
        // Validated as ASCII by `parse_token`, so this never falls back; it is done here, off
        // the cache-hit path, which only hashes the bytes.
        std::str::from_utf8(self.0).unwrap_or_default()
    }

    /// The raw bytes, to hash.
    pub(crate) fn secret_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The SHA-256 of the token, used as the cache key.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// Length of the token in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True only for a token built without validation that holds nothing; a token from
    /// [`parse_token`] is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if the token has the shape of a JWS compact serialization: three base64url
    /// segments separated by dots, the first two non-empty (the signature may be empty, as in
    /// `alg: none`). Opaque Wacht tokens (`oat_` + base64url) never do.
    pub fn is_jwt_shaped(&self) -> bool {
        jwt_shaped(self.0)
    }
}

/// [`BearerToken::is_jwt_shaped`] of a credential's bytes (the verifier and the audit trail
/// decide alike).
pub(crate) fn jwt_shaped(token: &[u8]) -> bool {
    let mut segments = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return false;
    };
    let base64url = |s: &[u8]| s.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    !header.is_empty() && !payload.is_empty() && base64url(header) && base64url(payload) && base64url(signature)
}

/// A bearer token owned past the request that carried it (for a gateway call or a background
/// refresh): the `Authorization` header value itself, so no copy of the secret is made.
/// `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct OwnedBearer {
    value: HeaderValue,
    token: Range<usize>,
}

impl OwnedBearer {
    /// The token of an `Authorization` value [`bearer_from_headers`] accepted, keeping the
    /// value itself (no copy).
    pub(crate) fn from_header(value: HeaderValue, max_len: usize) -> Option<Self> {
        let token = bearer_range(value.as_bytes(), max_len).ok()??;
        Some(OwnedBearer { value, token })
    }

    /// The API key that is a whole header value (the configured API-key header), keeping the
    /// value itself.
    pub(crate) fn from_key_header(value: HeaderValue, max_len: usize) -> Option<Self> {
        parse_token(value.as_bytes(), max_len).ok()?;
        let token = 0..value.len();
        Some(OwnedBearer { value, token })
    }

    /// A copy of a borrowed token (for work that outlives its request, such as a background
    /// refresh, when the header is not at hand).
    pub(crate) fn copy_of(token: BearerToken<'_>) -> Option<Self> {
        let value = HeaderValue::from_bytes(token.0).ok()?;
        let token = 0..value.len();
        Some(OwnedBearer { value, token })
    }

    /// The token, borrowed.
    pub(crate) fn token(&self) -> BearerToken<'_> {
        BearerToken(self.value.as_bytes().get(self.token.clone()).unwrap_or_default())
    }
}

impl fmt::Debug for OwnedBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnedBearer(<redacted, {} bytes>)", self.token.len())
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// A bearer credential as the request carries it: the `Bearer` scheme matched, the token's
/// bounds found and its length checked, its alphabet not yet. Good only for a cache lookup
/// by its hash: a hit means these exact bytes were validated and verified before (the key is
/// their SHA-256, or in fleet mode an HMAC-SHA256, and only validated tokens are ever
/// stored), so the hit path need not walk the token's bytes twice. Anything else must go
/// through [`Credential::validate`] first. A secret like the token: `Debug` is redacted.
#[derive(Clone, Copy)]
pub(crate) struct Credential<'a>(&'a [u8]);

impl<'a> Credential<'a> {
    /// The raw bytes, to hash.
    pub(crate) fn secret_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The token, if it is in the RFC 6750 `b64token` alphabet.
    pub(crate) fn validate(self) -> Result<BearerToken<'a>, TokenError> {
        parse_token(self.0, usize::MAX)
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential(<redacted, {} bytes>)", self.0.len())
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
        Self::of_bytes(token.as_bytes())
    }

    /// Hashes a token's bytes with SHA-256.
    pub(crate) fn of_bytes(token: &[u8]) -> Self {
        TokenHash(Sha256::digest(token).into())
    }

    /// A key from raw bytes (fleet mode's keyed hash; tests of the cache's collisions).
    #[cfg_attr(not(any(test, feature = "redis")), allow(dead_code))]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short fingerprint (8 hex digits) for correlating the log lines of one process: 32
    /// bits of HMAC-SHA256 of the digest under a key drawn at random when the process first
    /// needs one. Not the digest itself, so nobody holding a candidate token (or its plain
    /// SHA-256) can confirm from the logs that it was used; fingerprints differ between
    /// processes and restarts.
    pub fn fingerprint(&self) -> String {
        use aws_lc_rs::hmac;
        static KEY: std::sync::OnceLock<hmac::Key> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new()).unwrap_or_else(|_| {
                // No system randomness (never seen): a key no log reader knows in advance.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let seed = format!("{now}:{}:{:p}", std::process::id(), &now);
                hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
            })
        });
        let tag = hmac::sign(key, &self.0);
        tag.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
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

/// [`bearer_from_headers`] for the layer's hit path: the same answers, except that a token
/// outside the `b64token` alphabet comes back as a [`Credential`] whose
/// [`validate`](Credential::validate) refuses it (see there for why that is sound).
pub(crate) fn credential_from_headers(
    headers: &HeaderMap,
    max_len: usize,
) -> Result<Option<Credential<'_>>, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::DuplicateHeader);
    }
    let value = value.as_bytes();
    Ok(credential_range(value, max_len)?.map(|range| Credential(&value[range])))
}

/// The API key in the configured API-key header (the whole value): `None` without one, an
/// error when it is repeated, empty or longer than `max_len` (its alphabet is checked only
/// on a miss, as for [`credential_from_headers`]).
pub(crate) fn credential_from_key_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    max_len: usize,
) -> Result<Option<Credential<'a>>, TokenError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::DuplicateHeader);
    }
    let value = value.as_bytes();
    if value.is_empty() {
        return Err(TokenError::Malformed);
    }
    if value.len() > max_len {
        return Err(TokenError::TooLong);
    }
    Ok(Some(Credential(value)))
}

/// Takes the API-key header off the request, as [`strip_authorization`] does `Authorization`.
pub(crate) fn strip_key_header(headers: &mut HeaderMap, name: &HeaderName, keep: bool) -> Option<HeaderValue> {
    if keep {
        let value = headers.get_mut(name)?;
        value.set_sensitive(true);
        Some(value.clone())
    } else {
        headers.remove(name)
    }
}

/// No token passthrough: takes the `Authorization` header off the request (the inner service
/// never sees it), or with `keep` leaves it there marked sensitive (so `Debug` and HTTP/2
/// HPACK treat it as a secret). Returns the value, owned, for a verification that needs it.
pub(crate) fn strip_authorization(headers: &mut HeaderMap, keep: bool) -> Option<HeaderValue> {
    if keep {
        let value = headers.get_mut(AUTHORIZATION)?;
        value.set_sensitive(true);
        Some(value.clone())
    } else {
        headers.remove(AUTHORIZATION)
    }
}

/// Parses one `Authorization` header value; see [`bearer_from_headers`].
pub fn parse_authorization(value: &[u8], max_len: usize) -> Result<Option<BearerToken<'_>>, TokenError> {
    Ok(bearer_range(value, max_len)?.map(|range| BearerToken(&value[range])))
}

/// Where the validated token sits in an `Authorization` value; see [`bearer_from_headers`].
fn bearer_range(value: &[u8], max_len: usize) -> Result<Option<Range<usize>>, TokenError> {
    let Some(range) = credential_range(value, max_len)? else {
        return Ok(None);
    };
    parse_token(&value[range.clone()], max_len)?;
    Ok(Some(range))
}

/// Where the token sits in an `Authorization` value, its length checked (not empty, at most
/// `max_len`) but not its alphabet.
fn credential_range(value: &[u8], max_len: usize) -> Result<Option<Range<usize>>, TokenError> {
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
    let start = SCHEME.len() + rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let mut end = value.len();
    while end > start && matches!(value[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    match end - start {
        0 => Err(TokenError::Malformed),
        len if len > max_len => Err(TokenError::TooLong),
        _ => Ok(Some(start..end)),
    }
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

    /// `Authorization` values with a malformed bearer token.
    const MALFORMED: [&str; 9] = [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer a b",
        "Bearer a,b",
        "Bearer ===",
        "Bearer a=b",
        "Bearer \"a\"",
        "Bearer é",
    ];

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in MALFORMED {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(parse(&format!("Bearer {}", "a".repeat(65))), Err(TokenError::TooLong));
        assert_eq!(
            parse(&format!("Bearer {}", "a".repeat(64))).map(|t| t.map(str::len)),
            Ok(Some(64))
        );
    }

    #[test]
    fn a_credential_gives_the_same_answers_once_validated() {
        let others = [
            "Bearer abc",
            "bearer   abc== \t",
            "Basic dXNlcjpwYXNz",
            "Bearerabc",
            "",
            "Bearer aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        for case in others.into_iter().chain(MALFORMED) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(case.as_bytes()) {
                headers.insert(AUTHORIZATION, value);
            }
            let direct = bearer_from_headers(&headers, 64).map(|t| t.map(|t| t.expose().to_owned()));
            let via_credential = credential_from_headers(&headers, 64)
                .and_then(|c| c.map(Credential::validate).transpose())
                .map(|t| t.map(|t| t.expose().to_owned()));
            assert_eq!(via_credential, direct, "{case:?}");
        }
    }

    #[test]
    fn duplicate_headers_are_invalid_requests() {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_from_headers(&headers, 64), Err(TokenError::DuplicateHeader));
    }

    #[test]
    fn jwt_shapes_are_told_from_opaque_tokens() {
        let shaped = |t: &str| parse_token(t.as_bytes(), 4096).map(|t| t.is_jwt_shaped());
        assert_eq!(shaped("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_"), Ok(true));
        assert_eq!(shaped("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."), Ok(true));
        for opaque in [
            "oat_2F1s22P-YJhDkOjojWARDPmrr7Y4Y6NQkbU7flSku_0",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a+b.c.d",
            "a.b.c=",
        ] {
            assert_eq!(shaped(opaque), Ok(false), "{opaque}");
        }
    }

    #[test]
    fn the_header_is_stripped_or_kept_sensitive_and_owned_without_a_copy() {
        let headers = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(value));
            h
        };
        let mut h = headers("Bearer   oat_secretvalue \t");
        let value = strip_authorization(&mut h, false).unwrap_or_else(|| unreachable!());
        assert!(h.get(AUTHORIZATION).is_none(), "removed");
        let owned = OwnedBearer::from_header(value, 64).unwrap_or_else(|| unreachable!());
        assert_eq!(owned.token().expose(), "oat_secretvalue");
        assert!(!format!("{owned:?}").contains("secret"));
        let mut h = headers("Bearer oat_kept");
        assert!(strip_authorization(&mut h, true).is_some());
        assert!(
            h.get(AUTHORIZATION).is_some_and(HeaderValue::is_sensitive),
            "kept, sensitive"
        );
        assert!(OwnedBearer::from_header(HeaderValue::from_static("Basic abc"), 64).is_none());
        let copy = OwnedBearer::copy_of(owned.token()).unwrap_or_else(|| unreachable!());
        assert_eq!(copy.token().expose(), "oat_secretvalue");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = parse_token(b"oat_secretvalue", 64).unwrap_or_else(|_| unreachable!());
        let shown = format!("{token:?} {:?}", token.hash());
        assert!(!shown.contains("secretvalue"), "{shown}");
    }
}
