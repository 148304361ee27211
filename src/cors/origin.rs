//! Origins: the configured ones (`scheme://host[:port|:*]`) and the `Origin` a browser sends
//! (`scheme://host[:port]`, RFC 6454 §6.2), read by one parser and compared as (scheme, host,
//! port) with the scheme's default port filled in.

use http::HeaderValue;

use crate::error::ConfigError;

/// Which ports an allowed origin covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// `:*`.
    Any,
    /// One port: the one written, or the scheme's default (`None`: a scheme without one,
    /// written without a port, such as `chrome-extension://id`).
    One(Option<u16>),
}

/// One configured origin, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedOrigin {
    scheme: Box<str>,
    host: Box<str>,
    ports: Ports,
}

/// The parts of an origin as written.
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    /// The text after the host's `:`, if any.
    port: Option<&'a str>,
}

impl AllowedOrigin {
    /// `http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`.
    pub(crate) fn loopback() -> Vec<Self> {
        ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(|host| AllowedOrigin {
                scheme: "http".into(),
                host: host.into(),
                ports: Ports::Any,
            })
            .collect()
    }

    /// A configured origin, or why it is none.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let refuse = |reason: &str| ConfigError::invalid("McpCorsLayer origin", format!("{text:?}: {reason}"));
        match text.trim() {
            "*" => {
                return Err(refuse(
                    "a wildcard would let every site read the answers; list the origins",
                ));
            }
            t if t.eq_ignore_ascii_case("null") => {
                return Err(refuse(
                    "`null` is the origin of sandboxed frames and files, which any page can make",
                ));
            }
            _ => {}
        }
        let parts = split(text).ok_or_else(|| refuse("not scheme://host[:port|:*] (no path, query or user)"))?;
        let ports = match parts.port {
            Some("*") => Ports::Any,
            Some(port) => Ports::One(Some(
                parse_port(port).ok_or_else(|| refuse("the port is not a number from 1 to 65535 or *"))?,
            )),
            None => Ports::One(default_port(parts.scheme)),
        };
        Ok(AllowedOrigin {
            scheme: parts.scheme.to_ascii_lowercase().into(),
            host: parts.host.to_ascii_lowercase().into(),
            ports,
        })
    }

    /// Whether a browser's `Origin` is this one.
    fn matches(&self, origin: &Parts<'_>, port: Option<u16>) -> bool {
        self.scheme.eq_ignore_ascii_case(origin.scheme)
            && self.host.eq_ignore_ascii_case(origin.host)
            && match self.ports {
                Ports::Any => true,
                Ports::One(allowed) => allowed == port,
            }
    }

    /// The origin in the form rmcp's allow-list reads: the port spelled out (rmcp takes an
    /// entry without one as any port).
    pub(crate) fn to_rmcp(&self) -> String {
        match self.ports {
            Ports::Any => format!("{}://{}:*", self.scheme, self.host),
            Ports::One(Some(port)) => format!("{}://{}:{port}", self.scheme, self.host),
            Ports::One(None) => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// Whether `origin` (a request's `Origin` header) is one of `allowed`.
pub(crate) fn is_allowed(allowed: &[AllowedOrigin], origin: &HeaderValue) -> bool {
    let Some(parts) = origin.to_str().ok().and_then(split) else {
        return false;
    };
    let port = match parts.port {
        None => default_port(parts.scheme),
        Some(text) => match parse_port(text) {
            Some(port) => Some(port),
            None => return false,
        },
    };
    allowed.iter().any(|a| a.matches(&parts, port))
}

/// `scheme://host[:port]`, nothing more: no path (not even `/`), query, fragment or user.
fn split(text: &str) -> Option<Parts<'_>> {
    let (scheme, authority) = text.split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next()?.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.')) {
            return None;
        }
        let host = &authority[..inside.len() + 2];
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return None;
        }
        (host, port)
    };
    if port.is_some_and(|p| p != "*" && parse_port(p).is_none()) {
        return None;
    }
    Some(Parts { scheme, host, port })
}

/// 1 to 65535, digits only.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&p| p != 0)
}

/// The port a scheme implies when an origin leaves it out.
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str]) -> Vec<AllowedOrigin> {
        list.iter().map(|o| AllowedOrigin::parse(o).unwrap()).collect()
    }

    fn admits(list: &[AllowedOrigin], origin: &str) -> bool {
        is_allowed(list, &HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn origins_match_by_scheme_host_and_port() {
        let list = allowed(&["https://app.example.com", "http://localhost:*", "http://[::1]:8080"]);
        for yes in [
            "https://app.example.com",
            "https://app.example.com:443",
            "HTTPS://APP.example.COM",
            "http://localhost:6274",
            "http://localhost",
            "http://[::1]:8080",
        ] {
            assert!(admits(&list, yes), "{yes} refused");
        }
        for no in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
            "https://evil-app.example.com",
            "https://app.example.com/",
            "https://app.example.com@evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1:6274",
            "http://[::1]:8081",
            "http://[::1]",
            "null",
            "http://localhost:*",
            "",
        ] {
            assert!(!admits(&list, no), "{no} admitted");
        }
    }

    #[test]
    fn an_origin_header_that_is_not_text_is_refused() {
        let value = HeaderValue::from_bytes(b"https://app.example.com\xff").unwrap();
        assert!(!is_allowed(&allowed(&["https://app.example.com"]), &value));
    }
}
