//! The mirrored request headers of MCP 2026-07-28 (`Mcp-Method`, `Mcp-Name`), read exactly as
//! rmcp 3.11 reads them: only when the request's single `MCP-Protocol-Version` is 2026-07-28
//! or later (compared as text, as rmcp does); each header at most once, visible ASCII only;
//! `Mcp-Name` decoded from the `=?base64?<standard base64>?=` form. The guard may refuse early
//! from these headers, but it never lets a call through on them: the body must say the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

/// The first protocol version whose requests carry mirrored headers.
pub(crate) const MIRRORED_HEADERS_SINCE: &str = "2026-07-28";

const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const METHOD: &str = "mcp-method";
const NAME: &str = "mcp-name";
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Why the headers were refused (the reason of the 400 -32020).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Repeated(&'static str),
    Invalid(&'static str),
    Missing(&'static str),
    Mismatch(&'static str),
    Batch,
}

impl HeaderError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            HeaderError::Repeated("MCP-Protocol-Version") => "Header mismatch: MCP-Protocol-Version is repeated",
            HeaderError::Repeated("Mcp-Method") => "Header mismatch: Mcp-Method is repeated",
            HeaderError::Repeated(_) => "Header mismatch: Mcp-Name is repeated",
            HeaderError::Invalid("Mcp-Method") => "Header mismatch: Mcp-Method has invalid characters",
            HeaderError::Invalid(_) => "Header mismatch: Mcp-Name has invalid characters or Base64",
            HeaderError::Missing("Mcp-Method") => "Header mismatch: Mcp-Method is required",
            HeaderError::Missing(_) => "Header mismatch: Mcp-Name is required for this method",
            HeaderError::Mismatch("Mcp-Method") => "Header mismatch: Mcp-Method differs from the body's method",
            HeaderError::Mismatch(_) => "Header mismatch: Mcp-Name differs from the body",
            HeaderError::Batch => "Header mismatch: a batch cannot match the mirrored headers",
        }
    }
}

/// The mirrored headers of a request whose protocol version requires them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mirrored {
    pub(crate) method: Option<String>,
    /// Decoded.
    pub(crate) name: Option<String>,
}

/// `Ok(None)` for a request of an older (or no) protocol version, judged from its body alone;
/// `Ok(Some(..))` with the headers of a 2026-07-28 request; `Err` when they cannot be read.
pub(crate) fn read(headers: &HeaderMap) -> Result<Option<Mirrored>, HeaderError> {
    let Some(version) = single(headers, PROTOCOL_VERSION, "MCP-Protocol-Version")? else {
        return Ok(None);
    };
    if version < MIRRORED_HEADERS_SINCE {
        return Ok(None);
    }
    let method = single(headers, METHOD, "Mcp-Method")?.map(str::to_owned);
    let name = match single(headers, NAME, "Mcp-Name")? {
        Some(raw) => Some(decode(raw).ok_or(HeaderError::Invalid("Mcp-Name"))?),
        None => None,
    };
    Ok(Some(Mirrored { method, name }))
}

/// The only value of a header, as visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &str, label: &'static str) -> Result<Option<&'a str>, HeaderError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HeaderError::Repeated(label));
    }
    value.to_str().map(Some).map_err(|_| HeaderError::Invalid(label))
}

/// rmcp's decoding: `=?base64?…?=` is padded standard Base64 of UTF-8; anything else is the
/// value itself.
pub(crate) fn decode(value: &str) -> Option<String> {
    match value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|v| v.strip_suffix(BASE64_SUFFIX))
    {
        Some(inner) => String::from_utf8(STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn read_only_from_2026_07_28() {
        let h = |v: &[u8]| {
            map(&[
                ("mcp-protocol-version", v),
                ("mcp-method", b"tools/call"),
                ("mcp-name", b"x"),
            ])
        };
        assert_eq!(read(&h(b"2025-11-25")), Ok(None));
        assert_eq!(read(&map(&[("mcp-method", b"tools/call")])), Ok(None));
        assert_eq!(
            read(&h(b"2026-07-28")),
            Ok(Some(Mirrored {
                method: Some("tools/call".into()),
                name: Some("x".into())
            }))
        );
        assert_eq!(read(&h(b"2027-01-01")).map(|m| m.is_some()), Ok(true));
    }

    #[test]
    fn repeated_or_undecodable_headers_are_refused() {
        let v: (&str, &[u8]) = ("mcp-protocol-version", b"2026-07-28");
        assert_eq!(read(&map(&[v, v])), Err(HeaderError::Repeated("MCP-Protocol-Version")));
        assert_eq!(
            read(&map(&[v, ("mcp-method", b"a"), ("mcp-method", b"b")])),
            Err(HeaderError::Repeated("Mcp-Method"))
        );
        assert_eq!(
            read(&map(&[v, ("mcp-name", b"a"), ("mcp-name", b"a")])),
            Err(HeaderError::Repeated("Mcp-Name"))
        );
        assert_eq!(
            read(&map(&[v, ("mcp-name", b"=?base64?!!?=")])),
            Err(HeaderError::Invalid("Mcp-Name"))
        );
        assert_eq!(
            read(&map(&[v, ("mcp-name", b"=?base64?/w==?=")])),
            Err(HeaderError::Invalid("Mcp-Name")),
            "not UTF-8"
        );
        assert_eq!(
            read(&map(&[v, ("mcp-name", "caf\u{e9}".as_bytes())])),
            Err(HeaderError::Invalid("Mcp-Name"))
        );
    }

    #[test]
    fn the_sentinel_decodes_as_rmcp_does() {
        assert_eq!(decode("=?base64?IHdob2FtaSA=?=").as_deref(), Some(" whoami "));
        assert_eq!(decode("=?base64?d2hvYW1p?=").as_deref(), Some("whoami"));
        assert_eq!(decode("whoami").as_deref(), Some("whoami"));
        assert_eq!(
            decode("=?BASE64?d2hvYW1p?=").as_deref(),
            Some("=?BASE64?d2hvYW1p?="),
            "markers are case-sensitive"
        );
        assert_eq!(decode("=?base64?d2hvYW1p?="), Some("whoami".into()));
        assert_eq!(
            decode("=?base64?d2hvYW1p?"),
            Some("=?base64?d2hvYW1p?".into()),
            "no suffix: plain"
        );
        assert_eq!(decode("=?base64?d2hvYW1?="), None, "unpadded");
    }
}
