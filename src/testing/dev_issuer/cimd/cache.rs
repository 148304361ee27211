//! Documents already fetched, kept for as long as their `Cache-Control` allows (RFC 9111),
//! at most [`MAX_LIFETIME`], and at most [`CAPACITY`] of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{AGE, CACHE_CONTROL};

use super::super::model::RegisteredClient;

/// Most documents kept at once.
pub(super) const CAPACITY: usize = 64;

/// Longest a document is kept, whatever its `max-age` says.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a `200` answer with these headers may be reused without asking again: its
/// `Cache-Control: max-age` less its `Age`, at most [`MAX_LIFETIME`]. `None` (not kept) when
/// it says `no-store` or `no-cache`, gives no `max-age` (no heuristic freshness: a document
/// being edited is read again), gives it twice or in a form that is not a number of seconds
/// (RFC 9111 §4.2.1: then stale), or is already stale.
pub(super) fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age: Option<u64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let value = value.to_str().ok()?;
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim())),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                let seconds = seconds(argument?)?;
                if max_age.is_some_and(|earlier| earlier != seconds) {
                    return None;
                }
                max_age = Some(seconds);
            }
        }
    }
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(seconds)
        .unwrap_or(0);
    let left = max_age?.checked_sub(age).filter(|left| *left > 0)?;
    Some(Duration::from_secs(left).min(MAX_LIFETIME))
}

/// A delta-seconds value (RFC 9111 §1.2.2), quoted or not; a huge one saturates.
fn seconds(value: &str) -> Option<u64> {
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// The clients described by documents fetched recently, by document URL.
#[derive(Debug, Default)]
pub(super) struct DocumentCache {
    entries: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    client: RegisteredClient,
    until: Instant,
}

impl DocumentCache {
    /// The client of the document at `url`, if it was fetched and is still fresh.
    pub(super) fn get(&mut self, url: &str, now: Instant) -> Option<RegisteredClient> {
        match self.entries.get(url) {
            Some(entry) if now < entry.until => Some(entry.client.clone()),
            Some(_) => {
                self.entries.remove(url);
                None
            }
            None => None,
        }
    }

    /// Keeps `client` until `until`; when full, forgets the stale documents, then the one
    /// that would go stale first.
    pub(super) fn put(&mut self, url: String, client: RegisteredClient, until: Instant, now: Instant) {
        if !self.entries.contains_key(&url) && self.entries.len() >= CAPACITY {
            self.entries.retain(|_, entry| now < entry.until);
            if self.entries.len() >= CAPACITY
                && let Some(first) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.until)
                    .map(|(url, _)| url.clone())
            {
                self.entries.remove(&first);
            }
        }
        self.entries.insert(url, Entry { client, until });
    }

    /// Forgets the document at `url` (a newer answer said not to keep it, or failed).
    pub(super) fn forget(&mut self, url: &str) {
        self.entries.remove(url);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::super::super::model::ClientKind;
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn fresh(pairs: &[(&str, &str)]) -> Option<u64> {
        freshness(&headers(pairs)).map(|d| d.as_secs())
    }

    #[test]
    fn max_age_less_age_capped_at_an_hour() {
        assert_eq!(fresh(&[("cache-control", "max-age=300")]), Some(300));
        assert_eq!(fresh(&[("cache-control", "public, MAX-AGE = \"60\"")]), Some(60));
        assert_eq!(fresh(&[("cache-control", "max-age=300"), ("age", "100")]), Some(200));
        assert_eq!(fresh(&[("cache-control", "max-age=300"), ("age", "bad")]), Some(300));
        assert_eq!(fresh(&[("cache-control", "max-age=86400")]), Some(3600));
        assert_eq!(
            fresh(&[("cache-control", "max-age=99999999999999999999999")]),
            Some(3600)
        );
        assert_eq!(
            fresh(&[("cache-control", "public"), ("cache-control", "max-age=30")]),
            Some(30)
        );
        assert_eq!(fresh(&[("cache-control", "max-age=30, max-age=30")]), Some(30));
    }

    #[test]
    fn what_is_not_kept() {
        assert_eq!(fresh(&[]), None);
        assert_eq!(fresh(&[("cache-control", "public")]), None);
        assert_eq!(fresh(&[("cache-control", "no-store, max-age=300")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=300, No-Cache")]), None);
        assert_eq!(
            fresh(&[("cache-control", "max-age=300"), ("cache-control", "no-store")]),
            None
        );
        assert_eq!(
            fresh(&[("cache-control", "no-cache=\"set-cookie\", max-age=300")]),
            None
        );
        assert_eq!(fresh(&[("cache-control", "max-age=0")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=300"), ("age", "300")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=-1")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=1e3")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age")]), None);
        assert_eq!(fresh(&[("cache-control", "max-age=30, max-age=60")]), None);
    }

    fn client(id: &str) -> RegisteredClient {
        RegisteredClient {
            client_id: id.to_owned(),
            kind: ClientKind::MetadataDocument,
            redirect_uris: vec!["http://127.0.0.1/cb".to_owned()],
            token_endpoint_auth_method: "none".to_owned(),
            grant_types: vec!["authorization_code".to_owned()],
        }
    }

    #[test]
    fn entries_end_and_the_cache_stays_bounded() {
        let now = Instant::now();
        let mut cache = DocumentCache::default();
        cache.put("a".into(), client("a"), now + Duration::from_secs(10), now);
        assert!(cache.get("a", now).is_some());
        assert!(cache.get("a", now + Duration::from_secs(10)).is_none());
        assert_eq!(cache.len(), 0, "a stale entry is dropped when read");

        for i in 0..CAPACITY {
            let secs = 100 + u64::try_from(i).unwrap();
            cache.put(format!("u{i}"), client("x"), now + Duration::from_secs(secs), now);
        }
        assert_eq!(cache.len(), CAPACITY);
        cache.put("new".into(), client("new"), now + Duration::from_secs(50), now);
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.get("u0", now).is_none(), "the one going stale first made room");
        assert!(cache.get("new", now).is_some());
        assert!(cache.get("u1", now).is_some());
        cache.forget("u1");
        assert!(cache.get("u1", now).is_none());
    }
}
