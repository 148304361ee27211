//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP
//! 2026-07-28 "Client Registration"): a `client_id` that is an `https` URL names a JSON
//! document describing the client, which the issuer fetches and checks.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::model::{ClientKind, RegisteredClient};
use super::params::is_loopback;
use super::redirect::redirect_uri_problem;

/// Largest document read; the draft suggests 5 KB, real documents are well below this.
const DOCUMENT_LIMIT: usize = 64 * 1024;

/// Bound on fetching one document.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `client_id` is meant as a metadata document URL (rather than an opaque id).
pub(super) fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Why `client_id` may not be fetched, or `None` when it may: an `https` URL with a path,
/// in canonical form (no dot segments, lower-case host, no default port), without
/// fragment or credentials, and not on this machine, unless `allow_loopback` (then also
/// `http` on loopback).
pub(super) fn url_problem(client_id: &str, allow_loopback: bool) -> Option<&'static str> {
    let Ok(url) = Url::parse(client_id) else {
        return Some("client_id is not a valid URL");
    };
    let loopback = is_loopback(&url);
    match (url.scheme(), loopback) {
        ("https", false) => {}
        ("https" | "http", true) if allow_loopback => {}
        ("https" | "http", true) => {
            return Some(
                "client metadata documents on loopback hosts are refused (see DevIssuerConfig::allow_loopback_metadata_documents)",
            );
        }
        _ => return Some("a client metadata document URL must use https"),
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Some("a client metadata document URL must not contain a fragment or credentials");
    }
    if url.path() == "/" {
        return Some("a client metadata document URL must have a path");
    }
    if url.as_str() != client_id {
        return Some(
            "a client metadata document URL must be in canonical form (no dot segments, lower-case host, no default port)",
        );
    }
    None
}

/// Fetches the document at `client_id` (no redirects followed, bounded in time and size) and
/// checks it: a JSON object whose `client_id` is exactly the URL, with `redirect_uris`,
/// for a public client. The reason for a refusal names no secret (there is none in it).
pub(super) async fn fetch(http: &reqwest::Client, client_id: &str) -> Result<RegisteredClient, String> {
    let mut response = http
        .get(client_id)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| format!("fetching the client metadata document failed: {}", without_url(&err)))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!(
            "the client metadata document answered HTTP {} instead of 200",
            response.status().as_u16()
        ));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > DOCUMENT_LIMIT {
                    return Err(format!(
                        "the client metadata document is larger than {DOCUMENT_LIMIT} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(err) => {
                return Err(format!(
                    "reading the client metadata document failed: {}",
                    without_url(&err)
                ));
            }
        }
    }
    let document: Value =
        serde_json::from_slice(&body).map_err(|_| "the client metadata document is not JSON".to_owned())?;
    check(&document, client_id)
}

/// A reqwest error without the URL (already known to the caller).
fn without_url(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "network error".to_owned()
    }
}

/// The client a document describes, or why it is refused.
pub(super) fn check(document: &Value, client_id: &str) -> Result<RegisteredClient, String> {
    let Some(object) = document.as_object() else {
        return Err("the client metadata document is not a JSON object".to_owned());
    };
    if object.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err("the client metadata document's client_id is not exactly its URL".to_owned());
    }
    let redirect_uris = string_array(object.get("redirect_uris"))
        .filter(|uris| !uris.is_empty())
        .ok_or("the client metadata document has no redirect_uris array of strings")?;
    if let Some(problem) = redirect_uris.iter().find_map(|uri| redirect_uri_problem(uri)) {
        return Err(format!(
            "the client metadata document has an unacceptable redirect URI: {problem}"
        ));
    }
    match object.get("token_endpoint_auth_method") {
        None => {}
        Some(Value::String(method)) if method == "none" => {}
        Some(_) => {
            return Err(
                "the client metadata document asks for a token_endpoint_auth_method other than `none`, which this issuer does not offer to metadata-document clients"
                    .to_owned(),
            );
        }
    }
    let grant_types = match object.get("grant_types") {
        None => vec!["authorization_code".to_owned()],
        Some(value) => {
            string_array(Some(value)).ok_or("the client metadata document's grant_types is not an array of strings")?
        }
    };
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err("the client metadata document's grant_types lacks authorization_code".to_owned());
    }
    if let Some(value) = object.get("response_types") {
        let types = string_array(Some(value)).unwrap_or_default();
        if !types.iter().any(|t| t == "code") {
            return Err("the client metadata document's response_types lacks code".to_owned());
        }
    }
    Ok(RegisteredClient {
        client_id: client_id.to_owned(),
        kind: ClientKind::MetadataDocument,
        redirect_uris,
        token_endpoint_auth_method: "none".to_owned(),
        grant_types,
    })
}

/// `value` as an array of strings.
pub(super) fn string_array(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const URL: &str = "https://app.example.com/oauth/client.json";

    #[test]
    fn urls() {
        assert_eq!(url_problem(URL, false), None);
        assert!(url_problem("http://app.example.com/client.json", false).is_some());
        assert!(url_problem("http://127.0.0.1:9/client.json", false).is_some());
        assert_eq!(url_problem("http://127.0.0.1:9/client.json", true), None);
        assert_eq!(url_problem("http://localhost:9/client.json", true), None);
        assert!(url_problem("http://app.example.com/client.json", true).is_some());
        assert!(url_problem("https://app.example.com/", false).is_some());
        assert!(url_problem("https://app.example.com", false).is_some());
        assert!(url_problem("https://app.example.com/a/../client.json", false).is_some());
        assert!(url_problem("https://App.example.com/client.json", false).is_some());
        assert!(url_problem("https://user:pw@app.example.com/client.json", false).is_some());
        assert!(url_problem("https://app.example.com/client.json#x", false).is_some());
    }

    #[test]
    fn documents() {
        let good = json!({"client_id": URL, "client_name": "App", "redirect_uris": ["http://127.0.0.1:3000/cb"]});
        let client = check(&good, URL).unwrap();
        assert_eq!(client.redirect_uris, vec!["http://127.0.0.1:3000/cb"]);
        assert_eq!(client.grant_types, vec!["authorization_code"]);
        assert_eq!(client.kind, ClientKind::MetadataDocument);

        let other_id = json!({"client_id": "https://evil.example.com/c.json", "redirect_uris": ["https://x/cb"]});
        assert!(check(&other_id, URL).is_err());
        let no_uris = json!({"client_id": URL});
        assert!(check(&no_uris, URL).is_err());
        let secret = json!({"client_id": URL, "redirect_uris": ["https://x/cb"], "token_endpoint_auth_method": "client_secret_basic"});
        assert!(check(&secret, URL).is_err());
        let bad_uri = json!({"client_id": URL, "redirect_uris": ["http://evil.example.com/cb"]});
        assert!(check(&bad_uri, URL).is_err());
        assert!(check(&json!([1]), URL).is_err());
    }
}
