//! Item 1c: `McpCorsLayer` answers preflights in front of the auth layer. Attacks on it: a
//! request without a token dressed as a preflight from an allowed origin, to get it answered
//! (or passed) without the auth layer. Only a preflight as browsers send it is answered, by the
//! CORS layer itself, and nothing behind it runs; everything else still needs a token.

use axum::Router;
use axum::routing::any;
use bytes::Bytes;
use futures_util::stream;
use http::Method;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use tower_wacht::testing::{EXAMPLE_DEPLOYMENT_ID, FakeGateway};
use tower_wacht::{McpCorsLayer, Principal, WachtAuthConfig, WachtAuthLayer};

use crate::common::{self, API_KEY, start_gateway};
use crate::harness::{RecordingGreeter, Runs, grpc_frame, raw_h2};

/// The page the server trusts.
const ALLOWED: &str = "https://app.example.com";
const SAY_HELLO: &str = "/greeter.v1.Greeter/SayHello";

fn cors() -> McpCorsLayer {
    McpCorsLayer::new([ALLOWED]).expect("a valid origin")
}

/// The auth layer with its defaults (no preflight pass-through).
fn auth(gateway: &FakeGateway) -> WachtAuthLayer {
    let config = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key(API_KEY)
        .expected_deployment_id(EXAMPLE_DEPLOYMENT_ID)
        .build()
        .expect("valid config");
    WachtAuthLayer::new(config).expect("layer")
}

/// An Axum app with CORS in front of the auth layer (default settings: no preflight
/// pass-through) and an `any()` route and a fallback that record every run.
async fn axum_app(runs: &Runs) -> (std::net::SocketAddr, FakeGateway) {
    let gateway = start_gateway().await;
    let auth = auth(&gateway);
    let (r1, r2) = (runs.clone(), runs.clone());
    let app = Router::new()
        .route(
            "/mcp",
            any(move |p: Option<Principal>| async move {
                r1.record(p.as_ref());
                "ran"
            }),
        )
        .fallback(move |p: Option<Principal>| async move {
            r2.record(p.as_ref());
            "ran"
        })
        .layer(auth)
        .layer(cors());
    (common::serve(app).await, gateway)
}

#[tokio::test]
async fn a_request_dressed_as_a_preflight_without_origin_or_request_method_still_needs_a_token() {
    let runs = Runs::default();
    let (addr, gateway) = axum_app(&runs).await;
    let http = reqwest::Client::new();
    for path in ["/mcp", "/elsewhere"] {
        for (what, origin, request_method) in [
            ("OPTIONS without Origin", None, Some("POST")),
            (
                "OPTIONS from the allowed origin without Access-Control-Request-Method",
                Some(ALLOWED),
                None,
            ),
            ("OPTIONS with neither", None, None),
        ] {
            let mut request = http.request(Method::OPTIONS, format!("http://{addr}{path}"));
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(method) = request_method {
                request = request.header("access-control-request-method", method);
            }
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path}: {what}");
            assert!(common::challenge(&resp).starts_with("Bearer "), "{path}: {what}");
        }
        // Any other method from the allowed origin: CORS lets the page read the 401, nothing more.
        for method in [Method::POST, Method::GET, Method::DELETE] {
            let resp = http
                .request(method.clone(), format!("http://{addr}{path}"))
                .header("origin", ALLOWED)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{path}: {method}");
            assert_eq!(resp.headers()["access-control-allow-origin"], ALLOWED);
        }
    }
    assert_eq!(runs.total(), 0, "a handler ran without a token");

    // For contrast: the real preflight is answered by the CORS layer, and runs nothing either.
    let resp = http
        .request(Method::OPTIONS, format!("http://{addr}/mcp"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(runs.total(), 0);
    assert_eq!(gateway.calls(), 0);
}

/// A "preflight" from the allowed origin that carries what browsers never put on one: a body
/// (with its length, or chunked), a `Content-Type`. Each goes to the auth layer, unanswered by
/// the CORS layer.
#[tokio::test]
async fn a_preflight_from_an_allowed_origin_carrying_a_body_still_needs_a_token() {
    let runs = Runs::default();
    let (addr, gateway) = axum_app(&runs).await;
    let exchanges = [
        (
            "a body with its length",
            "Content-Length: 24\r\n\r\n{\"method\":\"tools/call\"}\n",
        ),
        (
            "a chunked body",
            "Transfer-Encoding: chunked\r\n\r\n17\r\n{\"method\":\"tools/call\"}\r\n0\r\n\r\n",
        ),
        (
            "a content type",
            "Content-Type: application/json\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    for (what, rest) in exchanges {
        let request = format!(
            "OPTIONS /mcp HTTP/1.1\r\nHost: {addr}\r\nOrigin: {ALLOWED}\r\nAccess-Control-Request-Method: POST\r\n\
             Connection: close\r\n{rest}"
        );
        let response = common::raw_request(addr, &request).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{what}: {response}");
        assert!(
            response.to_ascii_lowercase().contains("www-authenticate: bearer"),
            "{what}: {response}"
        );
    }
    assert_eq!(runs.total(), 0, "a handler ran without a token");
    assert_eq!(gateway.calls(), 0);
}

/// A gRPC call dressed as a preflight from the allowed origin, with and without its gRPC
/// content type, to a Tonic service that relies on the auth layer alone (Tonic routes by path
/// and reads the body whatever the content type says).
#[tokio::test]
async fn a_grpc_call_dressed_as_a_preflight_from_an_allowed_origin_never_runs_a_grpc_handler() {
    type Unsized = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;
    let gateway = start_gateway().await;
    let auth = auth(&gateway);
    let greeter = RecordingGreeter::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = tonic::transport::Server::builder()
        .layer(cors())
        .layer(auth)
        .add_service(crate::grpc_server::pb::greeter_server::GreeterServer::new(
            greeter.clone(),
        ));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));

    for (what, grpc_headers, sized) in [
        ("gRPC content type and te, framed body", true, true),
        ("gRPC content type and te, body without a length", true, false),
        ("no content type, framed body", false, true),
        ("no content type, body without a length", false, false),
    ] {
        let frame = grpc_frame("Mallory");
        let body: Either<Full<Bytes>, Unsized> = if sized {
            Either::Left(Full::new(frame))
        } else {
            Either::Right(StreamBody::new(stream::iter(vec![Ok(Frame::data(frame))])))
        };
        let mut request = http::Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{addr}{SAY_HELLO}"))
            .header("origin", ALLOWED)
            .header("access-control-request-method", "POST");
        if grpc_headers {
            request = request
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        }
        let raw = raw_h2(addr, request.body(body).expect("request")).await;
        assert_eq!(greeter.0.total(), 0, "{what}: the handler ran: {raw:?}");
        if grpc_headers {
            assert_eq!(raw.grpc_status(), Some("16"), "{what}: {raw:?}");
        } else {
            assert_eq!(raw.status, 401, "{what}: {raw:?}");
        }
    }
    assert_eq!(gateway.calls(), 0);
}
