//! Redirect URIs: which a client may register, which one an authorization request may name
//! (its registered URIs, with any port on a loopback one: RFC 8252 §7.3, OAuth 2.1), and the
//! authorization response added to it.

use url::Url;

use super::params::is_loopback;

/// Schemes never accepted in a redirect URI: plain `http` off loopback (the token would
/// travel in clear), and schemes that run or embed content.
const FORBIDDEN_REDIRECT_SCHEMES: [&str; 5] = ["javascript", "data", "file", "vbscript", "about"];

/// The hosts of loopback redirect URIs whose port is not compared, each matching only itself.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Why a redirect URI is refused at registration, or `None` when it is acceptable: absolute,
/// without fragment, and `https`, `http` on loopback (RFC 8252 §7.3) or a private-use scheme
/// of a native app (RFC 8252 §7.1).
pub(super) fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.contains('#') {
        return Some("a redirect URI must not contain a fragment");
    }
    let Ok(url) = Url::parse(uri) else {
        return Some("a redirect URI must be an absolute URI");
    };
    match url.scheme() {
        "https" => None,
        "http" if is_loopback(&url) => None,
        "http" => Some("an http redirect URI must be on a loopback host (localhost, 127.0.0.1, [::1])"),
        scheme if FORBIDDEN_REDIRECT_SCHEMES.contains(&scheme) => Some("this redirect URI scheme is not allowed"),
        _ => None,
    }
}

/// Whether an authorization request may name `requested` for a client registered with
/// `registered`: the same string, or, for a registered `http://localhost`,
/// `http://127.0.0.1` or `http://[::1]` URI (with or without a port), the same URI with
/// any port: the scheme, the host (as written), the path and the query exactly as
/// registered, and only the port free (RFC 8252 §7.3: a native app listens on a port the
/// system gives it). Everything else, other loopback addresses included, matches exactly.
pub(super) fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if requested.contains('#') {
        return false;
    }
    if registered == requested {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(requested)) {
        (Some(registered), Some(requested)) => registered.host == requested.host && registered.rest == requested.rest,
        _ => false,
    }
}

/// An `http` URI on one of the [`LOOPBACK_HOSTS`], split around its port.
#[derive(Debug, PartialEq, Eq)]
struct LoopbackParts<'a> {
    host: &'a str,
    /// Path and query (and anything after), byte for byte.
    rest: &'a str,
}

/// The parts of `uri` if it is `http://HOST[:PORT]REST` with `HOST` one of the
/// [`LOOPBACK_HOSTS`], `PORT` a port number in canonical decimal (1 to 65535, no leading
/// zero), and no user information, read as the bytes are (no normalisation).
fn loopback_parts(uri: &str) -> Option<LoopbackParts<'_>> {
    let after_scheme = uri.strip_prefix("http://")?;
    let end = after_scheme.find(['/', '?', '#', '\\']).unwrap_or(after_scheme.len());
    let (authority, rest) = after_scheme.split_at(end);
    let host = LOOPBACK_HOSTS.into_iter().find(|host| authority.starts_with(host))?;
    match &authority[host.len()..] {
        "" => {}
        port => {
            let digits = port.strip_prefix(':')?;
            if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u16>().ok()?;
        }
    }
    Some(LoopbackParts { host, rest })
}

/// `redirect_uri` with `params` added to its query, the rest of it kept byte for byte.
pub(super) fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    let query = serializer.finish();
    let separator = match redirect_uri.split_once('?') {
        None => "?",
        Some((_, "")) => "",
        Some(_) if redirect_uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{redirect_uri}{separator}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        assert_eq!(redirect_uri_problem("https://app.example.com/callback"), None);
        assert_eq!(redirect_uri_problem("http://127.0.0.1:33418/callback"), None);
        assert_eq!(redirect_uri_problem("http://localhost:6274/oauth/callback"), None);
        assert_eq!(redirect_uri_problem("http://[::1]/cb"), None);
        assert_eq!(
            redirect_uri_problem("cursor://anysphere.cursor-retrieval/oauth/callback"),
            None
        );
        assert!(redirect_uri_problem("http://app.example.com/callback").is_some());
        assert!(redirect_uri_problem("javascript:alert(1)").is_some());
        assert!(redirect_uri_problem("https://app.example.com/cb#frag").is_some());
        assert!(redirect_uri_problem("/relative").is_some());
    }

    #[test]
    fn loopback_redirect_uris_match_with_any_port() {
        for (registered, requested) in [
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/callback"),
            ("http://127.0.0.1:33418/callback", "http://127.0.0.1:40000/callback"),
            ("http://127.0.0.1:33418/callback", "http://127.0.0.1/callback"),
            ("http://localhost/callback", "http://localhost:1/callback"),
            ("http://[::1]/cb?x=1", "http://[::1]:65535/cb?x=1"),
            ("http://127.0.0.1/", "http://127.0.0.1:8080/"),
            ("http://127.0.0.1", "http://127.0.0.1:8080"),
            ("https://app.example.com/cb", "https://app.example.com/cb"),
            ("http://127.0.0.2:80/cb", "http://127.0.0.2:80/cb"),
        ] {
            assert!(
                redirect_uri_matches(registered, requested),
                "{registered} ~ {requested}"
            );
        }
    }

    #[test]
    fn only_the_port_of_a_loopback_redirect_uri_is_free() {
        for (registered, requested) in [
            // Another host, also another loopback name or address.
            ("http://127.0.0.1/callback", "http://localhost:54321/callback"),
            ("http://localhost/callback", "http://127.0.0.1:54321/callback"),
            ("http://127.0.0.1/callback", "http://[::1]:54321/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.2:54321/callback"),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1.evil.example:54321/callback",
            ),
            ("http://localhost/callback", "http://localhost.evil.example/callback"),
            ("http://localhost/callback", "http://LOCALHOST:1/callback"),
            // Another path or query, however slight.
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/callback/"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/Callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/callback?x=1"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/a/../callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/%63allback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:54321/callback#x"),
            // Another scheme.
            ("http://127.0.0.1/callback", "https://127.0.0.1:54321/callback"),
            ("http://127.0.0.1/callback", "HTTP://127.0.0.1:54321/callback"),
            // User information or a host hidden behind one.
            ("http://127.0.0.1/callback", "http://user@127.0.0.1:54321/callback"),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:54321@evil.example/callback",
            ),
            (
                "http://127.0.0.1/callback",
                "http://127.0.0.1:54321\\@evil.example/callback",
            ),
            // Ports that are not one.
            ("http://127.0.0.1/callback", "http://127.0.0.1:/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:0/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:065535/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:65536/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:+80/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:8o/callback"),
            // Not loopback: exact only.
            ("https://app.example.com/cb", "https://app.example.com:8443/cb"),
            ("http://127.0.0.2/cb", "http://127.0.0.2:80/cb"),
            ("https://127.0.0.1/cb", "https://127.0.0.1:8443/cb"),
        ] {
            assert!(
                !redirect_uri_matches(registered, requested),
                "{registered} !~ {requested}"
            );
        }
    }

    #[test]
    fn query_is_appended_verbatim() {
        assert_eq!(
            with_query("http://localhost:1/cb", &[("code", "a b"), ("state", "s&t")]),
            "http://localhost:1/cb?code=a+b&state=s%26t"
        );
        assert_eq!(
            with_query("https://x/cb?k=v", &[("code", "c")]),
            "https://x/cb?k=v&code=c"
        );
        assert_eq!(with_query("https://x/cb?", &[("code", "c")]), "https://x/cb?code=c");
    }
}
