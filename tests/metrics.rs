//! The documented metrics move (feature `metrics`). One test: the recorder is process-global.
#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use common::*;
use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_wacht::telemetry::names;
use tower_wacht::testing::{Fault, RateLimitRule, RateLimitUnit, TokenGrant, generate_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_metrics_move() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder in this test binary");

    let app = start(|b| {
        b.ttl(Duration::from_millis(200))
            .stale_if_error(Duration::from_secs(5))
            .refresh_ahead(Duration::from_millis(150))
            .expected_audience(RESOURCE)
            .denied_clients(["oc_denied"])
    })
    .await;
    let token = app.token(&["projects:read"]);
    // hit + miss, a refresh, a guard refusal.
    for _ in 0..3 {
        assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(
        app.http
            .post(app.url("/tools/invoke"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // gateway 401, pinning failure, denied client.
    assert_eq!(app.get("/whoami", Some(&generate_token())).await.status(), 401);
    let foreign = app.token_with(|g| g.oauth_resource("https://other.example.com/mcp"));
    assert_eq!(app.get("/whoami", Some(&foreign)).await.status(), 401);
    let denied = app.token_with(|_| TokenGrant::new("oc_denied").oauth_resource(RESOURCE));
    assert_eq!(app.get("/whoami", Some(&denied)).await.status(), 401);
    assert_eq!(app.get("/whoami", Some(&denied)).await.status(), 401);
    // outage: stale serve for the known token, 503 for a new one.
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.gateway.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.get("/whoami", Some(&token)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&app.token(&[]))).await.status(), 503);
    app.gateway.set_fault(None);
    app.auth.verifier().run_pending_tasks().await;
    // Webhooks: one acted on, the same again, an unknown event, a forged one.
    let signer = tower_wacht::testing::WebhookSigner::generate();
    let receiver = serve(
        tower_wacht::WachtWebhooks::new(&app.auth, [signer.secret()])
            .unwrap()
            .router("/hooks"),
    )
    .await;
    let deleted = tower_wacht::testing::WebhookSigner::event("user.deleted", serde_json::json!({"entity_id": "42"}));
    let unknown = tower_wacht::testing::WebhookSigner::event("invitation.created", serde_json::json!({}));
    let stranger = tower_wacht::testing::WebhookSigner::generate();
    for (id, body, signer, status) in [
        ("msg_1", &deleted, &signer, 200),
        ("msg_1", &deleted, &signer, 200),
        ("msg_2", &unknown, &signer, 200),
        ("msg_3", &deleted, &stranger, 401),
    ] {
        let resp = app
            .http
            .post(format!("http://{receiver}/hooks"))
            .headers(signer.sign_now(id, body.as_bytes()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
    }

    let snapshot = snapshotter.snapshot().into_vec();
    let total = |name: &str, label: Option<(&str, &str)>| -> f64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| key.key().name() == name)
            .filter(|(key, _, _, _)| {
                label.is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Histogram(h) => h.len() as f64,
                DebugValue::Gauge(g) => g.into_inner(),
            })
            .sum()
    };
    assert!(total(names::CACHE_HITS, None) >= 2.0);
    assert!(total(names::CACHE_MISSES, None) >= 1.0);
    assert!(total(names::VERIFICATIONS, Some(("source", "cache"))) >= 2.0);
    assert!(total(names::VERIFICATIONS, Some(("outcome", "allowed"))) >= 3.0);
    assert!(total(names::VERIFICATIONS, Some(("outcome", "invalid_token"))) >= 3.0);
    assert!(total(names::VERIFICATIONS, Some(("source", "negative_cache"))) >= 1.0);
    assert!(total(names::VERIFICATIONS, Some(("outcome", "unavailable"))) >= 1.0);
    assert!(total(names::VERIFICATIONS, Some(("outcome", "allowed_stale"))) >= 1.0);
    assert!(total(names::VERIFICATION_FAILURES, Some(("client_id", "oc_denied"))) >= 1.0);
    assert!(total(names::VERIFICATION_FAILURES, Some(("reason", "pinning"))) >= 1.0);
    assert_eq!(total(names::PERMISSION_DENIED, Some(("permission", "mcp:invoke"))), 1.0);
    assert!(total(names::GATEWAY_DURATION, None) >= 4.0);
    assert!(total(names::GATEWAY_ERRORS, Some(("kind", "status"))) >= 1.0);
    assert!(total(names::STALE_SERVED, None) >= 1.0);
    assert!(total(names::REFRESHES, Some(("outcome", "allowed"))) >= 1.0);
    assert!(total(names::CACHE_EVICTIONS, None) >= 1.0);
    let webhook =
        |event: &str, result: &str| counter(&snapshot, names::WEBHOOKS, &[("event", event), ("result", result)]);
    assert_eq!(webhook("user.deleted", "acted"), 1);
    assert_eq!(webhook("user.deleted", "duplicate"), 1);
    assert_eq!(webhook("unknown", "unknown"), 1);
    assert_eq!(webhook("none", "bad_signature"), 1);
    // No label anywhere carries a token.
    for (key, _, _, _) in &snapshot {
        for label in key.key().labels() {
            assert!(!label.value().starts_with("oat_"), "{key:?}");
        }
    }

    // Every request is one verification: a hit its meter refuses is the meter's 429, not
    // also an allowed hit; a miss its meter refuses is not also the gateway's. (A snapshot
    // takes the counts since the one before.)
    let tally = || {
        let snapshot = snapshotter.snapshot().into_vec();
        let counted = |outcome: &str, source: &str| {
            counter(
                &snapshot,
                names::VERIFICATIONS,
                &[("outcome", outcome), ("source", source)],
            )
        };
        [
            counted("allowed", "gateway"),
            counted("allowed", "cache"),
            counted("rate_limited", "meter"),
            counted("rate_limited", "gateway"),
        ]
    };
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(2, RateLimitUnit::Second, 30)]);
    fresh_window(Duration::from_secs(30), Duration::from_secs(10)).await;
    let limited = app.token_with(|g| g.owner_user_id(77).scopes(["projects:read"]));
    tally();
    for status in [200, 200, 429] {
        assert_eq!(app.get("/whoami", Some(&limited)).await.status(), status);
    }
    let moved = tally();
    assert_eq!(
        moved,
        [1, 1, 1, 0],
        "a miss, a hit and the meter's 429, each counted once (allowed/gateway, allowed/cache, rate_limited/meter, rate_limited/gateway)"
    );
}

/// The count of the counter `name` over its series that carry every one of `labels`.
fn counter(
    snapshot: &[(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)],
    name: &str,
    labels: &[(&str, &str)],
) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _, _, _)| key.key().name() == name)
        .filter(|(key, _, _, _)| {
            let carried: Vec<(&str, &str)> = key.key().labels().map(|l| (l.key(), l.value())).collect();
            labels.iter().all(|label| carried.contains(label))
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}
