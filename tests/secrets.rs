//! No token, API key or webhook secret, signature or body in logs (any level, any crate),
//! `Debug` output, errors or responses during a full run through every outcome.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tower_wacht::testing::{Fault, generate_token};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_debug_or_responses() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let app = start(|b| {
        b.ttl(Duration::from_millis(200))
            .expected_audience(RESOURCE)
            .audit(tower_wacht::audit::AuditConfig::new().tracing(true))
    })
    .await;
    let mut secrets = vec![API_KEY.to_owned()];
    let mut seen = String::new();

    let good = app.token(&["mcp:invoke", "projects:read"]);
    let lacking = app.token(&["projects:read"]);
    let wrong_audience = app.token_with(|g| g.oauth_resource("https://other.example.com"));
    let unknown = generate_token();
    secrets.extend([good.clone(), lacking.clone(), wrong_audience.clone(), unknown.clone()]);

    async fn record(seen: &mut String, resp: reqwest::Response) {
        let head = format!("{resp:?}");
        let body = resp.text().await.unwrap_or_default();
        seen.push_str(&format!("{head}\n{body}\n"));
    }
    for (path, token) in [
        ("/whoami", good.as_str()),
        ("/whoami", good.as_str()),
        ("/reports", lacking.as_str()),
        ("/whoami", wrong_audience.as_str()),
        ("/whoami", unknown.as_str()),
        ("/whoami", unknown.as_str()),
    ] {
        record(&mut seen, app.get(path, Some(token)).await).await;
    }
    let resp = app
        .http
        .post(app.url("/tools/invoke"))
        .bearer_auth(&lacking)
        .send()
        .await
        .unwrap();
    record(&mut seen, resp).await;
    for fault in [
        Fault::Status(500),
        Fault::GarbageBody,
        Fault::RateLimited { retry_after_ms: 1000 },
        Fault::Hang,
    ] {
        app.gateway.set_fault(Some(fault));
        let t = app.token(&[]);
        secrets.push(t.clone());
        record(&mut seen, app.get("/whoami", Some(&t)).await).await;
    }
    app.gateway.set_fault(None);

    // Debug output of everything a user might print.
    let principal = app.auth.verifier().verify(&good).await.unwrap();
    seen.push_str(&format!("{principal:?} {:?} {:?}\n", app.auth, app.auth.verifier()));
    seen.push_str(&serde_json::to_string(&principal).unwrap());
    let config = tower_wacht::WachtAuthConfig::builder()
        .api_key(API_KEY)
        .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
        .build()
        .unwrap();
    seen.push_str(&format!("{config:?} {}", config.to_builder().build().is_ok()));
    let err = app.auth.verifier().verify(&unknown).await.unwrap_err();
    seen.push_str(&format!("{err:?} {err}"));
    let bad = format!("{}!", good);
    let err = app.auth.verifier().verify(&bad).await.unwrap_err();
    seen.push_str(&format!("{err:?} {err}"));
    let header = format!("Bearer {good}");
    let parsed = tower_wacht::token::parse_authorization(header.as_bytes(), 4096)
        .unwrap()
        .unwrap();
    seen.push_str(&format!("{parsed:?} {:?}", parsed.hash()));

    // Webhook deliveries: genuine, forged, stale and not an event. Neither the signing secret,
    // nor a signature, nor anything of a body reaches the logs or an answer.
    let signer = tower_wacht::testing::WebhookSigner::generate();
    let webhooks = tower_wacht::WachtWebhooks::new(&app.auth, [signer.secret()]).unwrap();
    let receiver = serve(webhooks.router("/webhooks/wacht")).await;
    secrets.push(signer.secret().trim_start_matches("whsec_").to_owned());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let marker = "body-marker-0b7d31c2";
    let event = |kind: &str| {
        tower_wacht::testing::WebhookSigner::event(kind, serde_json::json!({"entity_id": "42", "note": marker}))
    };
    let stranger = tower_wacht::testing::WebhookSigner::generate();
    for (n, (signer, at, body)) in [
        (&signer, now, event("user.deleted")),
        (&stranger, now, event("user.deleted")),
        (&signer, now - 3600, event("user.deleted")),
        (&signer, now, format!("not an event {marker}")),
        (&signer, now, event("something.new")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("msg_{n}");
        let headers = signer.sign(&id, at, body.as_bytes());
        secrets.push(
            signer
                .signature(&id, at, body.as_bytes())
                .trim_start_matches("v1,")
                .to_owned(),
        );
        let resp = app
            .http
            .post(format!("http://{receiver}/webhooks/wacht"))
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap();
        record(&mut seen, resp).await;
    }
    seen.push_str(&format!("{webhooks:?} {signer:?}"));
    secrets.push(marker.to_owned());

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("Wacht webhook"), "webhook deliveries were logged");
    assert!(logs.contains("wacht.verify"), "verification spans were captured");
    assert!(logs.len() > 1000, "the run produced logs at trace level");
    // The audit trail's events, with their attributes (README "Audit trail").
    for attribute in [
        "tower_wacht::audit",
        "wacht.decision.source=\"gateway\"",
        "wacht.credential.kind=\"oauth_access_token\"",
        "wacht.client.id=",
        "enduser.id=",
        "wacht.tenant=",
        "http.request.method=\"GET\"",
        "http.route=\"/whoami\"",
        "wacht.outcome=\"refused\"",
        "wacht.outcome.reason=\"rejected\"",
        "wacht.outcome=\"unavailable\"",
        "wacht.decision.duration_ms=",
    ] {
        assert!(logs.contains(attribute), "no audit attribute {attribute}");
    }
    // A hit's source is the tier that had it: this thread's front cache or the shared one.
    assert!(
        logs.contains("wacht.decision.source=\"front\"") || logs.contains("wacht.decision.source=\"cache\""),
        "no audit record of a hit"
    );
    assert!(
        logs.contains("wacht.rate_limit.remaining="),
        "no audit attribute for the budget left"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret leaked into the logs");
        // Nor anything of its plain SHA-256 (the cache key) that would confirm a guess.
        let digest: String = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!logs.contains(&digest[..8]), "a token's SHA-256 prefix is in the logs");
        assert!(
            !seen.contains(secret.as_str()),
            "a secret leaked into Debug output or a response"
        );
    }
}
