//! The JOSE layer of a Wacht JWT access token: three base64url segments, a header that may
//! say only what Wacht's does, and the bytes the signature covers.
//!
//! The algorithm is never taken from the token: the header must say `RS256` (the only
//! algorithm Wacht signs with, and the one this crate verifies), and any member that would let
//! the token choose its own key or semantics (`jku`, `x5u`, `jwk`, `x5c`, `x5t`, `crit`, ...)
//! refuses it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::Refusal;
use crate::json::parse_strict;

/// Largest decoded header accepted.
const MAX_HEADER: usize = 1024;
/// Longest `kid` accepted.
pub(crate) const MAX_KID: usize = 256;
/// Header members a Wacht token never carries and a verifier must not honour.
const FORBIDDEN: [&str; 9] = ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip"];

/// A compact JWS, split and decoded, its signature not yet checked.
#[derive(Debug)]
pub(crate) struct Jws<'a> {
    /// The key id from the header.
    pub(crate) kid: String,
    /// `header.payload`, the bytes the signature covers.
    pub(crate) signing_input: &'a [u8],
    /// The decoded payload (claims), not yet trusted.
    pub(crate) payload: Vec<u8>,
    /// The decoded signature.
    pub(crate) signature: Vec<u8>,
}

/// Splits and checks the JOSE part of `token`.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, Refusal> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(Refusal::Malformed);
    };
    let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let header = decode(header)?;
    if header.len() > MAX_HEADER {
        return Err(Refusal::Malformed);
    }
    let Some(Value::Object(header)) = parse_strict(&header) else {
        return Err(Refusal::Malformed);
    };
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" => {}
        _ => return Err(Refusal::DisallowedAlgorithm),
    }
    if FORBIDDEN.iter().any(|m| header.contains_key(*m)) {
        return Err(Refusal::DisallowedHeader);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("at+jwt") => {}
        Some(_) => return Err(Refusal::DisallowedHeader),
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID => kid.clone(),
        _ => return Err(Refusal::UnknownKey),
    };
    let signature = decode(signature)?;
    if signature.is_empty() {
        return Err(Refusal::BadSignature);
    }
    Ok(Jws {
        kid,
        signing_input,
        payload: decode(payload)?,
        signature,
    })
}

/// Strict base64url without padding (RFC 7515 §2).
pub(crate) fn decode(segment: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| Refusal::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.{}", b64(header), b64("{}"), b64("sig"))
    }

    #[test]
    fn only_a_wacht_shaped_rs256_header_passes() {
        let ok = token(r#"{"typ":"JWT","alg":"RS256","kid":"oas-1-2"}"#);
        let jws = parse(&ok).unwrap_or_else(|e| unreachable!("{e:?}"));
        assert_eq!(jws.kid, "oas-1-2");
        assert_eq!(
            jws.signing_input,
            ok.rsplit_once('.').map(|(a, _)| a.as_bytes()).unwrap_or_default()
        );
        for (header, refusal) in [
            (r#"{"alg":"none","kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (r#"{"alg":"HS256","kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (r#"{"alg":"rs256","kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (r#"{"alg":"PS256","kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (r#"{"alg":"ES256","kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (r#"{"kid":"k"}"#, Refusal::DisallowedAlgorithm),
            (
                r#"{"alg":"RS256","kid":"k","jku":"https://evil"}"#,
                Refusal::DisallowedHeader,
            ),
            (r#"{"alg":"RS256","kid":"k","jwk":{}}"#, Refusal::DisallowedHeader),
            (r#"{"alg":"RS256","kid":"k","x5c":[]}"#, Refusal::DisallowedHeader),
            (r#"{"alg":"RS256","kid":"k","x5u":"u"}"#, Refusal::DisallowedHeader),
            (r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#, Refusal::DisallowedHeader),
            (
                r#"{"alg":"RS256","kid":"k","typ":"id_token"}"#,
                Refusal::DisallowedHeader,
            ),
            (r#"{"alg":"RS256"}"#, Refusal::UnknownKey),
            (r#"{"alg":"RS256","kid":""}"#, Refusal::UnknownKey),
            (r#"{"alg":"RS256","kid":7}"#, Refusal::UnknownKey),
            (r#"{"alg":"RS256","alg":"RS256","kid":"k"}"#, Refusal::Malformed),
            ("not json", Refusal::Malformed),
        ] {
            assert_eq!(parse(&token(header)).map(|_| ()), Err(refusal), "{header}");
        }
        for malformed in ["a.b", "a.b.c.d", "!!.e30.c2ln"] {
            assert_eq!(parse(malformed).map(|_| ()), Err(Refusal::Malformed), "{malformed}");
        }
        let padded = format!("{}.e30=.c2ln", b64(r#"{"alg":"RS256","kid":"k"}"#));
        assert_eq!(
            parse(&padded).map(|_| ()),
            Err(Refusal::Malformed),
            "padding is not base64url"
        );
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"RS256","kid":"k"}"#), b64("{}"));
        assert_eq!(parse(&unsigned).map(|_| ()), Err(Refusal::BadSignature));
    }
}
