//! Standard Webhooks signatures, as Wacht sends them: the signing secret (`whsec_` and
//! base64), the three `webhook-*` headers, and HMAC-SHA256 over `{id}.{timestamp}.{body}`
//! compared in constant time.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;

use crate::error::ConfigError;

/// Fewest bytes a signing secret may decode to (Standard Webhooks secrets have 24 to 64).
pub(crate) const MIN_SECRET_LEN: usize = 16;
/// Longest `webhook-id` taken.
pub(crate) const MAX_ID_LEN: usize = 256;
/// Most signatures read from one `webhook-signature` header (two during a rotation).
pub(crate) const MAX_SIGNATURES: usize = 16;
/// Longest `webhook-signature` header read.
const MAX_SIGNATURE_HEADER: usize = 4096;

/// Standard base64 with or without its padding (senders differ on padding; the bytes decide).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One signing secret, as an HMAC key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// `whsec_<base64>` (or the base64 alone), decoding to at least [`MIN_SECRET_LEN`] bytes.
    /// The error never repeats the secret.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| {
            ConfigError::invalid(
                "webhook secret",
                "not a Wacht signing secret (whsec_ followed by base64)",
            )
        })?;
        if key.len() < MIN_SECRET_LEN {
            return Err(ConfigError::invalid(
                "webhook secret",
                format!(
                    "decodes to {} bytes; a signing secret has at least {MIN_SECRET_LEN}",
                    key.len()
                ),
            ));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        ctx.sign()
    }
}

/// The three headers of a delivery, read and checked for form.
#[derive(Debug)]
pub(crate) struct Signed<'a> {
    pub(crate) id: &'a str,
    /// The timestamp as sent (it is signed as sent) and as a number (Unix seconds).
    pub(crate) timestamp: (&'a str, u64),
    pub(crate) signatures: Vec<[u8; 32]>,
}

/// Why the headers are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// A header is missing, repeated or not of its form (400).
    Malformed(&'static str),
    /// `webhook-signature` holds no `v1` signature this receiver can read (401).
    NoSignature,
}

/// Reads `webhook-id`, `webhook-timestamp` and `webhook-signature`.
pub(crate) fn read_headers(headers: &HeaderMap) -> Result<Signed<'_>, HeaderProblem> {
    let one = |name: &'static str| -> Result<&str, HeaderProblem> {
        let mut values = headers.get_all(name).iter();
        let value = values.next().ok_or(HeaderProblem::Malformed(name))?;
        if values.next().is_some() {
            return Err(HeaderProblem::Malformed(name));
        }
        value.to_str().map_err(|_| HeaderProblem::Malformed(name))
    };
    let id = one("webhook-id")?;
    // Visible ASCII, no `.`: the signed string is `{id}.{timestamp}.{body}`, so an id with a
    // dot could be split elsewhere.
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
        return Err(HeaderProblem::Malformed("webhook-id"));
    }
    let timestamp = one("webhook-timestamp")?;
    let seconds = (!timestamp.is_empty() && timestamp.len() <= 20 && timestamp.bytes().all(|b| b.is_ascii_digit()))
        .then(|| timestamp.parse::<u64>().ok())
        .flatten()
        .ok_or(HeaderProblem::Malformed("webhook-timestamp"))?;
    let signatures = parse_signature_header(one("webhook-signature")?.as_bytes())
        .ok_or(HeaderProblem::Malformed("webhook-signature"))?;
    if signatures.is_empty() {
        return Err(HeaderProblem::NoSignature);
    }
    Ok(Signed {
        id,
        timestamp: (timestamp, seconds),
        signatures,
    })
}

/// The `v1` signatures of a `webhook-signature` value: space-separated `<version>,<base64>`
/// entries; entries of other versions, and `v1` entries whose base64 is not 32 bytes, are
/// skipped (they match nothing). `None` when the value is not a list of such entries (not
/// visible ASCII and spaces, an entry without a comma, longer than 4 KiB, or more than
/// [`MAX_SIGNATURES`] entries).
pub(crate) fn parse_signature_header(value: &[u8]) -> Option<Vec<[u8; 32]>> {
    if value.len() > MAX_SIGNATURE_HEADER || !value.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut signatures = Vec::new();
    for (n, entry) in text.split(' ').filter(|e| !e.is_empty()).enumerate() {
        if n >= MAX_SIGNATURES {
            return None;
        }
        let (version, encoded) = entry.split_once(',')?;
        if version != "v1" {
            continue;
        }
        let mut signature = [0u8; 32];
        if let Ok(32) = BASE64.decode_slice(encoded, &mut signature) {
            signatures.push(signature);
        }
    }
    Some(signatures)
}

/// True if any signature is the HMAC of the delivery under any of `secrets` (each compared in
/// constant time; every pair is compared, so the time does not say which matched).
pub(crate) fn verifies(secrets: &[Secret], signed: &Signed<'_>, body: &[u8]) -> bool {
    let mut matched = false;
    for secret in secrets {
        let tag = secret.tag(signed.id, signed.timestamp.0, body);
        for signature in &signed.signatures {
            matched |= constant_time::verify_slices_are_equal(tag.as_ref(), signature).is_ok();
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_need_their_base64_and_enough_bytes_and_never_echo() {
        // The Standard Webhooks example secret (24 bytes).
        assert!(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok(),
            "without its prefix"
        );
        for bad in ["whsec_not base64!", "whsec_c2hvcnQ=", "whsec_"] {
            let error = Secret::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.starts_with("invalid webhook secret"), "{bad}: {error}");
            let encoded = bad.trim_start_matches("whsec_");
            assert!(encoded.is_empty() || !error.contains(encoded), "{error}");
        }
        assert_eq!(
            format!("{:?}", Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok()),
            "Some(Secret(..))"
        );
    }

    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        // From the Standard Webhooks specification's reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_else(|_| unreachable!());
        let body = br#"{"test": 2432232314}"#;
        let signatures = parse_signature_header(b"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=").unwrap_or_default();
        let signed = Signed {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: ("1614265330", 1614265330),
            signatures,
        };
        assert!(verifies(std::slice::from_ref(&secret), &signed, body));
        assert!(!verifies(
            std::slice::from_ref(&secret),
            &signed,
            br#"{"test": 2432232315}"#
        ));
    }

    #[test]
    fn signature_lists_keep_v1_entries_only() {
        let sig = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let unpadded = sig.trim_end_matches('=');
        let parsed = |v: &str| parse_signature_header(v.as_bytes()).map(|s| s.len());
        assert_eq!(parsed(&format!("v1,{sig}")), Some(1));
        assert_eq!(parsed(&format!("v1,{unpadded}")), Some(1), "padding is optional");
        assert_eq!(parsed(&format!("v1a,{sig}  v1,{sig} v2,xyz")), Some(1));
        assert_eq!(
            parsed("v1,c2hvcnQ= v1,!!!"),
            Some(0),
            "not 32 bytes, not base64: skipped"
        );
        assert_eq!(parsed(""), Some(0));
        assert_eq!(parsed(&format!("v1{sig}")), None, "no comma");
        assert_eq!(parsed(&format!("v1,{sig}\t")), None, "a tab");
        assert_eq!(parsed(&vec![format!("v1,{sig}"); MAX_SIGNATURES + 1].join(" ")), None);
    }
}
