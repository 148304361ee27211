//! List filtering ([`McpGuardLayer::filter_lists`](super::McpGuardLayer::filter_lists)): the
//! answer to `tools/list`, `resources/list`, `resources/templates/list` or `prompts/list` keeps
//! only the entries its caller may use, by the same rules that judge a call.
//!
//! A JSON answer is read whole (up to the bound) and written again; an SSE answer event by
//! event, each released as soon as it is complete (only the events answering the list request
//! are touched; an event over the bound ends the stream). Nothing the guard cannot read is
//! passed on: an answer it cannot filter (not JSON, a key repeated on the path to the list,
//! over the bound, compressed) is replaced by a JSON-RPC error for the list request
//! (`-32603`), logged at warn.

mod json;
mod sse;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;

use self::json::Outcome;
use self::sse::Events;
use super::message::ListKind;
use super::policy::Policy;
use crate::body::{Rewrite, Step};
use crate::principal::Principal;

/// The JSON-RPC code of the error that replaces an answer the guard cannot filter.
const INTERNAL_ERROR: i32 = -32603;

/// Filters one answer to a body holding list requests.
pub(crate) struct ListFilter {
    policy: Arc<Policy>,
    principal: Option<Principal>,
    /// The id of each list request of the body and its list.
    lists: Vec<(Value, ListKind)>,
    max_bytes: usize,
    mode: Mode,
}

enum Mode {
    /// A JSON answer, read whole.
    Json(BytesMut),
    /// An SSE answer, event by event.
    Sse(Events),
    /// An answer the guard cannot read (compressed): replaced by the error.
    Refuse { sse: bool, sent: bool },
}

impl ListFilter {
    /// A filter for the answer whose headers are `headers` (which it adjusts: the length and
    /// encoding no longer hold), or `None` when the answer carries no list (not 2xx).
    pub(crate) fn for_response(
        status: http::StatusCode,
        headers: &mut HeaderMap,
        policy: Arc<Policy>,
        principal: Option<Principal>,
        lists: Vec<(Value, ListKind)>,
        max_bytes: usize,
    ) -> Option<Self> {
        if !status.is_success() || lists.is_empty() {
            return None;
        }
        let sse = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
        let encoded = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        headers.remove(CONTENT_LENGTH);
        headers.remove(CONTENT_ENCODING);
        let mode = match (encoded, sse) {
            (true, sse) => {
                tracing::warn!("MCP list answer is compressed: the guard cannot filter it, replaced by an error");
                Mode::Refuse { sse, sent: false }
            }
            (false, true) => Mode::Sse(Events::default()),
            (false, false) => Mode::Json(BytesMut::new()),
        };
        Some(ListFilter {
            policy,
            principal,
            lists,
            max_bytes,
            mode,
        })
    }

    /// The entries of `kind` the caller may see.
    fn visible(&self, kind: ListKind, name: &str) -> bool {
        self.policy.permits(kind.primitive(), name, self.principal.as_ref())
    }

    fn filter(&self, text: &str) -> Outcome {
        json::filter(text, &self.lists, &|kind, name| self.visible(kind, name))
    }

    /// The JSON-RPC error that replaces an answer the guard cannot filter: for the list
    /// request, or `null` when the body held several.
    fn error(&self, why: &'static str) -> String {
        tracing::warn!(why, "MCP list answer cannot be filtered: replaced by a JSON-RPC error");
        let id = match self.lists.as_slice() {
            [(id, _)] => id.clone(),
            _ => Value::Null,
        };
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{INTERNAL_ERROR},"message":"Internal error: the list could not be filtered for this caller"}}}}"#,
            serde_json::to_string(&id).unwrap_or_else(|_| "null".to_owned())
        )
    }

    /// One whole SSE event, filtered; `Err` with the error event when it must not pass.
    fn sse_event(&self, event: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let mut refused = false;
        let rewritten = sse::rewrite(event, |data| match self.filter(data) {
            Outcome::Filtered(text) => Some(text),
            Outcome::Unfilterable => {
                refused = true;
                None
            }
            Outcome::Unchanged | Outcome::NotJson => None,
        });
        if refused {
            return Err(sse::event(&self.error("an SSE event answering the list request")));
        }
        Ok(rewritten.unwrap_or_else(|| event.to_vec()))
    }
}

impl Rewrite for ListFilter {
    fn data(&mut self, chunk: Bytes) -> Step {
        match &mut self.mode {
            Mode::Json(buf) => {
                if buf.len() + chunk.len() > self.max_bytes {
                    buf.clear();
                    return Step::Last(self.error("the answer is larger than the bound").into());
                }
                buf.extend_from_slice(&chunk);
                Step::Send(Bytes::new())
            }
            Mode::Sse(events) => {
                let mut whole = Vec::new();
                events.push(&chunk, |event| {
                    whole.push(event.to_vec());
                    true
                });
                let over = events.held() > self.max_bytes;
                let mut out = Vec::new();
                for event in whole {
                    match self.sse_event(&event) {
                        Ok(event) => out.extend_from_slice(&event),
                        Err(error) => {
                            out.extend_from_slice(&error);
                            return Step::Last(out.into());
                        }
                    }
                }
                if over {
                    out.extend_from_slice(&sse::event(&self.error("an SSE event is larger than the bound")));
                    return Step::Last(out.into());
                }
                Step::Send(out.into())
            }
            Mode::Refuse { sse, sent } => {
                *sent = true;
                let sse = *sse;
                Step::Last(self.refusal(sse))
            }
        }
    }

    fn end(&mut self) -> Bytes {
        match &mut self.mode {
            Mode::Json(buf) => {
                let buf = std::mem::take(buf).freeze();
                if buf.is_empty() {
                    return buf;
                }
                let Ok(text) = std::str::from_utf8(&buf) else {
                    return self.error("the answer is not UTF-8").into();
                };
                match self.filter(text) {
                    Outcome::Unchanged => buf,
                    Outcome::Filtered(text) => text.into(),
                    Outcome::Unfilterable => self.error("the list cannot be read").into(),
                    Outcome::NotJson => self.error("the answer is not JSON").into(),
                }
            }
            // An event the stream ends in the middle of is never dispatched: dropped.
            Mode::Sse(_) => Bytes::new(),
            Mode::Refuse { sse, sent } => {
                if *sent {
                    return Bytes::new();
                }
                *sent = true;
                let sse = *sse;
                self.refusal(sse)
            }
        }
    }
}

impl ListFilter {
    fn refusal(&self, sse: bool) -> Bytes {
        let error = self.error("the answer is compressed");
        if sse { sse::event(&error).into() } else { error.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Permissions;
    use crate::principal::{Grant, StringSet};
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn filter(content_type: &str, max: usize) -> (ListFilter, HeaderMap) {
        let mut policy = Policy::default();
        policy.tools.insert("open".into(), Permissions::all(["a"]));
        policy.tools.insert("secret".into(), Permissions::all(["b"]));
        let mut grant = Grant::new("oc_t", SystemTime::now() + Duration::from_secs(60));
        grant.permissions = StringSet::new(["a"]);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        headers.insert(CONTENT_LENGTH, "99".parse().unwrap());
        let f = ListFilter::for_response(
            http::StatusCode::OK,
            &mut headers,
            Arc::new(policy),
            Some(Principal::from_grant(grant)),
            vec![(json!(4), ListKind::Tools)],
            max,
        )
        .expect("a filter");
        (f, headers)
    }

    const LIST: &str =
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"open"},{"name":"secret"},{"name":"unlisted"}]}}"#;
    const SHOWN: &str = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"open"}]}}"#;

    fn run(f: &mut ListFilter, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for chunk in chunks {
            match f.data(Bytes::copy_from_slice(chunk)) {
                Step::Send(b) => out.extend_from_slice(&b),
                Step::Last(b) => {
                    out.extend_from_slice(&b);
                    return String::from_utf8(out).unwrap();
                }
            }
        }
        out.extend_from_slice(&f.end());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_answer_keeps_what_the_caller_may_use() {
        let (mut f, headers) = filter("application/json", 1 << 20);
        assert!(headers.get(CONTENT_LENGTH).is_none(), "the length no longer holds");
        let (a, b) = LIST.as_bytes().split_at(30);
        assert_eq!(run(&mut f, &[a, b]), SHOWN);
    }

    #[test]
    fn an_sse_answer_is_filtered_event_by_event() {
        let (mut f, _) = filter("text/event-stream; charset=utf-8", 1 << 20);
        let note = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let stream = format!("id: 0\ndata:\n\n{note}id: 1\ndata: {LIST}\n\n");
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
        assert_eq!(
            run(&mut f, &chunks),
            format!("id: 0\ndata:\n\n{note}id: 1\ndata: {SHOWN}\n\n")
        );
    }

    #[test]
    fn what_cannot_be_filtered_is_replaced_by_an_error() {
        let error = r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"Internal error: the list could not be filtered for this caller"}}"#;
        let (mut f, _) = filter("application/json", 1 << 20);
        assert_eq!(run(&mut f, &[b"<html>"]), error);
        let (mut f, _) = filter("application/json", 20);
        assert_eq!(run(&mut f, &[LIST.as_bytes()]), error, "over the bound");
        let (mut f, _) = filter("text/event-stream", 20);
        assert_eq!(
            run(&mut f, &[format!("data: {LIST}").as_bytes()]),
            format!("data: {error}\n\n"),
            "an event over the bound"
        );
        let (mut f, _) = filter("text/event-stream", 1 << 20);
        let repeated = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[],"tools":[{"name":"secret"}]}}"#;
        assert_eq!(
            run(&mut f, &[format!("data: {repeated}\n\n").as_bytes(), b"data: more\n\n"]),
            format!("data: {error}\n\n")
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        let (f, _) = filter("application/json", 1 << 20);
        let mut compressed = ListFilter::for_response(
            http::StatusCode::OK,
            &mut headers,
            f.policy,
            f.principal,
            f.lists,
            1 << 20,
        )
        .unwrap();
        assert!(headers.get(CONTENT_ENCODING).is_none());
        assert_eq!(run(&mut compressed, &[b"\x1f\x8b"]), error);
    }

    #[test]
    fn an_error_status_is_not_touched() {
        let mut headers = HeaderMap::new();
        let none = ListFilter::for_response(
            http::StatusCode::BAD_REQUEST,
            &mut headers,
            Arc::new(Policy::default()),
            None,
            vec![(json!(1), ListKind::Tools)],
            10,
        );
        assert!(none.is_none());
    }
}
