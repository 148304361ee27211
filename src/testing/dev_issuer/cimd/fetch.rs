//! Fetching one client metadata document safely: the host resolved here, every address it
//! resolves to checked ([`address`](super::address)), the connection made to those addresses
//! only (no second lookup a DNS rebinding could answer differently, no proxy, no redirect),
//! the answer bounded in size. The caller bounds the time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::ACCEPT;
use serde_json::Value;
use url::{Host, Url};

use super::address::{Reach, reach};

/// Largest document read; the draft suggests 5 KB, real documents are well below this.
const DOCUMENT_LIMIT: usize = 64 * 1024;

/// Where documents may come from, besides public addresses.
#[derive(Debug, Clone, Default)]
pub(super) struct Policy {
    /// Loopback ports documents may be fetched from.
    pub(super) loopback_ports: Vec<u16>,
    /// Host names resolved without DNS.
    pub(super) hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// A document as fetched: its JSON, and how long it may be reused.
pub(super) struct Fetched {
    pub(super) document: Value,
    pub(super) fresh_for: Option<Duration>,
}

/// Why a fetch failed, for the debug log only (it never reaches the browser).
pub(super) type Reason = String;

/// Whether `host` is a `localhost` name, which always means this machine (RFC 6761 §6.3): it
/// is resolved to the loopback addresses here, never by DNS.
pub(super) fn is_localhost_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost")
}

/// The addresses the host of `url` resolves to, each checked for `port`; `Err` names the
/// first address refused (a mixed answer is refused whole).
async fn vetted_addresses(url: &Url, port: u16, policy: &Policy) -> Result<Vec<IpAddr>, Reason> {
    let addresses: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(name)) if is_localhost_name(name) => {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        }
        Some(Host::Domain(name)) => match policy.hosts.get(name) {
            Some(addresses) => addresses.clone(),
            None => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| format!("{name} does not resolve"))?
                .map(|socket| socket.ip())
                .collect(),
        },
        None => return Err("the URL has no host".to_owned()),
    };
    if addresses.is_empty() {
        return Err("the host resolves to no address".to_owned());
    }
    for ip in &addresses {
        match reach(*ip) {
            Reach::Public => {}
            Reach::Loopback if policy.loopback_ports.contains(&port) => {}
            Reach::Loopback => return Err(format!("{ip} is loopback, and port {port} is not allowed")),
            Reach::Internal => return Err(format!("{ip} is not a public address")),
        }
    }
    Ok(addresses)
}

/// Fetches the document at `url` (its form already checked), calling `sending` just before
/// the request leaves.
pub(super) async fn fetch(url: &Url, policy: &Policy, sending: impl FnOnce()) -> Result<Fetched, Reason> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_owned())?;
    let addresses = vetted_addresses(url, port, policy).await?;
    let sockets: Vec<SocketAddr> = addresses.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(NoLookup))
        .user_agent(concat!("tower-wacht-dev-issuer/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(name)) = url.host() {
        builder = builder.resolve_to_addrs(name, &sockets);
    }
    let client = builder
        .build()
        .map_err(|_| "the HTTP client cannot be built".to_owned())?;
    sending();
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| network_reason(&err))?;
    if response.status() != StatusCode::OK {
        return Err(format!("it answered HTTP {}", response.status().as_u16()));
    }
    let fresh_for = super::cache::freshness(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| network_reason(&err))? {
        if body.len() + chunk.len() > DOCUMENT_LIMIT {
            return Err(format!("it is larger than {DOCUMENT_LIMIT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let document = serde_json::from_slice(&body).map_err(|_| "it is not JSON".to_owned())?;
    Ok(Fetched { document, fresh_for })
}

/// A reqwest error without its URL (known to the caller).
fn network_reason(err: &reqwest::Error) -> Reason {
    if err.is_timeout() {
        "it timed out".to_owned()
    } else if err.is_connect() {
        "no connection could be made".to_owned()
    } else {
        "the exchange failed".to_owned()
    }
}

/// The resolver of a fetch's client: every name it may use is pinned to checked addresses
/// (`resolve_to_addrs`), so any other lookup is refused.
struct NoLookup;

impl reqwest::dns::Resolve for NoLookup {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(std::future::ready(Err("names are resolved before the fetch".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost_name("localhost"));
        assert!(is_localhost_name("localhost."));
        assert!(is_localhost_name("app.localhost"));
        assert!(!is_localhost_name("localhost.example.com"));
        assert!(!is_localhost_name("notlocalhost"));
    }

    async fn check(policy: &Policy, u: &str) -> Result<Vec<IpAddr>, Reason> {
        let u = url(u);
        let port = u.port_or_known_default().unwrap();
        vetted_addresses(&u, port, policy).await
    }

    #[tokio::test]
    async fn addresses_are_checked_after_resolution() {
        let mut policy = Policy::default();
        policy
            .hosts
            .insert("internal.test".into(), vec!["10.0.0.5".parse().unwrap()]);
        policy.hosts.insert(
            "mixed.test".into(),
            vec!["93.184.215.14".parse().unwrap(), "169.254.169.254".parse().unwrap()],
        );
        policy
            .hosts
            .insert("public.test".into(), vec!["93.184.215.14".parse().unwrap()]);
        policy
            .hosts
            .insert("here.test".into(), vec!["127.0.0.1".parse().unwrap()]);
        policy.hosts.insert("nowhere.test".into(), Vec::new());

        assert!(check(&policy, "https://public.test/c.json").await.is_ok());
        assert!(check(&policy, "https://internal.test/c.json").await.is_err());
        assert!(check(&policy, "https://mixed.test/c.json").await.is_err());
        assert!(check(&policy, "https://here.test/c.json").await.is_err());
        assert!(check(&policy, "https://nowhere.test/c.json").await.is_err());
        assert!(check(&policy, "http://localhost:8080/c.json").await.is_err());
        assert!(check(&policy, "http://127.0.0.1:8080/c.json").await.is_err());
        assert!(check(&policy, "https://[::ffff:7f00:1]/c.json").await.is_err());

        policy.loopback_ports.push(8080);
        let allowed = check(&policy, "http://localhost:8080/c.json").await.unwrap();
        assert_eq!(
            allowed,
            ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert!(check(&policy, "http://127.0.0.1:8080/c.json").await.is_ok());
        assert!(check(&policy, "http://[::1]:8080/c.json").await.is_ok());
        assert!(check(&policy, "http://here.test:8080/c.json").await.is_ok());
        assert!(check(&policy, "http://127.0.0.1:8081/c.json").await.is_err());
        assert!(check(&policy, "http://[::ffff:7f00:1]:8080/c.json").await.is_err());
        assert!(check(&policy, "http://0.0.0.0:8080/c.json").await.is_err());
    }
}
