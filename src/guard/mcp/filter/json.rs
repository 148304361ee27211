//! One JSON-RPC response (or a batch of them) with the entries of its list that the caller may
//! not use taken out. Everything else is kept as the server wrote it, byte for byte: the
//! values are copied raw (numbers, strings, nested objects, the other entries), so ids,
//! cursors, `_meta` and any field the guard does not know survive unchanged. Only the text
//! between the members of the objects on the path to the list (whitespace, key escapes) is
//! written anew.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::super::message::ListKind;

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not a response to a list request of this body, or nothing to take out: send it as is.
    Unchanged,
    /// The response with the entries the caller may not use taken out.
    Filtered(String),
    /// A response to a list request whose list cannot be read (a key repeated on the path to
    /// it, a list that is not an array): it must not be sent.
    Unfilterable,
    /// Not JSON.
    NotJson,
}

/// Filters `text`: each JSON-RPC response in it whose `id` is one of `lists` keeps only the
/// entries `visible` admits.
pub(crate) fn filter(text: &str, lists: &[(Value, ListKind)], visible: &dyn Fn(ListKind, &str) -> bool) -> Outcome {
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    if !text.starts_with('[') {
        // One pass: reading the members validates the document.
        return match Members::of(text) {
            Err(Shape::NotObject) if serde_json::from_str::<&RawValue>(text).is_err() => Outcome::NotJson,
            Err(Shape::Repeated) if serde_json::from_str::<Value>(text).is_err() => Outcome::NotJson,
            _ => message(text, lists, visible),
        };
    }
    let Ok(batch) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => Outcome::Unchanged,
            Err(_) => Outcome::NotJson,
        };
    };
    let mut changed = false;
    let mut out = Vec::with_capacity(batch.len());
    for element in &batch {
        match message(element.get(), lists, visible) {
            Outcome::Unchanged | Outcome::NotJson => out.push(Cow::Borrowed(element.get())),
            Outcome::Filtered(text) => {
                changed = true;
                out.push(Cow::Owned(text));
            }
            Outcome::Unfilterable => return Outcome::Unfilterable,
        }
    }
    if !changed {
        return Outcome::Unchanged;
    }
    Outcome::Filtered(format!("[{}]", out.join(",")))
}

/// One message (`raw` is a JSON value).
fn message(raw: &str, lists: &[(Value, ListKind)], visible: &dyn Fn(ListKind, &str) -> bool) -> Outcome {
    let members = match Members::of(raw) {
        Ok(members) => members,
        Err(Shape::NotObject) => return Outcome::Unchanged,
        // Which of two `id`s or `result`s a client reads is the client's choice: such a
        // message could answer a list request with anything.
        Err(Shape::Repeated) => return Outcome::Unfilterable,
    };
    let Some(kind) = members
        .get("id")
        .and_then(|id| serde_json::from_str::<Value>(id.get()).ok())
        .and_then(|id| lists.iter().find(|(listed, _)| *listed == id).map(|(_, kind)| *kind))
    else {
        return Outcome::Unchanged;
    };
    let Some(result) = members.get("result") else {
        return Outcome::Unchanged;
    };
    let (list_key, name_key) = kind.keys();
    let Ok(result_members) = Members::of(result.get()) else {
        return Outcome::Unfilterable;
    };
    let Some(list) = result_members.get(list_key) else {
        return Outcome::Unchanged;
    };
    let Ok(entries) = serde_json::from_str::<Vec<&RawValue>>(list.get()) else {
        return Outcome::Unfilterable;
    };
    let kept: Vec<&str> = entries
        .iter()
        .map(|entry| entry.get())
        .filter(|entry| name_of(entry, name_key).is_some_and(|name| visible(kind, &name)))
        .collect();
    if kept.len() == entries.len() {
        return Outcome::Unchanged;
    }
    let list = format!("[{}]", kept.join(","));
    let result = result_members.write(list_key, &list);
    Outcome::Filtered(members.write("result", &result))
}

/// The string an entry is named by; `None` (the entry is hidden) when it has none, or repeats
/// a key.
fn name_of(entry: &str, key: &str) -> Option<String> {
    if !entry.starts_with('{') {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_str(entry);
    serde::Deserializer::deserialize_map(&mut deserializer, NameVisitor { key }).ok()?
}

/// Reads one key of an object as a string (`None` when absent or not a string), skipping the
/// other values; a repeated key is an error.
struct NameVisitor<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for NameVisitor<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without repeated keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut name = None;
        while let Some(Key(key)) = map.next_key()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            if key == self.key {
                name = map.next_value::<Value>()?.as_str().map(str::to_owned);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            seen.push(key);
        }
        Ok(name)
    }
}

/// Why an object's members could not be read.
#[derive(Debug)]
enum Shape {
    NotObject,
    Repeated,
}

/// An object's members in order, their values raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn of(raw: &'a str) -> Result<Self, Shape> {
        if !raw.starts_with('{') {
            return Err(Shape::NotObject);
        }
        serde_json::from_str::<Members<'a>>(raw).map_err(|_| Shape::Repeated)
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The object again, with `key`'s value replaced by `value` (raw JSON).
    fn write(&self, key: &str, value: &str) -> String {
        let mut out = String::with_capacity(self.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum());
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k.as_ref()).unwrap_or_default());
            out.push(':');
            out.push_str(if k == key { value } else { v.get() });
        }
        out.push('}');
        out
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object without repeated keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            if members.iter().any(|(k, _)| *k == key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(Members(members))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only(names: &'static [&'static str]) -> impl Fn(ListKind, &str) -> bool {
        move |_, name| names.contains(&name)
    }

    #[test]
    fn entries_are_taken_out_and_everything_else_kept_byte_for_byte() {
        let text = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a","inputSchema":{"type":"object","x":1.50}},{"name":"secret"},{"name":"b","annotations":{"n":12345678901234567890}}],"nextCursor":"c\u00e9","_meta":{"k":[1, 2]}},"extra":true}"#;
        let lists = [(json!(7), ListKind::Tools)];
        let Outcome::Filtered(out) = filter(text, &lists, &only(&["a", "b"])) else {
            panic!("filtered")
        };
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"a","inputSchema":{"type":"object","x":1.50}},{"name":"b","annotations":{"n":12345678901234567890}}],"nextCursor":"c\u00e9","_meta":{"k":[1, 2]}},"extra":true}"#
        );
        assert_eq!(filter(text, &lists, &only(&["a", "b", "secret"])), Outcome::Unchanged);
    }

    #[test]
    fn only_responses_to_this_bodys_list_requests_are_touched() {
        let text = r#"{"jsonrpc":"2.0","id":"x","result":{"prompts":[{"name":"p"}]}}"#;
        let lists = [(json!("x"), ListKind::Prompts)];
        let none = |_: ListKind, _: &str| false;
        assert_eq!(
            filter(text, &lists, &none),
            Outcome::Filtered(r#"{"jsonrpc":"2.0","id":"x","result":{"prompts":[]}}"#.into())
        );
        assert_eq!(
            filter(text, &[(json!("y"), ListKind::Prompts)], &none),
            Outcome::Unchanged
        );
        assert_eq!(
            filter(text, &[(json!("x"), ListKind::Tools)], &none),
            Outcome::Unchanged
        );
        let error = r#"{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}"#;
        assert_eq!(filter(error, &lists, &none), Outcome::Unchanged);
        assert_eq!(filter("not json", &lists, &none), Outcome::NotJson);
        assert_eq!(filter(r#""text""#, &lists, &none), Outcome::Unchanged);
    }

    #[test]
    fn each_kind_is_named_by_its_own_key() {
        let lists = [(json!(1), ListKind::ResourceTemplates)];
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"a://{x}","name":"open"},{"uriTemplate":"b://{x}","name":"a://{x}"}]}}"#;
        let Outcome::Filtered(out) = filter(text, &lists, &only(&["a://{x}"])) else {
            panic!("filtered")
        };
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"a://{x}","name":"open"}]}}"#
        );
    }

    #[test]
    fn what_cannot_be_read_is_hidden_or_refused() {
        let lists = [(json!(1), ListKind::Tools)];
        let all = |_: ListKind, _: &str| true;
        // An entry with no name, a name that is not a string, or a repeated key: hidden.
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"x"},{"name":5},{"name":"a","name":"b"},{"name":"ok"}]}}"#;
        assert_eq!(
            filter(text, &lists, &all),
            Outcome::Filtered(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"}]}}"#.into())
        );
        // The path to the list repeats a key, or the list is not an array: refused.
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"x"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"x"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":7}"#,
        ] {
            assert_eq!(filter(text, &lists, &all), Outcome::Unfilterable, "{text}");
        }
        // A repeated key in a message that answers something else is left alone.
        let other = r#"{"jsonrpc":"2.0","id":3,"result":{"a":1,"a":2}}"#;
        assert_eq!(filter(other, &lists, &all), Outcome::Unchanged);
    }

    #[test]
    fn a_batch_is_filtered_element_by_element() {
        let lists = [(json!(2), ListKind::Tools)];
        let text = r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"x"},{"name":"y"}]}}]"#;
        assert_eq!(
            filter(text, &lists, &only(&["y"])),
            Outcome::Filtered(
                r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"y"}]}}]"#
                    .into()
            )
        );
    }
}
