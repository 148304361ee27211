//! `classify_mcp_body`: what the MCP guard reads of a POST body (the tools it calls, or
//! `None` when the guard refuses the body).
//!
//! Two modes, chosen by the first byte:
//! * raw (first byte < 0x80, which is where every JSON text starts): the input is the body;
//! * structured (first byte >= 0x80, which no JSON text starts with): the rest of the input
//!   drives `arbitrary` to build a JSON-RPC message, a batch or another JSON value as a tree,
//!   rendered with escaped keys and strings (`tools\/call`, `\u0074ools/call`), whitespace
//!   and, sometimes, a repeated key (plain or escaped) in a message or its `params`. The tree
//!   is the model: the body must read back as it, and the guard must answer what the oracle
//!   answers for it.
//!
//! Checked on every body, with an independent strict RFC 8259 parser (`Strict`, written here:
//! it decodes escapes and reports repeated keys at any depth) and an independent classifier
//! (`oracle`) of the JSON-RPC rules the guard applies:
//! * it never panics;
//! * not JSON (per the strict parser or per serde_json) or a repeated key anywhere: `None`;
//! * JSON without repeated keys that serde_json reads: exactly the oracle's answer, so `None`
//!   only for bodies that really cannot be classified (jsonrpc `"2.0"`; id absent, string,
//!   number or null; a request/notification has a string `method` and object `params` if any,
//!   a `tools/call` and a `prompts/get` a string `params.name`, a `resources/read`,
//!   `resources/subscribe`, `resources/unsubscribe` and `resources/directory/read` a string
//!   `params.uri`, a `completion/complete` a `params.ref` naming a prompt or a resource by a
//!   string, a `subscriptions/listen` no `resourceSubscriptions` in `params.notifications` or
//!   an array of strings; otherwise a response with `id` and exactly one of
//!   `result`/`error`; a batch is a non-empty array of such objects);
//! * `Some(tools)`: serde_json reads the body as an object or a non-empty array of objects,
//!   each with `"jsonrpc": "2.0"`, and its reading of `params.name` of every element whose
//!   `method` is `"tools/call"`, in order, is exactly `tools`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_wacht::guard::classify_mcp_body;

// ---------------------------------------------------------------------------------------------
// A JSON tree of our own, and a strict parser for it.

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    /// The number's text as written (the rules only ask whether a value is a number).
    Num(String),
    Str(String),
    Arr(Vec<Node>),
    /// Members in order, repeated keys kept.
    Obj(Vec<(String, Node)>),
}

#[derive(Debug, PartialEq)]
enum Bad {
    /// Not RFC 8259 JSON text.
    Syntax,
    /// Grammatical, but a `\u` escape leaves a lone surrogate: no Unicode string.
    LoneSurrogate,
    /// Nested deeper than this parser follows (serde_json stops at 128).
    TooDeep,
}

const MAX_DEPTH: usize = 256;

struct Strict<'a> {
    s: &'a [u8],
    i: usize,
    /// A key repeated in some object (after decoding escapes).
    repeated: bool,
}

impl<'a> Strict<'a> {
    fn parse(s: &'a [u8]) -> Result<(Node, bool), Bad> {
        let mut p = Strict { s, i: 0, repeated: false };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != s.len() {
            return Err(Bad::Syntax);
        }
        Ok((v, p.repeated))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), Bad> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bad::Syntax)
        }
    }

    fn lit(&mut self, word: &[u8], v: Node) -> Result<Node, Bad> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(Bad::Syntax)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, Bad> {
        match self.peek().ok_or(Bad::Syntax)? {
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(Bad::TooDeep);
                }
                self.i += 1;
                self.ws();
                let mut members: Vec<(String, Node)> = Vec::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Node::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    if members.iter().any(|(seen, _)| *seen == k) {
                        self.repeated = true;
                    }
                    members.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Node::Obj(members));
                        }
                        _ => return Err(Bad::Syntax),
                    }
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Bad::TooDeep);
                }
                self.i += 1;
                self.ws();
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Node::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Node::Arr(items));
                        }
                        _ => return Err(Bad::Syntax),
                    }
                }
            }
            b'"' => self.string().map(Node::Str),
            b't' => self.lit(b"true", Node::Bool(true)),
            b'f' => self.lit(b"false", Node::Bool(false)),
            b'n' => self.lit(b"null", Node::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Bad::Syntax),
        }
    }

    /// number = [ minus ] int [ frac ] [ exp ]
    fn number(&mut self) -> Result<Node, Bad> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bad::Syntax),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(Bad::Syntax);
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(Bad::Syntax);
            }
            self.digits();
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII");
        Ok(Node::Num(text.to_owned()))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, Bad> {
        let h = self.s.get(self.i..self.i + 4).ok_or(Bad::Syntax)?;
        let mut n = 0;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(Bad::Syntax),
            };
            n = n * 16 + u32::from(d);
        }
        self.i += 4;
        Ok(n)
    }

    /// A string, escapes decoded. A lone surrogate is only reported once the whole string is
    /// known to be grammatical, so that a syntax error later in it still reads as `Syntax`.
    fn string(&mut self) -> Result<String, Bad> {
        self.eat(b'"')?;
        let mut out = String::new();
        let mut lone = false;
        loop {
            let c = self.peek().ok_or(Bad::Syntax)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return if lone { Err(Bad::LoneSurrogate) } else { Ok(out) };
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.peek().ok_or(Bad::Syntax)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xD800..0xDC00).contains(&u) {
                                // A high surrogate: a pair only if `\u` + low surrogate follows.
                                if self.s[self.i..].starts_with(b"\\u") {
                                    let save = self.i;
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        let c = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                                        out.push(char::from_u32(c).expect("a pair is a scalar"));
                                    } else {
                                        lone = true;
                                        self.i = save;
                                    }
                                } else {
                                    lone = true;
                                }
                            } else if (0xDC00..0xE000).contains(&u) {
                                lone = true;
                            } else {
                                out.push(char::from_u32(u).expect("not a surrogate"));
                            }
                        }
                        _ => return Err(Bad::Syntax),
                    }
                }
                0x00..=0x1F => return Err(Bad::Syntax),
                0x20..=0x7F => {
                    out.push(char::from(c));
                    self.i += 1;
                }
                _ => {
                    // One UTF-8 encoded scalar value, strictly (no overlongs, no surrogates).
                    let len = match c {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => return Err(Bad::Syntax),
                    };
                    let bytes = self.s.get(self.i..self.i + len).ok_or(Bad::Syntax)?;
                    let ch = std::str::from_utf8(bytes).map_err(|_| Bad::Syntax)?;
                    out.push_str(ch);
                    self.i += len;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: the guard's JSON-RPC rules over our own tree (no repeated keys by then).

fn member<'a>(m: &'a [(String, Node)], key: &str) -> Option<&'a Node> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// One message: `Err(())` when it cannot be classified, else the tool a `tools/call` calls.
fn oracle_message(m: &[(String, Node)]) -> Result<Option<String>, ()> {
    if !matches!(member(m, "jsonrpc"), Some(Node::Str(v)) if v == "2.0") {
        return Err(());
    }
    let id = member(m, "id");
    match id {
        None | Some(Node::Str(_) | Node::Num(_) | Node::Null) => {}
        Some(_) => return Err(()),
    }
    let Some(method) = member(m, "method") else {
        // A response: an id, and a result or an error but not both.
        let result = member(m, "result").is_some();
        let error = member(m, "error").is_some();
        return if id.is_some() && result ^ error { Ok(None) } else { Err(()) };
    };
    let Node::Str(method) = method else { return Err(()) };
    let params = match member(m, "params") {
        None => &[][..],
        Some(Node::Obj(p)) => p.as_slice(),
        Some(_) => return Err(()),
    };
    // A method that names what the guard judges must name it as a string.
    let string = |m: &[(String, Node)], key: &str| match member(m, key) {
        Some(Node::Str(s)) => Ok(s.clone()),
        _ => Err(()),
    };
    match method.as_str() {
        "tools/call" => string(params, "name").map(Some),
        "prompts/get" => string(params, "name").map(|_| None),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" | "resources/directory/read" => {
            string(params, "uri").map(|_| None)
        }
        "completion/complete" => {
            let Some(Node::Obj(reference)) = member(params, "ref") else { return Err(()) };
            match member(reference, "type") {
                Some(Node::Str(t)) if t == "ref/prompt" => string(reference, "name").map(|_| None),
                Some(Node::Str(t)) if t == "ref/resource" => string(reference, "uri").map(|_| None),
                _ => Err(()),
            }
        }
        "subscriptions/listen" => {
            let filter = match member(params, "notifications") {
                Some(Node::Obj(filter)) => filter.as_slice(),
                _ => &[][..],
            };
            match member(filter, "resourceSubscriptions") {
                None | Some(Node::Null) => Ok(None),
                Some(Node::Arr(uris)) if uris.iter().all(|u| matches!(u, Node::Str(_))) => Ok(None),
                Some(_) => Err(()),
            }
        }
        _ => Ok(None),
    }
}

fn oracle(top: &Node) -> Option<Vec<String>> {
    let messages: Vec<&Vec<(String, Node)>> = match top {
        Node::Obj(m) => vec![m],
        Node::Arr(items) if !items.is_empty() => {
            let mut all = Vec::new();
            for item in items {
                let Node::Obj(m) = item else { return None };
                all.push(m);
            }
            all
        }
        _ => return None,
    };
    let mut tools = Vec::new();
    for m in messages {
        if let Some(tool) = oracle_message(m).ok()? {
            tools.push(tool);
        }
    }
    Some(tools)
}

// ---------------------------------------------------------------------------------------------
// Checks on any body.

/// serde_json's reading of an accepted body: messages that are objects with `"jsonrpc": "2.0"`,
/// and the `params.name` of every `tools/call`, in order.
fn serde_json_tools(v: &Value) -> Vec<String> {
    let messages: Vec<&Value> = match v {
        Value::Object(_) => vec![v],
        Value::Array(items) => {
            assert!(!items.is_empty(), "accepted an empty batch");
            items.iter().collect()
        }
        other => panic!("accepted a body that is neither an object nor an array: {other}"),
    };
    let mut tools = Vec::new();
    for m in messages {
        assert!(m.is_object(), "accepted a batch element that is not an object: {m}");
        assert_eq!(m["jsonrpc"], "2.0", "accepted a message without jsonrpc 2.0: {m}");
        if m["method"] == "tools/call" {
            let name = m["params"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("accepted a tools/call without a string params.name: {m}"));
            tools.push(name.to_owned());
        }
    }
    tools
}

fn check(body: &[u8]) -> Option<Vec<String>> {
    let got = classify_mcp_body(body);
    let strict = Strict::parse(body);
    let serde = serde_json::from_slice::<Value>(body);
    let show = || String::from_utf8_lossy(body).into_owned();

    if let Err(Bad::Syntax) = strict {
        // serde_json must not be laxer than RFC 8259 either (the guard reads with it).
        assert!(serde.is_err(), "serde_json reads what RFC 8259 does not: {}", show());
    }
    let (tree, repeated) = match strict {
        Ok(parsed) => parsed,
        Err(bad) => {
            assert_eq!(got, None, "accepted a body that is not JSON ({bad:?}): {}", show());
            return got;
        }
    };
    if repeated {
        assert_eq!(got, None, "accepted a body with a repeated key: {}", show());
        return got;
    }
    let Ok(value) = serde else {
        // Grammatical, but serde_json cannot read it (a number beyond f64, nesting past 128):
        // the guard cannot either.
        assert_eq!(got, None, "accepted a body serde_json cannot read: {}", show());
        return got;
    };
    assert_eq!(got, oracle(&tree), "guard and oracle disagree on {}", show());
    if let Some(tools) = &got {
        assert_eq!(
            tools,
            &serde_json_tools(&value),
            "the tools called are not the ones serde_json reads in {}",
            show()
        );
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Structured mode: JSON-RPC messages built as trees, rendered with escapes and whitespace.

/// How a string is written.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Esc {
    Plain,
    /// `/` as `\/`.
    Slash,
    /// Every character as `\uXXXX` (surrogate pairs beyond the BMP).
    Unicode { upper: bool },
    /// Character i escaped when bit i % 32 is set.
    Mixed(u32),
}

fn unicode_escape(out: &mut String, c: char, upper: bool) {
    let mut units = [0u16; 2];
    for u in c.encode_utf16(&mut units) {
        if upper {
            out.push_str(&format!("\\u{u:04X}"));
        } else {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
}

fn plain_escape(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

fn render_str(out: &mut String, s: &str, esc: Esc) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        match esc {
            Esc::Plain => plain_escape(out, c),
            Esc::Slash if c == '/' => out.push_str("\\/"),
            Esc::Slash => plain_escape(out, c),
            Esc::Unicode { upper } => unicode_escape(out, c, upper),
            Esc::Mixed(mask) if mask >> (i % 32) & 1 == 1 => unicode_escape(out, c, i % 2 == 0),
            Esc::Mixed(_) => plain_escape(out, c),
        }
    }
    out.push('"');
}

/// A tree to render: `Node` with the escape of each string and key.
#[derive(Debug)]
enum R {
    Null,
    Bool(bool),
    Num(String),
    Str(String, Esc),
    Arr(Vec<R>),
    Obj(Vec<(String, Esc, R)>),
}

impl R {
    fn node(&self) -> Node {
        match self {
            R::Null => Node::Null,
            R::Bool(b) => Node::Bool(*b),
            R::Num(n) => Node::Num(n.clone()),
            R::Str(s, _) => Node::Str(s.clone()),
            R::Arr(items) => Node::Arr(items.iter().map(R::node).collect()),
            R::Obj(m) => Node::Obj(m.iter().map(|(k, _, v)| (k.clone(), v.node())).collect()),
        }
    }

    fn render(&self, out: &mut String, ws: &str) {
        match self {
            R::Null => out.push_str("null"),
            R::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            R::Num(n) => out.push_str(n),
            R::Str(s, esc) => render_str(out, s, *esc),
            R::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    item.render(out, ws);
                }
                out.push_str(ws);
                out.push(']');
            }
            R::Obj(m) => {
                out.push('{');
                for (i, (k, esc, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    render_str(out, k, *esc);
                    out.push_str(ws);
                    out.push(':');
                    out.push_str(ws);
                    v.render(out, ws);
                }
                out.push_str(ws);
                out.push('}');
            }
        }
    }
}

/// Any JSON value.
#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    /// `1e<n>`: beyond f64 for large n, which serde_json refuses.
    Exp(i16),
    Str(Text, Esc),
    Arr(Vec<J>),
    Obj(Vec<(Key, J)>),
}

impl J {
    fn r(&self) -> R {
        match self {
            J::Null => R::Null,
            J::Bool(b) => R::Bool(*b),
            J::Int(i) => R::Num(i.to_string()),
            J::Big(u) => R::Num(u.to_string()),
            J::Float(f) => R::Num(serde_json::Number::from_f64(*f).map_or("0.5".into(), |n| n.to_string())),
            J::Exp(e) => R::Num(format!("1e{e}")),
            J::Str(t, esc) => R::Str(t.get(), *esc),
            J::Arr(items) => R::Arr(items.iter().map(J::r).collect()),
            J::Obj(m) => R::Obj(m.iter().map(|(k, v)| (k.text.get(), k.esc, v.r())).collect()),
        }
    }
}

/// Strings the rules care about, their near misses, or anything.
const WORDS: &[&str] = &[
    "tools/call",
    "tools/list",
    "initialize",
    "notifications/initialized",
    "ping",
    "resources/read",
    "resources/subscribe",
    "prompts/get",
    "completion/complete",
    "subscriptions/listen",
    "tasks/get",
    "uri",
    "2.0",
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
    "name",
    "arguments",
    "whoami",
    "delete_project",
    "Tools/call",
    "tools/call ",
    " tools/call",
    "tools/call\u{0}",
    "tools//call",
    "tools\\/call",
    "tools/calls",
    "tool/call",
    "2.0 ",
    "2",
    "",
];

#[derive(Arbitrary, Debug)]
enum Text {
    Word(u8),
    Any(String),
}

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Word(i) => WORDS[usize::from(*i) % WORDS.len()].to_owned(),
            Text::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Key {
    text: Text,
    esc: Esc,
}

/// A member of a message: left out, `null`, a value of its type, or any JSON value.
#[derive(Arbitrary, Debug)]
enum F<T> {
    Absent,
    Null,
    Val(T),
    Wrong(J),
}

impl<T> F<T> {
    fn push(&self, out: &mut Vec<(String, Esc, R)>, key: &str, esc: Esc, render: impl Fn(&T) -> R) {
        match self {
            F::Absent => {}
            F::Null => out.push((key.to_owned(), esc, R::Null)),
            F::Val(t) => out.push((key.to_owned(), esc, render(t))),
            F::Wrong(j) => out.push((key.to_owned(), esc, j.r())),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum IdB {
    Int(i64),
    Str(Text, Esc),
}

#[derive(Arbitrary, Debug)]
enum MethodB {
    Initialize,
    ToolsList,
    ToolsCall,
    Initialized,
    Text(Text),
}

#[derive(Arbitrary, Debug)]
struct ParamsB {
    name: F<(Text, Esc)>,
    arguments: Option<J>,
    extra: Vec<(Key, J)>,
    /// Repeat one of the members written (index) with another value, under an escape.
    duplicate: Option<(u8, Esc, J)>,
    rotate: u8,
}

#[derive(Arbitrary, Debug)]
struct MessageB {
    /// `"2.0"` unless it is mutated.
    jsonrpc: F<Option<Text>>,
    id: F<IdB>,
    method: F<MethodB>,
    params: F<ParamsB>,
    result: Option<J>,
    error: Option<J>,
    extra: Vec<(Key, J)>,
    /// Escapes of the known keys and of the method value.
    key_esc: [Esc; 6],
    method_esc: Esc,
    duplicate: Option<(u8, Esc, J)>,
    rotate: u8,
}

fn finish(mut members: Vec<(String, Esc, R)>, duplicate: &Option<(u8, Esc, J)>, rotate: u8) -> R {
    if let Some((i, esc, j)) = duplicate
        && !members.is_empty()
    {
        let key = members[usize::from(*i) % members.len()].0.clone();
        members.push((key, *esc, j.r()));
    }
    if !members.is_empty() {
        let n = usize::from(rotate) % members.len();
        members.rotate_left(n);
    }
    R::Obj(members)
}

impl ParamsB {
    fn r(&self) -> R {
        let mut m = Vec::new();
        self.name.push(&mut m, "name", Esc::Plain, |(t, esc)| R::Str(t.get(), *esc));
        if let Some(a) = &self.arguments {
            m.push(("arguments".to_owned(), Esc::Plain, a.r()));
        }
        for (k, v) in &self.extra {
            m.push((k.text.get(), k.esc, v.r()));
        }
        finish(m, &self.duplicate, self.rotate)
    }
}

impl MessageB {
    fn r(&self) -> R {
        let e = self.key_esc;
        let mut m = Vec::new();
        self.jsonrpc.push(&mut m, "jsonrpc", e[0], |t| match t {
            None => R::Str("2.0".into(), Esc::Plain),
            Some(t) => R::Str(t.get(), Esc::Plain),
        });
        self.id.push(&mut m, "id", e[1], |id| match id {
            IdB::Int(i) => R::Num(i.to_string()),
            IdB::Str(t, esc) => R::Str(t.get(), *esc),
        });
        self.method.push(&mut m, "method", e[2], |method| {
            let s = match method {
                MethodB::Initialize => "initialize".to_owned(),
                MethodB::ToolsList => "tools/list".to_owned(),
                MethodB::ToolsCall => "tools/call".to_owned(),
                MethodB::Initialized => "notifications/initialized".to_owned(),
                MethodB::Text(t) => t.get(),
            };
            R::Str(s, self.method_esc)
        });
        self.params.push(&mut m, "params", e[3], ParamsB::r);
        if let Some(j) = &self.result {
            m.push(("result".to_owned(), e[4], j.r()));
        }
        if let Some(j) = &self.error {
            m.push(("error".to_owned(), e[5], j.r()));
        }
        for (k, v) in &self.extra {
            m.push((k.text.get(), k.esc, v.r()));
        }
        finish(m, &self.duplicate, self.rotate)
    }
}

#[derive(Arbitrary, Debug)]
enum Element {
    Message(MessageB),
    Other(J),
}

#[derive(Arbitrary, Debug)]
enum Top {
    Message(MessageB),
    Batch(Vec<Element>),
    Other(J),
}

const WS: &[&str] = &["", " ", "\n  ", "\t", "\r\n"];

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(top) = Top::arbitrary(&mut u) else { return };
    let Ok(ws) = u8::arbitrary(&mut u) else { return };
    let r = match &top {
        Top::Message(m) => m.r(),
        Top::Batch(items) => R::Arr(
            items
                .iter()
                .map(|e| match e {
                    Element::Message(m) => m.r(),
                    Element::Other(j) => j.r(),
                })
                .collect(),
        ),
        Top::Other(j) => j.r(),
    };
    let mut body = String::new();
    r.render(&mut body, WS[usize::from(ws) % WS.len()]);
    let model = r.node();

    // The renderer and the strict parser agree: the body reads back as the tree.
    match Strict::parse(body.as_bytes()) {
        Ok((tree, _)) => assert_eq!(tree, model, "the body does not read back as built: {body}"),
        Err(Bad::TooDeep) => {}
        Err(bad) => panic!("a built body does not parse ({bad:?}): {body}"),
    }
    let got = check(body.as_bytes());
    let expected = if repeats(&model) || serde_json::from_str::<Value>(&body).is_err() {
        None
    } else {
        oracle(&model)
    };
    assert_eq!(got, expected, "guard and model disagree on {body}");
}

/// A key repeated in some object of the tree.
fn repeats(n: &Node) -> bool {
    match n {
        Node::Arr(items) => items.iter().any(repeats),
        Node::Obj(m) => {
            m.iter().enumerate().any(|(i, (k, _))| m[..i].iter().any(|(seen, _)| seen == k))
                || m.iter().any(|(_, v)| repeats(v))
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(&b) if b >= 0x80 => structured(&data[1..]),
        _ => {
            check(data);
        }
    }
});
