//! The rate-limit headers of a response: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! draft "RateLimit header fields for HTTP": structured-field lists, a policy named after the
//! gateway's rule label with its quota `q` and window `w` in seconds; the remaining budget `r`
//! and seconds to its reset `t`), and the gateway's own `X-RateLimit-<W>-*` names, opt-in.

use std::fmt::Write as _;

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

/// A rule label the fields may name: the gateway's `<digits>/<digits>(s|ms)`; anything else
/// would not be a plain structured-field string, and is not named.
fn plain(label: &str) -> bool {
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/')
}

/// The `RateLimit-Policy` field of a rule (made once per rule).
pub(crate) fn policy(label: &str, limit: u64, window_ms: u64) -> Option<HeaderValue> {
    if !plain(label) {
        return None;
    }
    let window = window_ms.div_ceil(1000).max(1);
    HeaderValue::try_from(format!("\"{label}\";q={limit};w={window}")).ok()
}

/// Adds the headers `which` names for `usage`; `spent` adds the gateway's `-reset` too.
pub(crate) fn insert(headers: &mut HeaderMap, which: RateLimitHeaders, usage: &Usage, spent: bool) {
    if which == RateLimitHeaders::None || !plain(&usage.rule) {
        return;
    }
    let policy = match &usage.policy {
        Some(policy) => Some(policy.clone()),
        None => policy(&usage.rule, usage.limit, usage.window.as_millis() as u64),
    };
    if let Some(policy) = policy {
        headers.insert(POLICY.clone(), policy);
    }
    let mut now = String::with_capacity(usage.rule.len() + 24);
    let _ = write!(
        now,
        "\"{}\";r={};t={}",
        usage.rule,
        usage.remaining,
        ceil_secs(usage.reset)
    );
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(now)) {
        headers.insert(RATELIMIT.clone(), value);
    }
    if which == RateLimitHeaders::StandardAndWacht
        && let Some((_, w)) = usage.rule.split_once('/')
    {
        let put = |headers: &mut HeaderMap, suffix: &str, value: String| {
            let name = HeaderName::try_from(format!("x-ratelimit-{}-{suffix}", w.to_ascii_lowercase()));
            if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                headers.insert(name, value);
            }
        };
        put(headers, "limit", usage.limit.to_string());
        put(headers, "remaining", usage.remaining.to_string());
        if spent {
            // As the gateway writes it: milliseconds.
            put(headers, "reset", usage.reset.as_millis().to_string());
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
            policy: None,
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
    fn the_policy_made_once_is_the_one_written() {
        let made = policy("1000/60s", 1000, 60_000);
        assert_eq!(
            made.as_ref().map(|v| v.to_str().unwrap()),
            Some("\"1000/60s\";q=1000;w=60")
        );
        let mut h = HeaderMap::new();
        insert(
            &mut h,
            RateLimitHeaders::Standard,
            &Usage {
                policy: made,
                ..usage()
            },
            false,
        );
        assert_eq!(h["ratelimit-policy"], "\"1000/60s\";q=1000;w=60");
        assert_eq!(policy("1\"/60s", 1, 60_000), None);
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
