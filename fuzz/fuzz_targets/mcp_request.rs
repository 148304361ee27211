//! The MCP guard's request classification with MCP 2026-07-28 mirrored headers.
//!
//! Input: header lines (`Name: value`) up to the first empty line, then the body (see
//! `request`). Properties, for any headers and body:
//! * nothing panics;
//! * with no `MCP-Protocol-Version`, or a `YYYY-MM-DD` one before 2026-07-28, the answer is
//!   exactly `classify_mcp_body`'s (the body alone decides); a repeated, non-ASCII or otherwise
//!   malformed version is refused;
//! * a request the guard accepts whose single `MCP-Protocol-Version` is 2026-07-28 or later
//!   has a body of one message; a request (with an `id`) carries `Mcp-Method`, and
//!   `Mcp-Name` when it is a `tools/call`, `resources/read` or `prompts/get`; every one of
//!   them that is sent (decoded independently here) says exactly what the body says (read
//!   independently with serde_json), so a call can never pass on its headers alone;
//! * the tools the guard finds are the tools serde_json reads in the body.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_wacht::guard::classify_mcp_body;
use serde_json::Value;

/// The input as an HTTP request: header lines (`Name: value`, up to the first empty line),
/// then the body, so seeds stay readable and mutations reach names, values and body alike.
/// Lines that are not a valid header are skipped.
fn request(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &data[data.len()..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// rmcp's reading of a sentinel, written again here.
fn decode(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(inner) => String::from_utf8(STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let (headers, body) = request(data);
    let got = tower_wacht::guard::classify_mcp_request(&headers, body);

    // The version decides how the request is read: a repeated or unreadable one is refused
    // (components could disagree on which counts); none or one before 2026-07-28 means the
    // body alone decides, exactly as for a legacy request.
    let versions: Vec<&HeaderValue> = headers.get_all("mcp-protocol-version").iter().collect();
    match versions.as_slice() {
        [] => assert_eq!(got, classify_mcp_body(body), "no version: the body alone"),
        [v] => match v.to_str() {
            Err(_) => assert_eq!(got, None, "an unreadable version is refused"),
            Ok(v) if !is_date(v) => assert_eq!(got, None, "a malformed version is refused"),
            Ok(v) if v < "2026-07-28" => assert_eq!(got, classify_mcp_body(body), "legacy: the body alone"),
            Ok(_) => {}
        },
        _ => assert_eq!(got, None, "a repeated version is refused"),
    }
    let Some(tools) = got else {
        return;
    };
    let body: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
    let messages: Vec<&Value> = match &body {
        Value::Array(batch) => batch.iter().collect(),
        other => vec![other],
    };
    let expected_tools: Vec<String> = messages
        .iter()
        .filter(|m| m["method"] == "tools/call")
        .map(|m| m["params"]["name"].as_str().expect("a judged call has a name").to_owned())
        .collect();
    assert_eq!(tools, expected_tools);

    let versions: Vec<&HeaderValue> = headers.get_all("mcp-protocol-version").iter().collect();
    let modern = versions.len() == 1 && versions[0].to_str().is_ok_and(|v| is_date(v) && v >= "2026-07-28");
    if !modern {
        return;
    }
    let Value::Object(message) = &body else {
        panic!("a batch passed with 2026-07-28 headers");
    };
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return; // a response: nothing is mirrored
    };
    let header = |name: &str| {
        let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        assert!(values.len() <= 1, "{name} repeated but accepted");
        values.first().map(|v| v.to_str().expect("visible ASCII").to_owned())
    };
    // A request carries Mcp-Method; a notification need not, but one it sends must match.
    let request = message.contains_key("id");
    match header("mcp-method") {
        Some(sent) => assert_eq!(sent, method, "Mcp-Method differs from the body"),
        None => assert!(!request, "a request passed without Mcp-Method"),
    }
    let key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    let required = request && matches!(method, "tools/call" | "resources/read" | "prompts/get");
    if let Some(expected) = key.and_then(|k| message.get("params")?.get(k)?.as_str()) {
        match header("mcp-name") {
            Some(name) => assert_eq!(decode(&name).as_deref(), Some(expected), "Mcp-Name differs from the body"),
            None => assert!(!required, "Mcp-Name required on {method}"),
        }
    }
});

/// A protocol version is a date: `YYYY-MM-DD`, digits and dashes.
fn is_date(v: &str) -> bool {
    v.len() == 10
        && v.bytes()
            .enumerate()
            .all(|(i, c)| if i == 4 || i == 7 { c == b'-' } else { c.is_ascii_digit() })
}
