//! RSA signing keys of the JWKS issuer double: generation, the JWK of the public half, and
//! RS256 signatures.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// One RSA-2048 key and its id.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pair: KeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl SigningKey {
    /// A fresh RSA-2048 key (exponent 65537, as Wacht's).
    pub(crate) fn generate(kid: String) -> Option<Self> {
        let pair = KeyPair::generate(KeySize::Rsa2048).ok()?;
        let (n, e) = rsa_public_key_components(pair.public_key().as_ref())?;
        Some(SigningKey { kid, pair, n, e })
    }

    /// The public key as Wacht's JWKS lists it.
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// A compact JWS of `header` and `payload` (serialised as given) with an RS256 signature.
    pub(crate) fn sign(&self, header: &Value, payload: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut signature = vec![0; self.pair.public_modulus_len()];
        // Signing with a valid in-memory key over a byte string cannot fail; an empty
        // signature (refused by any verifier) would show it if it ever did.
        if self
            .pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .is_err()
        {
            signature.clear();
        }
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// `n` and `e` of a DER `RSAPublicKey` (RFC 8017: a SEQUENCE of two INTEGERs), without the
/// sign byte.
fn rsa_public_key_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (tag, body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag_n, n, rest) = tlv(body)?;
    let (tag_e, e, _) = tlv(rest)?;
    if tag_n != 0x02 || tag_e != 0x02 {
        return None;
    }
    let strip = |b: &[u8]| b.iter().position(|&x| x != 0).map(|i| b[i..].to_vec());
    Some((strip(n)?, strip(e)?))
}

/// One DER tag-length-value: the tag, the value, and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}
