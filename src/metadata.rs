//! RFC 9728 OAuth 2.0 Protected Resource Metadata: the document MCP clients fetch to learn
//! which authorization server issues tokens for this server, and the handler that serves it.
//!
//! ```
//! use tower_wacht::ProtectedResourceMetadata;
//!
//! let metadata = ProtectedResourceMetadata::builder("https://api.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:invoke", "projects:read"])
//!     .resource_name("Example MCP server")
//!     .build()
//!     .unwrap();
//! assert_eq!(metadata.well_known_path(), "/.well-known/oauth-protected-resource/mcp");
//! assert_eq!(
//!     metadata.well_known_url(),
//!     "https://api.example.com/.well-known/oauth-protected-resource/mcp"
//! );
//! ```

use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value, json};

use crate::error::ConfigError;

/// The root well-known path (RFC 9728 §3).
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// An RFC 9728 protected resource metadata document.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectedResourceMetadata {
    resource: String,
    well_known_path: String,
    well_known_url: String,
    document: Value,
    max_age: Duration,
}

/// Builder for [`ProtectedResourceMetadata`].
#[derive(Debug, Clone)]
pub struct ProtectedResourceMetadataBuilder {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    resource_policy_uri: Option<String>,
    resource_tos_uri: Option<String>,
    max_age: Duration,
}

impl ProtectedResourceMetadata {
    /// Starts a document for `resource`: this server's resource identifier, the exact URL
    /// clients connect to (for MCP, the endpoint such as `https://host/mcp`).
    pub fn builder(resource: impl Into<String>) -> ProtectedResourceMetadataBuilder {
        ProtectedResourceMetadataBuilder {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            resource_name: None,
            resource_documentation: None,
            resource_policy_uri: None,
            resource_tos_uri: None,
            max_age: Duration::from_secs(3600),
        }
    }

    /// The `resource` identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path-aware well-known path, e.g. `/.well-known/oauth-protected-resource/mcp`.
    pub fn well_known_path(&self) -> &str {
        &self.well_known_path
    }

    /// The absolute URL of the path-aware document: the `resource_metadata` value of challenges.
    pub fn well_known_url(&self) -> &str {
        &self.well_known_url
    }

    /// The JSON document (empty fields omitted).
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// `Cache-Control: max-age` of the served document.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The document's `scopes_supported` (empty when it has none).
    pub fn scopes_supported(&self) -> impl Iterator<Item = &str> {
        self.document
            .get("scopes_supported")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

impl ProtectedResourceMetadataBuilder {
    /// Adds an authorization server issuer (your Wacht OAuth app issuer,
    /// `https://<oauth app domain>`). MCP requires at least one.
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }

    /// Scopes clients may request for this resource (`scopes_supported`).
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Human-readable name (`resource_name`).
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// Developer documentation URL (`resource_documentation`).
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// Policy URL (`resource_policy_uri`).
    pub fn resource_policy_uri(mut self, url: impl Into<String>) -> Self {
        self.resource_policy_uri = Some(url.into());
        self
    }

    /// Terms of service URL (`resource_tos_uri`).
    pub fn resource_tos_uri(mut self, url: impl Into<String>) -> Self {
        self.resource_tos_uri = Some(url.into());
        self
    }

    /// `Cache-Control: max-age` for the document (default one hour).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Validates and builds the document. `resource` must be an absolute http(s) URL without
    /// query or fragment; the other URLs must be absolute.
    pub fn build(self) -> Result<ProtectedResourceMetadata, ConfigError> {
        let url = Url::parse(&self.resource)
            .map_err(|e| ConfigError::invalid("resource", format!("not an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(ConfigError::invalid("resource", "must be an http(s) URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid("resource", "must not have a query or fragment"));
        }
        if self
            .scopes_supported
            .iter()
            .any(|s| crate::scopes::is_offline_access(s))
        {
            return Err(ConfigError::invalid(
                "scopes_supported",
                "must not list offline_access (MCP authorization, \"Refresh Tokens\"): clients ask for it from the authorization server if they want refresh tokens",
            ));
        }
        if self.authorization_servers.is_empty() {
            // Optional in RFC 9728, but a client finds where to get a token only here (the MCP
            // authorization spec requires at least one): without it, clients guess and fail.
            return Err(ConfigError::invalid(
                "authorization_servers",
                "name at least one (your Wacht OAuth issuer); clients find it only here",
            ));
        }
        for (name, value) in [
            (
                "authorization_servers",
                self.authorization_servers.iter().collect::<Vec<_>>(),
            ),
            (
                "documentation URLs",
                [
                    &self.resource_documentation,
                    &self.resource_policy_uri,
                    &self.resource_tos_uri,
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
        ] {
            for v in value {
                Url::parse(v).map_err(|e| ConfigError::invalid(name, format!("{v:?} is not a URL ({e})")))?;
            }
        }
        let path = url.path().trim_end_matches('/');
        let well_known_path = format!("{WELL_KNOWN_PREFIX}{path}");
        let origin = url.origin().ascii_serialization();
        let well_known_url = format!("{origin}{well_known_path}");

        let mut doc = Map::new();
        doc.insert("resource".into(), json!(self.resource));
        let mut put_list = |key: &str, list: Vec<String>| {
            if !list.is_empty() {
                doc.insert(key.into(), json!(list));
            }
        };
        put_list("authorization_servers", self.authorization_servers);
        put_list("scopes_supported", self.scopes_supported);
        put_list("bearer_methods_supported", vec!["header".to_owned()]);
        for (key, value) in [
            ("resource_name", self.resource_name),
            ("resource_documentation", self.resource_documentation),
            ("resource_policy_uri", self.resource_policy_uri),
            ("resource_tos_uri", self.resource_tos_uri),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                doc.insert(key.into(), json!(v));
            }
        }
        Ok(ProtectedResourceMetadata {
            resource: self.resource,
            well_known_path,
            well_known_url,
            document: Value::Object(doc),
            max_age: self.max_age,
        })
    }
}

#[cfg(feature = "axum")]
mod serve {
    use axum::Router;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use http::HeaderValue;
    use http::header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE,
    };

    use super::{ProtectedResourceMetadata, WELL_KNOWN_PREFIX};

    impl ProtectedResourceMetadata {
        /// An Axum router serving the document by GET, without authentication, at the
        /// path-aware well-known path and at the root form `/.well-known/oauth-protected-resource`,
        /// as `application/json` with `Cache-Control: max-age` and CORS open to any origin
        /// (browser-based MCP clients fetch it cross-origin).
        ///
        /// Merge it *outside* the auth layer: `Router::new()...layer(auth).merge(metadata.router())`.
        pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
            let body: axum::body::Bytes = serde_json::to_vec(&self.document).unwrap_or_default().into();
            let cache = HeaderValue::from_str(&format!("public, max-age={}", self.max_age.as_secs()))
                .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=3600"));
            let handler = move || {
                let body = body.clone();
                let cache = cache.clone();
                async move {
                    let mut response = Response::new(axum::body::Body::from(body));
                    let h = response.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    h.insert(CACHE_CONTROL, cache);
                    cors(h);
                    response
                }
            };
            let preflight = || async {
                let mut response = http::StatusCode::NO_CONTENT.into_response();
                let h = response.headers_mut();
                cors(h);
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
                h.insert(
                    ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("mcp-protocol-version, content-type, authorization"),
                );
                h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
                response
            };
            let route = get(handler).options(preflight);
            let router = Router::new().route(&self.well_known_path, route.clone());
            if self.well_known_path == WELL_KNOWN_PREFIX {
                router
            } else {
                router.route(WELL_KNOWN_PREFIX, route)
            }
        }
    }

    fn cors(h: &mut http::HeaderMap) {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_are_path_aware() {
        let m = |r: &str| {
            ProtectedResourceMetadata::builder(r)
                .authorization_server("https://auth.example.com")
                .build()
                .unwrap()
        };
        assert_eq!(
            m("https://h.example.com").well_known_path(),
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            m("https://h.example.com/").well_known_path(),
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            m("https://h.example.com/a/b").well_known_path(),
            "/.well-known/oauth-protected-resource/a/b"
        );
        assert_eq!(
            m("http://127.0.0.1:8080/mcp").well_known_url(),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn document_omits_empty_fields() {
        let doc = ProtectedResourceMetadata::builder("https://h.example.com/mcp")
            .authorization_server("https://auth.example.com")
            .build()
            .unwrap();
        assert_eq!(
            doc.document(),
            &json!({
                "resource": "https://h.example.com/mcp",
                "authorization_servers": ["https://auth.example.com"],
                "bearer_methods_supported": ["header"],
            })
        );
    }

    #[test]
    fn offline_access_is_not_a_supported_scope_of_a_resource() {
        let err = ProtectedResourceMetadata::builder("https://h.example.com/mcp")
            .authorization_server("https://auth.example.com")
            .scopes_supported(["projects:read", "offline_access"])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("offline_access"), "{err}");
    }

    #[test]
    fn a_document_without_an_authorization_server_is_refused() {
        let err = ProtectedResourceMetadata::builder("https://h.example.com/mcp")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("authorization_servers"), "{err}");
    }

    #[test]
    fn rejects_unusable_resources() {
        for bad in [
            "h.example.com/mcp",
            "https://h.example.com/mcp?x=1",
            "https://h/mcp#f",
            "ftp://h/x",
        ] {
            assert!(ProtectedResourceMetadata::builder(bad).build().is_err(), "{bad}");
        }
        assert!(
            ProtectedResourceMetadata::builder("https://h/mcp")
                .authorization_server("not a url")
                .build()
                .is_err()
        );
    }
}
