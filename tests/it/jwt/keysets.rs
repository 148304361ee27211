//! The rules of JWT key sets, over loopback HTTP against a `JwksIssuer`: a `kid` is judged
//! unknown only against a key set fetched after the token was issued, a key set expires when
//! the JWKS cannot be fetched for `jwks_max_stale`, and a key withdrawal drops the JWT
//! decisions only.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tower_wacht::testing::generate_token;
use tracing_subscriber::fmt::MakeWriter;

use super::{CLIENT, JwtApp, assert_refused, claims, start_jwt};

/// The longest any test here polls for a state it is waiting for (the key set's own clocks are
/// a few seconds; this only bounds a test that would otherwise never end).
const PATIENCE: Duration = Duration::from_secs(60);

/// A JWT naming `kid`, signed by the issuer's active key, with `iat` at `issued_at`.
fn with_kid(app: &JwtApp, kid: &str, issued_at: SystemTime) -> String {
    let header = json!({"typ":"JWT","alg":"RS256","kid":kid});
    let payload = claims().issued_at(issued_at).to_json(&app.issuer.url());
    app.issuer
        .sign_with_key(&app.issuer.active_kid(), &header, &payload)
        .unwrap()
}

/// The status of a request with `token`, and its `Retry-After` if any.
async fn answer(app: &JwtApp, token: &str) -> (u16, Option<String>) {
    let resp = app.get("/whoami", Some(token)).await;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry_after)
}

/// Asserts a 503 with a `Retry-After` of whole seconds.
fn assert_retry_later(answer: &(u16, Option<String>), what: &str) {
    assert_eq!(answer.0, 503, "{what}: {answer:?}");
    let secs = answer.1.as_deref().map(str::parse::<u64>);
    assert!(matches!(secs, Some(Ok(s)) if s >= 1), "{what}: {answer:?}");
}

/// One token with a made-up `kid` spends the unknown-`kid` fetch budget; a key rotated in
/// right after must not be refused for it: its tokens get 503 with `Retry-After` while no key
/// set fetched after they were issued exists, then 200 once one is, never 401 (which would
/// make an MCP client throw a good token away), and nothing about them is remembered.
#[tokio::test]
async fn a_made_up_kid_does_not_lock_out_a_key_rotated_in_after_it() {
    // Refusals are remembered for the whole test, so that any 401 would show.
    let app = start_jwt(
        |j| j.unknown_kid_refresh(Duration::from_secs(5)),
        |b| b.negative_ttl(Duration::from_secs(600)),
    )
    .await;
    assert_eq!(answer(&app, &app.issuer.mint(&claims())).await.0, 200);
    assert_eq!(app.issuer.fetches(), 1);

    // The made-up kid causes a fetch, which settles it: 401.
    let made_up = with_kid(&app, "made-up", SystemTime::now());
    assert_eq!(answer(&app, &made_up).await.0, 401);
    assert_eq!(app.issuer.fetches(), 2);

    // A made-up kid on a token issued long before the last fetch: that set would hold its key,
    // so it is refused at once, with no fetch.
    let hour = Duration::from_secs(3600);
    let old = {
        let header = json!({"typ":"JWT","alg":"RS256","kid":"made-up-old"});
        let payload = claims()
            .issued_at(SystemTime::now() - hour)
            .ttl(2 * hour)
            .to_json(&app.issuer.url());
        app.issuer
            .sign_with_key(&app.issuer.active_kid(), &header, &payload)
            .unwrap()
    };
    assert_refused(&app, &old, "a made-up kid on a token issued an hour ago").await;
    assert_eq!(app.issuer.fetches(), 2, "no fetch for it");

    // The issuer rotates; a token by the new key arrives while the budget is spent.
    let rotated = app.issuer.rotate().unwrap();
    let token = app.issuer.mint(&claims());
    let started = Instant::now();
    let mut waited = 0;
    loop {
        let answer = answer(&app, &token).await;
        if answer.0 == 200 {
            break;
        }
        assert_retry_later(&answer, "a token by a key rotated in after the last fetch");
        waited += 1;
        assert!(started.elapsed() < PATIENCE, "still 503 after {waited} tries");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.issuer.published_kids()[0], rotated);
    assert_eq!(app.issuer.fetches(), 3, "one fetch once the budget allowed it");
    for _ in 0..3 {
        assert_eq!(answer(&app, &token).await.0, 200, "cached, not a remembered refusal");
    }
    app.auth.verifier().run_pending_tasks().await;
    assert_eq!(
        app.auth.verifier().negative_count(),
        2,
        "only the two made-up kids are remembered as refused"
    );
    assert_eq!(app.gateway.calls(), 0);
}

/// A token whose `iat` is in the future (within the leeway: the issuer's clock runs ahead)
/// and whose `kid` is not in the key set is not refused while no set fetched after its `iat`
/// exists.
#[tokio::test]
async fn an_unknown_kid_issued_in_the_future_within_the_leeway_waits_for_a_later_fetch() {
    let app = start_jwt(|j| j.unknown_kid_refresh(Duration::from_secs(600)), |b| b).await;
    assert_eq!(answer(&app, &app.issuer.mint(&claims())).await.0, 200);
    // Spend the budget.
    let made_up = with_kid(&app, "made-up", SystemTime::now());
    assert_eq!(answer(&app, &made_up).await.0, 401);
    let ahead = with_kid(&app, "rotated-in", SystemTime::now() + Duration::from_secs(20));
    for _ in 0..3 {
        assert_retry_later(&answer(&app, &ahead).await, "kid unknown, iat ahead");
    }
    assert_eq!(app.issuer.fetches(), 2);
}

/// Log lines written through a `tracing` subscriber set for one test thread.
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

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// How the JWKS fails in [`fails_closed_past_jwks_max_stale`].
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// 404, as Wacht answers for a deactivated OAuth app.
    Deactivated,
    /// 503.
    Unavailable,
    /// No answer (each fetch ends at the request timeout).
    Hanging,
}

impl Outage {
    fn set(self, app: &JwtApp, on: bool) {
        match self {
            Outage::Deactivated => app.issuer.set_deactivated(on),
            Outage::Unavailable => app.issuer.set_available(!on),
            Outage::Hanging => app.issuer.set_hanging(on),
        }
    }
}

/// While the JWKS fails, its last key set verifies until `jwks_max_stale`; past it every JWT
/// (cached ones included) gets 503 with `Retry-After`, logged at error level, and nothing is
/// remembered; once the JWKS answers again, JWTs verify again. Runs on the test's own thread
/// (current-thread runtime), where the log capture is set.
async fn fails_closed_past_jwks_max_stale(outage: Outage) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _logs = tracing::subscriber::set_default(subscriber);

    // Generous: the request right after the warm-up must come before it, on a busy machine too.
    let max_stale = Duration::from_secs(8);
    let app = start_jwt(
        |j| j.jwks_refresh(Duration::from_secs(1)).jwks_max_stale(max_stale),
        |b| b,
    )
    .await;
    let cached = app.issuer.mint(&claims());
    assert_eq!(answer(&app, &cached).await.0, 200);
    outage.set(&app, true);

    // Before the maximum age, the last key set still verifies new tokens.
    assert_eq!(
        answer(&app, &app.issuer.mint(&claims())).await.0,
        200,
        "{outage:?}: a fresh key set"
    );
    assert!(!capture.text().contains("ERROR"), "{}", capture.text());

    // Past it, fail closed.
    let started = Instant::now();
    let refused = loop {
        let answer = answer(&app, &app.issuer.mint(&claims())).await;
        if answer.0 != 200 {
            break answer;
        }
        assert!(started.elapsed() < PATIENCE, "{outage:?}: still verifying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_retry_later(&refused, &format!("{outage:?}: a new token past jwks_max_stale"));
    assert_retry_later(
        &answer(&app, &cached).await,
        &format!("{outage:?}: a token cached before"),
    );
    let logs = capture.text();
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("jwks_max_stale")),
        "{outage:?}: no error logged: {logs}"
    );
    app.auth.verifier().run_pending_tasks().await;
    assert_eq!(
        app.auth.verifier().negative_count(),
        0,
        "{outage:?}: a 503 is not remembered"
    );

    // Back once the JWKS answers.
    outage.set(&app, false);
    let started = Instant::now();
    loop {
        let answer = answer(&app, &cached).await;
        if answer.0 == 200 {
            break;
        }
        assert_retry_later(&answer, &format!("{outage:?}: while the JWKS recovers"));
        assert!(started.elapsed() < PATIENCE, "{outage:?}: never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer(&app, &app.issuer.mint(&claims())).await.0, 200);
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn a_jwks_answering_404_past_jwks_max_stale_fails_closed() {
    fails_closed_past_jwks_max_stale(Outage::Deactivated).await;
}

#[tokio::test]
async fn a_jwks_answering_503_past_jwks_max_stale_fails_closed() {
    fails_closed_past_jwks_max_stale(Outage::Unavailable).await;
}

#[tokio::test]
async fn a_hanging_jwks_past_jwks_max_stale_fails_closed() {
    fails_closed_past_jwks_max_stale(Outage::Hanging).await;
}

/// A key withdrawn from the JWKS (compromised) drops the decisions on JWTs: the cached token
/// it signed is refused. Opaque tokens' decisions stay, accepted and refused alike: the
/// gateway is not asked about them again.
#[tokio::test]
async fn a_key_withdrawal_drops_jwt_decisions_only() {
    let app = start_jwt(|j| j, |b| b.negative_ttl(Duration::from_secs(600))).await;
    let opaque = app.token_with(|g| g.issuer(app.issuer.url()));
    let unknown = generate_token();
    assert_eq!(answer(&app, &opaque).await.0, 200);
    assert_eq!(answer(&app, &unknown).await.0, 401);
    let calls = app.gateway.calls();
    assert_eq!(calls, 2);
    let compromised = app.issuer.active_kid();
    let jwt = app.issuer.mint(&claims());
    assert_eq!(answer(&app, &jwt).await.0, 200);

    // Withdrawn; the new key's first token makes this server fetch the JWKS and see it.
    assert!(app.issuer.compromise(&compromised));
    let replacement = app.issuer.mint(&claims());
    assert_eq!(answer(&app, &replacement).await.0, 200);
    assert_eq!(app.issuer.fetches(), 2);

    assert_eq!(answer(&app, &jwt).await.0, 401, "cached token by the withdrawn key");
    let fresh = app.issuer.mint_with_key(&compromised, &claims()).unwrap();
    assert_eq!(answer(&app, &fresh).await.0, 401, "new token by the withdrawn key");
    assert_eq!(answer(&app, &replacement).await.0, 200);

    assert_eq!(answer(&app, &opaque).await.0, 200);
    assert_eq!(answer(&app, &unknown).await.0, 401);
    assert_eq!(
        app.gateway.calls(),
        calls,
        "opaque tokens were answered from the cache and the negative cache"
    );
    let whoami: serde_json::Value = app.get("/whoami", Some(&opaque)).await.json().await.unwrap();
    assert_eq!(whoami["client_id"], CLIENT);
}
