//! The MCP tool guard's request classification with MCP 2026-07-28 mirrored headers.
//!
//! Properties, for any headers and body:
//! * nothing panics;
//! * a request the guard accepts whose single `MCP-Protocol-Version` is 2026-07-28 or later
//!   has a body of one message, and its `Mcp-Method` / `Mcp-Name` (decoded independently
//!   here) say exactly what the body says (read independently with serde_json), so a call
//!   can never pass on its headers alone;
//! * the tools the guard finds are the tools serde_json reads in the body.

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    versions: Vec<&'a [u8]>,
    methods: Vec<&'a [u8]>,
    names: Vec<&'a [u8]>,
    body: &'a [u8],
}

fn add(headers: &mut HeaderMap, name: &'static str, values: &[&[u8]]) {
    for value in values.iter().take(3) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
}

/// rmcp's reading of a sentinel, written again here.
fn decode(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(inner) => String::from_utf8(STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

fuzz_target!(|input: Input<'_>| {
    let mut headers = HeaderMap::new();
    add(&mut headers, "mcp-protocol-version", &input.versions);
    add(&mut headers, "mcp-method", &input.methods);
    add(&mut headers, "mcp-name", &input.names);
    let Some(tools) = tower_wacht::guard::classify_mcp_request(&headers, input.body) else {
        return;
    };
    let body: Value = serde_json::from_slice(input.body).expect("an accepted body is JSON");
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
    let modern = versions.len() == 1 && versions[0].to_str().is_ok_and(|v| v >= "2026-07-28");
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
    assert_eq!(header("mcp-method").as_deref(), Some(method), "Mcp-Method differs from the body");
    let key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    };
    if let Some(expected) = key.and_then(|k| message.get("params")?.get(k)?.as_str()) {
        let name = header("mcp-name").expect("Mcp-Name required");
        assert_eq!(decode(&name).as_deref(), Some(expected), "Mcp-Name differs from the body");
    }
});
