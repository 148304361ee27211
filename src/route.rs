//! What the layer tells the gateway a request is accessing: the `method` and `resource` of its
//! authz check, which Wacht matches against per-endpoint rate-limit rules and writes into its
//! audit line (`"<METHOD> <resource>"`). Only a cache miss sends them (a hit asks no one), so
//! they are worked out on a miss only; the cached decision is keyed by the credential alone.
//!
//! Three modes, chosen on the [`WachtAuthConfigBuilder`](crate::WachtAuthConfigBuilder):
//!
//! * **From the request** (the default,
//!   [`report_request_route`](crate::WachtAuthConfigBuilder::report_request_route)): see
//!   [`RouteRequest::automatic`] for exactly what is reported.
//! * **Fixed** ([`report_fixed`](crate::WachtAuthConfigBuilder::report_fixed), or the
//!   [`method`](crate::WachtAuthConfigBuilder::method) /
//!   [`resource`](crate::WachtAuthConfigBuilder::resource) setters): the same values on every
//!   miss.
//! * **Your mapping** ([`report_route`](crate::WachtAuthConfigBuilder::report_route)): a
//!   function of the [`RouteRequest`]; `None` falls back to the automatic route.
//!
//! Whatever the mode, what is sent is bounded: a method outside the gateway's allow-list is
//! sent as [`FALLBACK_METHOD`] (the gateway answers 400 for any other, which would fail the
//! request with 503), and a resource never carries a query string or fragment, always starts
//! with `/` and is at most [`MAX_RESOURCE_LEN`] bytes.

use http::header::CONTENT_TYPE;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// What a method outside the gateway's allow-list (GET, POST, PUT, PATCH, DELETE, HEAD,
/// OPTIONS) is reported as: `CONNECT`, `TRACE`, WebDAV's `PROPFIND`, any extension method.
/// The gateway answers 400 for any other method, which the layer would have to turn into a
/// 503; it uses the method for its audit line only, where POST (the method whose processing
/// is the resource's own) claims least about what the request did.
pub const FALLBACK_METHOD: Method = Method::POST;

/// The longest resource reported, in bytes: a longer one is cut to this length (at a
/// character boundary). Bounds what one request can put into the gateway's audit log and
/// rate-limit keys, whatever its path.
pub const MAX_RESOURCE_LEN: usize = 256;

/// The first MCP protocol version whose requests mirror their method and name in headers.
const MCP_MIRRORED_SINCE: &str = "2026-07-28";
/// The longest `Mcp-Method` and `Mcp-Name` value used in a route.
const MCP_MAX_PART: usize = 128;

/// The request whose route is reported: the view a [`report_route`](crate::WachtAuthConfigBuilder::report_route)
/// mapping reads, and what [`automatic`](Self::automatic) works from.
///
/// Its headers are the request's as it arrived, its credential included: report nothing
/// taken from `Authorization` or the API-key header.
#[derive(Clone, Copy)]
pub struct RouteRequest<'a> {
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

/// The method, path and version only: never the headers (the credential) or the query.
impl std::fmt::Debug for RouteRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRequest")
            .field("method", self.method)
            .field("path", &self.path())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<'a> RouteRequest<'a> {
    /// The view of `request` (to test a mapping, for instance).
    pub fn of<B>(request: &'a Request<B>) -> Self {
        RouteRequest {
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The request's HTTP method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI. Its query may hold secrets: report [`path`](Self::path) or a
    /// template, never the query.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request's path, without its query.
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The request's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request's headers (its credential included).
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request's extensions (Axum's `MatchedPath`, `ConnectInfo`, your own).
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The route template Axum matched (`/projects/{id}`), when the layer runs inside the
    /// router (`Router::layer` or `Router::route_layer`) and a route matched.
    #[cfg(feature = "axum")]
    pub fn matched_path(&self) -> Option<&'a str> {
        self.extensions
            .get::<axum::extract::MatchedPath>()
            .map(axum::extract::MatchedPath::as_str)
    }

    /// The route reported by default: the request's method, mapped into the gateway's
    /// allow-list ([`FALLBACK_METHOD`] for any other), and as resource, the first that
    /// applies of:
    ///
    /// 1. a gRPC call (content type `application/grpc…`, gRPC-Web included): its method path,
    ///    `/package.Service/Method`;
    /// 2. an MCP request of protocol 2026-07-28 or later (a `POST` with a single
    ///    `MCP-Protocol-Version` of that form and a single `Mcp-Method` header): the endpoint's
    ///    route (3 or 4), then `/` and the MCP method, then for `tools/call` and `prompts/get`
    ///    `/` and the tool or prompt name from `Mcp-Name`: `/mcp/tools/call/get_weather`,
    ///    `/mcp/prompts/get/summarize`, `/mcp/tools/list`. A method or name is used only when
    ///    it is at most 128 characters of `A-Z a-z 0-9 _ . -` (and `/` in a method), the
    ///    characters MCP recommends for tool names; otherwise the route stops before it. A
    ///    resource URI (`resources/read`) or task id is never reported: it may name anything.
    ///    The headers are the client's word, read without the body: the MCP server refuses
    ///    a request whose body says otherwise;
    /// 3. the route template Axum matched, [`matched_path`](Self::matched_path)
    ///    (`/projects/{id}`, not `/projects/42`);
    /// 4. the request's path, without its query.
    ///
    /// Then bounded as every reported resource is (see the [module](self)).
    pub fn automatic(&self) -> (Method, String) {
        (allowed(self.method).clone(), bounded(&self.automatic_resource()))
    }

    /// The resource of [`automatic`](Self::automatic), not yet bounded.
    fn automatic_resource(&self) -> String {
        self.automatic_unbounded().into_owned()
    }

    /// The resource of [`automatic`](Self::automatic), bounded, borrowed from the request
    /// where it needs no change (a hit's rate-limit meters read it on every request).
    #[inline]
    pub(crate) fn automatic_bounded(&self) -> std::borrow::Cow<'a, str> {
        match self.automatic_unbounded() {
            std::borrow::Cow::Borrowed(resource) if is_bounded(resource) => std::borrow::Cow::Borrowed(resource),
            resource => std::borrow::Cow::Owned(bounded(&resource)),
        }
    }

    fn automatic_unbounded(&self) -> std::borrow::Cow<'a, str> {
        // gRPC calls and MCP requests are POSTs: a GET reads no header here.
        let post = self.method == Method::POST;
        if post && is_grpc(self.headers) {
            return std::borrow::Cow::Borrowed(self.path());
        }
        let base = self.template().unwrap_or_else(|| self.path());
        match post.then(|| self.mcp_suffix()).flatten() {
            Some(suffix) => std::borrow::Cow::Owned(format!("{}{suffix}", base.trim_end_matches('/'))),
            None => std::borrow::Cow::Borrowed(base),
        }
    }

    /// The route template, where the framework has one.
    fn template(&self) -> Option<&'a str> {
        #[cfg(feature = "axum")]
        return self.matched_path();
        #[cfg(not(feature = "axum"))]
        None
    }

    /// `/<method>[/<name>]` of an MCP 2026-07-28 request, from its mirrored headers.
    fn mcp_suffix(&self) -> Option<String> {
        let (method, name) = self.mcp_parts()?;
        let mut suffix = format!("/{method}");
        if let Some(name) = name {
            suffix.push('/');
            suffix.push_str(name);
        }
        Some(suffix)
    }

    /// The MCP method and, for `tools/call` and `prompts/get`, the tool or prompt name of an
    /// MCP 2026-07-28 request, as its automatic route names them.
    pub(crate) fn mcp_parts(&self) -> Option<(&'a str, Option<&'a str>)> {
        if self.method != Method::POST {
            return None;
        }
        let version = single(self.headers, "mcp-protocol-version")?;
        if !is_version(version) || version < MCP_MIRRORED_SINCE {
            return None;
        }
        let method = single(self.headers, "mcp-method").filter(|m| is_mcp_part(m, true))?;
        let name = if matches!(method, "tools/call" | "prompts/get") {
            single(self.headers, "mcp-name").filter(|n| is_mcp_part(n, false))
        } else {
            None
        };
        Some((method, name))
    }
}

/// The method as the gateway takes it: one of its allow-list, else [`FALLBACK_METHOD`].
pub(crate) fn allowed(method: &Method) -> &Method {
    match *method {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            method
        }
        _ => &FALLBACK_METHOD,
    }
}

/// A resource as it may be reported: whitespace trimmed, cut before any `?` or `#` (a query
/// may hold secrets), `/` in front, `/` alone for nothing left, at most [`MAX_RESOURCE_LEN`]
/// bytes (cut at a character boundary).
pub(crate) fn bounded(resource: &str) -> String {
    let resource = resource.trim();
    let cut = resource.find(['?', '#']).unwrap_or(resource.len());
    let resource = resource[..cut].trim();
    let mut out = String::with_capacity(resource.len().min(MAX_RESOURCE_LEN) + 1);
    if !resource.starts_with('/') {
        out.push('/');
    }
    for c in resource.chars() {
        if out.len() + c.len_utf8() > MAX_RESOURCE_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// True if [`bounded`] would return `resource` unchanged (one pass over its bytes: a hit's
/// meters ask on every request).
#[inline]
fn is_bounded(resource: &str) -> bool {
    let bytes = resource.as_bytes();
    bytes.len() <= MAX_RESOURCE_LEN
        && bytes.first() == Some(&b'/')
        && !bytes.iter().any(|&b| b == b'?' || b == b'#')
        && match bytes.last() {
            // What `trim_end` trims of ASCII: tab to carriage return, space.
            Some(&last) if last.is_ascii() => !matches!(last, b'\t'..=b'\r' | b' '),
            _ => resource.trim_end() == resource,
        }
}

/// A gRPC request, by its content type (`application/grpc`, `+proto`, gRPC-Web): its path is
/// the method's, whatever route a router matched it by.
fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= GRPC.len() && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
    })
}

/// The only value of a header, as visible ASCII; `None` when absent, repeated or not text.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// An MCP protocol version: `YYYY-MM-DD`, compared as text.
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

/// An MCP method (`slash` allowed) or tool / prompt name fit to report: 1 to 128 of
/// `A-Z a-z 0-9 _ . -`. (A name sent Base64-encoded, `=?base64?…?=`, is not: it needed
/// encoding because it is not of these characters.)
fn is_mcp_part(value: &str, slash: bool) -> bool {
    !value.is_empty()
        && value.len() <= MCP_MAX_PART
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') || (slash && b == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn route(req: &Request<()>) -> (Method, String) {
        RouteRequest::of(req).automatic()
    }

    #[test]
    fn methods_outside_the_allow_list_are_reported_as_the_fallback() {
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            assert_eq!(route(&request(m, "/x", &[])).0.as_str(), m);
        }
        for m in ["TRACE", "PROPFIND", "PURGE", "get"] {
            assert_eq!(route(&request(m, "/x", &[])).0, FALLBACK_METHOD, "{m}");
        }
        let connect = request("CONNECT", "example.com:443", &[]);
        assert_eq!(route(&connect), (FALLBACK_METHOD, "/".to_owned()));
    }

    #[test]
    fn the_path_is_reported_without_its_query() {
        assert_eq!(route(&request("GET", "/a/b?token=secret", &[])).1, "/a/b");
        assert_eq!(route(&request("GET", "http://host/a?x=1", &[])).1, "/a");
        assert_eq!(route(&request("OPTIONS", "*", &[])).1, "/*");
    }

    #[test]
    fn a_resource_is_borrowed_only_when_bounding_would_not_change_it() {
        for resource in [
            "/projects/{id}",
            "/",
            "/a b",
            "/x?y",
            "x",
            " /x",
            "/x ",
            "/x#f",
            "/x\u{b}",
            "/x\r",
            "/x\u{3000}",
            "/é",
            &"/y".repeat(200),
        ] {
            let borrowed = is_bounded(resource);
            assert_eq!(borrowed, bounded(resource) == resource, "{resource:?}");
        }
    }

    #[test]
    fn bounded_cuts_queries_and_fragments_and_caps_the_length() {
        assert_eq!(bounded("  "), "/");
        assert_eq!(bounded("?x"), "/");
        assert_eq!(bounded("a?b#c"), "/a");
        assert_eq!(bounded("/a#b?c"), "/a");
        assert_eq!(bounded(" /a "), "/a");
        let long = format!("/{}", "é".repeat(300));
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_RESOURCE_LEN && cut.len() >= MAX_RESOURCE_LEN - 1);
        assert!(long.starts_with(&cut));
        assert_eq!(bounded(&"a".repeat(1000)).len(), MAX_RESOURCE_LEN);
    }

    #[test]
    fn mcp_routes_need_a_2026_07_28_post_with_fit_headers() {
        let mcp = |method: &str, headers: &[(&str, &str)]| route(&request(method, "/mcp", headers)).1;
        let v = ("mcp-protocol-version", "2026-07-28");
        let call = ("mcp-method", "tools/call");
        assert_eq!(
            mcp("POST", &[v, call, ("mcp-name", "get_weather")]),
            "/mcp/tools/call/get_weather"
        );
        assert_eq!(
            mcp("POST", &[v, ("mcp-method", "prompts/get"), ("mcp-name", "sum.v2")]),
            "/mcp/prompts/get/sum.v2"
        );
        assert_eq!(mcp("POST", &[v, ("mcp-method", "tools/list")]), "/mcp/tools/list");
        // A URI is never reported.
        assert_eq!(
            mcp(
                "POST",
                &[v, ("mcp-method", "resources/read"), ("mcp-name", "file:///etc/x")]
            ),
            "/mcp/resources/read"
        );
        // Names that are not of the recommended characters stop the route before them.
        assert_eq!(
            mcp("POST", &[v, call, ("mcp-name", "=?base64?w6k=?=")]),
            "/mcp/tools/call"
        );
        assert_eq!(mcp("POST", &[v, call, ("mcp-name", "a/b")]), "/mcp/tools/call");
        assert_eq!(
            mcp("POST", &[v, call, ("mcp-name", &"a".repeat(129))]),
            "/mcp/tools/call"
        );
        assert_eq!(mcp("POST", &[v, ("mcp-method", "tools call")]), "/mcp");
        // Older versions, no version, repeated headers, other methods: the endpoint alone.
        assert_eq!(mcp("POST", &[("mcp-protocol-version", "2025-11-25"), call]), "/mcp");
        assert_eq!(mcp("POST", &[("mcp-protocol-version", "2026-7-28"), call]), "/mcp");
        assert_eq!(mcp("POST", &[call]), "/mcp");
        assert_eq!(mcp("POST", &[v, call, call]), "/mcp");
        assert_eq!(mcp("GET", &[v, call]), "/mcp");
        // A trailing slash on the endpoint is not doubled.
        let req = request("POST", "/mcp/", &[v, call, ("mcp-name", "x")]);
        assert_eq!(route(&req).1, "/mcp/tools/call/x");
    }

    #[test]
    fn debug_shows_neither_the_credential_nor_the_query() {
        let req = request("GET", "/a?key=s3cret", &[("authorization", "Bearer tok3n")]);
        let shown = format!("{:?}", RouteRequest::of(&req));
        assert!(
            shown.contains("/a") && !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn grpc_calls_report_their_method_path() {
        let req = request(
            "POST",
            "/greeter.v1.Greeter/SayHello",
            &[("content-type", "application/grpc+proto")],
        );
        assert_eq!(route(&req), (Method::POST, "/greeter.v1.Greeter/SayHello".to_owned()));
    }
}
