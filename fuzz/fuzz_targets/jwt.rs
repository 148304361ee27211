//! JOSE header and claims of JWT access tokens, and the whole verification.
//!
//! Properties:
//! * `StaticJwtVerifier::verify` never returns a principal for a token whose header is not
//!   exactly RS256 with the JWKS key's `kid`, or whose RS256 signature does not verify with
//!   that key (checked here independently with aws-lc-rs), and every refusal is 401
//!   `invalid_token`; nothing panics.
//! * Mutations of genuinely signed tokens (a byte changed, segments cut, swapped or
//!   re-encoded) are never accepted unless the signature still verifies over the result.
//! * The claim rules (`fuzz::claims`, as if the signature had verified) accept only payloads
//!   with `token_use == "access_token"`, the issuer, an unexpired `exp`, an `iat` not in the
//!   future and a Wacht tenant URN audience, as read here independently with serde_json.
//!
//! The fuzzer's input picks one of three modes; see `Input`.

#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower_wacht::AuthError;
use tower_wacht::jwt::{JwtConfig, StaticJwtVerifier};

const ISSUER: &str = "https://auth.example.com";
const KID: &str = "oas-401234567890123777-593800112233445566";
/// A fixed RSA-2048 test key (PKCS#8), made for this target: never a real key.
const PKCS8: &str = concat!(
    "MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDd69n1yyOonXtXSYiopOKpQC7CAVxbDsmmRXEM66wZ0b+R",
    "tHOyuOKt5ziZYQKPYYe5o65nCPejj0/o76wXO37ribwoa6XX1653Tip/0XqTH+x/kWuyLsTCoIvcPyl5WTFpeKBT7k7+PNss",
    "7xel7lA0E/Ln5g9Ot2jvwspVdoHMAeVfWgitbXdG2Nx1w7BffSJooIPgfUqAbLXPjl8Bo62crXDKXox6gp2zLKBIvoDxPnEz",
    "zGtZ4Q+A6hUoUolpsQb7+56syiUD/txIHXPrkMWUNVvRxMOC28aPpY5iPYfsIwHGh7GjILPStkj6UBbq1f4mBmlX7+25/1BY",
    "NT2q4ukDAgMBAAECggEATTgH+3LX0ZAanuDDYIsfI21l17PJgxW+LND06V4H4GQPmI+FwqZ6mbBfDV+oGGQDaiD+SnPgV1VC",
    "pPbglqTpIOQoSJhMeLJfzruwJhGp6Q+upyTeqH2FkYNzpwuDTuouO1jx0MKXUfey/Aul2uL1nWljmDWBFg7TwLmy1dIKkAVi",
    "/q2660aZwjvIsNzOBH4ntBY297HB7NglLHU3qzyvwzZFRD00PBJqz1287NXFrd4RGQJeAPDVHGLfNVdu0kNYENjX5NY3nCuh",
    "YVpfVBC/K4/hSY+RiYaNtn7sjPqjSC9BpuBj7Vv3Qdfod+jxrXjgufVlBQPocWDEnflP0X2FQQKBgQDure0mlrSQ4ocawBSE",
    "LtHUVI8WzVFFlnIwk2s8GzkiPbyk2C+pBso8o6LGJ9/RACejopcVwrnmgxeWEYZLNukIRVvLahP676cjWx9wARxKE/cV6X32",
    "KJF0YtixDke5+WGqzNAYt+sjHquVo+kdmK8BXplUoEBMcksi4lmQRXo86QKBgQDuBpnQhRSJyiUtvhCJth+D8EH6dRmuFaW3",
    "4VvN5BPBZFnpmYOeJnRzipIFeieJ9OinI7FIFPz4y56L7ee4/iyCgXKCJPYO7i61DYz7t0Ndl1W0IaegTSHe5MQ1bnZ/YPeQ",
    "S2AXkxAnKFqDvaqghI0eyOJWebUjChTVmLoolRUTCwKBgQDcfeJqVqjie9Jx3OZXImWHcMJrPyuITK6av2U+Nqv2PPBLnMeS",
    "r4oesNCLnISAMFNuMKLAYI6aK5qbcP8N9uEaWfCuHwXsOH7AA8ssDmqS6JTHMlfCEsIksbgbAOU0IfSe8+x+GVHotMmwSKbv",
    "R4DMlBaz/gLIXIGa7V3uELEXGQKBgQC8SGppoKujZ0zLhzpLxM3fLzDxrqmWpDcHYnOdRRo/c2MQPsf3VRHux6FEReF65kkW",
    "1UwJ6dhF8cPDingvRJfuz/jFa/lbzBsUStjH0KqwIOLBb5HKYtk1GJ8AaRXBIvIRqR4k58byQqB+74xGFzQOMvefUfzv76yV",
    "XY98RJl8CwKBgQDr5uz6GK5rVexlPOvztGfRFGtX41Obm8wxuXaUtmBEOsEN9tLU9XCDkE8lij3MbQyGptZwkMRwzvFsmaWn",
    "CsuRdstbkpOURiMde+0bYdmuP5mWQk/FBAfcSpIELOslJmlRlhkKtHUeq/3LDNIC/8wHta8d8fnvzvvofJ/VGCAD8g==",
);
const N: &str = concat!(
    "3evZ9csjqJ17V0mIqKTiqUAuwgFcWw7JpkVxDOusGdG_kbRzsrjirec4mWECj2GHuaOuZwj3o49P6O-sFzt-64m8KGul19eu",
    "d04qf9F6kx_sf5Frsi7EwqCL3D8peVkxaXigU-5O_jzbLO8Xpe5QNBPy5-YPTrdo78LKVXaBzAHlX1oIrW13RtjcdcOwX30i",
    "aKCD4H1KgGy1z45fAaOtnK1wyl6MeoKdsyygSL6A8T5xM8xrWeEPgOoVKFKJabEG-_uerMolA_7cSB1z65DFlDVb0cTDgtvG",
    "j6WOYj2H7CMBxoexoyCz0rZI-lAW6tX-JgZpV-_tuf9QWDU9quLpAw",
);

struct Fixture {
    verifier: StaticJwtVerifier,
    key: KeyPair,
    n: Vec<u8>,
    /// Genuinely signed tokens the mutation mode starts from.
    signed: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = KeyPair::from_pkcs8(&STANDARD.decode(PKCS8).unwrap()).unwrap();
        let jwks = json!({"keys": [{"kty":"RSA","use":"sig","alg":"RS256","kid":KID,"n":N,"e":"AQAB"}]});
        let verifier = StaticJwtVerifier::new(ISSUER, jwks.to_string().as_bytes(), &JwtConfig::new()).unwrap();
        let now = unix_now();
        let mut signed = Vec::new();
        for (i, aud) in [
            "urn:wacht:organization:427001234567890561",
            "urn:wacht:workspace:7",
            "urn:wacht:user:432119876543210241",
        ]
        .iter()
        .enumerate()
        {
            let payload = json!({
                "iss": ISSUER, "sub": "432119876543210241", "aud": aud, "exp": now + 7200, "iat": now,
                "jti": format!("59381247009876543{i}"), "client_id": "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl",
                "scope": "openid projects:read", "sid": "590011223344556677", "token_use": "access_token"
            });
            let header = json!({"typ":"JWT","alg":"RS256","kid":KID});
            signed.push(sign(&key, &header.to_string(), &payload.to_string()));
        }
        let n = URL_SAFE_NO_PAD.decode(N).unwrap();
        Fixture { verifier, key, n, signed }
    })
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn sign(key: &KeyPair, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// What the verifier may accept, decided here without the crate: a header that is exactly
/// RS256 with the key's kid and a signature that verifies with the key.
fn independently_valid(token: &str, n: &[u8]) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(header) = URL_SAFE_NO_PAD.decode(h) else { return false };
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else { return false };
    if header.get("alg") != Some(&json!("RS256")) || header.get("kid") != Some(&json!(KID)) {
        return false;
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(s) else { return false };
    let key = RsaPublicKeyComponents { n, e: &[1u8, 0, 1][..] };
    key.verify(&RSA_PKCS1_2048_8192_SHA256, format!("{h}.{p}").as_bytes(), &sig).is_ok()
}

fn check(token: &str) {
    let f = fixture();
    match f.verifier.verify(token) {
        Ok(principal) => {
            assert!(independently_valid(token, &f.n), "accepted a token whose signature does not verify: {token}");
            assert_eq!(principal.client_id().as_str(), "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl");
        }
        Err(e) => assert!(matches!(e, AuthError::InvalidToken(_)), "refusal other than invalid_token: {e:?}"),
    }
}

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// Any token text.
    Raw(&'a str),
    /// A genuinely signed token, then mutated.
    Mutated { which: u8, edits: Vec<(u16, u8)>, cut: Option<u16> },
    /// Header and payload JSON (with `$IAT$` / `$EXP$` replaced by the current time and an
    /// hour later), signed with the real key only when `sign` is set; otherwise with the
    /// fuzzer's bytes. Also runs the claim rules on the payload alone.
    Built { header: &'a str, payload: &'a str, sign: bool, signature: &'a [u8] },
}

fuzz_target!(|input: Input<'_>| {
    let f = fixture();
    match input {
        Input::Raw(token) => check(token),
        Input::Mutated { which, edits, cut } => {
            let mut token = f.signed[usize::from(which) % f.signed.len()].clone().into_bytes();
            for (at, byte) in edits.into_iter().take(8) {
                let at = usize::from(at) % token.len();
                token[at] = byte;
            }
            if let Some(cut) = cut {
                token.truncate(usize::from(cut) % (token.len() + 1));
            }
            if let Ok(token) = std::str::from_utf8(&token) {
                check(token);
            }
        }
        Input::Built { header, payload, sign: with_key, signature } => {
            let now = unix_now();
            let payload = payload.replace("$IAT$", &now.to_string()).replace("$EXP$", &(now + 3600).to_string());
            claims_property(&payload, now);
            let token = if with_key {
                sign(&f.key, header, &payload)
            } else {
                format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header),
                    URL_SAFE_NO_PAD.encode(&payload),
                    URL_SAFE_NO_PAD.encode(signature)
                )
            };
            let _ = tower_wacht::jwt::fuzz::header(&token);
            check(&token);
        }
    }
});

/// The claim rules accept only what the facts say a Wacht access token is.
fn claims_property(payload: &str, now: i64) {
    let Some(client) = tower_wacht::jwt::fuzz::claims(payload.as_bytes(), ISSUER, SystemTime::now()) else {
        return;
    };
    let v: Value = serde_json::from_str(payload).expect("accepted claims are JSON");
    assert_eq!(v["token_use"], "access_token");
    assert_eq!(v["iss"], ISSUER);
    assert_eq!(v["client_id"], client.as_str());
    let exp = v["exp"].as_i64().expect("integer exp");
    let iat = v["iat"].as_i64().expect("integer iat");
    assert!(exp + 30 > now - 1, "expired: {payload}");
    assert!(iat <= now + 31, "iat in the future: {payload}");
    let aud = v["aud"].as_str().expect("string aud");
    assert!(
        ["urn:wacht:organization:", "urn:wacht:workspace:", "urn:wacht:user:"].iter().any(|p| aud.starts_with(p)),
        "audience {aud}"
    );
}
