//! The endpoints: metadata (RFC 8414), authorization (RFC 6749 §4.1 with PKCE, RFC 8707
//! and RFC 9207), token (§4.1.3, §6) and dynamic client registration (RFC 7591).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::super::body::FakeBody;
use super::cimd;
use super::config::IssForm;
use super::model::{ClientKind, RegisteredClient};
use super::params::{Params, basic_credentials, is_valid_resource, is_valid_s256_challenge, split_scopes};
use super::redirect::{redirect_uri_matches, redirect_uri_problem, with_query};
use super::server::{
    AUTHORIZE_PATH, Inner, REGISTER_PATH, TOKEN_PATH, error_page, invalid_client_basic, json, json_no_store,
    oauth_error, redirect,
};
use super::state::{Approval, Client, CodeExchange, Issue, OAuthError};

/// The RFC 8414 document (also served as OpenID Connect discovery).
pub(super) fn metadata(inner: &Inner) -> Response<FakeBody> {
    let issuer = &inner.issuer;
    let config = &inner.config;
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "scopes_supported": config.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": if config.refresh_tokens {
            vec!["authorization_code", "refresh_token"]
        } else {
            vec!["authorization_code"]
        },
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": config.iss_form != IssForm::Omitted,
        "client_id_metadata_document_supported": inner.documents.enabled(),
    });
    if config.dynamic_registration
        && let Some(object) = doc.as_object_mut()
    {
        object.insert(
            "registration_endpoint".to_owned(),
            Value::String(format!("{issuer}{REGISTER_PATH}")),
        );
    }
    let mut response = json(StatusCode::OK, &doc);
    response
        .headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    response
}

/// `GET /oauth/authorize`: consent is given at once by the configured policy.
pub(super) async fn authorize(inner: &Inner, query: &str) -> Response<FakeBody> {
    let params = Params::parse(query.as_bytes());
    // Until the redirect URI is known to belong to the client, errors are shown, never
    // redirected (RFC 6749 §4.1.2.1).
    if let Some(repeated) = params.first_repeated(&["client_id", "redirect_uri"]) {
        return error_page(&OAuthError::invalid_request(format!("{} is repeated", repeated.0)));
    }
    let Ok(Some(client_id)) = params.get("client_id") else {
        return error_page(&OAuthError::invalid_request("client_id is required"));
    };
    let client = match resolve_client(inner, client_id).await {
        Ok(client) => client,
        Err(error) => return error_page(&error),
    };
    let Ok(Some(redirect_uri)) = params.get("redirect_uri") else {
        return error_page(&OAuthError::invalid_request("redirect_uri is required"));
    };
    if !client
        .redirect_uris
        .iter()
        .any(|registered| redirect_uri_matches(registered, redirect_uri))
    {
        return error_page(&OAuthError::invalid_request(
            "redirect_uri is not one of the client's registered redirect URIs (compared exactly, but for the port of a loopback http URI)",
        ));
    }

    let state = params.get("state").ok().flatten();
    let iss = match inner.config.iss_form {
        IssForm::Issuer => Some(inner.issuer.clone()),
        IssForm::TrailingSlash => Some(format!("{}/", inner.issuer)),
        IssForm::Omitted => None,
    };
    let back = |extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = extra.to_vec();
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        if let Some(iss) = iss.as_deref() {
            pairs.push(("iss", iss));
        }
        redirect(&with_query(redirect_uri, &pairs))
    };
    let refuse = |error: OAuthError| {
        tracing::debug!(
            client_id,
            error = error.code,
            "dev issuer: authorization request refused"
        );
        back(&[("error", error.code), ("error_description", &error.description)])
    };

    match approve(inner, &params, &client) {
        Ok(approval) => {
            let code = inner.lock().issue_code(approval, inner.config.code_ttl);
            back(&[("code", &code)])
        }
        Err(error) => refuse(error),
    }
}

/// The client `client_id` names: a known one, or, when metadata documents are on, the one
/// described by the document at that URL (cached, or fetched now).
async fn resolve_client(inner: &Inner, client_id: &str) -> Result<RegisteredClient, OAuthError> {
    if !(inner.documents.enabled() && cimd::is_document_url(client_id)) {
        return inner
            .lock()
            .client(client_id)
            .map(|c| c.info.clone())
            .ok_or_else(|| OAuthError::invalid_request("unknown client_id"));
    }
    let client = inner.documents.client(client_id).await?;
    inner.lock().put_document_client(client.clone());
    Ok(client)
}

/// Checks the rest of an authorization request (the client and redirect URI are trusted) and
/// applies the consent policy.
fn approve(inner: &Inner, params: &Params, client: &RegisteredClient) -> Result<Approval, OAuthError> {
    const SINGLE: [&str; 5] = [
        "response_type",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "state",
    ];
    if let Some(repeated) = params.first_repeated(&SINGLE) {
        return Err(OAuthError::invalid_request(format!("{} is repeated", repeated.0)));
    }
    match params.get("response_type").ok().flatten() {
        None => return Err(OAuthError::invalid_request("response_type is required")),
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::new(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    let Some(code_challenge) = params.get("code_challenge").ok().flatten() else {
        return Err(OAuthError::invalid_request("code_challenge is required (PKCE)"));
    };
    if params.get("code_challenge_method").ok().flatten() != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256 (plain, or none, which means plain, is refused)",
        ));
    }
    if !is_valid_s256_challenge(code_challenge) {
        return Err(OAuthError::invalid_request(
            "code_challenge is not an S256 challenge (43 base64url characters)",
        ));
    }
    let resource = single_resource(params)?;
    inner.lock().last_resource = Some(resource.to_owned());
    let requested = split_scopes(params.get("scope").ok().flatten());
    if let Some(unknown) = requested.iter().find(|s| !inner.config.scopes_supported.contains(s)) {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("scope `{unknown}` is not in scopes_supported"),
        ));
    }
    let consent = inner.lock().consent.clone();
    let Some(scopes) = consent.grant(&requested) else {
        return Err(OAuthError::new("access_denied", "the user denied the authorization"));
    };
    Ok(Approval {
        client_id: client.client_id.clone(),
        redirect_uri: params.get("redirect_uri").ok().flatten().unwrap_or_default().to_owned(),
        code_challenge: code_challenge.to_owned(),
        resource: resource.to_owned(),
        requested_scopes: requested,
        scopes,
    })
}

/// The one `resource` of a request: required, an absolute URI without fragment.
fn single_resource(params: &Params) -> Result<&str, OAuthError> {
    let mut resources = params.all("resource");
    let Some(resource) = resources.next() else {
        return Err(OAuthError::invalid_request(
            "resource is required (RFC 8707): the canonical URI of the MCP server",
        ));
    };
    if resources.next().is_some() {
        return Err(OAuthError::invalid_target("only one resource per request is supported"));
    }
    if !is_valid_resource(resource) {
        return Err(OAuthError::invalid_target(
            "resource must be an absolute URI without a fragment",
        ));
    }
    Ok(resource)
}

/// `POST /oauth/token`.
pub(super) fn token(inner: &Inner, headers: &HeaderMap, body: &Bytes) -> Response<FakeBody> {
    match token_inner(inner, headers, body) {
        Ok(response) => response,
        Err(Refusal { error, basic }) => {
            tracing::debug!(error = error.code, "dev issuer: token request refused");
            if error.code == "invalid_client" {
                if basic {
                    invalid_client_basic(&error)
                } else {
                    oauth_error(StatusCode::UNAUTHORIZED, &error)
                }
            } else {
                oauth_error(StatusCode::BAD_REQUEST, &error)
            }
        }
    }
}

/// A token-endpoint error, and whether the client tried HTTP Basic authentication.
struct Refusal {
    error: OAuthError,
    basic: bool,
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Self {
        Refusal { error, basic: false }
    }
}

fn token_inner(inner: &Inner, headers: &HeaderMap, body: &Bytes) -> Result<Response<FakeBody>, Refusal> {
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded").into());
    }
    let params = Params::parse(body);
    const SINGLE: [&str; 8] = [
        "grant_type",
        "client_id",
        "client_secret",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
    ];
    if let Some(repeated) = params.first_repeated(&SINGLE) {
        return Err(OAuthError::invalid_request(format!("{} is repeated", repeated.0)).into());
    }
    let param = |name| params.get(name).ok().flatten();

    let (client, basic) = authenticate(inner, headers, &params)?;
    let refuse = |error: OAuthError| Refusal { error, basic };
    let grant_type =
        param("grant_type").ok_or_else(|| refuse(OAuthError::invalid_request("grant_type is required")))?;
    let grant_allowed = |grant: &str| client.info.grant_types.iter().any(|g| g == grant);
    let issue = Issue {
        config: &inner.config,
        issuer: &inner.issuer,
        gateway: &inner.gateway,
    };
    let answer = match grant_type {
        "authorization_code" => {
            let code = param("code").ok_or_else(|| refuse(OAuthError::invalid_request("code is required")))?;
            let resource = match params.all("resource").count() {
                0 => None,
                1 => Some(single_resource(&params).map_err(refuse)?),
                _ => {
                    return Err(refuse(OAuthError::invalid_target(
                        "only one resource per request is supported",
                    )));
                }
            };
            if let Some(resource) = resource {
                inner.lock().last_resource = Some(resource.to_owned());
            }
            let request = CodeExchange {
                code,
                redirect_uri: param("redirect_uri"),
                code_verifier: param("code_verifier"),
                resource,
            };
            inner.lock().exchange_code(&client, &request, &issue).map_err(refuse)?
        }
        "refresh_token" => {
            if !grant_allowed("refresh_token") {
                return Err(refuse(OAuthError::new(
                    "unauthorized_client",
                    "this client is not registered for the refresh_token grant",
                )));
            }
            let refresh_token = param("refresh_token")
                .ok_or_else(|| refuse(OAuthError::invalid_request("refresh_token is required")))?;
            let resource = single_resource(&params).map_err(refuse)?;
            inner.lock().last_resource = Some(resource.to_owned());
            let scope = param("scope").map(|s| split_scopes(Some(s)));
            inner
                .lock()
                .refresh(&client, refresh_token, resource, scope, &issue)
                .map_err(refuse)?
        }
        _ => {
            return Err(refuse(OAuthError::new(
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            )));
        }
    };
    let mut body = Map::new();
    body.insert("access_token".to_owned(), Value::String(answer.access_token));
    body.insert("token_type".to_owned(), Value::String("Bearer".to_owned()));
    body.insert("expires_in".to_owned(), Value::from(answer.expires_in));
    if !answer.scopes.is_empty() {
        body.insert("scope".to_owned(), Value::String(answer.scopes.join(" ")));
    }
    if let Some(refresh) = answer.refresh_token {
        body.insert("refresh_token".to_owned(), Value::String(refresh));
    }
    Ok(json_no_store(StatusCode::OK, &Value::Object(body)))
}

/// The client making a token request: its id from HTTP Basic or the body, and the secret a
/// confidential client must present (either way; RFC 6749 §2.3.1). Returns whether Basic
/// was used, which decides the form of an `invalid_client` answer.
fn authenticate(inner: &Inner, headers: &HeaderMap, params: &Params) -> Result<(Client, bool), Refusal> {
    let basic = match headers.get(AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => match basic_credentials(value) {
            Some(credentials) => credentials,
            None => {
                return Err(Refusal {
                    error: OAuthError::invalid_client("malformed HTTP Basic client credentials"),
                    basic: true,
                });
            }
        },
        Some(Err(_)) => {
            return Err(OAuthError::invalid_request("the Authorization header is not visible ASCII").into());
        }
    };
    let used_basic = basic.is_some();
    let refuse = |error: OAuthError| Refusal {
        error,
        basic: used_basic,
    };
    let body_id = params.get("client_id").ok().flatten();
    let body_secret = params.get("client_secret").ok().flatten();
    let (client_id, secret) = match (basic, body_id, body_secret) {
        (Some(_), _, Some(_)) => {
            return Err(refuse(OAuthError::invalid_request(
                "use one client authentication method, not both Basic and client_secret",
            )));
        }
        (Some((id, _)), Some(body_id), None) if id != body_id => {
            return Err(refuse(OAuthError::invalid_request(
                "client_id differs from the HTTP Basic client id",
            )));
        }
        (Some((id, secret)), _, None) => (id, (!secret.is_empty()).then_some(secret)),
        (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned)),
        (None, None, _) => {
            return Err(refuse(OAuthError::invalid_client(
                "no client identified: send client_id (or HTTP Basic credentials)",
            )));
        }
    };
    let Some(client) = inner.lock().client(&client_id).cloned() else {
        return Err(refuse(OAuthError::invalid_client("unknown client")));
    };
    match secret {
        None if client.is_public() => {}
        Some(_) if client.is_public() => {
            return Err(refuse(OAuthError::invalid_client(
                "this is a public client: it has no secret to present",
            )));
        }
        Some(secret) if client.secret_matches(&secret) => {}
        _ => return Err(refuse(OAuthError::invalid_client("client authentication failed"))),
    }
    Ok((client, used_basic))
}

/// `POST /oauth/register` (RFC 7591): public clients (`none`) and confidential ones
/// (`client_secret_basic`, the default, or `client_secret_post`).
pub(super) fn register(inner: &Inner, headers: &HeaderMap, body: &Bytes) -> Response<FakeBody> {
    let refuse = |code: &'static str, description: &str| {
        tracing::debug!(error = code, "dev issuer: registration refused");
        oauth_error(StatusCode::BAD_REQUEST, &OAuthError::new(code, description))
    };
    if !has_content_type(headers, "application/json") {
        return refuse("invalid_client_metadata", "the body must be application/json");
    }
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return refuse("invalid_client_metadata", "the body must be a JSON object");
    };
    let Some(redirect_uris) = cimd::string_array(request.get("redirect_uris")).filter(|u| !u.is_empty()) else {
        return refuse(
            "invalid_redirect_uri",
            "redirect_uris (a non-empty array of strings) is required",
        );
    };
    if let Some(problem) = redirect_uris.iter().find_map(|uri| redirect_uri_problem(uri)) {
        return refuse("invalid_redirect_uri", problem);
    }
    let method = match request.get("token_endpoint_auth_method") {
        None => "client_secret_basic",
        Some(Value::String(m)) if matches!(m.as_str(), "none" | "client_secret_basic" | "client_secret_post") => {
            m.as_str()
        }
        Some(_) => {
            return refuse(
                "invalid_client_metadata",
                "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
            );
        }
    }
    .to_owned();
    let grant_types = match request.get("grant_types") {
        None => vec!["authorization_code".to_owned()],
        Some(value) => match cimd::string_array(Some(value)) {
            Some(types) => types,
            None => return refuse("invalid_client_metadata", "grant_types must be an array of strings"),
        },
    };
    if !grant_types.iter().any(|g| g == "authorization_code")
        || grant_types
            .iter()
            .any(|g| g != "authorization_code" && g != "refresh_token")
    {
        return refuse(
            "invalid_client_metadata",
            "grant_types must include authorization_code, and may add only refresh_token",
        );
    }
    match request.get("response_types") {
        None => {}
        Some(value) if cimd::string_array(Some(value)).is_some_and(|t| t.iter().all(|t| t == "code")) => {}
        Some(_) => return refuse("invalid_client_metadata", "response_types may only be [\"code\"]"),
    }
    // Without refresh tokens, the client is registered for what it may use (RFC 7591 §3.2.1).
    let grant_types: Vec<String> = grant_types
        .into_iter()
        .filter(|g| inner.config.refresh_tokens || g != "refresh_token")
        .collect();
    let (client_id, secret) =
        inner
            .lock()
            .add_client(ClientKind::Dynamic, redirect_uris.clone(), &method, grant_types.clone());
    tracing::debug!(client_id = %client_id, method = %method, "dev issuer: client registered");

    // The answer repeats the registered metadata (RFC 7591 §3.2.1), with the defaults applied.
    request.insert("client_id".to_owned(), Value::String(client_id));
    request.insert("client_id_issued_at".to_owned(), Value::from(unix_now()));
    request.insert("redirect_uris".to_owned(), json!(redirect_uris));
    request.insert("token_endpoint_auth_method".to_owned(), Value::String(method));
    request.insert("grant_types".to_owned(), json!(grant_types));
    request.insert("response_types".to_owned(), json!(["code"]));
    request.remove("client_secret");
    request.remove("client_secret_expires_at");
    if let Some(secret) = secret {
        request.insert("client_secret".to_owned(), Value::String(secret));
        request.insert("client_secret_expires_at".to_owned(), Value::from(0));
    }
    json_no_store(StatusCode::CREATED, &Value::Object(request))
}

/// Whether the request's `Content-Type` has this essence (parameters allowed).
fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
