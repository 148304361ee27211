//! What the MCP guard reads of a POST body: a strict JSON parse that refuses repeated keys
//! anywhere (two parsers could disagree on which one counts), then a JSON-RPC classification
//! of every message: what it touches (a tool, a resource, a prompt, a task) and which list it
//! asks for. A body the guard cannot classify is refused, never handed
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

/// What kind of thing a message touches, for the guard's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Primitive {
    /// A tool, by name (`tools/call`).
    Tool,
    /// A resource, by URI (`resources/read`, `resources/subscribe`, `resources/unsubscribe`,
    /// `resources/directory/read`, each URI of a `subscriptions/listen` filter's
    /// `resourceSubscriptions`, a `completion/complete` of a `ref/resource`).
    Resource,
    /// A prompt, by name (`prompts/get`, a `completion/complete` of a `ref/prompt`).
    Prompt,
    /// A task (`tasks/*`): a task id is a handle the server minted, not a name a rule lists.
    Task,
}

/// One thing a message touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) primitive: Primitive,
    /// The tool or prompt name, the resource URI (or template); empty for a task.
    pub(crate) name: String,
}

/// A list method whose result the guard can filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// `tools/list`: `result.tools[].name`.
    Tools,
    /// `resources/list`: `result.resources[].uri`.
    Resources,
    /// `resources/templates/list`: `result.resourceTemplates[].uriTemplate`.
    ResourceTemplates,
    /// `prompts/list`: `result.prompts[].name`.
    Prompts,
}

impl ListKind {
    fn of(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "resources/list" => Some(ListKind::Resources),
            "resources/templates/list" => Some(ListKind::ResourceTemplates),
            "prompts/list" => Some(ListKind::Prompts),
            _ => None,
        }
    }

    /// The key of the list in `result`, and the key naming each entry.
    pub(crate) fn keys(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Tools => ("tools", "name"),
            ListKind::Resources => ("resources", "uri"),
            ListKind::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
            ListKind::Prompts => ("prompts", "name"),
        }
    }

    /// What an entry of this list names.
    pub(crate) fn primitive(self) -> Primitive {
        match self {
            ListKind::Tools => Primitive::Tool,
            ListKind::Resources | ListKind::ResourceTemplates => Primitive::Resource,
            ListKind::Prompts => Primitive::Prompt,
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
    /// What `Mcp-Name` says for this method when it is sent (rmcp's rule: `params.name` of
    /// `tools/call` and `prompts/get`, `params.uri` of `resources/read|subscribe|unsubscribe`,
    /// `params.taskId` of `tasks/get|update|cancel`), if the method has one.
    pub(crate) mirrored_name: Option<String>,
    /// What the message touches, each judged by the guard's rules.
    pub(crate) access: Vec<Access>,
    /// The list it asks for, if it is a list request.
    pub(crate) list: Option<ListKind>,
}

impl Message {
    /// True for a request (it has an `id`), false for a notification or a response.
    pub(crate) fn is_request(&self) -> bool {
        self.method.is_some() && self.request_id.is_some()
    }
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
    pub(crate) fn request_id(&self) -> Option<Value> {
        match self {
            Body::Single(message) => message.request_id.clone(),
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
/// Methods that name a resource by `params.uri`.
const RESOURCE_BY_URI: [&str; 4] = [
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "resources/directory/read",
];

/// The tools a body calls with `tools/call` (one per call, in order; a batch is read element
/// by element), or why it is refused.
pub(crate) fn tool_calls(body: &[u8]) -> Result<Vec<String>, BodyError> {
    Ok(read(body)?.tools())
}

impl Body {
    /// The tools its `tools/call` messages call, in order.
    pub(crate) fn tools(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| &m.access)
            .filter(|a| a.primitive == Primitive::Tool)
            .map(|a| a.name.clone())
            .collect()
    }
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
            Ok(Message {
                method: Some(method.clone()),
                request_id: message.get("id").cloned(),
                access: access(method, params)?,
                list: ListKind::of(method),
                mirrored_name,
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
                    access: Vec::new(),
                    list: None,
                })
            } else {
                Err(BodyError::Invalid)
            }
        }
    }
}

/// What a method touches. A method that names something the guard judges must name it as a
/// string, or it cannot be judged: refused.
fn access(method: &str, params: Option<&Map<String, Value>>) -> Result<Vec<Access>, BodyError> {
    let string = |key: &str| -> Result<String, BodyError> {
        params
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(BodyError::Invalid)
    };
    let one = |primitive, name| Ok(vec![Access { primitive, name }]);
    match method {
        "tools/call" => one(Primitive::Tool, string("name")?),
        "prompts/get" => one(Primitive::Prompt, string("name")?),
        m if RESOURCE_BY_URI.contains(&m) => one(Primitive::Resource, string("uri")?),
        m if m.starts_with("tasks/") => one(Primitive::Task, String::new()),
        "completion/complete" => {
            let reference = params.and_then(|p| p.get("ref")).and_then(Value::as_object);
            let field = |key: &str| reference.and_then(|r| r.get(key)).and_then(Value::as_str);
            match field("type") {
                Some("ref/prompt") => one(Primitive::Prompt, field("name").ok_or(BodyError::Invalid)?.to_owned()),
                Some("ref/resource") => one(Primitive::Resource, field("uri").ok_or(BodyError::Invalid)?.to_owned()),
                _ => Err(BodyError::Invalid),
            }
        }
        "subscriptions/listen" => {
            let filter = params.and_then(|p| p.get("notifications"));
            match filter.and_then(|f| f.get("resourceSubscriptions")) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(uris)) => uris
                    .iter()
                    .map(|uri| match uri {
                        Value::String(uri) => Ok(Access {
                            primitive: Primitive::Resource,
                            name: uri.clone(),
                        }),
                        _ => Err(BodyError::Invalid),
                    })
                    .collect(),
                Some(_) => Err(BodyError::Invalid),
            }
        }
        _ => Ok(Vec::new()),
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

    fn accesses(body: &[u8]) -> Vec<(Primitive, String)> {
        read(body)
            .unwrap()
            .messages()
            .iter()
            .flat_map(|m| m.access.iter().map(|a| (a.primitive, a.name.clone())))
            .collect()
    }

    #[test]
    fn finds_what_each_method_touches() {
        use Primitive::*;
        type Case = (&'static [u8], Vec<(Primitive, &'static str)>);
        let cases: [Case; 9] = [
            (br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b"}}"#, vec![(Resource, "a://b")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"a://b"}}"#, vec![(Resource, "a://b")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"resources/directory/read","params":{"uri":"a://"}}"#, vec![(Resource, "a://")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#, vec![(Prompt, "p")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tasks/list"}"#, vec![(Task, "")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"}}}"#, vec![(Prompt, "p")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"a://{x}"}}}"#, vec![(Resource, "a://{x}")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["a://1","a://2"]}}}"#, vec![(Resource, "a://1"), (Resource, "a://2")]),
            (br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}"#, vec![]),
        ];
        for (body, expected) in cases {
            let expected: Vec<(Primitive, String)> = expected.into_iter().map(|(p, n)| (p, n.to_owned())).collect();
            assert_eq!(accesses(body), expected, "{}", String::from_utf8_lossy(body));
        }
        let list = read(br#"{"jsonrpc":"2.0","id":1,"method":"resources/templates/list"}"#).unwrap();
        assert_eq!(list.messages()[0].list, Some(ListKind::ResourceTemplates));
    }

    #[test]
    fn a_method_that_names_something_must_name_it_as_a_string() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":7}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"t"}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"a://1"}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":[1]}}}"#,
        ] {
            assert_eq!(read(body).err(), Some(BodyError::Invalid), "{}", String::from_utf8_lossy(body));
        }
    }
}
