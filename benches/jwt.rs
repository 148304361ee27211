//! Micro benchmark of JWT access tokens: one full local verification (what a middleware that
//! verifies on every request pays each time), its RS256 signature check alone, and a cache
//! hit of a JWT through the layer against a cache hit of an opaque token.
//!
//! ```text
//! cargo bench --bench jwt --features test-util
//! ```
//!
//! Prints, before criterion's timings: the first-sight cost through the layer, in process (a
//! JWT never seen before: parse, RS256 verify, claims, cache insert), over
//! [`FIRST_SIGHT_TOKENS`] pre-minted tokens, each verified once.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use criterion::Criterion;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_wacht::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use tower_wacht::jwt::{JwtConfig, StaticJwtVerifier};
use tower_wacht::principal::{Grant, OrganizationId, StringSet, UserId};
use tower_wacht::testing::{AccessTokenClaims, JwksIssuer};
use tower_wacht::token::{TokenHash, bearer_from_headers};
use tower_wacht::{ResourceUrn, WachtAuthConfig, WachtAuthLayer};

mod support;
use support::Noop;

/// Tokens minted for the first-sight measurement (minting is an RSA signature each, about a
/// millisecond: this sets the setup time).
const FIRST_SIGHT_TOKENS: usize = 3000;

/// The OAuth client of every token (35 characters, like Wacht's).
const CLIENT_ID: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";

/// Claims shaped like a Wacht access token's: two scopes, the default tenant audience, a
/// session and a token id.
fn claims() -> AccessTokenClaims {
    AccessTokenClaims::new(CLIENT_ID).scopes(["projects:read", "mcp:invoke"])
}

/// Allows every opaque token, in process, with the principal a JWT of [`claims`] gives (same
/// issuer, so one layer serves both kinds).
struct AllowAll {
    issuer: String,
}

impl Gateway for AllowAll {
    fn check<'a>(&'a self, _r: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        Box::pin(async {
            let mut grant = Grant::new(CLIENT_ID, SystemTime::now() + Duration::from_secs(3600));
            grant.granted_resource = Some(ResourceUrn::Organization(OrganizationId(427001234567890561)));
            grant.scopes = StringSet::new(["projects:read", "mcp:invoke"]);
            grant.permissions = StringSet::new(["projects:read", "mcp:invoke"]);
            grant.issuer = Some(self.issuer.as_str().into());
            grant.owner_user_id = Some(UserId(432119876543210241));
            grant.request_id = Some("req_593812470012345678".into());
            Ok(Decision::Allowed(Box::new(grant)))
        })
    }
}

/// A realistic opaque token: `oat_` + 43 base64url characters.
const OPAQUE: &str = "oat_Hk-Ok_jojWARDPmrr7Y4Y6NQkbU7flSku0000000000";

/// The issuer double, its JWKS document, and the runtime that serves it (kept alive: the
/// layer fetches the keys on its first JWT and its refresh timer runs there).
struct Setup {
    runtime: tokio::runtime::Runtime,
    issuer: JwksIssuer,
    jwks: Vec<u8>,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (issuer, jwks) = runtime.block_on(async {
        let issuer = JwksIssuer::start().await.unwrap();
        let jwks = reqwest::get(issuer.jwks_url())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        (issuer, jwks)
    });
    Setup { runtime, issuer, jwks }
}

/// A layer verifying JWTs of `issuer` locally and opaque tokens with [`AllowAll`].
fn layer(issuer: &JwksIssuer, capacity: u64) -> WachtAuthLayer {
    let config = WachtAuthConfig::builder()
        .max_capacity(capacity)
        .ttl(Duration::from_secs(3600))
        .expected_issuer(issuer.url())
        .jwt(JwtConfig::new())
        .build()
        .unwrap();
    WachtAuthLayer::with_gateway(config, AllowAll { issuer: issuer.url() }).unwrap()
}

/// An empty-bodied request with this `Authorization` header.
fn request(header: &HeaderValue) -> Request<Empty<Bytes>> {
    support::request(header)
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// Each of [`FIRST_SIGHT_TOKENS`] new JWTs through the layer once (the whole request: header
/// parse, hash, cache miss, single flight, RS256 verification, claims, cache insert, no-op
/// service), timed one by one.
fn first_sight(s: &Setup) {
    let tokens: Vec<HeaderValue> = (0..FIRST_SIGHT_TOKENS)
        .map(|_| bearer(&s.issuer.mint(&claims())))
        .collect();
    let auth = layer(&s.issuer, 2 * FIRST_SIGHT_TOKENS as u64);
    let mut svc = auth.layer(Noop);
    let mut micros = s.runtime.block_on(async {
        // The first JWT loads the issuer's keys (one JWKS fetch): not part of the figure.
        let warm = bearer(&s.issuer.mint(&claims()));
        assert_eq!(svc.call(request(&warm)).await.unwrap().status(), 200);
        let mut micros = Vec::with_capacity(tokens.len());
        for header in &tokens {
            let started = Instant::now();
            let response = svc.call(request(header)).await.unwrap();
            micros.push(started.elapsed().as_secs_f64() * 1e6);
            assert_eq!(response.status(), 200);
        }
        micros
    });
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((q * micros.len() as f64) as usize).min(micros.len() - 1)];
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    println!(
        "first sight of a JWT through the layer (in process, {} new tokens, each once): median {:.1} µs, mean {mean:.1} µs, p99 {:.1} µs",
        micros.len(),
        at(0.5),
        at(0.99),
    );
}

fn verification(c: &mut Criterion, s: &Setup) {
    let token = s.issuer.mint(&claims());
    let verifier = StaticJwtVerifier::new(s.issuer.url(), &s.jwks, &JwtConfig::new()).unwrap();
    assert!(verifier.verify(&token).is_ok());
    println!("a Wacht-shaped JWT: {} bytes", token.len());

    // The RS256 check alone, with the key parsed once as the verifier keeps it.
    let doc: serde_json::Value = serde_json::from_slice(&s.jwks).unwrap();
    let jwk = &doc["keys"][0];
    let component = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let key: ParsedPublicKey = RsaPublicKeyComponents {
        n: component("n"),
        e: component("e"),
    }
    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
    .unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    key.verify_sig(signing_input.as_bytes(), &signature).unwrap();

    let mut g = c.benchmark_group("jwt_verify");
    g.bench_function("static_verifier_verify", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&token))))
    });
    g.bench_function("rs256_signature_only", |b| {
        b.iter(|| black_box(key.verify_sig(black_box(signing_input.as_bytes()), black_box(&signature))))
    });
    g.finish();
}

fn cache_hit(c: &mut Criterion, s: &Setup) {
    let auth = layer(&s.issuer, 10_000);
    let jwt = s.issuer.mint(&claims());
    s.runtime.block_on(async {
        auth.verifier().verify(&jwt).await.unwrap();
        auth.verifier().verify(OPAQUE).await.unwrap();
    });
    let (jwt_header, opaque_header) = (bearer(&jwt), bearer(OPAQUE));
    let headers = |value: &HeaderValue| {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.clone());
        h
    };
    let (jwt_headers, opaque_headers) = (headers(&jwt_header), headers(&opaque_header));

    // The stages whose cost grows with the token's length.
    let mut g = c.benchmark_group("stage_by_token");
    g.bench_function("parse_header/opaque", |b| {
        b.iter(|| black_box(bearer_from_headers(black_box(&opaque_headers), 4096)))
    });
    g.bench_function("parse_header/jwt", |b| {
        b.iter(|| black_box(bearer_from_headers(black_box(&jwt_headers), 4096)))
    });
    g.bench_function("sha256_token/opaque", |b| {
        b.iter(|| black_box(TokenHash::of(black_box(OPAQUE))))
    });
    g.bench_function("sha256_token/jwt", |b| {
        b.iter(|| black_box(TokenHash::of(black_box(&jwt))))
    });
    g.finish();

    // The whole request, layer around a no-op service, both tokens cached in the same layer.
    let mut svc = auth.layer(Noop);
    let mut call = |header: &HeaderValue| {
        let response = svc.call(request(header)).now_or_never();
        black_box(response)
    };
    assert!(call(&jwt_header).is_some_and(|r| r.unwrap().status() == 200));
    assert!(call(&opaque_header).is_some_and(|r| r.unwrap().status() == 200));
    let mut g = c.benchmark_group("layer_cache_hit");
    g.bench_function("opaque", |b| b.iter(|| call(&opaque_header)));
    g.bench_function("jwt", |b| b.iter(|| call(&jwt_header)));
    g.finish();
}

fn main() {
    let s = setup();
    first_sight(&s);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    verification(&mut c, &s);
    cache_hit(&mut c, &s);
    c.final_summary();
}
