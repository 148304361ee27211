//! The Grafana dashboard (`dashboards/tower-wacht.json`) queries only metrics this crate
//! emits, under the names it exports them by.
//!
//! One test, in its own binary: it installs the fleet example's Prometheus recorder
//! (`examples/fleet.rs`, `prometheus()`: the same buckets, so the same `_bucket` series), which
//! is process-global. It drives real traffic through layers talking to a `FakeGateway`: one
//! layer without fleet mode (hits, misses, refusals, a gateway outage served stale, a rate
//! limit, a stream ended, webhooks, a full audit queue) and two fleet replicas on a real
//! `redis-server` this test starts (shared lookups, leases, change-log events, the channel
//! gauge; Redis paused for fleet errors, flushed for a resync). Then every series name the
//! dashboard's queries use must appear in the exporter's rendered text, and its metric must
//! be one of `tower_wacht::telemetry::names` and of the module's documentation table.
//!
//! The labels the queries group by (`by (outcome, source)`) must be on the series they query,
//! and every label value they filter on exactly (`outcome="rate_limited"`) must have been
//! exported (`instance`, `job` and `le` excepted: Prometheus and the buckets add them).
//!
//! Nothing is checked only on paper: every metric the dashboard queries is emitted here, the
//! fleet's included. What this test does not check: PromQL syntax and semantics beyond names
//! and labels (Grafana and Prometheus parse it), label values in legends and descriptions,
//! and layout beyond panels on the 24-column grid that do not overlap.
#![cfg(all(feature = "metrics", feature = "redis", feature = "test-util", feature = "axum"))]

mod common;
/// The fleet example: its Prometheus recorder.
#[allow(dead_code)]
#[path = "../examples/fleet.rs"]
mod fleet_example;
/// `redis-server` processes and fleet replicas.
#[allow(dead_code)]
#[path = "fleet/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use common::*;
use futures_util::{Stream, StreamExt as _};
use harness::{RedisServer, replicas, status, token};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_wacht::audit::{AuditConfig, AuditSink};
use tower_wacht::telemetry::names;
use tower_wacht::testing::{Fault, TokenGrant, WebhookSigner, generate_token};
use tower_wacht::{ChangeOutcome, Principal};

const DASHBOARD: &str = include_str!("../dashboards/tower-wacht.json");
const TELEMETRY_SOURCE: &str = include_str!("../src/telemetry.rs");

/// Every constant of `tower_wacht::telemetry::names`. Checked against the module's source
/// below, so a constant added there and not here fails the test.
const NAMES: &[&str] = &[
    names::VERIFICATIONS,
    names::VERIFICATION_FAILURES,
    names::PERMISSION_DENIED,
    names::CACHE_HITS,
    names::CACHE_MISSES,
    names::CACHE_EVICTIONS,
    names::GATEWAY_DURATION,
    names::GATEWAY_ERRORS,
    names::STALE_SERVED,
    names::REFRESHES,
    names::STREAMS_ENDED,
    names::JWT_VERIFICATIONS,
    names::JWKS_FETCHES,
    names::FLEET_LOOKUPS,
    names::FLEET_LEASES,
    names::FLEET_ERRORS,
    names::FLEET_EVENTS,
    names::FLEET_RESYNCS,
    names::FLEET_CHANNEL,
    names::WEBHOOKS,
    names::AUDIT_DROPPED,
];

/// Histograms: their series carry these suffixes in Prometheus' text format.
const HISTOGRAMS: &[&str] = &[names::GATEWAY_DURATION];
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Every `wacht_…` identifier in `text`.
fn identifiers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("wacht_") {
        let start = i + at;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "wacht_".len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        if !preceded {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// The metric a series name belongs to: a histogram's series without its suffix.
fn metric_of(series: &str) -> &str {
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = series.strip_suffix(suffix)
            && HISTOGRAMS.contains(&base)
        {
            return base;
        }
    }
    series
}

/// Series names in Prometheus' text exposition format.
fn rendered_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The labels of each exported series name, with their values.
fn rendered_labels(text: &str) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, rest) = line
            .split_once('{')
            .unwrap_or((line.split(' ').next().unwrap_or(line), ""));
        let labels = out.entry(name.to_owned()).or_default();
        // `k="v",k2="v2"} value`: values hold no quote, comma or brace in this crate's labels.
        let body = rest.split('}').next().unwrap_or_default();
        for pair in body.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').expect("label=value");
            labels.insert((key.to_owned(), value.trim_matches('"').to_owned()));
        }
    }
    out
}

/// Labels the Prometheus server adds (`instance`, `job`) or a histogram's buckets carry.
const NOT_EMITTED_LABELS: &[&str] = &["instance", "job", "le"];

/// A label matcher of a query: the metric, the label, and the value of an exact match
/// (`None` for a regex match).
type Matcher = (String, String, Option<String>);

/// The labels an expression groups by (`by (a, b)`) and the label matchers it filters on
/// (`{a="v"}`, with `Some(v)` for an exact match, `None` for a regex), with the metric each
/// matcher is on.
fn labels_used(expr: &str) -> (BTreeSet<String>, Vec<Matcher>) {
    let mut grouped = BTreeSet::new();
    for list in label_lists(expr) {
        grouped.extend(list.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
    }
    let mut matchers = Vec::new();
    for metric in identifiers(expr) {
        for part in expr.split(&format!("{metric}{{")).skip(1) {
            let body = part.split('}').next().unwrap_or_default();
            for matcher in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let (key, exact) = match matcher.split_once("=~") {
                    Some((key, _)) => (key, None),
                    None => {
                        let (key, value) = matcher.split_once('=').expect("a label matcher");
                        (key, Some(value.trim().trim_matches('"').to_owned()))
                    }
                };
                matchers.push((metric.clone(), key.trim().to_owned(), exact));
            }
        }
    }
    (grouped, matchers)
}

/// The label lists of an expression's grouping and matching clauses: `by`, `without`, `on`,
/// `ignoring`, `group_left`, `group_right`, each a whole word followed by `(` (with or
/// without spaces between).
fn label_lists(expr: &str) -> Vec<&str> {
    const CLAUSES: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut lists = Vec::new();
    for clause in CLAUSES {
        let mut from = 0;
        while let Some(at) = expr[from..].find(clause) {
            let start = from + at;
            let end = start + clause.len();
            from = end;
            if (start > 0 && word(bytes[start - 1])) || bytes.get(end).is_some_and(|b| word(*b)) {
                continue;
            }
            let rest = expr[end..].trim_start();
            if let Some(list) = rest.strip_prefix('(') {
                lists.push(list.split(')').next().unwrap_or_default());
            }
        }
    }
    lists
}

#[test]
fn the_query_reader_sees_every_metric_and_label() {
    assert_eq!(
        identifiers("rate(wacht_fleet_errors_total2[5m]) + wacht_x:y"),
        BTreeSet::from(["wacht_fleet_errors_total2".to_owned(), "wacht_x:y".to_owned()])
    );
    for expr in [
        "sum by(kind) (rate(wacht_a[5m]))",
        "sum by (kind) (rate(wacht_a[5m]))",
        "sum without (kind) (rate(wacht_a[5m]))",
        "wacht_a / on(kind) wacht_b",
        "wacht_a / ignoring (kind) group_left(kind) wacht_b",
    ] {
        assert!(labels_used(expr).0.contains("kind"), "{expr}");
    }
    assert!(
        labels_used("sum(rate(wacht_bypass[5m]))").0.is_empty(),
        "no clause in a name"
    );
}

/// Every panel, those a collapsed row holds included (`false`: inside a row).
fn all_panels(panels: &[serde_json::Value]) -> Vec<(&serde_json::Value, bool)> {
    let mut all = Vec::new();
    for panel in panels {
        all.push((panel, true));
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner.iter().map(|panel| (panel, false)));
        }
    }
    all
}

/// The dashboard's queries, by panel title; and Grafana basics checked on the way.
fn dashboard_queries() -> BTreeMap<String, Vec<String>> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()), "a title");
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()), "a uid");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "a schemaVersion"
    );
    let panels = dashboard["panels"].as_array().expect("`panels` is an array");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut queries = BTreeMap::new();
    let mut placed: Vec<(&str, [u64; 4])> = Vec::new();
    for (panel, top) in all_panels(panels) {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let title = panel["title"]
            .as_str()
            .filter(|t| !t.is_empty())
            .expect("every panel has a title");
        let kind = panel["type"].as_str().expect("every panel has a type");
        let grid = ["x", "y", "w", "h"].map(|field| {
            panel["gridPos"][field]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{field}"))
        });
        let [x, y, w, h] = grid;
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{title}: gridPos {grid:?} off the 24-column grid"
        );
        // A collapsed row's panels keep the places they take when it opens.
        if top {
            for (other, [ox, oy, ow, oh]) in &placed {
                let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
                assert!(apart, "panels {title:?} and {other:?} overlap");
            }
            placed.push((title, grid));
        }
        if kind == "row" {
            // A row only groups the panels after it: no queries.
            continue;
        }
        assert!(["timeseries", "stat"].contains(&kind), "{title}: panel type {kind}");
        let datasource = panel["datasource"]["uid"].as_str().expect("a datasource");
        assert_eq!(datasource, "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("{title}: no targets"));
        let mut ref_ids = BTreeSet::new();
        let mut exprs = Vec::new();
        for target in targets {
            let expr = target["expr"].as_str().filter(|e| !e.is_empty());
            let expr = expr.unwrap_or_else(|| panic!("{title}: a target without `expr`"));
            assert!(
                !identifiers(expr).is_empty(),
                "{title}: {expr} queries no wacht_ metric"
            );
            let ref_id = target["refId"].as_str().expect("a refId");
            assert!(ref_ids.insert(ref_id), "{title}: refId {ref_id} used twice");
            exprs.push(expr.to_owned());
        }
        assert!(
            queries.insert(title.to_owned(), exprs).is_none(),
            "two panels titled {title}"
        );
    }
    // The template variables' queries name metrics too.
    for variable in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if let Some(query) = variable["definition"].as_str() {
            queries
                .entry(format!("variable {}", variable["name"]))
                .or_default()
                .push(query.to_owned());
        }
    }
    queries
}

/// The `names` constants as written in src/telemetry.rs, and the names in its doc table.
fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
    let module = TELEMETRY_SOURCE
        .split("pub mod names {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("`pub mod names` in src/telemetry.rs");
    let constants = identifiers(module);
    let table: String = TELEMETRY_SOURCE
        .lines()
        .filter(|line| line.starts_with("//! | `wacht_"))
        .map(|line| line.split(" | ").nth(1).unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    (constants, identifiers(&table))
}

/// An event every 50 ms, forever: only the layer ends it.
async fn events(_: Principal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok(Event::default().data("tick")), ()))
    }))
}

/// Waits (boundedly) until the rendered metrics hold `series`.
async fn until_rendered(handle: &PrometheusHandle, series: &str) {
    let started = Instant::now();
    while !rendered_series(&handle.render()).contains(series) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} never appeared:\n{}",
            handle.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_emitted() {
    // What the dashboard is made of, before anything runs.
    let queries = dashboard_queries();
    let (constants, table) = documented();
    assert_eq!(
        constants,
        NAMES.iter().map(|n| n.to_string()).collect(),
        "tests/dashboard.rs's NAMES and `telemetry::names` differ"
    );
    assert_eq!(constants, table, "`telemetry::names` and the module's doc table differ");
    let queried: BTreeSet<String> = queries.values().flatten().flat_map(|e| identifiers(e)).collect();
    for series in &queried {
        assert!(
            NAMES.contains(&metric_of(series)),
            "the dashboard queries {series}, which is not a `telemetry::names` metric"
        );
    }

    // The example's recorder, before any layer is built.
    let handle = fleet_example::prometheus()
        .expect("valid buckets")
        .install_recorder()
        .expect("the first recorder in this test binary");

    // A layer without fleet mode.
    let (sink, records) = AuditSink::channel(1);
    let app = start(|b| {
        b.ttl(Duration::from_millis(200))
            .stale_if_error(Duration::from_secs(5))
            .expected_audience(RESOURCE)
            .denied_clients(["oc_denied"])
            .stream_recheck(Duration::from_millis(200))
            .audit(AuditConfig::new().sink(sink))
    })
    .await;
    let known = app.token(&["projects:read"]);
    for _ in 0..3 {
        assert_eq!(app.get("/whoami", Some(&known)).await.status(), 200);
    }
    // Refusals: unknown token, twice (negative cache), a denied client.
    let unknown = generate_token();
    assert_eq!(app.get("/whoami", Some(&unknown)).await.status(), 401);
    assert_eq!(app.get("/whoami", Some(&unknown)).await.status(), 401);
    let denied = app.token_with(|_| TokenGrant::new("oc_denied").oauth_resource(RESOURCE));
    assert_eq!(app.get("/whoami", Some(&denied)).await.status(), 401);
    // Wacht's rate limit.
    app.gateway.set_fault(Some(Fault::RateLimited { retry_after_ms: 1000 }));
    assert_eq!(app.get("/whoami", Some(&app.token(&[]))).await.status(), 429);
    // An outage: the known token served stale, a new one refused.
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.gateway.set_fault(Some(Fault::Status(503)));
    assert_eq!(app.get("/whoami", Some(&known)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some(&app.token(&[]))).await.status(), 503);
    app.gateway.set_fault(None);
    app.auth.verifier().run_pending_tasks().await;
    // A stream ended by an invalidation.
    let streams = serve(Router::new().route("/events", get(events)).layer(app.auth.clone())).await;
    let streamed = app.token(&[]);
    let stream = app
        .http
        .get(format!("http://{streams}/events"))
        .bearer_auth(&streamed)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(stream.status(), 200);
    assert_eq!(app.auth.invalidate(&streamed).await, ChangeOutcome::Applied);
    let mut body = stream.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the invalidated stream kept flowing");
    // A webhook delivery.
    let signer = WebhookSigner::generate();
    let receiver = serve(
        tower_wacht::WachtWebhooks::new(&app.auth, [signer.secret()])
            .expect("a valid secret")
            .router("/hooks"),
    )
    .await;
    let deleted = WebhookSigner::event("user.deleted", serde_json::json!({"entity_id": "42"}));
    let resp = app
        .http
        .post(format!("http://{receiver}/hooks"))
        .headers(signer.sign_now("msg_1", deleted.as_bytes()))
        .body(deleted.clone())
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(resp.status(), 200);
    // The audit queue (capacity 1, never read) is full: decisions after the first are dropped.
    assert!(records.capacity() == 0, "the audit queue filled up");

    // Two fleet replicas on a real Redis.
    let redis = RedisServer::start();
    let fleet = replicas(2, &app.gateway, &redis, "/").await;
    let http = reqwest::Client::new();
    let shared = token(&app.gateway, "oc_dashboardFleet00000000000001");
    for replica in &fleet {
        assert_eq!(status(&http, replica, &shared).await, 200);
    }
    assert_eq!(fleet[0].auth.invalidate(&shared).await, ChangeOutcome::Durable);
    until_rendered(&handle, names::FLEET_EVENTS).await;
    // Redis stops answering: the replicas' operations time out.
    redis.pause();
    let during = token(&app.gateway, "oc_dashboardFleetPaused000000001");
    let _ = status(&http, &fleet[0], &during).await;
    until_rendered(&handle, names::FLEET_ERRORS).await;
    redis.resume();
    // Redis loses the fleet's state: the replicas re-read it.
    let started = Instant::now();
    while !fleet.iter().all(|r| r.auth.verifier().fleet_connected()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the fleet did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redis.command(&["FLUSHALL"]).as_deref(), Some("+OK"));
    until_rendered(&handle, names::FLEET_RESYNCS).await;

    let rendered = handle.render();
    let exported = rendered_series(&rendered);
    for (panel, exprs) in &queries {
        for expr in exprs {
            for series in identifiers(expr) {
                assert!(
                    exported.contains(&series),
                    "panel {panel:?} queries {series}, which the crate did not export:\n{rendered}"
                );
            }
        }
    }
    // Every label a query groups by is on the series it queries, and every label value it
    // filters on exactly (`outcome="rate_limited"`) was exported.
    let labels = rendered_labels(&rendered);
    for (panel, exprs) in &queries {
        for expr in exprs {
            let (grouped, matchers) = labels_used(expr);
            let series = identifiers(expr);
            for label in grouped.iter().filter(|l| !NOT_EMITTED_LABELS.contains(&l.as_str())) {
                assert!(
                    series
                        .iter()
                        .any(|s| labels.get(s).is_some_and(|ls| ls.iter().any(|(k, _)| k == label))),
                    "panel {panel:?} groups by {label}, which none of {series:?} carries"
                );
            }
            for (metric, key, exact) in matchers {
                if NOT_EMITTED_LABELS.contains(&key.as_str()) {
                    continue;
                }
                let exported = labels.get(&metric).cloned().unwrap_or_default();
                match exact {
                    Some(value) => assert!(
                        exported.contains(&(key.clone(), value.clone())),
                        "panel {panel:?} filters {metric} on {key}=\"{value}\", never exported"
                    ),
                    None => assert!(
                        exported.iter().any(|(k, _)| *k == key),
                        "panel {panel:?} filters {metric} on {key}, which it does not carry"
                    ),
                }
            }
        }
    }
    // The latency quantiles read buckets, not a summary.
    assert!(
        rendered.contains(&format!("{}_bucket{{le=", names::GATEWAY_DURATION)),
        "{rendered}"
    );
    drop(records);
}
