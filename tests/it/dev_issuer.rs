//! The `DevIssuer` over real loopback HTTP: metadata, the authorization code flow with PKCE
//! and `resource` for registered (RFC 7591) and metadata-document (CIMD) clients, loopback
//! redirect URIs with any port, the issued tokens verified by `WachtAuthLayer` through the
//! `FakeGateway`, refusals, refresh rotation and consent policies. `cimd` has the rules for
//! fetching metadata documents (the switch, where they may come from, caching).
#![cfg(feature = "test-util")]

mod cimd;

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tower_wacht::testing::{
    ClientKind, ConsentPolicy, DEFAULT_GRANTED_RESOURCE, DevIssuer, DevIssuerConfig, GrantType, IssForm, hash_token,
};

use common::{ORG_URN, RESOURCE, TestApp};

/// RFC 7636 Appendix B: a verifier and its S256 challenge, computed independently of the
/// issuer.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
/// Another well-formed verifier.
const OTHER_VERIFIER: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const REDIRECT: &str = "http://127.0.0.1:33418/callback";
const SCOPES: [&str; 2] = ["projects:read", "projects:write"];

/// An issuer in front of the harness's gateway, and an HTTP client that does not follow
/// redirects (the test plays the browser).
struct Setup {
    issuer: DevIssuer,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Setup {
        Self::with(|c| c).await
    }

    async fn with(configure: impl FnOnce(DevIssuerConfig) -> DevIssuerConfig) -> Setup {
        let gateway = common::start_gateway().await;
        let issuer = DevIssuer::start(gateway, configure(DevIssuerConfig::new(SCOPES)))
            .await
            .expect("dev issuer starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Setup { issuer, http }
    }

    /// `WachtAuthLayer` over the issuer's gateway, pinned to the issuer and the resource.
    async fn app(&self) -> TestApp {
        let issuer = self.issuer.url();
        common::start_with_gateway(self.issuer.gateway().clone(), |b| {
            b.expected_issuer(issuer).expected_audience(RESOURCE)
        })
        .await
    }

    /// The issuer's RFC 8414 metadata document.
    async fn metadata(&self) -> Value {
        let resp = self.http.get(self.issuer.metadata_url()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Registers a public client through `POST /oauth/register`.
    async fn register_public(&self, redirect_uris: &[&str]) -> String {
        let (status, body) = self
            .register(json!({
                "client_name": "test client",
                "redirect_uris": redirect_uris,
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        body["client_id"].as_str().unwrap().to_owned()
    }

    async fn register(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.issuer.registration_endpoint())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// `GET /oauth/authorize` with these parameters.
    async fn authorize_raw(&self, params: &[(&str, &str)]) -> reqwest::Response {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        self.http
            .get(format!("{}?{query}", self.issuer.authorization_endpoint()))
            .send()
            .await
            .unwrap()
    }

    /// An authorization request with PKCE, `resource`, `state` and the given scope, with
    /// `overrides` replacing (or, with an empty value, removing) parameters; returns the
    /// parameters of the redirect.
    async fn authorize(&self, client_id: &str, scope: &str, overrides: &[(&str, &str)]) -> Redirect {
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "st-123"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("resource", RESOURCE),
        ];
        for (name, value) in overrides {
            params.retain(|(n, _)| n != name);
            if !value.is_empty() {
                params.push((name, value));
            }
        }
        let resp = self.authorize_raw(&params).await;
        assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
        Redirect::parse(&header(&resp, "location").expect("Location"))
    }

    /// The code of a successful authorization.
    async fn code(&self, client_id: &str, scope: &str) -> String {
        let redirect = self.authorize(client_id, scope, &[]).await;
        assert_eq!(redirect.base, REDIRECT);
        redirect.params.get("code").cloned().expect("a code")
    }

    /// `POST /oauth/token` with a form body.
    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = post_form(self.http.post(self.issuer.token_endpoint()), form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
        (status, resp.json().await.unwrap())
    }

    async fn exchange(&self, client_id: &str, code: &str) -> (u16, Value) {
        self.exchange_changing(client_id, code, &[]).await
    }

    /// [`exchange`](Self::exchange) with some parameters changed: `(name, Some(value))`
    /// replaces one, `(name, None)` leaves it out.
    async fn exchange_changing(&self, client_id: &str, code: &str, changes: &[(&str, Option<&str>)]) -> (u16, Value) {
        let standard = [
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", RESOURCE),
        ];
        let form: Vec<(&str, &str)> = standard
            .iter()
            .filter_map(
                |&(name, value)| match changes.iter().find(|(changed, _)| *changed == name) {
                    Some((_, replacement)) => replacement.map(|v| (name, v)),
                    None => Some((name, value)),
                },
            )
            .collect();
        self.token(&form).await
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
            ("resource", RESOURCE),
        ])
        .await
    }

    /// Registration, authorization and code exchange: the token response.
    async fn full_flow(&self, scope: &str) -> (String, Value) {
        let client_id = self.register_public(&[REDIRECT]).await;
        let code = self.code(&client_id, scope).await;
        let (status, body) = self.exchange(&client_id, &code).await;
        assert_eq!(status, 200, "{body}");
        (client_id, body)
    }
}

/// Where the issuer sent the browser: the redirect URI and the parameters added to it.
struct Redirect {
    base: String,
    params: HashMap<String, String>,
}

impl Redirect {
    fn parse(location: &str) -> Redirect {
        let (base, query) = location.split_once('?').expect("a query");
        let params = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        Redirect {
            base: base.to_owned(),
            params,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// An `application/x-www-form-urlencoded` body.
fn post_form(request: reqwest::RequestBuilder, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    request
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// Asserts an RFC 6749 error answer.
fn assert_error(answer: &(u16, Value), status: u16, error: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    assert!(answer.1["error_description"].is_string());
}

/// Asserts the `400` page shown instead of a redirect.
async fn assert_error_page(resp: reqwest::Response, needle: &str) {
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers().get("location").is_none(),
        "an untrusted redirect URI was followed"
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains(needle), "{text}");
}

/// A loopback HTTP server of client metadata documents, counting the requests for each path.
#[derive(Clone)]
struct DocumentServer {
    addr: SocketAddr,
    routes: Arc<Mutex<Routes>>,
}

#[derive(Default)]
struct Routes {
    /// Path → `Cache-Control` value (if any) and document.
    documents: HashMap<String, (Option<&'static str>, Value)>,
    /// Path → requests received, served or not.
    requests: HashMap<String, usize>,
}

impl DocumentServer {
    async fn start() -> DocumentServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let app = Router::new().fallback(Self::answer).with_state(Arc::clone(&routes));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        DocumentServer { addr, routes }
    }

    async fn answer(State(routes): State<Arc<Mutex<Routes>>>, uri: http::Uri) -> axum::response::Response {
        let mut routes = routes.lock().unwrap();
        *routes.requests.entry(uri.path().to_owned()).or_default() += 1;
        match routes.documents.get(uri.path()) {
            None => http::StatusCode::NOT_FOUND.into_response(),
            Some((None, document)) => axum::Json(document.clone()).into_response(),
            Some((Some(cache_control), document)) => {
                ([("cache-control", *cache_control)], axum::Json(document.clone())).into_response()
            }
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT<path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `document(url)` at `path` with this `Cache-Control`; returns the URL.
    fn serve(&self, path: &str, cache_control: Option<&'static str>, document: impl FnOnce(&str) -> Value) -> String {
        let url = self.url(path);
        let body = document(&url);
        self.routes
            .lock()
            .unwrap()
            .documents
            .insert(path.to_owned(), (cache_control, body));
        url
    }

    /// Requests received for `path`.
    fn requests(&self, path: &str) -> usize {
        self.routes.lock().unwrap().requests.get(path).copied().unwrap_or(0)
    }
}

/// A document for a public client redirecting to [`REDIRECT`].
fn client_document(url: &str) -> Value {
    json!({"client_id": url, "client_name": "CIMD test client", "redirect_uris": [REDIRECT]})
}

#[tokio::test]
async fn metadata_names_the_wacht_endpoints_and_what_mcp_clients_require() {
    let setup = Setup::start().await;
    let issuer = setup.issuer.url();
    assert!(issuer.starts_with("http://127.0.0.1:") && !issuer.ends_with('/'));

    let mut documents = Vec::new();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let resp = setup.http.get(format!("{issuer}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
        documents.push(resp.json::<Value>().await.unwrap());
    }
    assert_eq!(documents[0], documents[1]);
    let doc = &documents[0];
    assert_eq!(
        setup.issuer.metadata_url(),
        format!("{issuer}/.well-known/oauth-authorization-server")
    );
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["authorization_endpoint"], format!("{issuer}/oauth/authorize"));
    assert_eq!(doc["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(doc["registration_endpoint"], format!("{issuer}/oauth/register"));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert!(
        doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["scopes_supported"], json!(SCOPES));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    // Off unless configured: clients that prefer documents register dynamically instead.
    assert_eq!(doc["client_id_metadata_document_supported"], false);

    // Browser clients preflight their cross-origin calls (the TS SDK adds
    // `mcp-protocol-version` to metadata requests).
    for path in [
        "/.well-known/oauth-authorization-server",
        "/oauth/token",
        "/oauth/register",
    ] {
        let resp = setup
            .http
            .request(reqwest::Method::OPTIONS, format!("{issuer}{path}"))
            .header("origin", "http://localhost:6274")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, mcp-protocol-version")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
        assert!(header(&resp, "access-control-allow-methods").unwrap().contains("POST"));
        assert!(
            header(&resp, "access-control-allow-headers")
                .unwrap()
                .contains("mcp-protocol-version")
        );
    }
    // A discovery URL it does not serve answers a readable 404, so clients move on.
    let resp = setup
        .http
        .get(format!("{issuer}/.well-known/oauth-authorization-server/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
    // Token and registration answers, errors included, are readable cross-origin.
    let resp = post_form(setup.http.post(setup.issuer.token_endpoint()), &[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
}

#[tokio::test]
async fn metadata_follows_the_configuration() {
    let setup = Setup::with(|c| c.dynamic_registration(false).iss_form(IssForm::Omitted)).await;
    let doc = setup.metadata().await;
    assert!(doc.get("registration_endpoint").is_none());
    assert_eq!(doc["authorization_response_iss_parameter_supported"], false);
    let (status, _) = {
        let resp = setup
            .http
            .post(setup.issuer.registration_endpoint())
            .json(&json!({"redirect_uris": [REDIRECT]}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), ())
    };
    assert_eq!(status, 404);
}

#[tokio::test]
async fn registered_client_completes_the_flow_and_its_token_passes_the_layer() {
    let setup = Setup::start().await;
    let client_id = setup.register_public(&[REDIRECT]).await;
    assert!(client_id.starts_with("oc_"));
    assert_eq!(setup.issuer.registrations(), 1);

    let redirect = setup.authorize(&client_id, "projects:read", &[]).await;
    assert_eq!(redirect.base, REDIRECT);
    assert_eq!(redirect.get("state"), Some("st-123"));
    assert_eq!(redirect.get("iss"), Some(setup.issuer.url().as_str()));
    assert!(redirect.get("error").is_none());
    assert_eq!(setup.issuer.last_resource().as_deref(), Some(RESOURCE));
    let code = redirect.get("code").unwrap();

    let (status, body) = setup.exchange(&client_id, code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "projects:read");
    let access = body["access_token"].as_str().unwrap();
    assert!(access.starts_with("oat_"));
    assert!(body["refresh_token"].is_string());

    let issued = setup.issuer.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token_sha256, hash_token(access));
    assert_eq!(issued[0].client_id, client_id);
    assert_eq!(issued[0].scopes, vec!["projects:read"]);
    assert_eq!(issued[0].resource, RESOURCE);
    assert_eq!(issued[0].granted_resource, DEFAULT_GRANTED_RESOURCE);
    assert_eq!(issued[0].grant_type, GrantType::AuthorizationCode);
    assert!(issued[0].with_refresh_token);

    // The layer verifies it through the gateway, pinned to the issuer and the audience.
    let app = setup.app().await;
    let resp = app.get("/whoami", Some(access)).await;
    assert_eq!(resp.status(), 200);
    let who: Value = resp.json().await.unwrap();
    assert_eq!(who["client_id"], client_id);
    assert_eq!(who["issuer"], setup.issuer.url());
    assert_eq!(who["oauth_resource"], RESOURCE);
    assert_eq!(who["granted_resource"], ORG_URN);
    assert_eq!(who["scopes"], json!(["projects:read"]));
    assert_eq!(app.get("/reports", Some(access)).await.status(), 200);
    assert_eq!(app.get("/whoami", Some("oat_notissued")).await.status(), 401);
}

#[tokio::test]
async fn metadata_document_client_completes_the_flow() {
    let documents = DocumentServer::start().await;
    let client_id = documents.serve("/client.json", None, |url| {
        json!({
            "client_id": url,
            "client_name": "CIMD test client",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        })
    });
    let setup = Setup::with(|c| {
        c.client_id_metadata_documents(true)
            .allow_loopback_metadata_document_port(documents.port())
    })
    .await;
    assert_eq!(setup.metadata().await["client_id_metadata_document_supported"], true);

    let code = setup.code(&client_id, "projects:read projects:write").await;
    assert_eq!(setup.issuer.metadata_document_fetches(), 1);
    assert_eq!(documents.requests("/client.json"), 1);
    assert_eq!(setup.issuer.registrations(), 0);
    let clients = setup.issuer.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].client_id, client_id);
    assert_eq!(clients[0].kind, ClientKind::MetadataDocument);
    assert_eq!(clients[0].token_endpoint_auth_method, "none");

    let (status, body) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "projects:read projects:write");
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().unwrap();

    let app = setup.app().await;
    let resp = app.get("/whoami", Some(access)).await;
    assert_eq!(resp.status(), 200);
    let who: Value = resp.json().await.unwrap();
    assert_eq!(who["client_id"], client_id);
    assert_eq!(who["scopes"], json!(SCOPES));
}

#[tokio::test]
async fn metadata_documents_are_checked_before_their_redirect_uris_are_trusted() {
    let documents = DocumentServer::start().await;
    let setup = Setup::with(|c| {
        c.client_id_metadata_documents(true)
            .allow_loopback_metadata_document_port(documents.port())
    })
    .await;
    // A URL of the wrong form is refused saying why, without fetching.
    let resp = setup
        .authorize_raw(&[
            ("client_id", "http://app.example.com/client.json"),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_error_page(resp, "https").await;
    assert_eq!(setup.issuer.metadata_document_fetches(), 0);

    // A document claiming another client id.
    let impostor = documents.serve(
        "/impostor.json",
        None,
        |_| json!({"client_id": "https://trusted.example.com/client.json", "redirect_uris": [REDIRECT]}),
    );
    let resp = setup
        .authorize_raw(&[("client_id", &impostor), ("redirect_uri", REDIRECT)])
        .await;
    assert_error_page(resp, "client_id").await;
    // A redirect URI the document does not list.
    let client_id = documents.serve("/client.json", None, client_document);
    let resp = setup
        .authorize_raw(&[
            ("client_id", &client_id),
            ("redirect_uri", "http://127.0.0.1:9/evil"),
            ("response_type", "code"),
        ])
        .await;
    assert_error_page(resp, "redirect_uri").await;
    // Without `refresh_token` in its grant types (RFC 7591 default), no refresh token.
    let code = setup.code(&client_id, "projects:read").await;
    let (status, body) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused_and_uses_up_the_code() {
    let setup = Setup::start().await;
    let client_id = setup.register_public(&[REDIRECT]).await;
    let code = setup.code(&client_id, "projects:read").await;
    let wrong = setup
        .exchange_changing(&client_id, &code, &[("code_verifier", Some(OTHER_VERIFIER))])
        .await;
    assert_error(&wrong, 400, "invalid_grant");
    // The code does not survive a failed attempt.
    assert_error(&setup.exchange(&client_id, &code).await, 400, "invalid_grant");
    assert!(setup.issuer.issued().is_empty());

    // A missing verifier.
    let code = setup.code(&client_id, "projects:read").await;
    let missing = setup
        .exchange_changing(&client_id, &code, &[("code_verifier", None)])
        .await;
    assert_error(&missing, 400, "invalid_request");

    // Authorization requests without S256 PKCE go back to the client with an error.
    for overrides in [
        &[("code_challenge_method", "plain")][..],
        &[("code_challenge_method", "")][..],
        &[("code_challenge", "")][..],
    ] {
        let redirect = setup.authorize(&client_id, "projects:read", overrides).await;
        assert_eq!(redirect.get("error"), Some("invalid_request"), "{overrides:?}");
        assert_eq!(redirect.get("state"), Some("st-123"));
        assert_eq!(redirect.get("iss"), Some(setup.issuer.url().as_str()));
        assert!(redirect.get("code").is_none());
    }
}

#[tokio::test]
async fn a_reused_code_is_refused_and_revokes_the_tokens_it_produced() {
    let setup = Setup::start().await;
    let client_id = setup.register_public(&[REDIRECT]).await;
    let code = setup.code(&client_id, "projects:read").await;
    let (status, body) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200);
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    assert_error(&setup.exchange(&client_id, &code).await, 400, "invalid_grant");
    let app = setup.app().await;
    assert_eq!(app.get("/whoami", Some(&access)).await.status(), 401);
    assert_error(&setup.refresh(&client_id, &refresh).await, 400, "invalid_grant");
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let setup = Setup::with(|c| c.code_ttl(Duration::from_millis(1))).await;
    let client_id = setup.register_public(&[REDIRECT]).await;
    let code = setup.code(&client_id, "projects:read").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_error(&setup.exchange(&client_id, &code).await, 400, "invalid_grant");
}

#[tokio::test]
async fn redirect_uris_must_match_exactly() {
    let setup = Setup::start().await;
    let other = "http://127.0.0.1:33418/other";
    let client_id = setup.register_public(&[REDIRECT, other]).await;

    // Not registered (even by a trailing slash): shown, never redirected.
    for uri in ["http://evil.example.com/callback", "http://127.0.0.1:33418/callback/"] {
        let resp = setup
            .authorize_raw(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", uri),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", RESOURCE),
            ])
            .await;
        assert_error_page(resp, "redirect_uri").await;
    }
    let resp = setup
        .authorize_raw(&[("response_type", "code"), ("client_id", &client_id)])
        .await;
    assert_error_page(resp, "redirect_uri").await;

    // The token request must name the redirect URI of the authorization.
    let code = setup.code(&client_id, "projects:read").await;
    let answer = setup
        .exchange_changing(&client_id, &code, &[("redirect_uri", Some(other))])
        .await;
    assert_error(&answer, 400, "invalid_grant");

    // Registration refuses redirect URIs that would leak codes.
    for uri in [
        "http://app.example.com/cb",
        "https://app.example.com/cb#frag",
        "javascript:alert(1)",
    ] {
        let answer = setup
            .register(json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}))
            .await;
        assert_error(&answer, 400, "invalid_redirect_uri");
    }
    assert_error(
        &setup.register(json!({"client_name": "x"})).await,
        400,
        "invalid_redirect_uri",
    );
}

/// RFC 8252 §7.3 and OAuth 2.1: a native client listens on whatever port the system gives it,
/// so a loopback redirect URI matches with any port; only the port.
#[tokio::test]
async fn loopback_redirect_uris_match_with_any_port_and_nothing_else_does() {
    let setup = Setup::start().await;
    let client_id = setup
        .register_public(&[
            "http://127.0.0.1/callback",
            "http://localhost:33418/cb",
            "http://[::1]/cb?app=1",
            "https://app.example.com/cb",
        ])
        .await;
    let app = setup.app().await;

    for ephemeral in [
        "http://127.0.0.1:54321/callback",
        "http://127.0.0.1/callback",
        "http://localhost:40000/cb",
        "http://[::1]:61000/cb?app=1",
    ] {
        // The authorization answers at the port the client listens on.
        let redirect = setup
            .authorize(&client_id, "projects:read", &[("redirect_uri", ephemeral)])
            .await;
        assert_eq!(redirect.base, ephemeral.split('?').next().unwrap(), "{ephemeral}");
        assert!(redirect.get("error").is_none(), "{ephemeral}");
        let code = redirect.get("code").expect("a code").to_owned();
        // The token request repeats that URI, port included; another port is refused.
        let other_port = setup
            .exchange_changing(
                &client_id,
                &code,
                &[("redirect_uri", Some("http://127.0.0.1:1/callback"))],
            )
            .await;
        assert_error(&other_port, 400, "invalid_grant");
        let redirect = setup
            .authorize(&client_id, "projects:read", &[("redirect_uri", ephemeral)])
            .await;
        let code = redirect.get("code").expect("a code").to_owned();
        let (status, body) = setup
            .exchange_changing(&client_id, &code, &[("redirect_uri", Some(ephemeral))])
            .await;
        assert_eq!(status, 200, "{ephemeral}: {body}");
        assert_eq!(
            app.get("/whoami", body["access_token"].as_str()).await.status(),
            200,
            "{ephemeral}"
        );
    }

    // Only the port is free, and only on loopback: another host (even another loopback
    // name), path, query or scheme, user information, or a port on a non-loopback URI is
    // refused, shown and never redirected to.
    for refused in [
        "http://localhost:54321/callback",
        "http://[::1]:54321/callback",
        "http://127.0.0.2:54321/callback",
        "http://127.0.0.1:54321/callback/",
        "http://127.0.0.1:54321/other",
        "http://127.0.0.1:54321/callback?x=1",
        "https://127.0.0.1:54321/callback",
        "http://127.0.0.1:54321@evil.example.com/callback",
        "http://127.0.0.1:0/callback",
        "http://[::1]:61000/cb",
        "https://app.example.com:8443/cb",
        "https://evil.example.com/cb",
    ] {
        let resp = setup
            .authorize_raw(&[
                ("response_type", "code"),
                ("client_id", &client_id),
                ("redirect_uri", refused),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", RESOURCE),
            ])
            .await;
        assert_error_page(resp, "redirect_uri").await;
    }
}

#[tokio::test]
async fn resource_is_required_and_bound_to_the_grant() {
    let setup = Setup::start().await;
    let client_id = setup.register_public(&[REDIRECT]).await;

    let redirect = setup.authorize(&client_id, "projects:read", &[("resource", "")]).await;
    assert_eq!(redirect.get("error"), Some("invalid_request"));
    assert!(redirect.get("error_description").unwrap().contains("resource"));
    assert_eq!(redirect.get("state"), Some("st-123"));
    assert!(redirect.get("code").is_none());
    let redirect = setup
        .authorize(
            &client_id,
            "projects:read",
            &[("resource", "https://api.example.com/mcp#frag")],
        )
        .await;
    assert_eq!(redirect.get("error"), Some("invalid_target"));

    let code = setup.code(&client_id, "projects:read").await;
    let missing = setup.exchange_changing(&client_id, &code, &[("resource", None)]).await;
    assert_error(&missing, 400, "invalid_request");

    let code = setup.code(&client_id, "projects:read").await;
    let other = setup
        .exchange_changing(
            &client_id,
            &code,
            &[("resource", Some("https://other.example.com/mcp"))],
        )
        .await;
    assert_error(&other, 400, "invalid_target");
    assert!(setup.issuer.issued().is_empty());
}

#[tokio::test]
async fn unknown_and_unauthenticated_clients_are_refused() {
    let setup = Setup::start().await;
    let resp = setup
        .authorize_raw(&[
            ("response_type", "code"),
            ("client_id", "oc_unknown"),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_error_page(resp, "unknown client_id").await;

    let answer = setup.exchange("oc_unknown", "oac_x").await;
    assert_error(&answer, 401, "invalid_client");
    assert_error(
        &setup.token(&[("grant_type", "authorization_code")]).await,
        401,
        "invalid_client",
    );

    // A confidential client (the RFC 7591 default method) must present its secret.
    let (status, registered) = setup.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, 201);
    assert_eq!(registered["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(registered["client_secret_expires_at"], 0);
    let client_id = registered["client_id"].as_str().unwrap();
    let secret = registered["client_secret"].as_str().unwrap();
    let code = setup.code(client_id, "projects:read").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", RESOURCE),
    ];
    let resp = post_form(setup.http.post(setup.issuer.token_endpoint()), &form)
        .basic_auth(client_id, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").unwrap().starts_with("Basic"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    // The failed authentication did not use up the code.
    let resp = post_form(setup.http.post(setup.issuer.token_endpoint()), &form)
        .basic_auth(client_id, Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["access_token"].is_string());
    // No refresh token: it registered only the default `authorization_code` grant.
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn unsupported_grants_and_scopes_are_refused() {
    let setup = Setup::start().await;
    let client_id = setup.register_public(&[REDIRECT]).await;
    let password = setup
        .token(&[("grant_type", "password"), ("client_id", &client_id), ("username", "u")])
        .await;
    assert_error(&password, 400, "unsupported_grant_type");
    let none = setup.token(&[("client_id", &client_id)]).await;
    assert_error(&none, 400, "invalid_request");

    // Refresh tokens are for clients registered with that grant.
    let (status, registered) = setup
        .register(json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .await;
    assert_eq!(status, 201);
    let code_only = registered["client_id"].as_str().unwrap();
    let answer = setup.refresh(code_only, "ort_whatever").await;
    assert_error(&answer, 400, "unauthorized_client");

    // Scopes outside scopes_supported.
    let redirect = setup.authorize(&client_id, "projects:read admin", &[]).await;
    assert_eq!(redirect.get("error"), Some("invalid_scope"));
    // Other response types.
    let redirect = setup
        .authorize(&client_id, "projects:read", &[("response_type", "token")])
        .await;
    assert_eq!(redirect.get("error"), Some("unsupported_response_type"));
}

#[tokio::test]
async fn without_refresh_tokens_clients_are_registered_and_served_without_them() {
    let setup = Setup::with(|c| c.refresh_tokens(false)).await;
    let metadata = setup.metadata().await;
    assert_eq!(metadata["grant_types_supported"], json!(["authorization_code"]));
    // A client asking for the refresh_token grant is registered without it (RFC 7591 §3.2.1).
    let (status, registered) = setup
        .register(json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["grant_types"], json!(["authorization_code"]));
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let code = setup.code(&client_id, "projects:read").await;
    let (status, token) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200, "{token}");
    assert!(token.get("refresh_token").is_none(), "{token}");
    assert!(!setup.issuer.issued()[0].with_refresh_token);
    let app = setup.app().await;
    assert_eq!(app.get("/whoami", token["access_token"].as_str()).await.status(), 200);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replayed_one_ends_the_grant() {
    let setup = Setup::start().await;
    let (client_id, first) = setup.full_flow("projects:read projects:write").await;
    let refresh1 = first["refresh_token"].as_str().unwrap().to_owned();

    // Refreshing requires the resource, like the code exchange.
    let missing = setup
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &refresh1),
        ])
        .await;
    assert_error(&missing, 400, "invalid_request");

    let (status, second) = setup.refresh(&client_id, &refresh1).await;
    assert_eq!(status, 200, "{second}");
    let refresh2 = second["refresh_token"].as_str().unwrap().to_owned();
    let access2 = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(second["scope"], "projects:read projects:write");
    let issued = setup.issuer.issued();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[1].grant_type, GrantType::RefreshToken);
    assert_eq!(issued[1].resource, RESOURCE);
    let app = setup.app().await;
    assert_eq!(app.get("/whoami", Some(&access2)).await.status(), 200);

    // A narrower scope may be asked for; a wider one may not.
    let wider = setup
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &refresh2),
            ("resource", RESOURCE),
            ("scope", "projects:read admin"),
        ])
        .await;
    assert_error(&wider, 400, "invalid_scope");
    let (status, third) = setup
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &refresh2),
            ("resource", RESOURCE),
            ("scope", "projects:read"),
        ])
        .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["scope"], "projects:read");
    let refresh3 = third["refresh_token"].as_str().unwrap().to_owned();
    let access3 = third["access_token"].as_str().unwrap().to_owned();

    // The rotated token is refused, and its replay revokes the grant's live tokens.
    assert_error(&setup.refresh(&client_id, &refresh1).await, 400, "invalid_grant");
    assert_error(&setup.refresh(&client_id, &refresh3).await, 400, "invalid_grant");
    assert_eq!(app.get("/whoami", Some(&access3)).await.status(), 401);

    // Another client cannot redeem a refresh token.
    let (other_client, other) = setup.full_flow("projects:read").await;
    let (thief, _) = setup.full_flow("projects:read").await;
    let stolen = setup.refresh(&thief, other["refresh_token"].as_str().unwrap()).await;
    assert_error(&stolen, 400, "invalid_grant");
    let (status, _) = setup
        .refresh(&other_client, other["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_consent_policy_can_grant_a_subset_or_deny() {
    let setup = Setup::with(|c| c.consent(ConsentPolicy::only(["projects:read"]))).await;
    let (client_id, body) = setup.full_flow("projects:read projects:write").await;
    assert_eq!(body["scope"], "projects:read");
    let issued = setup.issuer.issued();
    assert_eq!(issued[0].scopes, vec!["projects:read"]);
    assert_eq!(issued[0].requested_scopes, vec!["projects:read", "projects:write"]);

    let app = setup.app().await;
    let who: Value = app
        .get("/whoami", body["access_token"].as_str())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["scopes"], json!(["projects:read"]));
    assert_eq!(who["permissions"], json!(["org:projects:read", "projects:read"]));

    // Step-up: the user now approves everything.
    setup.issuer.set_consent_policy(ConsentPolicy::GrantAll);
    let code = setup.code(&client_id, "projects:read projects:write").await;
    let (status, body) = setup.exchange(&client_id, &code).await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "projects:read projects:write");

    setup.issuer.set_consent_policy(ConsentPolicy::Deny);
    let redirect = setup.authorize(&client_id, "projects:read", &[]).await;
    assert_eq!(redirect.get("error"), Some("access_denied"));
    assert_eq!(redirect.get("state"), Some("st-123"));
    assert!(redirect.get("code").is_none());
}

#[tokio::test]
async fn iss_takes_the_configured_form() {
    let setup = Setup::with(|c| c.iss_form(IssForm::TrailingSlash)).await;
    let client_id = setup.issuer.register_public_client([REDIRECT]);
    let redirect = setup.authorize(&client_id, "projects:read", &[]).await;
    assert_eq!(redirect.get("iss"), Some(format!("{}/", setup.issuer.url()).as_str()));
    assert!(redirect.get("code").is_some());

    let setup = Setup::with(|c| c.iss_form(IssForm::Omitted)).await;
    let client_id = setup.issuer.register_public_client([REDIRECT]);
    let redirect = setup.authorize(&client_id, "projects:read", &[]).await;
    assert!(redirect.get("iss").is_none());
    assert!(redirect.get("code").is_some());
}

#[tokio::test]
async fn no_credential_appears_in_debug_output() {
    let setup = Setup::start().await;
    let (client_id, body) = setup.full_flow("projects:read").await;
    let (status, registered) = setup.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, 201);
    let debug = format!(
        "{:?} {:?} {:?}",
        setup.issuer,
        setup.issuer.issued(),
        setup.issuer.clients()
    );
    assert!(debug.contains(&client_id));
    for secret in [
        &body["access_token"],
        &body["refresh_token"],
        &registered["client_secret"],
    ] {
        let secret = secret.as_str().unwrap();
        assert!(!debug.contains(secret), "{secret} leaked into {debug}");
    }
}

#[tokio::test]
async fn rmcp_oauth_client_registers_authorizes_exchanges_and_refreshes() {
    use rmcp::transport::auth::{AuthorizationManager, AuthorizationMetadataSource};

    let setup = Setup::start().await;
    let issuer = setup.issuer.url();
    // rmcp falls back to the metadata at the origin of the URL it is given when there is no
    // resource server to name an authorization server; the resource is that URL.
    let resource = format!("{issuer}/mcp");
    let mut manager = AuthorizationManager::new(resource.as_str()).await.unwrap();
    let resolution = manager.resolve_metadata().await.expect("rmcp accepts the metadata");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::AuthorizationServerMetadata
    );
    assert_eq!(resolution.metadata.issuer.as_deref(), Some(issuer.as_str()));
    manager.set_metadata(resolution.metadata);
    let client = manager
        .register_client("rmcp test", REDIRECT, &["projects:read"])
        .await
        .expect("rmcp registers");
    assert_eq!(setup.issuer.registrations(), 1);

    let url = manager.get_authorization_url(&["projects:read"]).await.unwrap();
    let resp = setup.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let redirect = Redirect::parse(&header(&resp, "location").unwrap());
    let (code, state) = (redirect.get("code").unwrap(), redirect.get("state").unwrap());
    manager
        .exchange_code_for_token_with_issuer(code, state, redirect.get("iss"))
        .await
        .expect("rmcp exchanges the code, checking iss");
    let issued = setup.issuer.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].client_id, client.client_id);
    assert_eq!(issued[0].resource, resource);

    manager.refresh_token().await.expect("rmcp refreshes");
    assert_eq!(setup.issuer.issued().len(), 2);
    assert_eq!(setup.issuer.issued()[1].grant_type, GrantType::RefreshToken);
}
