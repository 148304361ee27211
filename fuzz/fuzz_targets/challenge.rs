//! `AuthError::challenge(&ChallengeParams::new(..))`: the `WWW-Authenticate: Bearer` value.
//!
//! Arbitrary realm, `resource_metadata`, suggested scopes, `required`/`granted` lists and an
//! error kind, read from a plain byte format (see `Input::parse`) so that seeds stay readable
//! and every byte but the two separators can reach every string. The result must
//! * be a valid `http::HeaderValue`;
//! * be `Bearer` SP auth-param *(", " auth-param), each auth-param `token "=" quoted-string`
//!   (RFC 9110 §11.2, §5.6.4), read by a strict parser that consumes the whole value (so no raw
//!   `"` or `\` outside a quoted-string, no empty list, no trailing garbage);
//! * name each parameter at most once (case-insensitive), only the five it may send, in the
//!   documented order `resource_metadata, scope, error, error_description, realm`;
//! * keep `scope` to space-separated RFC 6750 scope-tokens (%x21 / %x23-5B / %x5D-7E) and
//!   `error`/`error_description` to %x20-21 / %x23-5B / %x5D-7E, none needing escapes;
//! * carry `error` (and `error_description`) exactly when the kind has an error code (so never
//!   for `MissingCredentials`), with that code;
//! * carry `realm`/`resource_metadata` exactly when configured (or `realm="api"` when nothing
//!   else would be sent), their values being the input less non-printable characters; and
//!   `scope` being the expected sanitised list.
#![no_main]

use std::time::Duration;

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_wacht::AuthError;
use tower_wacht::reject::{ChallengeParams, InvalidRequestReason, InvalidTokenReason};

/// Every reason an `invalid_token` refusal can give (its description is fixed by the crate).
const TOKEN_REASONS: &[InvalidTokenReason] = &[
    InvalidTokenReason::Malformed,
    InvalidTokenReason::Rejected,
    InvalidTokenReason::JwtNotAccepted,
    InvalidTokenReason::WrongDeployment,
    InvalidTokenReason::WrongIssuer,
    InvalidTokenReason::WrongAudience,
    InvalidTokenReason::DeniedClient,
    InvalidTokenReason::ClientNotAllowed,
    InvalidTokenReason::TenantNotAccepted,
    InvalidTokenReason::Expired,
    InvalidTokenReason::Revoked,
];

#[derive(Debug)]
enum Kind {
    MissingCredentials,
    InvalidRequest,
    InvalidToken(u8),
    InsufficientScope {
        required: Vec<String>,
        granted: Vec<String>,
    },
    RateLimited(u64),
    Unavailable(u64),
}

#[derive(Debug)]
struct Input {
    realm: Option<String>,
    resource_metadata: Option<String>,
    scopes: Vec<String>,
    kind: Kind,
}

/// Field separator (ASCII RS), list item separator (ASCII US), and the one-byte field that
/// stands for "not configured".
const RS: u8 = 0x1E;
const US: u8 = 0x1F;
const NONE: &[u8] = b"\0";

impl Input {
    /// `K D realm RS resource_metadata RS scopes RS required RS granted`: `K % 6` picks the
    /// kind (`0` missing credentials, `1` invalid_request, `2` invalid_token, `3`
    /// insufficient_scope, `4` rate limited, `5` unavailable), `D` the description (or the
    /// retry delay in seconds); lists are split on US; a missing trailing field, or one that is
    /// exactly NUL, is `None` (or empty). Text is decoded lossily from UTF-8 so every input is
    /// usable; anything but RS/US may appear in a value, CR, LF, quotes and backslashes included.
    fn parse(data: &[u8]) -> Option<Input> {
        let (&k, rest) = data.split_first()?;
        let (&d, rest) = rest.split_first().unwrap_or((&0, &[]));
        let mut fields = rest.split(|&b| b == RS);
        let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
        let opt = |fields: &mut std::slice::Split<'_, u8, _>| match fields.next() {
            None => None,
            Some(f) if f == NONE => None,
            Some(f) => Some(text(f)),
        };
        let realm = opt(&mut fields);
        let resource_metadata = opt(&mut fields);
        let list = |fields: &mut std::slice::Split<'_, u8, _>| match fields.next() {
            None => Vec::new(),
            Some(f) if f.is_empty() || f == NONE => Vec::new(),
            Some(f) => f.split(|&b| b == US).map(text).collect(),
        };
        let scopes = list(&mut fields);
        let required = list(&mut fields);
        let granted = list(&mut fields);
        let kind = match k % 6 {
            0 => Kind::MissingCredentials,
            1 => Kind::InvalidRequest,
            2 => Kind::InvalidToken(d),
            3 => Kind::InsufficientScope { required, granted },
            4 => Kind::RateLimited(u64::from(d) * 1000),
            _ => Kind::Unavailable(u64::from(d) * 1000),
        };
        Some(Input {
            realm,
            resource_metadata,
            scopes,
            kind,
        })
    }
}

fn token_reason(i: u8) -> InvalidTokenReason {
    TOKEN_REASONS[usize::from(i) % TOKEN_REASONS.len()]
}

fn error_of(kind: &Kind) -> AuthError {
    match kind {
        Kind::MissingCredentials => AuthError::MissingCredentials,
        Kind::InvalidRequest => AuthError::InvalidRequest(InvalidRequestReason::RepeatedAuthorization),
        Kind::InvalidToken(i) => AuthError::InvalidToken(token_reason(*i)),
        Kind::InsufficientScope { required, granted } => AuthError::InsufficientScope {
            required: required.clone(),
            granted: granted.clone(),
        },
        Kind::RateLimited(ms) => AuthError::RateLimited {
            retry_after: Duration::from_millis(*ms),
        },
        Kind::Unavailable(ms) => AuthError::Unavailable {
            retry_after: Duration::from_millis(*ms),
        },
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 qdtext, restricted to what a header value may carry here (no obs-text: the value
/// must be ASCII).
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

struct Param {
    name: String,
    /// The raw text between the quotes.
    raw: String,
    /// The value with quoted-pairs resolved.
    value: String,
}

/// Strict reader of one `Bearer` challenge: `Bearer` SP param *(", " param), param being
/// `token "=" quoted-string`. Panics on anything else.
fn parse_challenge(c: &str) -> Vec<Param> {
    let b = c.as_bytes();
    assert!(c.starts_with("Bearer "), "does not start with `Bearer `: {c:?}");
    let mut i = "Bearer ".len();
    let mut params = Vec::new();
    loop {
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        assert!(i > start, "expected a parameter name at {start}: {c:?}");
        let name = c[start..i].to_owned();
        assert!(i < b.len() && b[i] == b'=', "expected `=` after {name}: {c:?}");
        i += 1;
        assert!(i < b.len() && b[i] == b'"', "{name} is not a quoted-string: {c:?}");
        i += 1;
        let raw_start = i;
        let mut value = String::new();
        loop {
            assert!(i < b.len(), "unterminated quoted-string in {name}: {c:?}");
            match b[i] {
                b'"' => break,
                b'\\' => {
                    assert!(
                        i + 1 < b.len() && matches!(b[i + 1], b'\t' | b' ' | 0x21..=0x7E),
                        "bad quoted-pair in {name}: {c:?}"
                    );
                    value.push(char::from(b[i + 1]));
                    i += 2;
                }
                x if is_qdtext(x) => {
                    value.push(char::from(x));
                    i += 1;
                }
                x => panic!("byte {x:#04x} inside the quoted {name}: {c:?}"),
            }
        }
        let raw = c[raw_start..i].to_owned();
        i += 1; // closing quote
        params.push(Param { name, raw, value });
        if i == b.len() {
            return params;
        }
        assert!(
            c[i..].starts_with(", "),
            "expected `, ` after a parameter at {i}: {c:?}"
        );
        i += 2;
    }
}

fn is_scope_char(c: char) -> bool {
    matches!(c, '!' | '#'..='[' | ']'..='~')
}

fn is_error_char(c: char) -> bool {
    matches!(c, ' ' | '!' | '#'..='[' | ']'..='~')
}

/// Printable ASCII and space kept, everything else dropped (what a quoted-string may carry).
fn printable(s: &str) -> String {
    s.chars().filter(|c| matches!(c, ' '..='~')).collect()
}

fn expected_scopes(input: &Input) -> Vec<String> {
    let raw: Vec<&String> = match &input.kind {
        Kind::InsufficientScope { required, .. } if required.is_empty() => Vec::new(),
        // Required first, then granted.
        Kind::InsufficientScope { required, granted } => required.iter().chain(granted).collect(),
        _ => input.scopes.iter().collect(),
    };
    // Sanitised, empties and `offline_access` (never asked for) dropped, each distinct token
    // once (first occurrence kept).
    let mut out: Vec<String> = Vec::new();
    for s in raw
        .iter()
        .map(|s| s.chars().filter(|&c| is_scope_char(c)).collect::<String>())
    {
        if !s.is_empty() && s != "offline_access" && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

const ORDER: [&str; 5] = ["resource_metadata", "scope", "error", "error_description", "realm"];

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let params = ChallengeParams::new(
        input.realm.as_deref(),
        input.resource_metadata.as_deref(),
        input.scopes.iter().map(String::as_str),
    );
    let error = error_of(&input.kind);
    let c = error.challenge(&params);

    assert!(HeaderValue::from_str(&c).is_ok(), "not a valid header value: {c:?}");
    let parsed = parse_challenge(&c);
    assert!(!parsed.is_empty(), "a bare `Bearer`: {c:?}");

    // Names: known, each at most once (case-insensitively), in the documented order.
    let mut last = None;
    for (k, p) in parsed.iter().enumerate() {
        let pos = ORDER.iter().position(|n| n.eq_ignore_ascii_case(&p.name));
        let pos = pos.unwrap_or_else(|| panic!("unexpected parameter {:?}: {c:?}", p.name));
        assert_eq!(p.name, ORDER[pos], "parameter name not in canonical case: {c:?}");
        assert!(
            !parsed[..k].iter().any(|q| q.name.eq_ignore_ascii_case(&p.name)),
            "duplicate parameter {:?}: {c:?}",
            p.name
        );
        assert!(last < Some(pos), "parameters out of order: {c:?}");
        last = Some(pos);
    }
    let get = |name: &str| parsed.iter().find(|p| p.name == name);

    // error / error_description: exactly when the kind carries a code.
    match error.error_code() {
        Some(code) => {
            assert!(matches!(
                (&input.kind, code),
                (Kind::InvalidRequest, "invalid_request")
                    | (Kind::InvalidToken(_), "invalid_token")
                    | (Kind::InsufficientScope { .. }, "insufficient_scope")
            ));
            let e = get("error").unwrap_or_else(|| panic!("no error for {code}: {c:?}"));
            assert_eq!(e.value, code);
            let d = get("error_description").unwrap_or_else(|| panic!("no error_description: {c:?}"));
            assert!(d.raw.chars().all(is_error_char), "error_description charset: {c:?}");
            assert_eq!(d.raw, d.value);
            let fixed = match &input.kind {
                Kind::InvalidRequest => Some(InvalidRequestReason::RepeatedAuthorization.description()),
                Kind::InvalidToken(i) => Some(token_reason(*i).description()),
                _ => None,
            };
            if let Some(fixed) = fixed {
                assert_eq!(d.value, fixed, "error_description is the reason's: {c:?}");
            }
        }
        None => {
            assert!(
                !matches!(
                    input.kind,
                    Kind::InvalidRequest | Kind::InvalidToken(_) | Kind::InsufficientScope { .. }
                ),
                "a kind with an error code has none"
            );
            assert!(get("error").is_none() && get("error_description").is_none(), "{c:?}");
        }
    }
    if let Some(e) = get("error") {
        assert!(e.raw.chars().all(is_error_char), "error charset: {c:?}");
    }

    // scope: RFC 6750 scope-tokens, single spaces, no escapes; the expected list.
    let scopes = expected_scopes(&input);
    match get("scope") {
        Some(s) => {
            assert_eq!(s.raw, s.value, "escapes in scope: {c:?}");
            let tokens: Vec<&str> = s.raw.split(' ').collect();
            assert!(
                tokens.iter().all(|t| !t.is_empty() && t.chars().all(is_scope_char)),
                "scope is not space-separated scope-tokens: {c:?}"
            );
            assert_eq!(tokens, scopes, "scope list: {c:?}");
        }
        None => assert!(scopes.is_empty(), "scopes {scopes:?} missing: {c:?}"),
    }

    // resource_metadata and realm: present when configured, values kept (printable part).
    match (&input.resource_metadata, get("resource_metadata")) {
        (Some(url), Some(p)) => assert_eq!(p.value, printable(url), "{c:?}"),
        (None, None) => {}
        (url, p) => panic!("resource_metadata {url:?} vs {:?}: {c:?}", p.map(|p| &p.value)),
    }
    let only_realm_fallback =
        input.resource_metadata.is_none() && scopes.is_empty() && error.error_code().is_none() && input.realm.is_none();
    match (&input.realm, get("realm")) {
        (Some(realm), Some(p)) => assert_eq!(p.value, printable(realm), "{c:?}"),
        (None, Some(p)) => {
            assert!(only_realm_fallback, "realm without one configured: {c:?}");
            assert_eq!(p.value, "api");
        }
        (None, None) => assert!(!only_realm_fallback, "{c:?}"),
        (Some(_), None) => panic!("configured realm missing: {c:?}"),
    }
});
