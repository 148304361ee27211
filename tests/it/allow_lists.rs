//! One allow list for every token: `allowed_clients` and `accepted_tenants` bind every grant,
//! whatever its format (an opaque token the gateway checked, a JWT verified here) or where its
//! verdict came from (the outage grace here; the fleet's shared tier in `tests/fleet`). The
//! attack: any user of the deployment registers an OAuth client, consents for their own
//! workspace, and presents the token; the gateway calls it valid and every pin matches.
//! Real requests over loopback HTTP against a `FakeGateway` and a `JwksIssuer`.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tower_wacht::jwt::JwtConfig;
use tower_wacht::testing::{AccessTokenClaims, EXAMPLE_DEPLOYMENT_ID, Fault, JwksIssuer, TokenGrant, generate_token};
use tower_wacht::{WachtAuthConfig, WachtAuthConfigBuilder, WachtAuthLayer};

const ALLOWED: &str = "oc_a";
const STRANGER: &str = "oc_stranger";
const OURS: &str = "urn:wacht:workspace:4401";
const THEIRS: &str = "urn:wacht:workspace:9999";

const CLIENT_REFUSED: &str = "The access token was issued to a client this server does not serve.";
const TENANT_REFUSED: &str = "The access token was granted for a tenant this server does not serve.";

/// An app that verifies opaque tokens with the gateway and JWTs of `issuer` locally.
struct App {
    app: TestApp,
    issuer: JwksIssuer,
}

/// Status and `error_description` of one request.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    description: Option<String>,
}

impl App {
    /// The app, configured through the builder.
    async fn build(configure: impl FnOnce(WachtAuthConfigBuilder) -> WachtAuthConfigBuilder) -> App {
        let issuer = JwksIssuer::start().await.expect("issuer starts");
        let gateway = start_gateway().await;
        let url = issuer.url();
        let app = start_with_gateway(gateway, move |b| {
            configure(b.expected_issuer(url).jwt(JwtConfig::new()))
        })
        .await;
        App { app, issuer }
    }

    /// The app, configured from these environment variables (and those naming the gateway,
    /// the issuer and the deployment) through `WachtAuthConfig::from_lookup`.
    async fn from_env(vars: &[(&str, &str)]) -> App {
        let issuer = JwksIssuer::start().await.expect("issuer starts");
        let gateway = start_gateway().await;
        let config = WachtAuthConfig::from_lookup(env(&issuer, &gateway.url(), vars)).expect("valid environment");
        let auth = WachtAuthLayer::new(config).expect("layer builds");
        let addr = serve(router(auth.clone())).await;
        let app = TestApp {
            addr,
            gateway,
            auth,
            http: reqwest::Client::new(),
        };
        App { app, issuer }
    }

    /// An opaque token the gateway allows, of `client` for `tenant`.
    fn opaque(&self, client: &str, tenant: Option<&str>) -> String {
        let token = generate_token();
        let mut grant = TokenGrant::new(client)
            .issuer(self.issuer.url())
            .scopes(["mcp:invoke"])
            .expires_in(Duration::from_secs(3600));
        if let Some(tenant) = tenant {
            grant = grant.granted_resource(tenant);
        }
        self.app.gateway.register(&token, grant);
        token
    }

    /// A JWT the issuer signed, of `client` for `tenant`.
    fn jwt(&self, client: &str, tenant: &str) -> String {
        self.issuer
            .mint(&AccessTokenClaims::new(client).audience(tenant).scopes(["mcp:invoke"]))
    }

    async fn answer(&self, token: &str) -> Answer {
        let resp = self.app.get("/whoami", Some(token)).await;
        let challenge = challenge(&resp);
        let description = challenge.split("error_description=\"").nth(1).and_then(|rest| {
            let end = rest.find('"')?;
            Some(rest[..end].to_owned())
        });
        Answer {
            status: resp.status().as_u16(),
            description,
        }
    }
}

/// The environment of an app whose gateway, issuer and deployment are the test doubles', with
/// JWT verification on, plus `vars`.
fn env(issuer: &JwksIssuer, gateway_url: &str, vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let deployment = EXAMPLE_DEPLOYMENT_ID.to_string();
    let mut map: HashMap<String, String> = [
        ("WACHT_BACKEND_API_KEY", API_KEY),
        ("WACHT_GATEWAY_URL", gateway_url),
        ("WACHT_DEPLOYMENT_ID", deployment.as_str()),
        ("WACHT_OAUTH_ISSUER", issuer.url().as_str()),
        ("WACHT_JWT", "on"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    map.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    move |name| map.get(name).cloned()
}

/// The grants the attack and its controls present, and what each must get.
const CASES: &[(&str, &str, u16, Option<&str>)] = &[
    (ALLOWED, OURS, 200, None),
    // The attack: a self-registered client, consented for its user's own workspace.
    (STRANGER, THEIRS, 401, Some(CLIENT_REFUSED)),
    (STRANGER, OURS, 401, Some(CLIENT_REFUSED)),
    (ALLOWED, THEIRS, 401, Some(TENANT_REFUSED)),
];

/// Every case, as an opaque token and as a JWT: the expected answer, the same for both
/// formats; a refusal is remembered (its repeat costs no gateway call).
async fn assert_same_answer_whatever_the_format(app: &App, config: &str) {
    for &(client, tenant, status, description) in CASES {
        let what = format!("{config}: {client} for {tenant}");
        let expected = Answer {
            status,
            description: description.map(str::to_owned),
        };
        let opaque = app.opaque(client, Some(tenant));
        assert_eq!(app.answer(&opaque).await, expected, "{what}, opaque token");
        let jwt = app.jwt(client, tenant);
        assert_eq!(app.answer(&jwt).await, expected, "{what}, JWT");
        if status == 401 {
            let calls = app.app.gateway.calls();
            assert_eq!(app.answer(&opaque).await, expected, "{what}, opaque token again");
            assert_eq!(app.app.gateway.calls(), calls, "{what}: the refusal is remembered");
        }
    }
    // An opaque grant that names no tenant (a JWT always names one) is refused too.
    let untenanted = app.opaque(ALLOWED, None);
    assert_eq!(
        app.answer(&untenanted).await,
        Answer {
            status: 401,
            description: Some(TENANT_REFUSED.to_owned()),
        },
        "{config}: a grant without a tenant"
    );
}

#[tokio::test]
async fn a_self_registered_client_for_its_own_tenant_is_refused_as_an_opaque_token_and_as_a_jwt() {
    let app = App::build(|b| b.allowed_clients([ALLOWED]).accepted_tenants([OURS])).await;
    assert_same_answer_whatever_the_format(&app, "builder").await;
}

#[tokio::test]
async fn the_allow_lists_from_the_environment_bind_every_token() {
    let app = App::from_env(&[("WACHT_ALLOWED_CLIENTS", ALLOWED), ("WACHT_ACCEPTED_TENANTS", OURS)]).await;
    assert_same_answer_whatever_the_format(&app, "WACHT_ALLOWED_CLIENTS, WACHT_ACCEPTED_TENANTS").await;
}

/// The confirmed black-box case: the JWT-named variables bound JWTs only, and the opaque
/// token of a stranger's client for a stranger's workspace was served.
#[tokio::test]
async fn the_deprecated_jwt_variables_bind_every_token_too() {
    let app = App::from_env(&[("WACHT_JWT_ALLOWED_CLIENTS", ALLOWED), ("WACHT_JWT_TENANTS", OURS)]).await;
    assert_same_answer_whatever_the_format(&app, "WACHT_JWT_ALLOWED_CLIENTS, WACHT_JWT_TENANTS").await;
}

#[tokio::test]
#[allow(deprecated)]
async fn the_deprecated_jwt_config_lists_bind_every_token_too() {
    let app = App::build(|b| b.jwt(JwtConfig::new().allowed_clients([ALLOWED]).accepted_tenants([OURS]))).await;
    assert_same_answer_whatever_the_format(&app, "JwtConfig::allowed_clients, accepted_tenants").await;
}

#[tokio::test]
async fn the_outage_grace_never_serves_a_grant_outside_the_allow_lists() {
    let app = App::build(|b| {
        b.allowed_clients([ALLOWED])
            .ttl(Duration::from_millis(200))
            .negative_ttl(Duration::from_millis(100))
            .stale_if_error(Duration::from_secs(30))
    })
    .await;
    let ours = app.opaque(ALLOWED, Some(OURS));
    let stranger = app.opaque(STRANGER, Some(THEIRS));
    assert_eq!(app.answer(&ours).await.status, 200);
    assert_eq!(app.answer(&stranger).await.status, 401);
    app.app.gateway.set_fault(Some(Fault::Status(503)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the ttl and the negative ttl, gateway down: the grace serves the allowed grant
    // only; the stranger's token was never kept, so it is not served either.
    assert_eq!(app.answer(&ours).await.status, 200, "served from the outage grace");
    assert_eq!(app.answer(&stranger).await.status, 503);
}

/// Both names given with different lists: which one did the operator mean? Neither is
/// guessed, nor their union served: the configuration is refused, naming both.
#[tokio::test]
#[allow(deprecated)]
async fn the_new_and_deprecated_lists_must_agree() {
    let base = || {
        WachtAuthConfig::builder()
            .api_key(API_KEY)
            .expected_issuer("https://auth.example.com")
    };
    let build = |b: WachtAuthConfigBuilder| b.build().map(|_| ()).map_err(|e| e.to_string());
    let err = build(
        base()
            .allowed_clients([ALLOWED])
            .jwt(JwtConfig::new().allowed_clients([STRANGER])),
    )
    .unwrap_err();
    assert!(
        err.contains("WachtAuthConfigBuilder::allowed_clients") && err.contains("JwtConfig::allowed_clients"),
        "{err}"
    );
    let err = build(
        base()
            .accepted_tenants([OURS])
            .jwt(JwtConfig::new().accepted_tenants([OURS, THEIRS])),
    )
    .unwrap_err();
    assert!(
        err.contains("WachtAuthConfigBuilder::accepted_tenants") && err.contains("JwtConfig::accepted_tenants"),
        "{err}"
    );
    // The same entries under both names (in any order) are one list.
    assert_eq!(
        build(
            base()
                .allowed_clients([ALLOWED, STRANGER])
                .accepted_tenants([OURS])
                .jwt(
                    JwtConfig::new()
                        .allowed_clients([STRANGER, ALLOWED])
                        .accepted_tenants([OURS])
                )
        ),
        Ok(())
    );

    let issuer = JwksIssuer::start().await.expect("issuer starts");
    for (new, old) in [
        ("WACHT_ALLOWED_CLIENTS", "WACHT_JWT_ALLOWED_CLIENTS"),
        ("WACHT_ACCEPTED_TENANTS", "WACHT_JWT_TENANTS"),
    ] {
        let err = WachtAuthConfig::from_lookup(env(&issuer, "http://127.0.0.1:9", &[(new, OURS), (old, THEIRS)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(new) && err.contains(old), "{err}");
        let same = WachtAuthConfig::from_lookup(env(&issuer, "http://127.0.0.1:9", &[(new, OURS), (old, OURS)]));
        assert!(same.is_ok(), "{new} = {old}: {same:?}");
    }
}

#[tokio::test]
async fn malformed_allow_lists_are_refused() {
    let base = || {
        WachtAuthConfig::builder()
            .api_key(API_KEY)
            .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
    };
    for tenant in [
        "urn:wacht:team:1",
        "urn:wacht:workspace:",
        "urn:wacht:workspace:04401",
        "workspace:4401",
        "",
    ] {
        let err = base().accepted_tenants([tenant]).build().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("accepted_tenants"), "{tenant:?}: {err}");
    }
    for client in ["", " ", "oc_a oc_b"] {
        let err = base().allowed_clients([client]).build().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("allowed_clients"), "{client:?}: {err}");
    }
    for tenant in [OURS, "urn:wacht:organization:1", "urn:wacht:user:7"] {
        assert!(base().accepted_tenants([tenant]).build().is_ok(), "{tenant}");
    }
}
