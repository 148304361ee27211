//! The mirrored request headers of MCP 2026-07-28 (`Mcp-Method`, `Mcp-Name`), read exactly as
//! rmcp 3.11 reads them: only when the request's single `MCP-Protocol-Version` is 2026-07-28
//! or later (compared as text, as rmcp does); each header at most once, visible ASCII only;
//! `Mcp-Name` decoded from the `=?base64?<standard base64>?=` form. A version that is not a
//! `YYYY-MM-DD` date is malformed (the transport answers an invalid version with 400). The
//! guard never decides on these headers: the body decides, and must say the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use super::HEADER_MISMATCH;
use super::message::Body;

/// The first protocol version whose requests carry mirrored headers.
pub(crate) const MIRRORED_HEADERS_SINCE: &str = "2026-07-28";

const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const METHOD: &str = "mcp-method";
const NAME: &str = "mcp-name";
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Why the headers were refused (the reason of the 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Repeated(&'static str),
    Invalid(&'static str),
    Missing(&'static str),
    Mismatch(&'static str),
    /// `MCP-Protocol-Version` is not a version (`YYYY-MM-DD`).
    MalformedVersion,
    /// A batch on a protocol version that has none: `-32600`, not a header mismatch.
    Batch,
}

impl HeaderError {
    /// The JSON-RPC error code: `-32600` for a batch, [`HEADER_MISMATCH`] otherwise.
    pub(crate) fn code(self) -> i32 {
        match self {
            HeaderError::Batch => -32600,
            _ => HEADER_MISMATCH,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            HeaderError::Repeated(PROTOCOL_VERSION_LABEL) => "Header mismatch: MCP-Protocol-Version is repeated",
            HeaderError::Repeated(METHOD_LABEL) => "Header mismatch: Mcp-Method is repeated",
            HeaderError::Repeated(_) => "Header mismatch: Mcp-Name is repeated",
            HeaderError::Invalid(PROTOCOL_VERSION_LABEL) | HeaderError::MalformedVersion => {
                "Header mismatch: MCP-Protocol-Version is malformed (not a YYYY-MM-DD version)"
            }
            HeaderError::Invalid(METHOD_LABEL) => "Header mismatch: Mcp-Method has invalid characters",
            HeaderError::Invalid(_) => "Header mismatch: Mcp-Name has invalid characters or Base64",
            HeaderError::Missing(METHOD_LABEL) => "Header mismatch: Mcp-Method is required",
            HeaderError::Missing(_) => "Header mismatch: Mcp-Name is required for this method",
            HeaderError::Mismatch(METHOD_LABEL) => "Header mismatch: Mcp-Method differs from the body's method",
            HeaderError::Mismatch(_) => "Header mismatch: Mcp-Name differs from the body",
            HeaderError::Batch => "Invalid Request: a batch is not a message of MCP 2026-07-28",
        }
    }
}

/// The label of `MCP-Protocol-Version` in errors.
const PROTOCOL_VERSION_LABEL: &str = "MCP-Protocol-Version";
/// The label of `Mcp-Method` in errors.
pub(crate) const METHOD_LABEL: &str = "Mcp-Method";
/// The label of `Mcp-Name` in errors.
pub(crate) const NAME_LABEL: &str = "Mcp-Name";

/// The mirrored headers of a request whose protocol version requires them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mirrored {
    pub(crate) method: Option<String>,
    /// Decoded.
    pub(crate) name: Option<String>,
}

/// `Ok(None)` for a request of an older (or no) protocol version, judged from its body alone;
/// `Ok(Some(..))` with the headers of a 2026-07-28 request; `Err` when they cannot be read
/// (a repeated or malformed `MCP-Protocol-Version` included).
pub(crate) fn read(headers: &HeaderMap) -> Result<Option<Mirrored>, HeaderError> {
    if !version(headers)? {
        return Ok(None);
    }
    let method = single(headers, METHOD, METHOD_LABEL)?.map(str::to_owned);
    let name = match single(headers, NAME, NAME_LABEL)? {
        Some(raw) => Some(decode(raw).ok_or(HeaderError::Invalid(NAME_LABEL))?),
        None => None,
    };
    Ok(Some(Mirrored { method, name }))
}

/// True if the request's single `MCP-Protocol-Version` is 2026-07-28 or later (a protocol
/// without sessions, whose requests mirror their body in headers); false with no version or
/// an older one; `Err` for a repeated or malformed one.
pub(crate) fn version(headers: &HeaderMap) -> Result<bool, HeaderError> {
    let Some(version) = single(headers, PROTOCOL_VERSION, PROTOCOL_VERSION_LABEL)? else {
        return Ok(false);
    };
    if !is_version(version) {
        return Err(HeaderError::MalformedVersion);
    }
    Ok(version >= MIRRORED_HEADERS_SINCE)
}

/// A protocol version is a date, `YYYY-MM-DD` (digits and dashes: compared as text, as rmcp
/// compares it).
fn is_version(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// Methods on which the transport requires `Mcp-Name` (SH, "Standard Request Headers").
const NAME_REQUIRED: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

/// The mirrored headers of a 2026-07-28 request against its body. `Mcp-Method` is required on
/// a request and `Mcp-Name` on the methods that require it; on a notification nothing is
/// required. A header that is sent must say what the body says (the name as rmcp mirrors it:
/// also `params.uri` of `resources/(un)subscribe` and `params.taskId` of `tasks/*`). A
/// response has nothing mirrored; a batch is not a 2026-07-28 message.
pub(crate) fn same_as_body(headers: &Mirrored, body: &Body) -> Result<(), HeaderError> {
    let Body::Single(message) = body else {
        return Err(HeaderError::Batch);
    };
    let Some(method) = &message.method else {
        return Ok(());
    };
    let request = message.is_request();
    match &headers.method {
        None if request => return Err(HeaderError::Missing(METHOD_LABEL)),
        Some(header) if header != method => return Err(HeaderError::Mismatch(METHOD_LABEL)),
        _ => {}
    }
    match (&message.mirrored_name, &headers.name) {
        (Some(_), None) if request && NAME_REQUIRED.contains(&method.as_str()) => Err(HeaderError::Missing(NAME_LABEL)),
        (Some(body), Some(header)) if body != header => Err(HeaderError::Mismatch(NAME_LABEL)),
        _ => Ok(()),
    }
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

    #[test]
    fn a_malformed_version_is_named_as_such() {
        for value in [&b"not-a-version"[..], b"2026-7-28", b"2026-07-28 ", b"caf\xc3\xa9", b""] {
            let headers = map(&[("mcp-protocol-version", value), ("mcp-name", b"x")]);
            let error = read(&headers).expect_err("malformed");
            assert!(
                error.message().contains("MCP-Protocol-Version is malformed"),
                "{value:?}"
            );
        }
        assert_eq!(version(&map(&[("mcp-protocol-version", b"2025-06-18")])), Ok(false));
        assert_eq!(version(&map(&[])), Ok(false));
    }

    #[test]
    fn only_the_transports_required_headers_are_required() {
        use crate::guard::mcp::message::read as body;
        let mirrored = |method: Option<&str>, name: Option<&str>| Mirrored {
            method: method.map(str::to_owned),
            name: name.map(str::to_owned),
        };
        let check = |headers: Mirrored, message: &str| same_as_body(&headers, &body(message.as_bytes()).unwrap());
        let subscribe = r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"a://b"}}"#;
        assert_eq!(check(mirrored(Some("resources/subscribe"), None), subscribe), Ok(()));
        assert_eq!(
            check(mirrored(Some("resources/subscribe"), Some("a://c")), subscribe),
            Err(HeaderError::Mismatch(NAME_LABEL))
        );
        let task = r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t"}}"#;
        assert_eq!(check(mirrored(Some("tasks/get"), None), task), Ok(()));
        let read = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b"}}"#;
        assert_eq!(
            check(mirrored(Some("resources/read"), None), read),
            Err(HeaderError::Missing(NAME_LABEL))
        );
        let note = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#;
        assert_eq!(check(mirrored(None, None), note), Ok(()));
        assert_eq!(
            check(mirrored(Some("notifications/progress"), None), note),
            Err(HeaderError::Mismatch(METHOD_LABEL))
        );
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(
            check(mirrored(None, None), list),
            Err(HeaderError::Missing(METHOD_LABEL))
        );
        let batch = format!("[{list},{list}]");
        let error = check(mirrored(Some("tools/list"), None), &batch).unwrap_err();
        assert_eq!((error, error.code()), (HeaderError::Batch, -32600));
    }
}
