//! Faults: what each injected `Fault` does on the wire.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tower_wacht::testing::*;

use super::helpers::*;

#[tokio::test]
async fn fault_latency_and_slow_headers() {
    let (gw, token) = example_gateway().await;
    for fault in [
        Fault::Latency(Duration::from_millis(200)),
        Fault::SlowHeaders(Duration::from_millis(200)),
    ] {
        gw.set_fault(Some(fault));
        let started = Instant::now();
        let answer = post_json(&gw, &check_body(&token, None)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["allowed"], json!(true));
    }
    gw.set_fault(None);
    let started = Instant::now();
    post_json(&gw, &check_body(&token, None)).await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(gw.calls(), 3);
}

#[tokio::test]
async fn fault_status_and_status_plain() {
    let (gw, token) = example_gateway().await;
    for code in [500, 502, 503, 429, 401] {
        gw.set_fault(Some(Fault::Status(code)));
        assert_envelope(&post_json(&gw, &check_body(&token, None)).await, code);
    }
    // Faults win over extractor rejections too.
    assert_envelope(&post_raw(&gw, None, "garbage").await, 401);
    // Informational codes cannot be final answers: they become 500.
    gw.set_fault(Some(Fault::Status(101)));
    assert_envelope(&post_json(&gw, &check_body(&token, None)).await, 500);

    gw.set_fault(Some(Fault::StatusPlain(503, "upstream connect error".into())));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_plain(&answer, 503, "upstream connect error");
    assert_eq!(answer.text, "upstream connect error");
    assert_eq!(gw.calls(), 8);
    // Faulted requests whose body parsed are still recorded.
    assert_eq!(gw.requests().len(), 7);
}

#[tokio::test]
async fn fault_garbage_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::GarbageBody));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
}

#[tokio::test]
async fn fault_truncated_body() {
    let (gw, token) = example_gateway().await;
    let full = post_json(&gw, &check_body(&token, None)).await.text;
    gw.set_fault(Some(Fault::TruncatedBody));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 200"));
    assert!(head.contains("content-type: application/json"));
    assert_eq!(content_length(&head), body.len());
    assert!(body.len() >= full.len() / 2 - 5 && body.len() < full.len());
    assert!(body.starts_with(b"{\"request_id\":\"req_"));
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    // Unknown token: a synthetic decision is truncated instead.
    let answer = post_json(&gw, &check_body("oat_unknown", None)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.starts_with("{\"request_id\":\"req_"));
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
}

#[tokio::test]
async fn fault_huge_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::HugeBody(300_000)));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.text.len(), 300_000);
    let value: Value = serde_json::from_str(&answer.text).unwrap();
    assert!(value.is_string());
}

#[tokio::test]
async fn fault_half_body_then_close() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::HalfBodyThenClose));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("http/1.1 200"));
    let announced = content_length(&head);
    assert!(!body.is_empty());
    assert!(body.len() < announced, "{} < {announced}", body.len());
    assert!(body.starts_with(b"{\"request_id\":\"req_"));

    // A real client sees a body error.
    let response = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn fault_slow_body() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::SlowBody(Duration::from_millis(300))));
    let started = Instant::now();
    let response = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(head_after < Duration::from_millis(250), "{head_after:?}");
    let body: Value = response.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["allowed"], json!(true));
}

#[tokio::test]
async fn fault_wrong_content_type() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::WrongContentType));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert!(answer.content_type.as_deref().unwrap().starts_with("text/html"));
    let body = answer.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["identity"], example_identity());
}

#[tokio::test]
async fn fault_allowed_without_identity() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::AllowedWithoutIdentity));
    let answer = post_json(&gw, &check_body(&token, None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let mut body = answer.json();
    normalize_request_id(&mut body);
    let mut expected = envelope();
    expected["allowed"] = json!(true);
    assert_eq!(body, expected);
}

#[tokio::test]
async fn fault_drop_connection() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::DropConnection));
    let raw = raw_exchange(&gw, &raw_check_request(&check_body(&token, None))).await;
    assert!(raw.is_empty(), "got {:?}", String::from_utf8_lossy(&raw));
    let err = client()
        .post(check_url(&gw))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout());
    assert_eq!(gw.calls(), 2);
    assert_eq!(gw.requests().len(), 2);
    gw.set_fault(None);
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
}

#[tokio::test]
async fn fault_hang() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::Hang));
    let err = client()
        .post(check_url(&gw))
        .timeout(Duration::from_millis(200))
        .json(&check_body(&token, None))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(gw.calls(), 1);
    gw.set_fault(None);
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
}

#[tokio::test]
async fn fault_rate_limited() {
    let (gw, token) = example_gateway().await;
    gw.set_fault(Some(Fault::RateLimited { retry_after_ms: 1234 }));
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(false));
    assert_eq!(body["reason"], json!("rate_limited"));
    assert_eq!(body["blocked_rule"], json!("1000/60s"));
    assert_eq!(body["retry_after"], json!(1234));
    assert_eq!(
        body["rate_limits"],
        json!([{ "rule": "1000/60s", "remaining": 0, "limit": 1000 }])
    );
    assert_eq!(body["headers"]["x-ratelimit-60s-limit"], json!("1000"));
    assert_eq!(body["headers"]["x-ratelimit-60s-remaining"], json!("0"));
    assert_eq!(body["headers"]["x-ratelimit-60s-reset"], json!("1234"));
    assert_eq!(body["identity"], example_identity());

    // Unknown tokens still get 401; permission denial still wins.
    assert_envelope(&post_json(&gw, &check_body("oat_unknown", None)).await, 401);
    let denied = post_json(&gw, &check_body(&token, Some(&["nope"]))).await.json();
    assert_eq!(denied["reason"], json!("permission_denied"));

    gw.set_fault(None);
    let body = post_json(&gw, &check_body(&token, None)).await.json();
    assert_eq!(body["allowed"], json!(true));
    assert_eq!(body["rate_limits"][0]["remaining"], json!(999));
}
