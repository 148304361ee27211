//! Wacht API keys: which credentials are API keys, and where a request may carry one.
//!
//! A credential is an API key when it starts with one of the app's configured prefixes and
//! `_` ([`WachtAuthConfigBuilder::api_key_prefixes`](crate::WachtAuthConfigBuilder::api_key_prefixes)),
//! never by its shape alone: Wacht's key format (`<prefix>_<43 base64url characters>`) also
//! fits an `oat_` access token. With no prefix configured, no credential is an API key.

use http::HeaderName;

use crate::error::ConfigError;
use crate::principal::CredentialKind;

/// What Wacht's gateway checks before it looks a key up (`gateway-protocol.md` §4): at least
/// 46 bytes, the last 43 of them base64url.
const KEY_TAIL: usize = 43;
const MIN_KEY_LEN: usize = 46;

/// The prefixes that make a credential an API key, and the header a key may also come in.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiKeySettings {
    pub(crate) prefixes: Vec<String>,
    pub(crate) header: Option<HeaderName>,
}

impl ApiKeySettings {
    /// Refuses prefixes that are empty, contain anything but ASCII letters, digits and `-`, or
    /// would take other credentials for keys (`oat`, Wacht's access-token prefix; a JWT's `eyJ`).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for prefix in &self.prefixes {
            if prefix.is_empty()
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::invalid(
                    "api_key_prefixes",
                    "a prefix is ASCII letters, digits, `-` and `_` (e.g. sk_live)",
                ));
            }
            if prefix == "oat" || prefix.starts_with("eyJ") {
                return Err(ConfigError::invalid(
                    "api_key_prefixes",
                    "`oat` (access tokens) and `eyJ` (JWTs) name other credentials",
                ));
            }
        }
        if let Some(header) = &self.header
            && (header == http::header::AUTHORIZATION || header == http::header::COOKIE)
        {
            return Err(ConfigError::invalid(
                "api_key_header",
                "name a header of its own (e.g. x-api-key)",
            ));
        }
        Ok(())
    }
}

/// Classifies credentials by the configured prefixes.
#[derive(Debug, Default)]
pub(crate) struct ApiKeys {
    /// Each prefix with its `_`.
    prefixes: Box<[Box<[u8]>]>,
}

impl ApiKeys {
    pub(crate) fn new(settings: &ApiKeySettings) -> Self {
        ApiKeys {
            prefixes: settings
                .prefixes
                .iter()
                .map(|p| format!("{p}_").into_bytes().into_boxed_slice())
                .collect(),
        }
    }

    /// Which credential these bytes are, as far as the gateway is concerned: an API key when
    /// they start with a configured prefix, else an OAuth access token.
    pub(crate) fn kind_of(&self, credential: &[u8]) -> CredentialKind {
        if self.prefixes.iter().any(|p| credential.starts_with(p)) {
            CredentialKind::ApiKey
        } else {
            CredentialKind::OAuthAccessToken
        }
    }
}

/// True if `key` has the form the gateway checks (anything else it refuses without a lookup).
pub(crate) fn well_formed(key: &[u8]) -> bool {
    key.len() >= MIN_KEY_LEN
        && key[key.len() - KEY_TAIL..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(prefixes: &[&str]) -> ApiKeys {
        ApiKeys::new(&ApiKeySettings {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            header: None,
        })
    }

    #[test]
    fn only_a_configured_prefix_makes_a_key() {
        let key = format!("sk_live_{}", "a".repeat(43));
        assert_eq!(keys(&[]).kind_of(key.as_bytes()), CredentialKind::OAuthAccessToken);
        assert_eq!(keys(&["sk_live"]).kind_of(key.as_bytes()), CredentialKind::ApiKey);
        assert_eq!(
            keys(&["sk_test"]).kind_of(key.as_bytes()),
            CredentialKind::OAuthAccessToken
        );
        // The prefix is followed by `_`: `sk` does not take `sk_live_…`'s neighbour `skx_…`.
        assert_eq!(keys(&["sk"]).kind_of(b"skx_aaaa"), CredentialKind::OAuthAccessToken);
        // An access token has the key format too; it is not a key unless a prefix says so.
        let token = format!("oat_{}", "b".repeat(43));
        assert!(well_formed(token.as_bytes()));
        assert_eq!(
            keys(&["sk_live"]).kind_of(token.as_bytes()),
            CredentialKind::OAuthAccessToken
        );
    }

    #[test]
    fn the_gateways_format_check() {
        assert!(well_formed(format!("sk_live_{}", "A-_9".repeat(11)).as_bytes()));
        assert!(!well_formed(format!("sk_{}", "a".repeat(42)).as_bytes()));
        assert!(!well_formed(format!("sk_live_{}.", "a".repeat(42)).as_bytes()));
    }

    #[test]
    fn prefixes_that_name_other_credentials_are_refused() {
        for bad in ["", "oat", "eyJhbGci", "sk live", "sk.live"] {
            let settings = ApiKeySettings {
                prefixes: vec![bad.to_owned()],
                header: None,
            };
            assert!(settings.validate().is_err(), "{bad:?}");
        }
    }
}
