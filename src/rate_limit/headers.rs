//! The rate-limit headers of a response: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! draft "RateLimit header fields for HTTP": structured-field lists, a policy named after the
//! gateway's rule label with its quota `q` and window `w` in seconds; the remaining budget `r`
//! and seconds to its reset `t`), and the gateway's own `X-RateLimit-<W>-*` names, opt-in.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{RateLimitHeaders, Usage};

/// `RateLimit-Policy`.
pub(crate) static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Seconds, rounded up.
pub(crate) fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Adds the headers `which` names for `usage`; `spent` adds the gateway's `-reset` too.
pub(crate) fn insert(headers: &mut HeaderMap, which: RateLimitHeaders, usage: &Usage, spent: bool) {
    if which == RateLimitHeaders::None {
        return;
    }
    // The rule label is the gateway's (`<n>/<n>s`): digits, `/`, `ms` or `s`; anything else
    // would not be a valid structured-field string, and is not named.
    if !usage.rule.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/') {
        return;
    }
    let window = ceil_secs(usage.window).max(1);
    let put = |headers: &mut HeaderMap, name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    put(
        headers,
        POLICY.clone(),
        format!("\"{}\";q={};w={window}", usage.rule, usage.limit),
    );
    put(
        headers,
        RATELIMIT.clone(),
        format!("\"{}\";r={};t={}", usage.rule, usage.remaining, ceil_secs(usage.reset)),
    );
    if which == RateLimitHeaders::StandardAndWacht
        && let Some((_, w)) = usage.rule.split_once('/')
    {
        let name = |suffix: &str| HeaderName::try_from(format!("x-ratelimit-{}-{suffix}", w.to_ascii_lowercase())).ok();
        if let Some(n) = name("limit") {
            put(headers, n, usage.limit.to_string());
        }
        if let Some(n) = name("remaining") {
            put(headers, n, usage.remaining.to_string());
        }
        if spent && let Some(n) = name("reset") {
            // As the gateway writes it: milliseconds.
            put(headers, n, usage.reset.as_millis().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn usage() -> Usage {
        Usage {
            rule: "1000/60s".into(),
            limit: 1000,
            remaining: 17,
            reset: Duration::from_millis(12_400),
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn standard_fields_name_the_rule() {
        let mut h = HeaderMap::new();
        insert(&mut h, RateLimitHeaders::Standard, &usage(), false);
        assert_eq!(h["ratelimit-policy"], "\"1000/60s\";q=1000;w=60");
        assert_eq!(h["ratelimit"], "\"1000/60s\";r=17;t=13");
        assert!(h.get("x-ratelimit-60s-limit").is_none());
    }

    #[test]
    fn the_gateway_names_are_opt_in() {
        let mut h = HeaderMap::new();
        insert(&mut h, RateLimitHeaders::StandardAndWacht, &usage(), true);
        assert_eq!(h["x-ratelimit-60s-limit"], "1000");
        assert_eq!(h["x-ratelimit-60s-remaining"], "17");
        assert_eq!(h["x-ratelimit-60s-reset"], "12400");
        let mut none = HeaderMap::new();
        insert(&mut none, RateLimitHeaders::None, &usage(), true);
        assert!(none.is_empty());
    }

    #[test]
    fn a_label_of_another_form_is_not_echoed() {
        let mut h = HeaderMap::new();
        let u = Usage {
            rule: "1\"/60s".into(),
            ..usage()
        };
        insert(&mut h, RateLimitHeaders::Standard, &u, false);
        assert!(h.is_empty());
    }
}
