//! RFC 3339 timestamps as the gateway writes them (`2026-06-29T14:05:11.482913Z`).

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses an RFC 3339 timestamp into a `SystemTime`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(SystemTime::from)
}

/// Formats a `SystemTime` as RFC 3339 in UTC.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("invalid-time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trips_gateway_timestamps() {
        let t = parse_rfc3339("2026-06-29T14:05:11.482913Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::new(1_782_741_911, 482_913_000));
        assert_eq!(rfc3339(t), "2026-06-29T14:05:11.482913Z");
        assert!(parse_rfc3339("2026-06-29T14:05:11Z").is_some());
        assert!(parse_rfc3339("tomorrow").is_none());
    }
}
