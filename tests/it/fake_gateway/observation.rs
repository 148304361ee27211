//! Observation helpers: calls and recorded requests, shared handles, keep-alive, generated
//! credentials, shutdown.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wacht::testing::*;

use super::helpers::*;

#[tokio::test]
async fn calls_and_recorded_requests() {
    let (gw, token) = example_gateway().await;
    assert_eq!(gw.calls(), 0);
    let response = client()
        .post(check_url(&gw))
        .header("authorization", "Bearer wacht_backend_key")
        .header("user-agent", "tower-wacht-test")
        .json(&json!({
            "principal": { "type": "oauth_access_token", "value": token },
            "resource": "/v1/a",
            "method": "POST",
            "client_ip": null,
            "user_agent": null,
            "required_permissions": null,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    post_json(&gw, &check_body("oat_unknown", None)).await;
    post_raw(&gw, None, "x").await;
    send(client().get(format!("{}/health", gw.url()))).await;
    assert_eq!(gw.calls(), 3);

    let recorded = gw.requests();
    assert_eq!(recorded.len(), 2);
    let first = &recorded[0];
    assert_eq!(first.authorization.as_deref(), Some("Bearer wacht_backend_key"));
    assert_eq!(first.headers["user-agent"], "tower-wacht-test");
    assert_eq!(first.method, "POST");
    assert_eq!(first.client_ip, None);
    assert_eq!(first.user_agent, None);
    assert_eq!(first.required_permissions, None);
    assert_eq!(recorded[1].token_sha256, hash_token("oat_unknown"));

    gw.reset_calls();
    assert_eq!(gw.calls(), 0);
    gw.clear_requests();
    assert!(gw.requests().is_empty());
}

#[tokio::test]
async fn handles_are_shared_clones() {
    let (gw, token) = example_gateway().await;
    let other = gw.clone();
    post_json(&other, &check_body(&token, None)).await;
    assert_eq!(gw.calls(), 1);
    drop(other);
    // The server keeps running while a handle remains.
    assert_eq!(post_json(&gw, &check_body(&token, None)).await.status, 200);
    assert!(format!("{gw:?}").contains("FakeGateway"));
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let (gw, token) = example_gateway().await;
    let body = check_body(&token, None).to_string();
    let request = format!(
        "POST /v1/authz/check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        // Read one complete response (headers plus Content-Length bytes).
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed");
            received.extend_from_slice(&buf[..n]);
            if let Some(pos) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let (head, _) = split_response(&received);
                if received.len() >= pos + 4 + content_length(&head) {
                    break;
                }
            }
        }
        assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    assert_eq!(gw.calls(), 2);
}

#[tokio::test]
async fn generated_credentials_have_the_right_shape() {
    let base64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let token = generate_token();
        let rest = token.strip_prefix("oat_").unwrap();
        assert_eq!(rest.len(), 43);
        assert!(base64url(rest));
        assert!(seen.insert(token));
        let client = generate_client_id();
        let rest = client.strip_prefix("oc_").unwrap();
        assert_eq!(rest.len(), 32);
        assert!(base64url(rest));
        assert!(seen.insert(client));
    }
}

#[tokio::test]
async fn shutdown_stops_listener_and_connections() {
    let (gw, token) = example_gateway().await;
    let addr = gw.addr();
    let other = gw.clone();
    gw.set_fault(Some(Fault::Hang));
    let hung = tokio::spawn({
        let url = check_url(&gw);
        let body = check_body(&token, None);
        async move { client().post(url).json(&body).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), gw.shutdown())
        .await
        .expect("shutdown hung");
    // The hanging request's connection was closed.
    let result = tokio::time::timeout(Duration::from_secs(2), hung)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err());
    assert!(TcpStream::connect(addr).await.is_err());
    drop(other);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let gw = FakeGateway::start().await.unwrap();
    let addr = gw.addr();
    drop(gw);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
