//! [`WachtAuthConfig::from_env`]: the configuration from `WACHT_*` environment variables.

use super::{WachtAuthConfig, WachtAuthConfigBuilder, check_url};
use crate::error::ConfigError;

/// Fleet mode from `WACHT_REDIS_URL` and `WACHT_FLEET_SECRET`.
#[cfg(feature = "redis")]
fn fleet_from_env(
    builder: WachtAuthConfigBuilder,
    url: String,
    secret: Option<String>,
) -> Result<WachtAuthConfigBuilder, ConfigError> {
    let secret = secret.ok_or(ConfigError::Missing("WACHT_FLEET_SECRET"))?;
    Ok(builder.fleet(crate::fleet::FleetConfig::new(url, secret)))
}

/// Without the `redis` feature, a configured Redis is an error, not silently ignored: the
/// operator expects invalidations to reach every replica.
#[cfg(not(feature = "redis"))]
fn fleet_from_env(
    _builder: WachtAuthConfigBuilder,
    _url: String,
    _secret: Option<String>,
) -> Result<WachtAuthConfigBuilder, ConfigError> {
    Err(ConfigError::invalid(
        "WACHT_REDIS_URL",
        "fleet mode needs tower-wacht built with the `redis` feature",
    ))
}

impl WachtAuthConfig {
    /// Reads the configuration from the environment:
    ///
    /// * `WACHT_BACKEND_API_KEY` (required): the backend API key sent to the gateway;
    /// * `WACHT_GATEWAY_URL`: gateway base URL (default `https://gateway.wacht.dev`);
    /// * `WACHT_DEPLOYMENT_ID`: accept only tokens of this deployment;
    /// * `WACHT_OAUTH_ISSUER`: accept only tokens from this issuer;
    /// * `WACHT_RESOURCE_URL`: this server's resource URL; accept only tokens issued for it.
    ///
    /// With the `redis` feature, `WACHT_REDIS_URL` turns fleet mode on (`redis://host:port`),
    /// with `WACHT_FLEET_SECRET` (required then, at least 32 bytes, the same on every
    /// replica).
    ///
    /// At least one of `WACHT_DEPLOYMENT_ID` and `WACHT_OAUTH_ISSUER` is required
    /// ([`ConfigError::TenantNotPinned`] otherwise): the gateway accepts tokens of every Wacht
    /// deployment.
    ///
    /// Empty variables count as unset. Every other setting keeps its default; adjust the
    /// result with [`WachtAuthConfig::to_builder`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let api_key = get("WACHT_BACKEND_API_KEY").ok_or(ConfigError::Missing("WACHT_BACKEND_API_KEY"))?;
        let mut b = WachtAuthConfig::builder().api_key(api_key);
        if let Some(url) = get("WACHT_GATEWAY_URL") {
            b = b.gateway_url(url);
        }
        if let Some(id) = get("WACHT_DEPLOYMENT_ID") {
            let id = id
                .parse::<i64>()
                .map_err(|_| ConfigError::invalid("WACHT_DEPLOYMENT_ID", "expected a decimal deployment id"))?;
            b = b.expected_deployment_id(id);
        }
        if let Some(issuer) = get("WACHT_OAUTH_ISSUER") {
            check_url("WACHT_OAUTH_ISSUER", &issuer)?;
            b = b.expected_issuer(issuer);
        }
        if let Some(url) = get("WACHT_REDIS_URL") {
            b = fleet_from_env(b, url, get("WACHT_FLEET_SECRET"))?;
        }
        if let Some(resource) = get("WACHT_RESOURCE_URL") {
            check_url("WACHT_RESOURCE_URL", &resource)?;
            b = b.expected_audience(resource);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::DeploymentId;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_reads_every_variable() {
        let c = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "sk_live_secret"),
            ("WACHT_GATEWAY_URL", "http://127.0.0.1:9000/base"),
            ("WACHT_DEPLOYMENT_ID", "418223109876543489"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_RESOURCE_URL", "https://api.example.com/mcp"),
        ]))
        .unwrap();
        assert_eq!(c.gateway_url(), "http://127.0.0.1:9000/base/");
        assert_eq!(c.pins.expected_deployment_id, Some(DeploymentId(418223109876543489)));
        assert_eq!(c.expected_issuer(), Some("https://auth.example.com"));
        assert_eq!(c.expected_audience(), Some("https://api.example.com/mcp"));
        assert!(!format!("{c:?}").contains("sk_live_secret"));
    }

    #[test]
    fn from_env_reports_bad_values_by_name() {
        assert_eq!(
            WachtAuthConfig::from_lookup(env(&[])).unwrap_err(),
            ConfigError::Missing("WACHT_BACKEND_API_KEY")
        );
        let bad = |k: &'static str, v: &str| {
            let err = WachtAuthConfig::from_lookup(env(&[("WACHT_BACKEND_API_KEY", "k"), (k, v)])).unwrap_err();
            assert!(
                err.to_string().contains(k)
                    || matches!(&err, ConfigError::Invalid { name, .. } if name.contains("gateway")),
                "{err}"
            );
        };
        bad("WACHT_DEPLOYMENT_ID", "abc");
        bad("WACHT_OAUTH_ISSUER", "auth.example.com");
        bad("WACHT_RESOURCE_URL", "ftp://x/y");
        bad("WACHT_RESOURCE_URL", "https://x/y#frag");
        bad("WACHT_GATEWAY_URL", "not a url");
    }

    #[test]
    fn builder_validates_method() {
        let pinned = || WachtAuthConfig::builder().expected_deployment_id(1);
        assert!(pinned().method("post").build().is_ok());
        assert!(pinned().method("TRACE").build().is_err());
    }
}
