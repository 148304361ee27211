//! Parsing and checking what requests carry: form and query parameters, scopes, PKCE,
//! resources, loopback hosts and HTTP Basic client credentials. Pure functions, no state.
//! Redirect URIs have their own module, [`redirect`](super::redirect).

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use url::{Host, Url};

/// The parameters of a query string or an `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub(super) struct Params {
    pairs: Vec<(String, String)>,
}

/// A parameter that appeared more than once where RFC 6749 §3.1 forbids it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Repeated(pub(super) &'static str);

impl Params {
    /// Parses `input` (`a=1&b=2`), decoding `+` and percent escapes; invalid UTF-8 is
    /// replaced, which makes the value fail any later check.
    pub(super) fn parse(input: &[u8]) -> Params {
        Params {
            pairs: url::form_urlencoded::parse(input)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The value of `name`. Parameters without a value count as omitted (RFC 6749 §3.1);
    /// one given twice is an error.
    pub(super) fn get(&self, name: &'static str) -> Result<Option<&str>, Repeated> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Repeated(name));
        }
        Ok(first)
    }

    /// Every non-empty value of `name`, in order.
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The first parameter (among `names`) given more than once.
    pub(super) fn first_repeated(&self, names: &[&'static str]) -> Option<Repeated> {
        names.iter().find_map(|name| self.get(name).err())
    }
}

/// The scope tokens of a space-separated `scope` value, without duplicates, in order.
pub(super) fn split_scopes(value: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in value.unwrap_or_default().split(' ').filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    scopes
}

/// The PKCE S256 challenge of `verifier`: unpadded base64url of its SHA-256 (RFC 7636 §4.2).
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
pub(super) fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the base64url encoding of 32 bytes: 43 characters.
pub(super) fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// RFC 8707 §2: an absolute URI without a fragment.
pub(super) fn is_valid_resource(resource: &str) -> bool {
    !resource.contains('#') && Url::parse(resource).is_ok()
}

/// Whether `url` names this machine: `localhost` (or a subdomain of it), `127.0.0.0/8` or
/// `::1`.
pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The client id and secret of an `Authorization: Basic` value, each form-urlencoded as
/// RFC 6749 §2.3.1 requires; `None` when it is not well-formed Basic credentials. Other
/// schemes are not client authentication: `Some(None)`.
pub(super) fn basic_credentials(value: &str) -> Option<Option<(String, String)>> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Some(None);
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some(Some((form_decode(id)?, form_decode(secret)?)))
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte.
/// `None` on a broken escape or invalid UTF-8.
fn form_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_treat_empty_as_omitted_and_refuse_repeats() {
        let p = Params::parse(b"a=1&b=&c=x+y%21&a=2&d=3");
        assert_eq!(p.get("a"), Err(Repeated("a")));
        assert_eq!(p.get("b"), Ok(None));
        assert_eq!(p.get("c"), Ok(Some("x y!")));
        assert_eq!(p.get("z"), Ok(None));
        assert_eq!(p.first_repeated(&["d", "a"]), Some(Repeated("a")));
        assert_eq!(p.first_repeated(&["d", "c"]), None);
    }

    #[test]
    fn scopes_split_on_spaces_without_duplicates() {
        assert_eq!(split_scopes(Some(" a  b a ")), vec!["a", "b"]);
        assert!(split_scopes(None).is_empty());
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_valid_verifier(verifier));
        assert_eq!(s256(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(is_valid_s256_challenge(&s256(verifier)));
        assert!(!is_valid_verifier("short"));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
        assert!(!is_valid_s256_challenge("plain-challenge"));
    }

    #[test]
    fn resources_are_absolute_without_fragment() {
        assert!(is_valid_resource("https://api.example.com/mcp"));
        assert!(is_valid_resource("http://127.0.0.1:8080/mcp"));
        assert!(!is_valid_resource("/mcp"));
        assert!(!is_valid_resource("https://api.example.com/mcp#x"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let value = format!("Basic {}", STANDARD.encode("oc_a%2Bb:s+e%3Acret"));
        assert_eq!(
            basic_credentials(&value),
            Some(Some(("oc_a+b".to_owned(), "s e:cret".to_owned())))
        );
        assert_eq!(basic_credentials("Bearer abc"), Some(None));
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(
            basic_credentials(&format!("basic {}", STANDARD.encode("nocolon"))),
            None
        );
        assert_eq!(basic_credentials(&format!("Basic {}", STANDARD.encode("a:%zz"))), None);
        assert_eq!(basic_credentials(&format!("Basic {}", STANDARD.encode("a:%+1"))), None);
    }
}
