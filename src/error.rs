//! [`ConfigError`]: why a configuration was refused. A leaf module: configuration, metadata
//! and the gateway client all report through it, and it depends on none of them.

use std::fmt;

/// An invalid configuration value. The message names the setting, never a secret.
///
/// `Debug` prints the same sentence as `Display`, so `fn main() -> Result<(), Box<dyn Error>>`
/// shows the reader what to fix.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A value is present but unusable.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting or environment variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the deployment nor the issuer is pinned: the gateway accepts a valid token of
    /// any Wacht deployment, including one an attacker creates with this server's scope names.
    #[error(
        "no Wacht tenant is pinned: set WACHT_DEPLOYMENT_ID or WACHT_OAUTH_ISSUER (builder: \
         expected_deployment_id / expected_issuer), so that tokens of other Wacht deployments are \
         refused; to accept every deployment on purpose, call accept_any_deployment()"
    )]
    TenantNotPinned,
}

impl ConfigError {
    /// `Invalid` for `name`, with `reason`.
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name,
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_reads_like_display() {
        let e = ConfigError::Missing("WACHT_BACKEND_API_KEY");
        assert_eq!(format!("{e:?}"), e.to_string());
        assert_eq!(
            format!("{e:?}"),
            "environment variable WACHT_BACKEND_API_KEY is required but not set"
        );
    }
}
