//! The audit trail over real loopback HTTP: an Axum app behind the layer with an
//! `AuditSink`, a `FakeGateway` (and a `JwksIssuer` for JWTs); one record per decision.

use crate::common;

use std::time::Duration;

use common::*;
use tokio::sync::mpsc::Receiver;
use tower_wacht::audit::{AuditConfig, AuditOutcome, AuditRecord, AuditSink, DecisionSource};
use tower_wacht::jwt::JwtConfig;
use tower_wacht::testing::{
    AccessTokenClaims, ApiKeyGrant, EXAMPLE_OWNER_USER_ID, JwksIssuer, generate_api_key, generate_token,
};
use tower_wacht::{CredentialKind, WachtAuthConfigBuilder};

const CLIENT: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";

async fn start_audited(
    capacity: usize,
    configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder,
) -> (TestApp, AuditSink, Receiver<AuditRecord>) {
    let (sink, records) = AuditSink::channel(capacity);
    let audit = AuditConfig::new().sink(sink.clone());
    let app = start(move |b| configure(b.audit(audit))).await;
    (app, sink, records)
}

/// The one record the last request left; no other.
fn only(records: &mut Receiver<AuditRecord>) -> AuditRecord {
    let record = records.try_recv().expect("a record for the request");
    assert!(records.try_recv().is_err(), "one record per decision");
    record
}

/// No record shows the credential, whole or in part.
fn assert_secret_free(record: &AuditRecord, secret: &str) {
    let shown = format!("{record:?}");
    assert!(!shown.contains(secret), "the credential is in {shown}");
    assert!(
        !shown.contains(&secret[secret.len() - 16..]),
        "part of the credential is in {shown}"
    );
}

#[tokio::test]
async fn a_miss_a_hit_and_refusals_each_leave_one_record() {
    let (app, _sink, mut records) = start_audited(16, |b| b).await;
    let token = app.token(&["projects:read"]);

    assert_eq!(app.get("/whoami?x=1", Some(&token)).await.status(), 200);
    let miss = only(&mut records);
    assert_eq!(miss.source, DecisionSource::Gateway);
    assert_eq!(miss.outcome, AuditOutcome::Allowed);
    assert_eq!(miss.reason, None);
    assert_eq!(miss.credential_kind, Some(CredentialKind::OAuthAccessToken));
    assert_eq!(miss.client_id.as_deref(), Some(CLIENT));
    assert_eq!(miss.user_id, Some(EXAMPLE_OWNER_USER_ID.to_string()));
    assert_eq!(miss.tenant.as_deref(), Some(ORG_URN));
    assert_eq!((miss.method.as_str(), miss.route.as_str()), ("GET", "/whoami"));
    assert_eq!((miss.mcp_method.as_deref(), miss.mcp_tool.as_deref()), (None, None));
    // The gateway's default rule (1000 per minute): it counted this request.
    assert_eq!(miss.rate_limit_remaining, Some(999));
    assert_secret_free(&miss, &token);

    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    let hit = only(&mut records);
    assert!(
        matches!(hit.source, DecisionSource::Front | DecisionSource::Cache),
        "{:?}",
        hit.source
    );
    // Counted here, against the same rule.
    assert_eq!(hit.rate_limit_remaining, Some(998));
    assert_eq!(hit.outcome, AuditOutcome::Allowed);
    assert_eq!(hit.client_id.as_deref(), Some(CLIENT));
    assert_eq!(hit.user_id, miss.user_id);
    assert_secret_free(&hit, &token);
    assert_eq!(app.gateway.calls(), 1, "the hit asked no one");

    let unknown = generate_token();
    assert_eq!(app.get("/whoami", Some(&unknown)).await.status(), 401);
    let refused = only(&mut records);
    assert_eq!(refused.source, DecisionSource::Gateway);
    assert_eq!(refused.outcome, AuditOutcome::Refused);
    assert_eq!(refused.reason, Some("rejected"));
    assert_eq!(refused.credential_kind, Some(CredentialKind::OAuthAccessToken));
    assert_eq!(
        (&refused.client_id, &refused.user_id, &refused.tenant),
        (&None, &None, &None)
    );
    assert_secret_free(&refused, &unknown);

    assert_eq!(app.get("/whoami", None).await.status(), 401);
    let local = only(&mut records);
    assert_eq!(local.source, DecisionSource::Local);
    assert_eq!(local.reason, Some("missing_credentials"));
    assert_eq!(local.credential_kind, None);

    assert_eq!(app.get_with_header("/whoami", "Bearer a b").await.status(), 401);
    let malformed = only(&mut records);
    assert_eq!(
        (malformed.source, malformed.reason),
        (DecisionSource::Local, Some("malformed"))
    );
}

#[tokio::test]
async fn the_gateway_unavailable_is_recorded_as_unavailable() {
    let (app, _sink, mut records) = start_audited(16, |b| b.stale_if_error(Duration::ZERO)).await;
    let token = app.token(&["projects:read"]);
    app.gateway.set_fault(Some(tower_wacht::testing::Fault::Status(503)));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 503);
    let record = only(&mut records);
    assert_eq!(
        (record.source, record.outcome),
        (DecisionSource::Gateway, AuditOutcome::Unavailable)
    );
}

#[tokio::test]
async fn an_mcp_request_records_its_route_method_and_tool() {
    let (app, _sink, mut records) = start_audited(16, |b| b).await;
    let token = app.token(&["mcp:invoke"]);
    let status = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_weather")
        .send()
        .await
        .expect("request completes")
        .status();
    assert_eq!(status, 200);
    let record = only(&mut records);
    assert_eq!(record.method.as_str(), "POST");
    assert_eq!(record.route, "/tools/invoke/tools/call/get_weather");
    assert_eq!(record.mcp_method.as_deref(), Some("tools/call"));
    assert_eq!(record.mcp_tool.as_deref(), Some("get_weather"));
    assert_secret_free(&record, &token);
}

#[tokio::test]
async fn an_api_key_is_recorded_as_one() {
    let (app, _sink, mut records) = start_audited(16, |b| b.api_key_prefixes(["sk_live"])).await;
    let key = generate_api_key("sk_live");
    app.gateway
        .register_api_key(&key, ApiKeyGrant::new("billing-app").owner_user_id(42));
    assert_eq!(app.get("/whoami", Some(&key)).await.status(), 200);
    let record = only(&mut records);
    assert_eq!(record.credential_kind, Some(CredentialKind::ApiKey));
    assert_eq!(record.source, DecisionSource::Gateway);
    assert_eq!(record.client_id.as_deref(), Some("billing-app"));
    assert_eq!(record.user_id.as_deref(), Some("42"));
    assert_secret_free(&record, &key);

    let unknown = generate_api_key("sk_live");
    assert_eq!(app.get("/whoami", Some(&unknown)).await.status(), 401);
    let refused = only(&mut records);
    assert_eq!(refused.credential_kind, Some(CredentialKind::ApiKey));
    assert_eq!(refused.outcome, AuditOutcome::Refused);
    assert_secret_free(&refused, &unknown);
}

#[tokio::test]
async fn a_jwt_is_recorded_as_verified_here() {
    let issuer = JwksIssuer::start().await.expect("issuer starts");
    let (sink, mut records) = AuditSink::channel(16);
    let url = issuer.url();
    let app = start(move |b| {
        b.expected_issuer(url)
            .jwt(JwtConfig::new())
            .audit(AuditConfig::new().sink(sink))
    })
    .await;
    let jwt = issuer.mint(&AccessTokenClaims::new(CLIENT).scopes(["projects:read"]));
    assert_eq!(app.get("/whoami", Some(&jwt)).await.status(), 200);
    let record = only(&mut records);
    assert_eq!(record.source, DecisionSource::Jwt);
    assert_eq!(record.credential_kind, Some(CredentialKind::JwtAccessToken));
    assert_eq!(record.client_id.as_deref(), Some(CLIENT));
    assert_secret_free(&record, &jwt);
    assert_eq!(app.gateway.calls(), 0);

    assert_eq!(app.get("/whoami", Some(&jwt)).await.status(), 200);
    let hit = only(&mut records);
    assert!(matches!(hit.source, DecisionSource::Front | DecisionSource::Cache));
    // Wacht never sees a JWT, so no rate limit of its applies.
    assert_eq!(hit.rate_limit_remaining, None);

    // Signed by a key the issuer never published: refused here, by the JWT verifier.
    let stranger = JwksIssuer::start().await.expect("issuer starts");
    let forged = stranger.mint(&AccessTokenClaims::new(CLIENT).claim("iss", serde_json::json!(issuer.url())));
    assert_eq!(app.get("/whoami", Some(&forged)).await.status(), 401);
    let refused = only(&mut records);
    assert_eq!(refused.source, DecisionSource::Jwt);
    assert_eq!(refused.credential_kind, Some(CredentialKind::JwtAccessToken));
    assert_eq!(refused.outcome, AuditOutcome::Refused);
    assert_secret_free(&refused, &forged);
}

#[tokio::test]
async fn a_full_sink_drops_and_counts_without_holding_requests() {
    let (app, sink, mut records) = start_audited(1, |b| b).await;
    let token = app.token(&["projects:read"]);
    for _ in 0..4 {
        // Nothing takes the records: every request still completes.
        assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    }
    assert_eq!(sink.dropped(), 3, "the queue holds one; the rest are dropped");
    assert_eq!(only(&mut records).source, DecisionSource::Gateway, "the first is kept");
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert!(
        matches!(only(&mut records).source, DecisionSource::Front | DecisionSource::Cache),
        "room again once taken"
    );
    assert_eq!(sink.dropped(), 3);
}

#[tokio::test]
async fn a_request_whose_client_leaves_during_its_check_leaves_a_cancelled_record() {
    let (app, _sink, mut records) = start_audited(16, |b| b).await;
    let token = app.token(&["projects:read"]);
    app.gateway
        .set_fault(Some(tower_wacht::testing::Fault::Latency(Duration::from_millis(500))));
    let gone = app
        .http
        .get(app.url("/whoami"))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    // The server notices the closed connection and drops the request.
    let mut record = None;
    for _ in 0..50 {
        if let Ok(found) = records.try_recv() {
            record = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = record.expect("a record for the request that went away");
    assert_eq!(
        (record.source, record.outcome),
        (DecisionSource::Gateway, AuditOutcome::Cancelled)
    );
    assert_eq!(record.credential_kind, Some(CredentialKind::OAuthAccessToken));
    assert_secret_free(&record, &token);
}

#[tokio::test]
async fn an_anonymous_request_an_optional_layer_lets_through_is_recorded() {
    let (app, _sink, mut records) = start_audited(16, |b| b.optional(true)).await;
    assert_eq!(app.get("/public", None).await.status(), 200);
    let record = only(&mut records);
    assert_eq!(
        (record.source, record.outcome),
        (DecisionSource::Local, AuditOutcome::Anonymous)
    );
    assert_eq!(record.credential_kind, None);
    assert_eq!(record.http_route.as_deref(), Some("/public"));
}

#[tokio::test]
async fn a_token_with_two_dots_that_is_no_jwt_is_recorded_as_the_gateways() {
    let (app, _sink, mut records) = start_audited(16, |b| b).await;
    // Not base64url: no JWT, so the gateway is asked (and knows no such token).
    let odd = "oat+abc.def+ghi.jkl";
    assert_eq!(app.get("/whoami", Some(odd)).await.status(), 401);
    assert_eq!(app.gateway.calls(), 1, "the gateway was asked");
    let record = only(&mut records);
    assert_eq!(record.source, DecisionSource::Gateway);
    assert_eq!(record.credential_kind, Some(CredentialKind::OAuthAccessToken));
}

#[tokio::test]
async fn the_gateways_429_is_recorded_with_the_budget_it_names() {
    let (app, _sink, mut records) = start_audited(16, |b| b).await;
    let token = app.token(&["projects:read"]);
    app.gateway.set_fault(Some(tower_wacht::testing::Fault::RateLimited {
        retry_after_ms: 60_000,
    }));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 429);
    let record = only(&mut records);
    assert_eq!(
        (record.source, record.outcome),
        (DecisionSource::Gateway, AuditOutcome::RateLimited)
    );
    assert_eq!(record.rate_limit_remaining, Some(0));
    assert_eq!(record.http_route.as_deref(), Some("/whoami"));
}

#[tokio::test]
async fn an_answer_of_the_outage_grace_is_recorded_as_the_caches() {
    let (app, _sink, mut records) = start_audited(16, |b| {
        b.ttl(Duration::from_millis(200))
            .stale_if_error(Duration::from_secs(30))
    })
    .await;
    let token = app.token(&["projects:read"]);
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(only(&mut records).source, DecisionSource::Gateway);
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.gateway.set_fault(Some(tower_wacht::testing::Fault::Status(503)));
    assert_eq!(
        app.get("/whoami", Some(&token)).await.status(),
        200,
        "the grace serves it"
    );
    let record = only(&mut records);
    assert_eq!(
        (record.source, record.outcome),
        (DecisionSource::Cache, AuditOutcome::Allowed),
        "the gateway did not answer: the cache did"
    );
}

#[tokio::test]
async fn a_refusal_at_the_cap_on_gateway_calls_is_recorded_as_local() {
    let (app, _sink, mut records) = start_audited(16, |b| b.max_inflight_gateway_calls(1)).await;
    let (first, second) = (app.token(&["projects:read"]), app.token(&["projects:read"]));
    app.gateway
        .set_fault(Some(tower_wacht::testing::Fault::Latency(Duration::from_millis(400))));
    let calls = app.gateway.calls();
    let slow = app.get("/whoami", Some(&first));
    let capped = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.get("/whoami", Some(&second)).await
    };
    let (slow, capped) = tokio::join!(slow, capped);
    assert_eq!((slow.status().as_u16(), capped.status().as_u16()), (200, 503));
    assert_eq!(app.gateway.calls(), calls + 1, "the second was never asked about");
    let mut seen = [only_of(&mut records), only_of(&mut records)];
    seen.sort_by_key(|r| r.outcome.as_str());
    assert_eq!(
        (seen[0].source, seen[0].outcome),
        (DecisionSource::Gateway, AuditOutcome::Allowed)
    );
    assert_eq!(
        (seen[1].source, seen[1].outcome),
        (DecisionSource::Local, AuditOutcome::Unavailable),
        "refused here, without a call"
    );
}

/// The next record, whatever follows.
fn only_of(records: &mut Receiver<AuditRecord>) -> AuditRecord {
    records.try_recv().expect("a record")
}
