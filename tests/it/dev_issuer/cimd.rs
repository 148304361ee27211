//! Client ID Metadata Documents at the `DevIssuer`, over real loopback HTTP: the switch, a
//! client shaped like Claude Code's, where documents may be fetched from (public addresses
//! only, after resolution; loopback only on a configured port), one neutral page for every
//! failure, and caching by `Cache-Control`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tower_wacht::testing::{ClientKind, DevIssuerConfig};

use super::{CHALLENGE, DocumentServer, REDIRECT, RESOURCE, Setup, assert_error, client_document};

/// An issuer accepting metadata documents, also from these loopback ports.
async fn with_documents(ports: &[u16], configure: impl FnOnce(DevIssuerConfig) -> DevIssuerConfig) -> Setup {
    Setup::with(|config| {
        let config = ports.iter().fold(config.client_id_metadata_documents(true), |c, port| {
            c.allow_loopback_metadata_document_port(*port)
        });
        configure(config)
    })
    .await
}

/// The page `/oauth/authorize` shows for `client_id`: status, content type and body.
async fn page(setup: &Setup, client_id: &str) -> (u16, Option<String>, String) {
    let resp = setup
        .authorize_raw(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("resource", RESOURCE),
        ])
        .await;
    assert!(resp.headers().get("location").is_none(), "{client_id}: redirected");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, resp.text().await.unwrap())
}

/// A TCP listener on loopback that counts the connections made to it, and closes them.
struct Canary {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Canary {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Canary { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    addr.port()
}

/// Claude Code's client ID metadata document lists `http://localhost/callback` and
/// `http://127.0.0.1/callback`, without a port, and its authorization request then names
/// the ephemeral port it listens on.
#[tokio::test]
async fn a_client_shaped_like_claude_code_completes_the_flow() {
    let documents = DocumentServer::start().await;
    let client_id = documents.serve("/oauth/claude-code-client-metadata", None, |url| {
        json!({
            "client_id": url,
            "client_name": "Claude Code",
            "client_uri": "https://claude.ai",
            "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        })
    });
    let setup = with_documents(&[documents.port()], |c| c).await;
    let metadata = setup.metadata().await;
    assert_eq!(metadata["client_id_metadata_document_supported"], true);
    let app = setup.app().await;

    for callback in ["http://localhost:54321/callback", "http://127.0.0.1:61234/callback"] {
        let redirect = setup
            .authorize(&client_id, "projects:read", &[("redirect_uri", callback)])
            .await;
        assert_eq!(redirect.base, callback);
        assert_eq!(redirect.get("state"), Some("st-123"));
        assert!(
            redirect.get("error").is_none(),
            "{:?}",
            redirect.get("error_description")
        );
        let code = redirect.get("code").expect("a code").to_owned();
        let (status, body) = setup
            .exchange_changing(&client_id, &code, &[("redirect_uri", Some(callback))])
            .await;
        assert_eq!(status, 200, "{body}");
        let who: Value = app
            .get("/whoami", body["access_token"].as_str())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(who["client_id"], client_id.as_str());
    }
    assert_eq!(setup.issuer.registrations(), 0, "no dynamic registration");
    assert_eq!(setup.issuer.clients()[0].kind, ClientKind::MetadataDocument);
}

/// Off (the default): not advertised, and a URL `client_id` is just an unknown client, never
/// fetched, even from a loopback port the configuration names.
#[tokio::test]
async fn without_the_switch_documents_are_neither_advertised_nor_fetched() {
    let documents = DocumentServer::start().await;
    let client_id = documents.serve("/client.json", None, client_document);
    let setup = Setup::with(|c| c.allow_loopback_metadata_document_port(documents.port())).await;
    assert_eq!(setup.metadata().await["client_id_metadata_document_supported"], false);

    let (status, _, body) = page(&setup, &client_id).await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown client_id"), "{body}");
    assert_eq!(documents.requests("/client.json"), 0);
    assert_eq!(setup.issuer.metadata_document_fetches(), 0);
    assert!(setup.issuer.clients().is_empty());

    // A client that prefers documents registers dynamically instead, and completes the flow.
    let registered = setup.register_public(&["http://127.0.0.1/callback"]).await;
    let redirect = setup
        .authorize(
            &registered,
            "projects:read",
            &[("redirect_uri", "http://127.0.0.1:50123/callback")],
        )
        .await;
    assert!(redirect.get("code").is_some());
}

/// A document URL naming (or resolving to) an internal address is refused before any
/// connection, with exactly the page a document answering 404 gets, and a connection
/// failure gets the same: the issuer tells nobody which internal hosts answer.
#[tokio::test]
async fn document_urls_pointing_inside_get_the_page_a_missing_document_gets() {
    let documents = DocumentServer::start().await;
    let canary = Canary::start().await;
    let closed = closed_port().await;
    let private: IpAddr = "10.0.0.7".parse().unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let setup = with_documents(&[documents.port(), closed], |c| {
        c.resolve_metadata_document_host("internal.example", [private])
            .resolve_metadata_document_host("rebound.example", ["93.184.215.14".parse().unwrap(), private])
            .resolve_metadata_document_host("canary.example", [loopback])
    })
    .await;

    let missing = page(&setup, &documents.url("/missing.json")).await;
    assert_eq!(documents.requests("/missing.json"), 1);
    assert_eq!(missing.0, 400);
    assert_eq!(missing.1.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(missing.2.contains("could not fetch or accept"), "{}", missing.2);
    assert!(!missing.2.contains("404"), "the page says what answered: {}", missing.2);
    let fetches = setup.issuer.metadata_document_fetches();
    assert_eq!(fetches, 1);

    let canary_port = canary.port;
    for client_id in [
        "https://10.0.0.1/client.json".to_owned(),
        "https://172.16.5.4/client.json".to_owned(),
        "https://192.168.1.10/client.json".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://100.64.0.1/client.json".to_owned(),
        "https://[fd00::1]/client.json".to_owned(),
        "https://[fe80::1]/client.json".to_owned(),
        // IPv4-mapped forms of link-local, private and loopback (the canary's port).
        "https://[::ffff:a9fe:a9fe]/latest/meta-data".to_owned(),
        "https://[::ffff:a00:1]/client.json".to_owned(),
        format!("https://[::ffff:7f00:1]:{canary_port}/client.json"),
        // The unspecified address reaches this machine.
        format!("https://0.0.0.0:{canary_port}/client.json"),
        format!("https://[::]:{canary_port}/client.json"),
        // Names resolving to a private address, to a public and a private one, or to
        // loopback on a port not allowed.
        "https://internal.example/client.json".to_owned(),
        "https://rebound.example/client.json".to_owned(),
        format!("https://canary.example:{canary_port}/client.json"),
    ] {
        assert_eq!(page(&setup, &client_id).await, missing, "{client_id}");
    }
    assert_eq!(canary.connections(), 0, "a refused address was connected to");
    assert_eq!(
        setup.issuer.metadata_document_fetches(),
        fetches,
        "a refused address was fetched"
    );

    // Nothing listening on an allowed port, a document describing another client, and one
    // that is not JSON: the same page.
    let impostor = documents.serve(
        "/impostor.json",
        None,
        |_| json!({"client_id": "https://trusted.example.com/client.json", "redirect_uris": [REDIRECT]}),
    );
    let not_an_object = documents.serve("/array.json", None, |_| json!([1, 2, 3]));
    for client_id in [
        format!("http://127.0.0.1:{closed}/client.json"),
        format!("http://localhost:{closed}/client.json"),
        impostor,
        not_an_object,
    ] {
        assert_eq!(page(&setup, &client_id).await, missing, "{client_id}");
    }
}

/// Loopback is refused on every port but the configured ones, whatever the host says.
#[tokio::test]
async fn a_loopback_port_not_configured_is_refused() {
    let allowed = DocumentServer::start().await;
    let other = DocumentServer::start().await;
    let served = other.serve("/client.json", None, client_document);
    let setup = with_documents(&[allowed.port()], |c| c).await;
    let missing = page(&setup, &allowed.url("/missing.json")).await;

    let port = other.port();
    for client_id in [
        served,
        format!("http://localhost:{port}/client.json"),
        format!("http://[::1]:{port}/client.json"),
        format!("https://127.0.0.1:{port}/client.json"),
        format!("http://127.0.0.2:{port}/client.json"),
    ] {
        assert_eq!(page(&setup, &client_id).await, missing, "{client_id}");
    }
    assert_eq!(other.requests("/client.json"), 0);
    assert_eq!(setup.issuer.metadata_document_fetches(), 1);

    // The configured port serves.
    let client_id = allowed.serve("/client.json", None, client_document);
    assert!(setup.code(&client_id, "projects:read").await.starts_with("oac_"));
}

/// `Cache-Control: max-age` keeps a document (a second authorization fetches nothing);
/// `no-store`, `no-cache` and no `max-age` are fetched again each time; a failed fetch
/// leaves nothing behind.
#[tokio::test]
async fn documents_are_cached_as_their_cache_control_says() {
    let documents = DocumentServer::start().await;
    let setup = with_documents(&[documents.port()], |c| c).await;
    let cases = [
        ("/max-age.json", Some("public, max-age=300"), 1),
        ("/no-store.json", Some("no-store"), 3),
        ("/no-cache.json", Some("max-age=300, no-cache"), 3),
        ("/stale.json", Some("max-age=0"), 3),
        ("/plain.json", None, 3),
    ];
    for (path, cache_control, expected) in cases {
        let client_id = documents.serve(path, cache_control, client_document);
        for _ in 0..3 {
            assert!(
                setup.code(&client_id, "projects:read").await.starts_with("oac_"),
                "{path}"
            );
        }
        assert_eq!(documents.requests(path), expected, "{path} ({cache_control:?})");
    }
    let total: usize = cases.iter().map(|(_, _, n)| n).sum();
    assert_eq!(setup.issuer.metadata_document_fetches(), total);

    // A cached document serves the token request too, and the flow completes.
    let client_id = documents.url("/max-age.json");
    let code = setup.code(&client_id, "projects:read").await;
    assert_error(&setup.exchange(&client_id, "oac_unknown").await, 400, "invalid_grant");
    let (status, body) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(documents.requests("/max-age.json"), 1);
}
