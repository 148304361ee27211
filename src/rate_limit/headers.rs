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

/// A rule label the fields may name: the gateway's `<digits>/<digits>(s|ms)`; anything else
/// would not be a plain structured-field string, and is not named.
fn plain(label: &str) -> bool {
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/')
}

/// The `RateLimit-Policy` field of a rule (made once per rule). The window `w` is whole
/// seconds; a window that is not (`20/500ms`) is left out rather than rounded, which would
/// state another rate (`w` is optional).
pub(crate) fn policy(label: &str, limit: u64, window_ms: u64) -> Option<HeaderValue> {
    if !plain(label) {
        return None;
    }
    let field = match window_ms {
        0 => return None,
        ms if ms % 1000 == 0 => format!("\"{label}\";q={limit};w={}", ms / 1000),
        _ => format!("\"{label}\";q={limit}"),
    };
    HeaderValue::try_from(field).ok()
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery: this runs
/// on every response).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// How many digits [`push_decimal`] writes for `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The `RateLimit` field: `"<rule>";r=<remaining>;t=<seconds to reset>`.
fn ratelimit_field(label: &str, remaining: u64, reset_secs: u64) -> Option<HeaderValue> {
    // Exactly as long as the field: a full `Vec` becomes the header value's `Bytes` without
    // a second allocation for its shared state.
    let len = 1 + label.len() + 4 + decimal_len(remaining) + 3 + decimal_len(reset_secs);
    let mut field = Vec::with_capacity(len);
    field.push(b'"');
    field.extend_from_slice(label.as_bytes());
    field.extend_from_slice(b"\";r=");
    push_decimal(&mut field, remaining);
    field.extend_from_slice(b";t=");
    push_decimal(&mut field, reset_secs);
    debug_assert_eq!(field.len(), len);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(field)).ok()
}

/// Adds the headers `which` names for `usage`; `spent` adds the gateway's `-reset` too.
/// Nothing for a rule whose label the fields may not name (it has no policy field).
///
/// The standard fields are lists: they are appended, so that the policies a handler reports
/// itself (its own limiter's) stay next to Wacht's rather than being replaced by a looser
/// statement.
pub(crate) fn insert(headers: &mut HeaderMap, which: RateLimitHeaders, usage: &Usage, spent: bool) {
    let rule = &*usage.rule;
    let Some(policy) = rule.policy.as_ref().filter(|_| which != RateLimitHeaders::None) else {
        return;
    };
    headers.append(POLICY.clone(), policy.clone());
    if let Some(field) = ratelimit_field(&rule.label, usage.remaining, ceil_secs(usage.reset)) {
        headers.append(RATELIMIT.clone(), field);
    }
    if which == RateLimitHeaders::StandardAndWacht
        && let Some((_, w)) = rule.label.split_once('/')
    {
        let put = |headers: &mut HeaderMap, suffix: &str, value: String| {
            let name = HeaderName::try_from(format!("x-ratelimit-{}-{suffix}", w.to_ascii_lowercase()));
            if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                headers.insert(name, value);
            }
        };
        put(headers, "limit", rule.limit.to_string());
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

    fn usage_of(label: &str, policy: Option<HeaderValue>) -> Usage {
        Usage {
            rule: std::sync::Arc::new(super::super::Rule {
                label: label.into(),
                limit: 1000,
                window_ms: 60_000,
                policy,
            }),
            remaining: 17,
            reset: Duration::from_millis(12_400),
        }
    }

    fn usage() -> Usage {
        usage_of("1000/60s", policy("1000/60s", 1000, 60_000))
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
        insert(&mut h, RateLimitHeaders::Standard, &usage_of("1000/60s", made), false);
        assert_eq!(h["ratelimit-policy"], "\"1000/60s\";q=1000;w=60");
        assert_eq!(policy("1\"/60s", 1, 60_000), None);
    }

    #[test]
    fn a_window_of_part_seconds_is_not_rounded_into_another_rate() {
        assert_eq!(
            policy("20/500ms", 20, 500).as_ref().map(|v| v.to_str().unwrap()),
            Some("\"20/500ms\";q=20")
        );
        assert_eq!(
            policy("20/1500ms", 20, 1500).as_ref().map(|v| v.to_str().unwrap()),
            Some("\"20/1500ms\";q=20")
        );
        assert_eq!(
            policy("20/2000ms", 20, 2000).as_ref().map(|v| v.to_str().unwrap()),
            Some("\"20/2000ms\";q=20;w=2")
        );
    }

    #[test]
    fn numbers_are_written_as_write_would() {
        for n in [0, 7, 10, 999, 1000, 4_000_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
            assert_eq!(decimal_len(n), out.len());
        }
    }

    #[test]
    fn a_label_of_another_form_is_not_echoed() {
        let mut h = HeaderMap::new();
        let u = usage_of("1\"/60s", policy("1\"/60s", 1000, 60_000));
        insert(&mut h, RateLimitHeaders::Standard, &u, false);
        assert!(h.is_empty());
    }
}
