//! Wacht's rate limits kept on cached hits (`tower_wacht::rate_limit`), over real loopback
//! HTTP against a `FakeGateway` applying Wacht's rule semantics: a client past its rule gets
//! 429 with `Retry-After` once the budget is spent (counting what the cache served, which the
//! gateway never sees), and is served again when the window rolls; endpoint-scoped rules
//! apply to their route only; the budget is per app (every token of one user), or per key
//! and route when so configured; responses carry `RateLimit-Policy` / `RateLimit`.

use crate::common;
use crate::common::fresh_window;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_wacht::rate_limit::{RateLimitConfig, RateLimitHeaders, RateLimitMode};
use tower_wacht::testing::{
    EXAMPLE_DEPLOYMENT_ID, FakeGateway, Fault, RateLimitRule, RateLimitUnit, TokenGrant, generate_token,
};
use tower_wacht::{Principal, WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

struct App {
    addr: SocketAddr,
    gateway: FakeGateway,
    http: reqwest::Client,
}

/// `/cheap`, `/expensive`, `/other` and `/own` (which sets rate-limit fields of its own) behind
/// one layer; `/live` behind its `always_live()`.
async fn start(configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> App {
    let gateway = common::start_gateway().await;
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(common::API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .ttl(Duration::from_secs(300));
    let auth = WachtAuthLayer::new(configure(builder).build().expect("valid config")).expect("layer builds");
    let who = || get(|p: Principal| async move { p.client_id().to_string() });
    let app = Router::new()
        .route("/cheap", who())
        .route("/expensive", who())
        .route("/other", who())
        .route(
            "/own",
            get(|_: Principal| async {
                // A handler that reports its own limiter's budget too.
                (
                    [
                        ("ratelimit-policy", "\"app\";q=10;w=10"),
                        ("ratelimit", "\"app\";r=3;t=10"),
                    ],
                    "own",
                )
            }),
        )
        .layer(auth.clone())
        .merge(Router::new().route("/live", who()).layer(auth.always_live()));
    App {
        addr: common::serve(app).await,
        gateway,
        http: reqwest::Client::new(),
    }
}

impl App {
    /// A token of end user `user`.
    fn token(&self, user: i64) -> String {
        let token = generate_token();
        self.gateway.register(
            &token,
            TokenGrant::new("oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl")
                .owner_user_id(user)
                .granted_resource(common::ORG_URN)
                .oauth_resource(common::RESOURCE)
                .expires_in(Duration::from_secs(3600)),
        );
        token
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(token)
            .send()
            .await
            .expect("request completes")
    }

    async fn status(&self, path: &str, token: &str) -> u16 {
        self.get(path, token).await.status().as_u16()
    }

    /// How many of `n` requests are served before the first 429 (which must stay: every
    /// later one is 429 too).
    async fn served_of(&self, n: usize, path: &str, token: &str) -> usize {
        let mut served = 0;
        for i in 0..n {
            match self.status(path, token).await {
                200 => {
                    assert_eq!(served, i, "served after a 429 in the same window");
                    served += 1;
                }
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        served
    }
}

#[tokio::test]
async fn hits_past_the_apps_rule_get_429_until_the_window_rolls() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(5, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);

    let first = app.get("/cheap", &token).await;
    assert_eq!(first.status(), 200);
    // The gateway counted the miss: 4 left of 5.
    assert_eq!(
        first.headers()["ratelimit"],
        "\"5/60s\";r=4;t=".to_owned() + &reset_of(&first)
    );
    assert_eq!(first.headers()["ratelimit-policy"], "\"5/60s\";q=5;w=60");

    // Four more are served from cache, counted here; the sixth is refused.
    assert_eq!(app.served_of(10, "/cheap", &token).await, 4);
    assert_eq!(app.gateway.calls(), 1, "every one after the first was a cached hit");

    let refused = app.get("/cheap", &token).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "to the end of the window: {retry}");
    assert!(refused.headers()["ratelimit"].to_str().unwrap().contains(";r=0;"));
    assert_eq!(app.gateway.calls(), 1, "a metered 429 asks no one");
}

/// The `t` parameter of a response's `RateLimit` (seconds to the reset).
fn reset_of(resp: &reqwest::Response) -> String {
    let v = resp.headers()["ratelimit"].to_str().unwrap();
    v.rsplit(";t=").next().unwrap().to_owned()
}

#[tokio::test]
async fn a_spent_budget_is_served_again_once_the_window_rolls() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(3, RateLimitUnit::Second, 2)]);
    fresh_window(Duration::from_secs(2), Duration::from_millis(1500)).await;
    let token = app.token(1);
    assert_eq!(app.served_of(6, "/cheap", &token).await, 3);
    let refused = app.get("/cheap", &token).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");

    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(app.status("/cheap", &token).await, 200, "a new window");
}

#[tokio::test]
async fn every_token_of_one_user_shares_the_per_app_budget_and_other_users_have_theirs() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(4, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let (a1, a2, b) = (app.token(1), app.token(1), app.token(2));

    assert_eq!(app.served_of(3, "/cheap", &a1).await, 3);
    // The user's second token: its miss is counted by the gateway (the 4th), then spent.
    assert_eq!(app.status("/cheap", &a2).await, 200);
    assert_eq!(app.status("/cheap", &a2).await, 429);
    assert_eq!(app.status("/cheap", &a1).await, 429);
    // Another user is not limited by the first one's use.
    assert_eq!(app.served_of(4, "/cheap", &b).await, 4);
}

#[tokio::test]
async fn an_endpoint_scoped_rule_limits_its_route_only() {
    let app = start(|b| b).await;
    // Two windows: Wacht counts rules of one mode and window on one counter.
    app.gateway.set_rate_limit_rules(vec![
        RateLimitRule::new(1000, RateLimitUnit::Minute, 1),
        RateLimitRule::new(2, RateLimitUnit::Minute, 2).endpoints(["/expensive"]),
    ]);
    fresh_window(Duration::from_secs(120), Duration::from_secs(20)).await;
    let token = app.token(1);

    assert_eq!(app.served_of(5, "/cheap", &token).await, 5);
    // The first request on /expensive asks the gateway (its rules are not known for the
    // route yet); it names both rules there.
    let calls = app.gateway.calls();
    let resp = app.get("/expensive", &token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.gateway.calls(), calls + 1);
    assert_eq!(
        resp.headers()["ratelimit-policy"],
        "\"2/120s\";q=2;w=120",
        "the tighter rule"
    );
    assert_eq!(app.status("/expensive", &token).await, 200);
    assert_eq!(app.status("/expensive", &token).await, 429);
    // The other routes count only the app-wide rule.
    assert_eq!(app.served_of(5, "/cheap", &token).await, 5);
    assert_eq!(app.served_of(5, "/other", &token).await, 5);
    // Another token of the same user: the app's rules on /expensive are known, and spent.
    let other = app.token(1);
    assert_eq!(app.status("/cheap", &other).await, 200);
    let calls = app.gateway.calls();
    assert_eq!(app.status("/expensive", &other).await, 429);
    assert_eq!(app.gateway.calls(), calls, "known rules: no call to learn them again");
}

#[tokio::test]
async fn a_per_key_rule_counts_each_route_alone_when_configured_so() {
    let app = start(|b| b.rate_limits(RateLimitConfig::default().rule_mode("2/60s", RateLimitMode::PerKey))).await;
    app.gateway.set_rate_limit_rules(vec![
        RateLimitRule::new(2, RateLimitUnit::Minute, 1).mode(RateLimitMode::PerKey),
    ]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    assert_eq!(app.served_of(4, "/cheap", &token).await, 2);
    assert_eq!(app.served_of(4, "/other", &token).await, 2);
    // Another token of the same user has its own budget.
    let other = app.token(1);
    assert_eq!(app.served_of(4, "/cheap", &other).await, 2);
}

#[tokio::test]
async fn the_gateways_own_429_is_passed_on_with_its_retry_after() {
    let app = start(|b| b).await;
    app.gateway.set_fault(Some(Fault::RateLimited { retry_after_ms: 2500 }));
    let resp = app.get("/cheap", &app.token(1)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["retry-after"],
        "3",
        "milliseconds, rounded up to seconds"
    );
}

#[tokio::test]
async fn the_gateways_429_to_a_token_never_seen_names_the_spent_rule() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(2, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    // The user's budget is spent at Wacht (its live route is counted there).
    let first = app.token(1);
    assert_eq!(app.status("/live", &first).await, 200);
    assert_eq!(app.status("/live", &first).await, 200);
    // Another token of that user, on a route and with a token this server has never seen:
    // the gateway refuses it, and the 429 says which budget and until when.
    let calls = app.gateway.calls();
    let refused = app.get("/cheap", &app.token(1)).await;
    assert_eq!(app.gateway.calls(), calls + 1, "the gateway's own answer");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit-policy"], "\"2/60s\";q=2;w=60");
    let field = refused.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(field.starts_with("\"2/60s\";r=0;t="), "{field}");
    let retry_after = refused.headers()["retry-after"].to_str().unwrap().to_owned();
    assert_eq!(reset_of(&refused), retry_after, "the field and Retry-After agree");
}

#[tokio::test]
async fn a_live_route_asks_the_gateway_every_time_and_its_429_is_the_gateways() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(3, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    for n in 1..=3 {
        assert_eq!(app.status("/live", &token).await, 200);
        assert_eq!(app.gateway.calls(), n);
    }
    assert_eq!(app.status("/live", &token).await, 429);
    assert_eq!(app.gateway.calls(), 4, "the gateway refused it");
    // The cached routes know the budget is spent too.
    assert_eq!(app.status("/cheap", &token).await, 429);
}

#[tokio::test]
async fn the_gateways_header_names_are_opt_in_and_headers_can_be_turned_off() {
    let app = start(|b| b.rate_limits(RateLimitConfig::default().headers(RateLimitHeaders::StandardAndWacht))).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(50, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    app.get("/cheap", &token).await;
    let resp = app.get("/cheap", &token).await;
    assert_eq!(resp.headers()["x-ratelimit-60s-limit"], "50");
    assert_eq!(resp.headers()["x-ratelimit-60s-remaining"], "48");
    assert!(resp.headers().contains_key("ratelimit"));

    let quiet = start(|b| b.rate_limits(RateLimitConfig::default().headers(RateLimitHeaders::None))).await;
    let resp = quiet.get("/cheap", &quiet.token(1)).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("ratelimit"));
    assert!(!resp.headers().contains_key("ratelimit-policy"));
}

#[tokio::test]
async fn metering_off_serves_every_hit_as_before() {
    let app = start(|b| b.rate_limits(RateLimitConfig::default().disable_metering_unsafe())).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(2, RateLimitUnit::Minute, 1)]);
    let token = app.token(1);
    assert_eq!(app.served_of(10, "/cheap", &token).await, 10);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_budget_outlives_the_tokens_cache_entry() {
    // A short ttl: the token's entry ends long before the window does.
    let app = start(|b| b.ttl(Duration::from_millis(300))).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(5, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    assert_eq!(app.served_of(8, "/cheap", &token).await, 5);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Asked again (the entry ended): the gateway saw two requests, this server served five.
    // The 429 of that verification reports the spent budget, as a hit's 429 does.
    let refused = app.get("/cheap", &token).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit-policy"], "\"5/60s\";q=5;w=60");
    let budget = refused.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(budget.starts_with("\"5/60s\";r=0;t="), "{budget}");
    let calls = app.gateway.calls();
    assert_eq!(app.status("/cheap", &token).await, 429);
    assert_eq!(app.gateway.calls(), calls, "refused from the cache, not asked again");
}

#[tokio::test]
async fn concurrent_first_requests_of_a_token_are_each_counted() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(5, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    let statuses = futures_util::future::join_all((0..20).map(|_| app.status("/cheap", &token))).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert_eq!(served, 5, "one gateway call, twenty requests: {statuses:?}");
}

#[tokio::test]
async fn the_gateways_429_on_a_live_route_holds_for_the_cached_routes() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(1000, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    assert_eq!(app.status("/cheap", &token).await, 200);
    assert_eq!(app.status("/live", &token).await, 200);
    // Spent at Wacht (other services of the app used it): the gateway refuses the live route.
    app.gateway
        .set_fault(Some(Fault::RateLimited { retry_after_ms: 60_000 }));
    let refused = app.get("/live", &token).await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["ratelimit"].to_str().unwrap().contains(";r=0;"),
        "the gateway's 429 reports the budget spent"
    );
    app.gateway.set_fault(None);
    // The cached route knows: refused here, without a gateway call.
    let calls = app.gateway.calls();
    assert_eq!(app.status("/cheap", &token).await, 429);
    assert_eq!(app.gateway.calls(), calls);
}

#[tokio::test]
async fn a_new_route_whose_rules_cannot_be_learned_counts_against_the_budgets_already_known() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(3, RateLimitUnit::Minute, 1)]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    assert_eq!(app.served_of(5, "/cheap", &token).await, 3);
    // The gateway is down: a route the token was not seen on cannot learn its rules. The
    // cached token is still good, but its app's budget is spent: refused, not served unmetered.
    app.gateway.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.status("/other", &token).await, 429);
}

#[tokio::test]
async fn a_handlers_own_rate_limit_fields_stay_next_to_wachts() {
    let app = start(|b| b).await;
    app.gateway
        .set_rate_limit_rules(vec![RateLimitRule::new(50, RateLimitUnit::Minute, 1)]);
    let resp = app.get("/own", &app.token(1)).await;
    assert_eq!(resp.status(), 200);
    let all = |name: &str| -> Vec<String> {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let (policies, fields) = (all("ratelimit-policy"), all("ratelimit"));
    assert!(policies.contains(&"\"app\";q=10;w=10".to_owned()), "{policies:?}");
    assert!(policies.contains(&"\"50/60s\";q=50;w=60".to_owned()), "{policies:?}");
    assert!(fields.contains(&"\"app\";r=3;t=10".to_owned()), "{fields:?}");
    assert!(fields.iter().any(|f| f.starts_with("\"50/60s\";r=49;")), "{fields:?}");
}

#[tokio::test]
async fn a_request_that_waited_on_another_routes_refused_check_asks_for_itself() {
    let app = start(|b| b).await;
    app.gateway.set_rate_limit_rules(vec![
        RateLimitRule::new(1000, RateLimitUnit::Minute, 1),
        RateLimitRule::new(1, RateLimitUnit::Minute, 2).endpoints(["/expensive"]),
    ]);
    fresh_window(Duration::from_secs(120), Duration::from_secs(30)).await;
    // The user's one `/expensive` call of the window is spent.
    assert_eq!(app.status("/expensive", &app.token(1)).await, 200);
    // A new token of the user: `/expensive` asks first (refused at the gateway), and
    // `/cheap`, arriving while that check is in flight, waits on it.
    let token = app.token(1);
    app.gateway.set_fault(Some(Fault::Latency(Duration::from_millis(400))));
    let expensive = app.get("/expensive", &token);
    let cheap = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.get("/cheap", &token).await
    };
    let (expensive, cheap) = tokio::join!(expensive, cheap);
    app.gateway.set_fault(None);
    assert_eq!(expensive.status(), 429);
    assert_eq!(
        cheap.status(),
        200,
        "`/cheap` is within its only rule: another route's refusal is not its own"
    );
}

#[tokio::test]
async fn a_misss_429_says_retry_when_every_spent_budget_has_reset() {
    let app = start(|b| b.ttl(Duration::from_millis(300))).await;
    app.gateway.set_rate_limit_rules(vec![
        RateLimitRule::new(2, RateLimitUnit::Second, 2),
        RateLimitRule::new(2, RateLimitUnit::Second, 4),
    ]);
    fresh_window(Duration::from_secs(4), Duration::from_millis(3700)).await;
    let token = app.token(1);
    // A miss (counted by the gateway) and a hit (counted here): both budgets spent.
    assert_eq!(app.status("/cheap", &token).await, 200);
    assert_eq!(app.status("/cheap", &token).await, 200);
    // Past the cache entry: the gateway, which saw one of the two, allows a third; what was
    // served here meanwhile makes it one too many for both rules.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let refused = app.get("/cheap", &token).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let field = refused.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        field.starts_with("\"2/4s\";r=0;"),
        "the budget that resets last: {field}"
    );
    assert_eq!(
        retry_after.to_string(),
        reset_of(&refused),
        "Retry-After and the field agree"
    );
}

#[tokio::test]
async fn the_gateways_429_for_an_endpoints_rule_spends_that_rule_only() {
    let app = start(|b| b).await;
    app.gateway.set_rate_limit_rules(vec![
        RateLimitRule::new(1000, RateLimitUnit::Minute, 1),
        RateLimitRule::new(3, RateLimitUnit::Minute, 1).endpoints(["/live"]),
    ]);
    fresh_window(Duration::from_secs(60), Duration::from_secs(20)).await;
    let token = app.token(1);
    // Wacht counts the rules of one mode and window on one counter, once per rule that
    // allows a request: `/cheap` counts one, `/live` two (both rules match it).
    assert_eq!(app.status("/cheap", &token).await, 200);
    assert_eq!(app.status("/live", &token).await, 200);
    // `/live`'s own rule is spent: the gateway refuses it...
    let refused = app.get("/live", &token).await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"3/60s\";r=0;")
    );
    // ...and the app-wide rule of the same window, far from spent, still serves the rest.
    for _ in 0..5 {
        assert_eq!(app.status("/cheap", &token).await, 200);
    }
}

/// A gateway of your own that refuses as rate-limited, as Wacht's would.
struct SpentGateway;

impl tower_wacht::gateway::Gateway for SpentGateway {
    fn check<'a>(
        &'a self,
        _request: tower_wacht::gateway::CheckRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<tower_wacht::gateway::Decision, tower_wacht::gateway::GatewayError>>
    {
        Box::pin(async {
            Ok(tower_wacht::gateway::Decision::rate_limited(
                Some(Duration::from_millis(1500)),
                Some("10/60s".into()),
                vec![tower_wacht::principal::RateLimitState::new("10/60s", 10, 0)],
            ))
        })
    }
}

#[tokio::test]
async fn a_custom_gateways_rate_limited_answer_is_a_429_with_its_rule() {
    let config = WachtAuthConfig::builder()
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .build()
        .expect("valid config");
    let auth = WachtAuthLayer::with_gateway(config, SpentGateway).expect("layer builds");
    let app = Router::new()
        .route("/cheap", get(|p: Principal| async move { p.client_id().to_string() }))
        .layer(auth);
    let addr = common::serve(app).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/cheap"))
        .bearer_auth(generate_token())
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2", "1.5 s, rounded up");
    assert_eq!(resp.headers()["ratelimit-policy"], "\"10/60s\";q=10;w=60");
    assert_eq!(resp.headers()["ratelimit"], "\"10/60s\";r=0;t=2");
}
