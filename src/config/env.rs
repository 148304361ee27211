//! [`WachtAuthConfig::from_env`]: the configuration from `WACHT_*` environment variables.

use super::builder::{check_allow_lists, same_entries};
use super::{WachtAuthConfig, WachtAuthConfigBuilder, check_url};
use crate::error::ConfigError;

/// A comma- or whitespace-separated list.
fn list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `WACHT_ALLOWED_CLIENTS` and `WACHT_ACCEPTED_TENANTS`, for every token (whether or not
/// `WACHT_JWT` is on), or their deprecated names `WACHT_JWT_ALLOWED_CLIENTS` and
/// `WACHT_JWT_TENANTS`.
fn allow_lists_from_env(
    builder: WachtAuthConfigBuilder,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<WachtAuthConfigBuilder, ConfigError> {
    let (clients, clients_from) = allow_list(get, "WACHT_ALLOWED_CLIENTS", "WACHT_JWT_ALLOWED_CLIENTS")?;
    let (tenants, tenants_from) = allow_list(get, "WACHT_ACCEPTED_TENANTS", "WACHT_JWT_TENANTS")?;
    check_allow_lists(&clients, &tenants, [clients_from, tenants_from])?;
    Ok(builder.allowed_clients(clients).accepted_tenants(tenants))
}

/// The list in `name`, or in its deprecated alias `deprecated` (logged at warn level, naming
/// `name`), and the variable it came from. Both set: they must name the same entries, else
/// the configuration is refused, naming both.
fn allow_list(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    deprecated: &'static str,
) -> Result<(Vec<String>, &'static str), ConfigError> {
    let current = get(name).map(|v| list(&v));
    let Some(old) = get(deprecated).map(|v| list(&v)) else {
        return Ok((current.unwrap_or_default(), name));
    };
    tracing::warn!("{deprecated} is deprecated: it now applies to every token, opaque or JWT; rename it {name}");
    match current {
        None => Ok((old, deprecated)),
        Some(current) if same_entries(&current, &old) => Ok((current, name)),
        Some(_) => Err(ConfigError::invalid(
            name,
            format!(
                "{name} and the deprecated {deprecated} name different lists; set only {name} (it applies to every token)"
            ),
        )),
    }
}

/// Fleet mode from `WACHT_REDIS_URL`, `WACHT_FLEET_SECRET`, `WACHT_FLEET_FAIL_CLOSED` and
/// `WACHT_REDIS_CA_FILE`.
#[cfg(feature = "redis")]
fn fleet_from_env(
    builder: WachtAuthConfigBuilder,
    url: String,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<WachtAuthConfigBuilder, ConfigError> {
    let secret = get("WACHT_FLEET_SECRET").ok_or(ConfigError::Missing("WACHT_FLEET_SECRET"))?;
    let mut fleet = crate::fleet::FleetConfig::new(url, secret);
    if switch("WACHT_FLEET_FAIL_CLOSED", get("WACHT_FLEET_FAIL_CLOSED"))? {
        fleet = fleet.out_of_sync(crate::fleet::OutOfSync::FailClosed);
    }
    if let Some(path) = get("WACHT_REDIS_CA_FILE") {
        let pem = std::fs::read(&path)
            .map_err(|e| ConfigError::invalid("WACHT_REDIS_CA_FILE", format!("cannot read {path}: {e}")))?;
        fleet = fleet.root_certificate_pem(pem);
    }
    Ok(builder.fleet(fleet))
}

/// Without the `redis` feature, a configured Redis is an error, not silently ignored: the
/// operator expects invalidations to reach every replica.
#[cfg(not(feature = "redis"))]
fn fleet_from_env(
    _builder: WachtAuthConfigBuilder,
    _url: String,
    _get: &dyn Fn(&str) -> Option<String>,
) -> Result<WachtAuthConfigBuilder, ConfigError> {
    Err(ConfigError::invalid(
        "WACHT_REDIS_URL",
        "fleet mode needs tower-wacht built with the `redis` feature",
    ))
}

/// An on/off variable (unset is off).
fn switch(name: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("off" | "false" | "0" | "no") => Ok(false),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::invalid(name, "expected on or off")),
    }
}

/// The JWT settings from `WACHT_JWT_*`.
fn jwt_from_env(get: &impl Fn(&str) -> Option<String>) -> Result<crate::jwt::JwtConfig, ConfigError> {
    let mut jwt = crate::jwt::JwtConfig::new();
    let seconds = |name: &'static str| -> Result<Option<std::time::Duration>, ConfigError> {
        get(name)
            .map(|secs| {
                secs.parse()
                    .map(std::time::Duration::from_secs)
                    .map_err(|_| ConfigError::invalid(name, "expected whole seconds"))
            })
            .transpose()
    };
    if let Some(interval) = seconds("WACHT_JWKS_REFRESH_SECS")? {
        jwt = jwt.jwks_refresh(interval);
    }
    if let Some(max_age) = seconds("WACHT_JWKS_MAX_STALE_SECS")? {
        jwt = jwt.jwks_max_stale(max_age);
    }
    if let Some(lifetime) = seconds("WACHT_JWT_SESSION_DENIAL_SECS")? {
        jwt = jwt.session_denial_lifetime(lifetime);
    }
    if switch(
        "WACHT_JWT_ACCEPT_TENANT_AUDIENCE",
        get("WACHT_JWT_ACCEPT_TENANT_AUDIENCE"),
    )? {
        jwt = jwt.accept_tenant_audience();
    }
    Ok(jwt)
}

impl WachtAuthConfig {
    /// Reads the configuration from the environment:
    ///
    /// * `WACHT_BACKEND_API_KEY` (required): the backend API key sent to the gateway;
    /// * `WACHT_GATEWAY_URL`: gateway base URL (default `https://gateway.wacht.dev`);
    /// * `WACHT_DEPLOYMENT_ID`: accept only tokens of this deployment;
    /// * `WACHT_OAUTH_ISSUER`: accept only tokens from this issuer;
    /// * `WACHT_RESOURCE_URL`: this server's resource URL; accept only tokens issued for it;
    /// * `WACHT_ALLOWED_CLIENTS`: serve only tokens of these OAuth client ids (for an API key,
    ///   its app), comma- or whitespace-separated (see
    ///   [`allowed_clients`](WachtAuthConfigBuilder::allowed_clients));
    /// * `WACHT_ACCEPTED_TENANTS`: serve only tokens granted for these tenant URNs (for an API
    ///   key, its organization or workspace), comma- or whitespace-separated (see
    ///   [`accepted_tenants`](WachtAuthConfigBuilder::accepted_tenants)).
    ///
    /// Both lists apply to every token, opaque or JWT. Their former names
    /// `WACHT_JWT_ALLOWED_CLIENTS` and `WACHT_JWT_TENANTS` are deprecated aliases, read whether
    /// or not `WACHT_JWT` is on and applied to every token too (logged at warn level, naming
    /// the new variable); set beside the new name, both must name the same entries, else
    /// [`ConfigError`] naming both.
    ///
    /// With the `redis` feature, `WACHT_REDIS_URL` turns fleet mode on (`redis://host:port`,
    /// or `rediss://` for TLS), with `WACHT_FLEET_SECRET` (required then, at least 32 bytes,
    /// the same on every replica), `WACHT_FLEET_FAIL_CLOSED=on` (answer 503 once without the
    /// fleet past its bound: [`OutOfSync::FailClosed`](crate::fleet::OutOfSync::FailClosed))
    /// and `WACHT_REDIS_CA_FILE` (a PEM file: the CA a `rediss://` server's certificate chains
    /// to, instead of the system's roots).
    ///
    /// `WACHT_API_KEY_PREFIXES` (comma- or space-separated, e.g. `sk_live,sk_test`) accepts
    /// Wacht API keys with those prefixes, and `WACHT_API_KEY_HEADER` (e.g. `x-api-key`) also
    /// takes them from that header (see
    /// [`api_key_prefixes`](crate::WachtAuthConfigBuilder::api_key_prefixes)).
    ///
    /// `WACHT_AUDIT=on` emits the [audit trail](crate::audit) as `INFO` events on the
    /// `tracing` target `tower_wacht::audit` (a sink is configured in code).
    ///
    /// Wacht's rate limits are metered on cached hits (see [`rate_limit`](crate::rate_limit)):
    /// `WACHT_RATE_LIMIT_MODE` (`per_app`, the default, `per_key`, `per_key_and_ip`,
    /// `per_app_and_ip`) and `WACHT_RATE_LIMIT_RULE_MODES` (`100/60s=per_key,...`) say how
    /// rules count; `WACHT_RATE_LIMIT_HEADERS` is `standard` (default), `standard_and_wacht`
    /// or `off`; `WACHT_RATE_LIMIT_METERING=off_unsafe` turns metering off (logged).
    ///
    /// `WACHT_JWT=on` verifies JWT access tokens of `WACHT_OAUTH_ISSUER` locally (see
    /// [`jwt`](crate::jwt)), with
    ///
    /// * `WACHT_JWKS_REFRESH_SECS`: JWKS refresh interval (default 300);
    /// * `WACHT_JWKS_MAX_STALE_SECS`: the longest a key set is trusted without a successful
    ///   fetch (default 3600);
    /// * `WACHT_JWT_SESSION_DENIAL_SECS`: how long a session denial lasts (default 2592000,
    ///   30 days);
    /// * `WACHT_JWT_ACCEPT_TENANT_AUDIENCE=on`: accept JWTs although `WACHT_RESOURCE_URL` pins
    ///   the resource (see [`JwtConfig::accept_tenant_audience`](crate::jwt::JwtConfig::accept_tenant_audience)).
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
            b = fleet_from_env(b, url, &get)?;
        }
        if let Some(resource) = get("WACHT_RESOURCE_URL") {
            check_url("WACHT_RESOURCE_URL", &resource)?;
            b = b.expected_audience(resource);
        }
        if let Some(prefixes) = get("WACHT_API_KEY_PREFIXES") {
            b = b.api_key_prefixes(
                prefixes
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(header) = get("WACHT_API_KEY_HEADER") {
            let name = http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::invalid("WACHT_API_KEY_HEADER", "not a header name"))?;
            b = b.api_key_header(name);
        }
        b = allow_lists_from_env(b, &get)?;
        if switch("WACHT_JWT", get("WACHT_JWT"))? {
            b = b.jwt(jwt_from_env(&get)?);
        }
        if switch("WACHT_AUDIT", get("WACHT_AUDIT"))? {
            b = b.audit(crate::audit::AuditConfig::new().tracing(true));
        }
        b = b.rate_limits(rate_limits_from_env(&get)?);
        b.build()
    }
}

/// `WACHT_RATE_LIMIT_MODE`, `WACHT_RATE_LIMIT_RULE_MODES`, `WACHT_RATE_LIMIT_HEADERS` and
/// `WACHT_RATE_LIMIT_METERING` (see [`WachtAuthConfig::from_env`]).
fn rate_limits_from_env(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<crate::rate_limit::RateLimitConfig, ConfigError> {
    use crate::rate_limit::{RateLimitConfig, RateLimitHeaders, RateLimitMode};
    let mode = |var: &'static str, value: &str| {
        RateLimitMode::parse(value)
            .ok_or_else(|| ConfigError::invalid(var, "expected per_app, per_key, per_key_and_ip or per_app_and_ip"))
    };
    let mut limits = RateLimitConfig::default();
    if let Some(value) = get("WACHT_RATE_LIMIT_MODE") {
        limits = limits.mode(mode("WACHT_RATE_LIMIT_MODE", &value)?);
    }
    if let Some(value) = get("WACHT_RATE_LIMIT_RULE_MODES") {
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (rule, rule_mode) = pair.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    "WACHT_RATE_LIMIT_RULE_MODES",
                    "expected <rule>=<mode>, e.g. 100/60s=per_key",
                )
            })?;
            limits = limits.rule_mode(rule.trim(), mode("WACHT_RATE_LIMIT_RULE_MODES", rule_mode)?);
        }
    }
    if let Some(value) = get("WACHT_RATE_LIMIT_HEADERS") {
        limits = limits.headers(match value.as_str() {
            "standard" => RateLimitHeaders::Standard,
            "standard_and_wacht" => RateLimitHeaders::StandardAndWacht,
            "off" => RateLimitHeaders::None,
            _ => {
                return Err(ConfigError::invalid(
                    "WACHT_RATE_LIMIT_HEADERS",
                    "expected standard, standard_and_wacht or off",
                ));
            }
        });
    }
    if let Some(value) = get("WACHT_RATE_LIMIT_METERING") {
        match value.as_str() {
            "on" => {}
            "off_unsafe" => limits = limits.disable_metering_unsafe(),
            _ => {
                return Err(ConfigError::invalid(
                    "WACHT_RATE_LIMIT_METERING",
                    "expected on or off_unsafe",
                ));
            }
        }
    }
    Ok(limits)
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
        bad("WACHT_JWT", "maybe");
        bad("WACHT_AUDIT", "maybe");
    }

    #[test]
    fn rate_limits_from_env() {
        use crate::rate_limit::{RateLimitHeaders, RateLimitMode};
        let base = [("WACHT_BACKEND_API_KEY", "k"), ("WACHT_DEPLOYMENT_ID", "1")];
        let default = WachtAuthConfig::from_lookup(env(&base)).unwrap();
        assert!(default.rate_limits.enabled, "metered by default");
        let c = WachtAuthConfig::from_lookup(env(&[
            base[0],
            base[1],
            ("WACHT_RATE_LIMIT_MODE", "per_key"),
            ("WACHT_RATE_LIMIT_RULE_MODES", "10/1s=per_app_and_ip, 5/60s=per_app"),
            ("WACHT_RATE_LIMIT_HEADERS", "standard_and_wacht"),
        ]))
        .unwrap();
        assert_eq!(c.rate_limits.mode_of("1000/60s"), RateLimitMode::PerKey);
        assert_eq!(c.rate_limits.mode_of("10/1s"), RateLimitMode::PerAppAndIp);
        assert_eq!(c.rate_limits.mode_of("5/60s"), RateLimitMode::PerApp);
        assert_eq!(c.rate_limits.headers, RateLimitHeaders::StandardAndWacht);
        let off = WachtAuthConfig::from_lookup(env(&[base[0], base[1], ("WACHT_RATE_LIMIT_METERING", "off_unsafe")]))
            .unwrap();
        assert!(!off.rate_limits.enabled);
        for (var, value) in [
            ("WACHT_RATE_LIMIT_MODE", "per_user"),
            ("WACHT_RATE_LIMIT_RULE_MODES", "10/1s"),
            ("WACHT_RATE_LIMIT_HEADERS", "x"),
            ("WACHT_RATE_LIMIT_METERING", "off"),
        ] {
            assert!(
                WachtAuthConfig::from_lookup(env(&[base[0], base[1], (var, value)])).is_err(),
                "{var}={value}"
            );
        }
    }

    #[test]
    fn audit_from_env_turns_the_tracing_target_on() {
        let base = [("WACHT_BACKEND_API_KEY", "k"), ("WACHT_DEPLOYMENT_ID", "1")];
        let off = WachtAuthConfig::from_lookup(env(&base)).unwrap();
        assert!(!off.requests.audit.is_enabled(), "off by default");
        let on = WachtAuthConfig::from_lookup(env(&[base[0], base[1], ("WACHT_AUDIT", "on")])).unwrap();
        assert!(on.requests.audit.is_enabled());
    }

    #[test]
    fn jwt_from_env_needs_the_issuer_and_reads_its_lists() {
        let err = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_DEPLOYMENT_ID", "1"),
            ("WACHT_JWT", "on"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("expected_issuer"), "{err}");
        let c = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_JWT", "on"),
            ("WACHT_JWT_ALLOWED_CLIENTS", "oc_a, oc_b"),
            ("WACHT_JWT_TENANTS", "urn:wacht:organization:5"),
            ("WACHT_JWKS_REFRESH_SECS", "60"),
            ("WACHT_JWKS_MAX_STALE_SECS", "900"),
            ("WACHT_JWT_SESSION_DENIAL_SECS", "604800"),
        ]))
        .unwrap();
        let jwt = c.jwt().unwrap();
        // The deprecated names are the verifier's lists, for every token.
        assert_eq!(c.pins.allowed_clients, ["oc_a", "oc_b"]);
        assert_eq!(c.pins.accepted_tenants, ["urn:wacht:organization:5"]);
        assert!(jwt.clients.is_empty() && jwt.tenants.is_empty());
        assert_eq!(jwt.jwks_refresh, std::time::Duration::from_secs(60));
        assert_eq!(jwt.jwks_max_stale, std::time::Duration::from_secs(900));
        assert_eq!(
            jwt.session_denial_lifetime,
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        let defaults = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_JWT", "on"),
        ]))
        .unwrap();
        let defaults = defaults.jwt().unwrap();
        assert_eq!(defaults.jwks_max_stale, crate::jwt::DEFAULT_JWKS_MAX_STALE);
        assert_eq!(
            defaults.session_denial_lifetime,
            std::time::Duration::from_secs(30 * 24 * 3600)
        );
        for (name, value) in [
            ("WACHT_JWKS_MAX_STALE_SECS", "1h"),
            // Not longer than the refresh interval (300 s by default).
            ("WACHT_JWKS_MAX_STALE_SECS", "300"),
            ("WACHT_JWT_SESSION_DENIAL_SECS", "-1"),
            ("WACHT_JWT_SESSION_DENIAL_SECS", "0"),
        ] {
            let err = WachtAuthConfig::from_lookup(env(&[
                ("WACHT_BACKEND_API_KEY", "k"),
                ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
                ("WACHT_JWT", "on"),
                (name, value),
            ]))
            .unwrap_err();
            let expected = if name.contains("MAX_STALE") {
                "max_stale"
            } else {
                "session_denial"
            };
            assert!(
                err.to_string().contains(name) || err.to_string().contains(expected),
                "{name}={value}: {err}"
            );
        }
        assert!(!jwt.accept_tenant_audience);
        let off = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_JWT", "off"),
        ]))
        .unwrap();
        assert!(off.jwt().is_none());
        let bad_tenant = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_JWT", "on"),
            ("WACHT_JWT_TENANTS", "urn:wacht:team:5"),
        ]));
        assert!(bad_tenant.is_err());
        let plain_http = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "http://auth.example.com"),
            ("WACHT_JWT", "on"),
        ]));
        assert!(plain_http.is_err(), "keys over plain HTTP from a remote host");
    }

    #[test]
    fn the_allow_lists_are_read_under_either_name_for_every_token() {
        let base = [
            ("WACHT_BACKEND_API_KEY", "k"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let pairs: Vec<_> = base.iter().chain(extra).copied().collect();
            WachtAuthConfig::from_lookup(env(&pairs))
        };
        // JWT verification off: the lists still apply, under the new names and the old ones.
        for (clients, tenants) in [
            ("WACHT_ALLOWED_CLIENTS", "WACHT_ACCEPTED_TENANTS"),
            ("WACHT_JWT_ALLOWED_CLIENTS", "WACHT_JWT_TENANTS"),
        ] {
            let c = with(&[
                (clients, "oc_a oc_b"),
                (tenants, "urn:wacht:workspace:4401,urn:wacht:user:7"),
            ])
            .unwrap();
            assert!(c.jwt().is_none());
            assert_eq!(c.pins.allowed_clients, ["oc_a", "oc_b"], "{clients}");
            assert_eq!(
                c.pins.accepted_tenants,
                ["urn:wacht:workspace:4401", "urn:wacht:user:7"],
                "{tenants}"
            );
        }
        // Both names: the same entries (any order) are accepted, different ones refused.
        let same = with(&[
            ("WACHT_ALLOWED_CLIENTS", "oc_a,oc_b"),
            ("WACHT_JWT_ALLOWED_CLIENTS", "oc_b oc_a"),
        ])
        .unwrap();
        assert_eq!(same.pins.allowed_clients, ["oc_a", "oc_b"]);
        for (new, old) in [
            ("WACHT_ALLOWED_CLIENTS", "WACHT_JWT_ALLOWED_CLIENTS"),
            ("WACHT_ACCEPTED_TENANTS", "WACHT_JWT_TENANTS"),
        ] {
            let err = with(&[(new, "urn:wacht:workspace:1"), (old, "urn:wacht:workspace:2")]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(new) && text.contains(old), "{text}");
        }
        for (name, value) in [
            ("WACHT_ACCEPTED_TENANTS", "urn:wacht:team:5"),
            ("WACHT_ACCEPTED_TENANTS", "urn:wacht:workspace:05"),
            ("WACHT_JWT_TENANTS", "workspace:5"),
        ] {
            let err = with(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn builder_validates_method() {
        let pinned = || WachtAuthConfig::builder().expected_deployment_id(1);
        assert!(pinned().method("post").build().is_ok());
        assert!(pinned().method("TRACE").build().is_err());
    }
}
