//! What the MCP tool guard reads of a POST body: a strict JSON parse that refuses repeated
//! keys anywhere (two parsers could disagree on which one counts), then a JSON-RPC
//! classification of every message. A body the guard cannot classify is refused, never handed
//! on: the guard must not depend on the server behind it being strict.

use serde_json::{Map, Value};

use crate::json::parse_strict;

/// Why a body was refused, as the JSON-RPC error it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Not JSON, or a key repeated in an object: `-32700` Parse error.
    Parse,
    /// JSON, but not JSON-RPC messages the guard can classify: `-32600` Invalid Request.
    Invalid,
}

impl BodyError {
    /// The JSON-RPC error code.
    pub(crate) fn code(self) -> i32 {
        match self {
            BodyError::Parse => -32700,
            BodyError::Invalid => -32600,
        }
    }

    /// The JSON-RPC error message.
    pub(crate) fn message(self) -> &'static str {
        match self {
            BodyError::Parse => "Parse error: the body is not JSON, or repeats a key",
            BodyError::Invalid => "Invalid Request: not a JSON-RPC 2.0 message this server accepts",
        }
    }
}

/// One JSON-RPC message of a body, as the guard reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// `method` of a request or notification; `None` for a response.
    pub(crate) method: Option<String>,
    /// `id` of a request (a string, a number or `null`); `None` for a notification or a
    /// response (an error the guard answers is not about a response's id).
    pub(crate) request_id: Option<Value>,
    /// What `Mcp-Name` must say for this method (rmcp's rule: `params.name` of `tools/call`
    /// and `prompts/get`, `params.uri` of `resources/read|subscribe|unsubscribe`,
    /// `params.taskId` of `tasks/get|update|cancel`), if the method has one.
    pub(crate) mirrored_name: Option<String>,
    /// The tool a `tools/call` calls.
    pub(crate) tool: Option<String>,
}

/// What a POST body holds: one message, or a batch (legacy protocol versions only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

impl Body {
    pub(crate) fn messages(&self) -> &[Message] {
        match self {
            Body::Single(message) => std::slice::from_ref(message),
            Body::Batch(batch) => batch,
        }
    }

    /// The id an error about this body answers: a single request's; `None` (rendered `null`)
    /// for a batch, a notification or a response.
    pub(crate) fn request_id(self) -> Option<Value> {
        match self {
            Body::Single(message) => message.request_id,
            Body::Batch(_) => None,
        }
    }
}

/// Methods whose `Mcp-Name` mirrors `params.name`.
const NAME_FROM_NAME: [&str; 2] = ["tools/call", "prompts/get"];
/// Methods whose `Mcp-Name` mirrors `params.uri`.
const NAME_FROM_URI: [&str; 3] = ["resources/read", "resources/subscribe", "resources/unsubscribe"];
/// Methods whose `Mcp-Name` mirrors `params.taskId`.
const NAME_FROM_TASK_ID: [&str; 3] = ["tasks/get", "tasks/update", "tasks/cancel"];

/// The tools a body calls with `tools/call` (one per call, in order; a batch is read element
/// by element), or why it is refused.
pub(crate) fn tool_calls(body: &[u8]) -> Result<Vec<String>, BodyError> {
    Ok(read(body)?.messages().iter().filter_map(|m| m.tool.clone()).collect())
}

/// Reads and classifies a body, or says why it is refused.
pub(crate) fn read(body: &[u8]) -> Result<Body, BodyError> {
    let value = parse_strict(body).ok_or(BodyError::Parse)?;
    match &value {
        Value::Object(message) => Ok(Body::Single(classify(message)?)),
        Value::Array(batch) if !batch.is_empty() => {
            let mut messages = Vec::with_capacity(batch.len());
            for element in batch {
                let Value::Object(message) = element else {
                    return Err(BodyError::Invalid);
                };
                messages.push(classify(message)?);
            }
            Ok(Body::Batch(messages))
        }
        _ => Err(BodyError::Invalid),
    }
}

/// One JSON-RPC 2.0 message: a request or notification (`method`, object `params` if any),
/// or a response (`id` and exactly one of `result` and `error`).
fn classify(message: &Map<String, Value>) -> Result<Message, BodyError> {
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(BodyError::Invalid);
    }
    if !matches!(
        message.get("id"),
        None | Some(Value::String(_) | Value::Number(_) | Value::Null)
    ) {
        return Err(BodyError::Invalid);
    }
    match message.get("method") {
        Some(Value::String(method)) => {
            let params = match message.get("params") {
                None => None,
                Some(Value::Object(params)) => Some(params),
                Some(_) => return Err(BodyError::Invalid),
            };
            let key = if NAME_FROM_NAME.contains(&method.as_str()) {
                Some("name")
            } else if NAME_FROM_URI.contains(&method.as_str()) {
                Some("uri")
            } else if NAME_FROM_TASK_ID.contains(&method.as_str()) {
                Some("taskId")
            } else {
                None
            };
            let mirrored_name = key
                .and_then(|key| params?.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let tool = if method == "tools/call" {
                // A call without a string name cannot be judged: refused.
                Some(mirrored_name.clone().ok_or(BodyError::Invalid)?)
            } else {
                None
            };
            Ok(Message {
                method: Some(method.clone()),
                request_id: message.get("id").cloned(),
                mirrored_name,
                tool,
            })
        }
        Some(_) => Err(BodyError::Invalid),
        None => {
            let is_response =
                message.contains_key("id") && (message.contains_key("result") != message.contains_key("error"));
            if is_response {
                Ok(Message {
                    method: None,
                    request_id: None,
                    mirrored_name: None,
                    tool: None,
                })
            } else {
                Err(BodyError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tools_called() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
        assert_eq!(tool_calls(call), Ok(vec!["whoami".to_owned()]));
        let escaped = br#"{"params":{"name":"who\u0061mi"},"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#;
        assert_eq!(tool_calls(escaped), Ok(vec!["whoami".to_owned()]));
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop"}}]"#;
        assert_eq!(tool_calls(batch), Ok(vec!["drop".to_owned()]));
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"2.0","id":"a","result":{}}"#,
            br#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"}}"#,
        ] {
            assert_eq!(tool_calls(other), Ok(vec![]));
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (body, error) in [
            (&b"not json"[..], BodyError::Parse),
            (b"", BodyError::Parse),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
                BodyError::Parse,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
                BodyError::Parse,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":1,"k":2}}}"#,
                BodyError::Parse,
            ),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, BodyError::Invalid),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                BodyError::Invalid,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}"#,
                BodyError::Invalid,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#,
                BodyError::Invalid,
            ),
            (br#"{"id":1,"method":"tools/list"}"#, BodyError::Invalid),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                BodyError::Invalid,
            ),
            (br#"{"jsonrpc":"2.0","result":{}}"#, BodyError::Invalid),
            (b"[]", BodyError::Invalid),
            (b"[[]]", BodyError::Invalid),
            (b"null", BodyError::Invalid),
        ] {
            assert_eq!(tool_calls(body), Err(error), "{}", String::from_utf8_lossy(body));
        }
    }
}
