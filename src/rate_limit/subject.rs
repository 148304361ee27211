//! [`Subject`]: whose requests a meter counts, by the rule's mode.

use super::RateLimitMode;
use crate::principal::Grant;
use crate::token::TokenHash;

/// Whose requests a meter counts: the parts of a grant and a request the modes key by.
pub(crate) struct Subject<'a> {
    /// The API-auth app (`<deployment>:<app slug>`), if the grant names one.
    pub(crate) app: Option<String>,
    /// The credential: an API key's id, else the token's cache key.
    pub(crate) credential: String,
    /// The route as reported to the gateway.
    pub(crate) route: &'a str,
    pub(crate) ip: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// The subject of a verified grant on a route.
    pub(crate) fn of(grant: &Grant, hash: &TokenHash, route: &'a str, ip: Option<&'a str>) -> Self {
        let deployment = grant.deployment_id.map_or(0, |d| d.0);
        let app = match (&grant.api_key, grant.owner_user_id) {
            (Some(key), _) => Some(format!("{deployment}:{}", key.app_slug)),
            (None, Some(user)) => Some(format!("{deployment}:oauth_{}", user.get())),
            (None, None) => None,
        };
        let credential = match &grant.api_key {
            Some(key) => format!("key:{}", key.key_id.get()),
            None => format!("token:{}", hex(hash.as_bytes())),
        };
        Subject {
            app,
            credential,
            route,
            ip,
        }
    }

    /// Whose rules these are: the app's scheme decides them (the credential's, without an
    /// app).
    pub(crate) fn book_key(&self) -> &str {
        self.app.as_deref().unwrap_or(&self.credential)
    }

    /// The meter key of `rule` counted in `mode`.
    pub(super) fn key(&self, mode: RateLimitMode, rule: &str) -> String {
        let ip = self.ip.unwrap_or("unknown");
        // Without an app (a grant that names no owner), a per-app rule counts the credential.
        let app = self.app.as_deref().unwrap_or(&self.credential);
        match mode {
            RateLimitMode::PerApp => format!("app|{app}|{rule}"),
            RateLimitMode::PerKey => format!("key|{}|{}|{rule}", self.credential, self.route),
            RateLimitMode::PerKeyAndIp => format!("keyip|{}|{ip}|{}|{rule}", self.credential, self.route),
            RateLimitMode::PerAppAndIp => format!("appip|{app}|{ip}|{rule}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
