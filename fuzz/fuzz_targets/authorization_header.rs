//! `Authorization` header parsing: `parse_authorization` and `bearer_from_headers` (the crate's
//! public entry points; `parse_token` is internal and reached through them).
//!
//! The input is one header value (raw bytes). Every outcome is compared with an independent
//! reference reading of the RFC 6750 grammar:
//!
//! ```text
//! credentials = "Bearer" (case-insensitive) 1*SP b64token *(SP / HTAB)
//! b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//! ```
//!
//! * `Ok(None)` exactly when the value does not start with `bearer` followed by a space (or
//!   end of input, which is `Malformed`): another scheme, no credentials of ours.
//! * `Ok(Some(t))`: `t` is non-empty, at most `max_len` bytes, in the b64token alphabet, and the
//!   input is exactly `bearer` + spaces + `t` + trailing spaces/tabs (so `t` is a substring).
//! * `Err(TooLong)` exactly when the candidate is longer than `max_len`; `Err(Malformed)`
//!   otherwise; and the result is the same for every `max_len` at least the token length.
//! * `TokenHash` is SHA-256 of `t`; neither `Debug` shows the token.
//! * The input split on `\n` into header lines: two or more `Authorization` lines give
//!   `Err(DuplicateHeader)`; one gives the same answer as `parse_authorization`.
#![no_main]

use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tower_wacht::token::{
    BearerToken, DEFAULT_MAX_TOKEN_LEN, TokenError, TokenHash, bearer_from_headers, parse_authorization,
};

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// What the reference grammar says about one header value, independent of `max_len`.
#[derive(Debug, PartialEq, Eq)]
enum Expected<'a> {
    /// Not the Bearer scheme.
    NotBearer,
    /// Bearer scheme; the candidate token (after the spaces, without trailing SP/HTAB) and
    /// whether it matches `b64token`.
    Bearer { candidate: &'a [u8], valid: bool },
}

fn reference(value: &[u8]) -> Expected<'_> {
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"bearer") {
        return Expected::NotBearer;
    }
    let rest = &value[6..];
    if !rest.is_empty() && rest[0] != b' ' {
        return Expected::NotBearer;
    }
    let mut i = 0;
    while i < rest.len() && rest[i] == b' ' {
        i += 1;
    }
    let mut end = rest.len();
    while end > i && matches!(rest[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    let candidate = &rest[i..end];
    let body = candidate.iter().take_while(|&&b| is_b64(b)).count();
    let valid = body > 0 && candidate[body..].iter().all(|&b| b == b'=');
    Expected::Bearer { candidate, valid }
}

fn check_token(value: &[u8], max_len: usize) {
    let got = parse_authorization(value, max_len);
    match (reference(value), got) {
        (Expected::NotBearer, Ok(None)) => {
            assert!(
                !(value.len() >= 7 && value[..6].eq_ignore_ascii_case(b"bearer") && value[6] == b' '),
                "Ok(None) for a Bearer credential"
            );
        }
        (Expected::NotBearer, other) => panic!("not a Bearer value, yet {other:?}"),
        (Expected::Bearer { candidate, .. }, Err(TokenError::TooLong)) => {
            assert!(
                candidate.len() > max_len,
                "TooLong for {} <= {max_len} bytes",
                candidate.len()
            );
        }
        (Expected::Bearer { candidate, valid }, Err(TokenError::Malformed)) => {
            assert!(candidate.len() <= max_len, "Malformed where TooLong was due");
            assert!(!valid, "a valid b64token was rejected as malformed");
        }
        (Expected::Bearer { .. }, Err(TokenError::DuplicateHeader)) => {
            panic!("DuplicateHeader from a single value")
        }
        (Expected::Bearer { .. }, Ok(None)) => panic!("Ok(None) for a Bearer credential"),
        (Expected::Bearer { candidate, valid }, Ok(Some(t))) => {
            let raw = t.expose().as_bytes();
            assert!(valid, "accepted a token outside b64token");
            assert_eq!(raw, candidate, "the token is not the candidate");
            assert!(!raw.is_empty() && !t.is_empty() && t.len() == raw.len());
            assert!(raw.len() <= max_len, "token longer than max_len");
            // Alphabet: b64token characters, then only trailing '='.
            let body = raw.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
            assert!(body > 0 && raw[..body].iter().all(|&b| is_b64(b)));
            // Scheme then at least one space, and t is a substring of the input.
            assert!(value[..6].eq_ignore_ascii_case(b"bearer") && value[6] == b' ');
            assert!(
                value.windows(raw.len()).any(|w| w == raw),
                "token not a substring of the input"
            );
            // The cache key is SHA-256 of the token.
            let digest: [u8; 32] = Sha256::digest(raw).into();
            assert_eq!(t.hash().as_bytes(), &digest);
            assert_eq!(t.hash(), TokenHash::of(t.expose()));
            check_redaction(t, &digest);
        }
    }
}

/// `Debug` of a token depends on its length only, and never shows the token; `Debug` of the
/// hash is the 8-hex-digit fingerprint of the digest.
fn check_redaction(parsed: BearerToken<'_>, digest: &[u8; 32]) {
    let token = parsed.expose();
    let shown = format!("{parsed:?}");
    let dummy = format!("Bearer {}", "A".repeat(token.len()));
    let dummy = parse_authorization(dummy.as_bytes(), usize::MAX);
    let template = format!("{:?}", dummy.ok().flatten().expect("dummy token"));
    assert_eq!(shown, template, "BearerToken Debug depends on the token's content");
    if token.len() >= 4 && !template.contains(token) {
        assert!(!shown.contains(token), "BearerToken Debug shows the token: {shown}");
    }
    let fingerprint: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("{:?}", parsed.hash()), format!("TokenHash({fingerprint}…)"));
    assert_eq!(parsed.hash().fingerprint(), fingerprint);
}

fn check_headers(data: &[u8]) {
    let lines: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let mut headers = HeaderMap::new();
    // Other credentials headers are not ours and change nothing.
    if let Some(first) = lines.first() {
        headers.insert(PROXY_AUTHORIZATION, first.clone());
    }
    assert_eq!(bearer_from_headers(&headers, DEFAULT_MAX_TOKEN_LEN), Ok(None));
    for line in &lines {
        headers.append(AUTHORIZATION, line.clone());
    }
    let got = bearer_from_headers(&headers, DEFAULT_MAX_TOKEN_LEN);
    match lines.as_slice() {
        [] => assert_eq!(got, Ok(None)),
        [one] => assert_eq!(got, parse_authorization(one.as_bytes(), DEFAULT_MAX_TOKEN_LEN)),
        _ => assert_eq!(got, Err(TokenError::DuplicateHeader)),
    }
    // The same value twice is still a duplicate.
    if let Some(first) = lines.first() {
        let mut twice = HeaderMap::new();
        twice.append(AUTHORIZATION, first.clone());
        twice.append(AUTHORIZATION, first.clone());
        assert_eq!(
            bearer_from_headers(&twice, DEFAULT_MAX_TOKEN_LEN),
            Err(TokenError::DuplicateHeader)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // Several bounds: the default, none, the smallest, and one that cuts through the input.
    for max_len in [DEFAULT_MAX_TOKEN_LEN, usize::MAX, 0, 1, data.len() / 2] {
        check_token(data, max_len);
    }
    // The answer only depends on whether the token fits.
    if let (Ok(Some(a)), Ok(b)) = (
        parse_authorization(data, usize::MAX),
        parse_authorization(data, data.len() / 2),
    ) {
        assert_eq!(Some(a), b);
    }
    check_headers(data);
});
