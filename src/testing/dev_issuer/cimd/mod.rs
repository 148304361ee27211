//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP
//! 2026-07-28 "Client Registration"): a `client_id` that is an `https` URL names a JSON
//! document describing the client, which the issuer fetches ([`fetch`], from checked
//! [`address`]es only), checks, and keeps for as long as it may ([`cache`]).

mod address;
mod cache;
mod fetch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::config::DevIssuerConfig;
use super::model::{ClientKind, RegisteredClient};
use super::params::is_loopback;
use super::redirect::redirect_uri_problem;
use super::state::OAuthError;
use cache::DocumentCache;

/// Bound on fetching one document: resolving its host, connecting, and reading it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Most documents fetched at the same time; a request beyond them is refused at once.
const CONCURRENT_FETCHES: usize = 8;

/// What the browser is told whenever a document could not be used, whatever the reason: an
/// address refused, no connection, a timeout, an error status, too large, not JSON, or a
/// document that does not describe the client. One answer for all, so that the issuer cannot
/// be used to learn which hosts and ports answer; the reason goes to the debug log.
pub(super) const UNUSABLE_DOCUMENT: &str = "client_id names a client metadata document that this issuer could not fetch or accept (the dev issuer's debug log says why)";

/// Whether `client_id` is meant as a metadata document URL (rather than an opaque id).
pub(super) fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The issuer's client metadata documents: whether they are accepted, where they may come
/// from, those fetched recently, and how many requests for them were sent.
#[derive(Debug)]
pub(super) struct Documents {
    enabled: bool,
    policy: fetch::Policy,
    cache: Mutex<DocumentCache>,
    fetches: AtomicUsize,
    in_flight: Semaphore,
}

impl Documents {
    pub(super) fn new(config: &DevIssuerConfig) -> Self {
        Documents {
            enabled: config.metadata_documents,
            policy: fetch::Policy {
                loopback_ports: config.loopback_document_ports.clone(),
                hosts: config.document_hosts.clone(),
            },
            cache: Mutex::new(DocumentCache::default()),
            fetches: AtomicUsize::new(0),
            in_flight: Semaphore::new(CONCURRENT_FETCHES),
        }
    }

    /// Whether documents are accepted (and advertised).
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many requests for documents were sent.
    pub(super) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The client the document at `client_id` describes: from the cache while it is fresh,
    /// else fetched now. A URL of the wrong form is refused saying why; every later failure
    /// gets [`UNUSABLE_DOCUMENT`].
    pub(super) async fn client(&self, client_id: &str) -> Result<RegisteredClient, OAuthError> {
        let url = url_form(client_id).map_err(OAuthError::invalid_request)?;
        if let Some(client) = self.cache().get(client_id, Instant::now()) {
            return Ok(client);
        }
        let unusable = |reason: &str| {
            tracing::debug!(client_id, reason, "dev issuer: client metadata document refused");
            self.cache().forget(client_id);
            OAuthError::invalid_request(UNUSABLE_DOCUMENT)
        };
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(unusable("too many documents are being fetched at once"));
        };
        let fetching = fetch::fetch(&url, &self.policy, || {
            self.fetches.fetch_add(1, Ordering::Relaxed);
        });
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, fetching).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(reason)) => return Err(unusable(&reason)),
            Err(_) => return Err(unusable("it took longer than 5 seconds")),
        };
        let client = check(&fetched.document, client_id).map_err(|reason| unusable(&reason))?;
        let now = Instant::now();
        match fetched.fresh_for {
            Some(fresh_for) => self
                .cache()
                .put(client_id.to_owned(), client.clone(), now + fresh_for, now),
            None => self.cache().forget(client_id),
        }
        Ok(client)
    }

    fn cache(&self) -> MutexGuard<'_, DocumentCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `client_id` as a URL that may be fetched, or why its form is refused: an `https` URL
/// (or `http` on a loopback host) with a path, in canonical form (no dot segments,
/// lower-case host, no default port), without fragment or credentials. Where it points is
/// judged later, after resolution, by [`fetch`].
pub(super) fn url_form(client_id: &str) -> Result<Url, &'static str> {
    let Ok(url) = Url::parse(client_id) else {
        return Err("client_id is not a valid URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => return Err("a client metadata document URL must use https (http only on a loopback host)"),
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("a client metadata document URL must not contain a fragment or credentials");
    }
    if url.path() == "/" {
        return Err("a client metadata document URL must have a path");
    }
    if url.as_str() != client_id {
        return Err(
            "a client metadata document URL must be in canonical form (no dot segments, lower-case host, no default port)",
        );
    }
    Ok(url)
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
    fn url_forms() {
        assert!(url_form(URL).is_ok());
        // Loopback URLs have an acceptable form; whether they may be fetched is decided later.
        assert!(url_form("http://127.0.0.1:9/client.json").is_ok());
        assert!(url_form("http://localhost:9/client.json").is_ok());
        assert!(url_form("https://10.0.0.1/client.json").is_ok());
        assert!(url_form("http://app.example.com/client.json").is_err());
        assert!(url_form("http://10.0.0.1/client.json").is_err());
        assert!(url_form("ftp://app.example.com/client.json").is_err());
        assert!(url_form("https://app.example.com/").is_err());
        assert!(url_form("https://app.example.com").is_err());
        assert!(url_form("https://app.example.com/a/../client.json").is_err());
        assert!(url_form("https://App.example.com/client.json").is_err());
        assert!(url_form("https://app.example.com:443/client.json").is_err());
        assert!(url_form("https://[::ffff:127.0.0.1]/client.json").is_err());
        assert!(url_form("https://user:pw@app.example.com/client.json").is_err());
        assert!(url_form("https://app.example.com/client.json#x").is_err());
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
