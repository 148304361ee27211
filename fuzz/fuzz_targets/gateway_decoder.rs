//! `Decision::decode`: the body of a gateway `200` answer (`gateway-protocol.md` §3.3-3.5).
//!
//! Two modes, chosen by the first byte:
//! * raw (first byte < 0x80, which is where every JSON text starts): the input is the body;
//! * structured (first byte >= 0x80, which no JSON text starts with): the rest of the input
//!   drives `arbitrary` to build a body in the reference shape with mutated fields (wrong
//!   types, nulls, missing and duplicate keys, unknown keys, odd ids, timestamps and URNs), so
//!   the fuzzer reaches the deep paths of the decoder. Its bodies go through the same checks,
//!   plus a model of the expected decision.
//!
//! Checked on every body:
//! * `Allowed(g)` only if the bytes are JSON whose top-level `allowed` is exactly `true` and
//!   `identity` is a non-null object (read by an independent shape probe), and `metadata` is an
//!   object with a string `expires_at` and an allowed `principal_type`; `g.client_id` is
//!   non-empty and comes from `identity.key_name` or the `x-wacht-oauth-client-id` header
//!   entry; the ids, expiry, scopes, permissions, resource and issuer are the body's.
//! * `PermissionDenied`/`RateLimited` only for `allowed: false` with that `reason` (and
//!   `retry_after` in milliseconds); `InvalidToken` never (that is a 401, not a body); errors
//!   are always `GatewayError::Decode`.
//! * A principal built from the grant formats and serialises without panicking, and its
//!   RFC 3339 expiry reads back to the same instant.
//! * The granted resource displays exactly as sent (the leading-zero finding shared with
//!   `resource_urn` is fixed: see `regressions/`).
//! * `Decision::decode_api_key` (an API key's answer, §4) on the same bytes: `Allowed(g)` only
//!   for `allowed: true` with an identity whose `key_id` is a decimal id and whose `app_slug`
//!   (the grant's client id) and `key_name` are non-empty, never for a body whose metadata says
//!   `principal_type: oauth_access_token`; the grant carries the key; its principal serialises.
#![no_main]

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower_wacht::gateway::{Decision, GatewayError};
use tower_wacht::principal::Grant;
use tower_wacht::{Principal, ResourceUrn};

// ---------------------------------------------------------------------------------------------
// Independent shape probe: what JSON value stands at `allowed` and `identity`. Nested content
// is skipped without interpretation (so numbers out of f64 range inside are fine, as they are
// for the decoder).

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Bool(bool),
    Number,
    String,
    Array,
    Object,
    Null,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Shape, E> {
                Ok(Shape::Bool(b))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Number)
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::String)
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Object)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    allowed: Option<Shape>,
    #[serde(default)]
    identity: Option<Shape>,
}

// ---------------------------------------------------------------------------------------------
// Checks on any body.

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn strings_at(v: &Value, path: &[&str]) -> BTreeSet<String> {
    let mut v = v;
    for p in path {
        match v.get(p) {
            Some(x) => v = x,
            None => return BTreeSet::new(),
        }
    }
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string element").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn check(body: &[u8]) -> Result<Decision, GatewayError> {
    let decision = Decision::decode(body);
    let value = serde_json::from_slice::<Value>(body).ok();
    match &decision {
        Ok(Decision::Allowed(g)) => {
            // Grammar-valid JSON whose top level is an object with `allowed: true` and an
            // object `identity`, by a reading that does not share the decoder's types.
            serde_json::from_slice::<IgnoredAny>(body).expect("Allowed from a body that is not JSON");
            let probe: Probe = serde_json::from_slice(body).expect("Allowed from a body that is not an object");
            assert_eq!(
                probe.allowed,
                Some(Shape::Bool(true)),
                "Allowed without `allowed: true`"
            );
            assert_eq!(
                probe.identity,
                Some(Shape::Object),
                "Allowed without an identity object"
            );
            assert!(!g.client_id.as_str().is_empty(), "Allowed with an empty client id");
            // serde_json's Value refuses numbers beyond f64 that the grammar allows; compare
            // field by field whenever it can read the body.
            if let Some(v) = &value {
                check_grant(v, g);
            }
            check_principal(g);
        }
        Ok(Decision::PermissionDenied) => {
            let probe: Probe = serde_json::from_slice(body).expect("a decision from a non-object");
            assert_eq!(probe.allowed, Some(Shape::Bool(false)));
            if let Some(v) = &value {
                assert_eq!(v["reason"], "permission_denied");
            }
        }
        Ok(Decision::RateLimited { retry_after, .. }) => {
            let probe: Probe = serde_json::from_slice(body).expect("a decision from a non-object");
            assert_eq!(probe.allowed, Some(Shape::Bool(false)));
            if let Some(v) = &value {
                assert_eq!(v["reason"], "rate_limited");
                let ms = v.get("retry_after").and_then(Value::as_u64);
                assert_eq!(*retry_after, ms.map(Duration::from_millis));
            }
        }
        Ok(Decision::InvalidToken) => panic!("a 200 body decoded as InvalidToken"),
        Err(GatewayError::Decode(_)) => {}
        Err(other) => panic!("decoding failed with a non-decode error {other:?}"),
    }
    decision
}

fn check_api_key(body: &[u8]) {
    match Decision::decode_api_key(body) {
        Ok(Decision::Allowed(g)) => {
            let probe: Probe = serde_json::from_slice(body).expect("Allowed from a body that is not an object");
            assert_eq!(probe.allowed, Some(Shape::Bool(true)), "a key Allowed without `allowed: true`");
            assert_eq!(probe.identity, Some(Shape::Object), "a key Allowed without an identity object");
            let key = g.api_key.as_deref().expect("a key's grant carries the key");
            assert!(!g.client_id.as_str().is_empty() && g.client_id.as_str() == &*key.app_slug);
            assert!(!key.key_name.is_empty());
            if let Ok(v) = serde_json::from_slice::<Value>(body) {
                assert_eq!(
                    str_at(&v, &["identity", "key_id"]).and_then(|k| k.parse::<i64>().ok()),
                    Some(key.key_id.get())
                );
                assert_ne!(
                    str_at(&v, &["metadata", "principal_type"]),
                    Some("oauth_access_token"),
                    "an OAuth answer taken for a key's"
                );
            }
            let p = Principal::from_grant(*g);
            let _ = format!("{p:?}");
            serde_json::to_value(&p).expect("a key's principal serialises");
        }
        Ok(Decision::InvalidToken) => panic!("a 200 body decoded as InvalidToken"),
        Ok(_) | Err(GatewayError::Decode(_)) => {}
        Err(other) => panic!("decoding failed with a non-decode error {other:?}"),
    }
}

fn check_grant(v: &Value, g: &Grant) {
    assert_eq!(v["allowed"], Value::Bool(true));
    let identity = v["identity"].as_object().expect("identity object");
    let metadata = v["metadata"].as_object().expect("Allowed without a metadata object");
    match metadata.get("principal_type") {
        None | Some(Value::Null) => {}
        Some(t) => assert_eq!(t, "oauth_access_token", "Allowed for another principal type"),
    }
    let deployment = identity
        .get("deployment_id")
        .and_then(Value::as_str)
        .expect("deployment_id string");
    assert_eq!(deployment.parse::<i64>().ok(), g.deployment_id.map(|d| d.get()));
    match identity.get("owner_user_id") {
        None | Some(Value::Null) => assert_eq!(g.owner_user_id, None),
        Some(o) => {
            let o = o.as_str().expect("owner_user_id string");
            assert_eq!(o.parse::<i64>().ok(), g.owner_user_id.map(|u| u.get()));
        }
    }
    let client = match identity.get("key_name") {
        Some(Value::String(k)) => k.as_str(),
        _ => str_at(v, &["headers", "x-wacht-oauth-client-id"]).expect("client id from nowhere"),
    };
    assert_eq!(g.client_id.as_str(), client);
    let expires = metadata
        .get("expires_at")
        .and_then(Value::as_str)
        .expect("expires_at string");
    let expires = OffsetDateTime::parse(expires, &Rfc3339).expect("expires_at is RFC 3339");
    assert_eq!(g.expires_at, SystemTime::from(expires));
    let granted = str_at(v, &["metadata", "granted_resource"]).or_else(|| {
        // Only when the metadata field is absent or null does the header stand in.
        match metadata.get("granted_resource") {
            None | Some(Value::Null) => str_at(v, &["headers", "x-wacht-granted-resource"]),
            Some(_) => None,
        }
    });
    assert_eq!(g.granted_resource, granted.map(ResourceUrn::parse));
    if let (Some(r), Some(granted)) = (&g.granted_resource, granted) {
        // The URN reads back as the gateway wrote it.
        assert_eq!(r.to_string(), granted);
    }
    let scopes: BTreeSet<String> = g.scopes.iter().map(str::to_owned).collect();
    assert_eq!(scopes, strings_at(v, &["metadata", "scopes"]));
    let permissions: BTreeSet<String> = g.permissions.iter().map(str::to_owned).collect();
    assert_eq!(permissions, strings_at(v, &["permissions"]));
    assert_eq!(g.oauth_resource.as_deref(), str_at(v, &["metadata", "oauth_resource"]));
    assert_eq!(g.issuer.as_deref(), str_at(v, &["headers", "x-wacht-oauth-issuer"]));
    // A gateway decision always has a request id (empty when the body has none).
    assert_eq!(
        g.request_id.as_ref().map(|r| r.to_string()).as_deref(),
        Some(str_at(v, &["request_id"]).unwrap_or(""))
    );
}

fn check_principal(g: &Grant) {
    let p = Principal::from_grant(g.clone());
    let _ = format!("{p:?}");
    let json = serde_json::to_value(&p).expect("a principal serialises");
    assert_eq!(json["client_id"], g.client_id.as_str());
    let shown = p.expires_at_rfc3339();
    let back = OffsetDateTime::parse(&shown, &Rfc3339).expect("expires_at_rfc3339 is RFC 3339");
    assert_eq!(SystemTime::from(back), g.expires_at, "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Structured mode: the reference body with mutated fields.

const CLIENT_ID: &str = "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl";
const URNS: &[&str] = &[
    "urn:wacht:organization:427001234567890561",
    "urn:wacht:user:432119876543210241",
    "urn:wacht:workspace:7",
    "urn:wacht:organization:",
    "urn:wacht:team:1",
    "https://api.example.com",
];
const SCOPES: &[&str] = &[
    "projects:read",
    "projects:write",
    "org:projects:read",
    "org:projects:write",
    "mcp:invoke",
];
const TIMES: &[&str] = &[
    "2026-06-29T14:05:11.482913Z",
    "2026-06-29T14:05:11Z",
    "2026-06-29T16:05:11.1+02:00",
    "1969-12-31T23:59:59.999999999Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
];

/// Any JSON value, for the wrong-type mutations and unknown keys.
#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Exp(i16),
    Str(String),
    StrTrue,
    Arr(Vec<u8>),
    Obj(Vec<(String, i8)>),
}

impl J {
    fn text(&self) -> String {
        match self {
            J::Null => "null".into(),
            J::Bool(b) => b.to_string(),
            J::Int(i) => i.to_string(),
            J::Big(u) => u.to_string(),
            J::Float(f) => serde_json::Number::from_f64(*f).map_or("1.5".into(), |n| n.to_string()),
            J::Exp(e) => format!("1e{e}"),
            J::Str(s) => json_str(s),
            J::StrTrue => "\"true\"".into(),
            J::Arr(v) => serde_json::to_string(v).unwrap_or_default(),
            J::Obj(kv) => obj(kv.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(), false),
        }
    }
}

/// A field of the reference body: left out, `null`, a value of its type, or another JSON value.
#[derive(Arbitrary, Debug)]
enum F<T> {
    Absent,
    Null,
    Val(T),
    Wrong(J),
}

impl<T> F<T> {
    /// The field's type is right (absent and null count: every field is optional to serde).
    fn typed(&self, inner: impl Fn(&T) -> bool) -> bool {
        match self {
            F::Wrong(_) => false,
            F::Val(t) => inner(t),
            _ => true,
        }
    }

    fn val(&self) -> Option<&T> {
        match self {
            F::Val(t) => Some(t),
            _ => None,
        }
    }
}

/// A string field: its reference value, a numbered pick from a table, or anything.
#[derive(Arbitrary, Debug)]
enum S {
    Ref,
    Pick(u8),
    Any(String),
}

impl S {
    fn get(&self, reference: &str, table: &[&str]) -> String {
        match self {
            S::Ref => reference.to_owned(),
            S::Pick(i) => table[usize::from(*i) % table.len()].to_owned(),
            S::Any(s) => s.clone(),
        }
    }
}

/// A decimal id: a number (always valid) or any string.
#[derive(Arbitrary, Debug)]
enum Id {
    Num(i64),
    Padded(u32),
    Text(String),
}

impl Id {
    fn text(&self) -> String {
        match self {
            Id::Num(n) => n.to_string(),
            Id::Padded(n) => format!("00{n}"),
            Id::Text(s) => s.clone(),
        }
    }
    /// Some(id) when the string is certainly a valid i64 in decimal.
    fn valid(&self) -> Option<i64> {
        match self {
            Id::Num(n) => Some(*n),
            Id::Padded(n) => Some(i64::from(*n)),
            Id::Text(_) => None,
        }
    }
}

/// An expiry timestamp: from the table, generated in range, or any string.
#[derive(Arbitrary, Debug)]
enum Ts {
    Table(u8),
    Gen { secs: i64, nanos: u32, offset_minutes: i16 },
    Any(String),
}

impl Ts {
    /// The text and, when certainly valid RFC 3339, its instant.
    fn render(&self) -> (String, Option<SystemTime>) {
        match self {
            Ts::Table(i) => {
                let s = TIMES[usize::from(*i) % TIMES.len()];
                let t = OffsetDateTime::parse(s, &Rfc3339).expect("table time");
                (s.to_owned(), Some(t.into()))
            }
            Ts::Gen {
                secs,
                nanos,
                offset_minutes,
            } => {
                // Years 2..9998, so any offset keeps the local date in RFC 3339's range.
                const LO: i64 = -62_104_060_800; // 0002-01-01
                const HI: i64 = 253_370_764_800; // 9998-12-31
                let secs = LO + secs.rem_euclid(HI - LO);
                let t = OffsetDateTime::from_unix_timestamp(secs).expect("in range")
                    + time::Duration::nanoseconds(i64::from(nanos % 1_000_000_000));
                let m = offset_minutes % (24 * 60);
                let off = time::UtcOffset::from_hms((m / 60) as i8, (m % 60) as i8, 0).expect("offset");
                let local = t.to_offset(off);
                (local.format(&Rfc3339).expect("format"), Some(t.into()))
            }
            Ts::Any(s) => (s.clone(), None),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Reason {
    PermissionDenied,
    RateLimited,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderKey {
    ClientId,
    Issuer,
    GrantedResource,
    Other(String),
}

impl HeaderKey {
    fn name(&self) -> String {
        match self {
            HeaderKey::ClientId => "x-wacht-oauth-client-id".to_owned(),
            HeaderKey::Issuer => "x-wacht-oauth-issuer".to_owned(),
            HeaderKey::GrantedResource => "x-wacht-granted-resource".to_owned(),
            HeaderKey::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct IdentityB {
    deployment_id: F<Id>,
    key_name: F<S>,
    owner_user_id: F<Id>,
    reference_extras: bool,
    extra: Vec<(String, J)>,
}

#[derive(Arbitrary, Debug)]
struct MetadataB {
    principal_type: F<S>,
    scopes: F<Vec<S>>,
    oauth_resource: F<S>,
    granted_resource: F<S>,
    expires_at: F<Ts>,
    extra: Vec<(String, J)>,
}

#[derive(Arbitrary, Debug)]
struct BodyB {
    request_id: F<S>,
    allowed: F<bool>,
    reason: F<Reason>,
    identity: F<IdentityB>,
    permissions: F<Vec<S>>,
    metadata: F<MetadataB>,
    retry_after: F<u64>,
    headers: F<Vec<(HeaderKey, S)>>,
    reference_extras: bool,
    extra: Vec<(String, J)>,
    /// Repeat one top-level key (index into the keys written) with another value.
    duplicate: Option<(u8, J)>,
    /// Rotate the top-level keys.
    rotate: u8,
    pretty: bool,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn obj(fields: Vec<(String, String)>, pretty: bool) -> String {
    let (open, sep, colon, close) = if pretty {
        ("{\n  ", ",\n  ", ": ", "\n}")
    } else {
        ("{", ",", ":", "}")
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}{colon}{v}", json_str(k)))
        .collect();
    format!("{open}{}{close}", body.join(sep))
}

fn field<T>(out: &mut Vec<(String, String)>, key: &str, f: &F<T>, render: impl Fn(&T) -> String) {
    match f {
        F::Absent => {}
        F::Null => out.push((key.into(), "null".into())),
        F::Val(t) => out.push((key.into(), render(t))),
        F::Wrong(j) => out.push((key.into(), j.text())),
    }
}

fn str_list(v: &[S]) -> String {
    let items: Vec<String> = v.iter().map(|s| json_str(&s.get(SCOPES[0], SCOPES))).collect();
    format!("[{}]", items.join(","))
}

fn extras(out: &mut Vec<(String, String)>, extra: &[(String, J)], known: &[&str]) {
    for (k, j) in extra {
        // Unknown keys only: known ones are mutated through their own fields.
        if !known.contains(&k.as_str()) {
            out.push((k.clone(), j.text()));
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "request_id",
    "allowed",
    "reason",
    "identity",
    "permissions",
    "metadata",
    "retry_after",
    "headers",
];
const IDENTITY_KEYS: &[&str] = &["deployment_id", "key_name", "owner_user_id"];
const METADATA_KEYS: &[&str] = &[
    "principal_type",
    "scopes",
    "oauth_resource",
    "granted_resource",
    "expires_at",
];

impl IdentityB {
    fn render(&self) -> String {
        let mut out = Vec::new();
        field(&mut out, "deployment_id", &self.deployment_id, |i| json_str(&i.text()));
        field(&mut out, "key_name", &self.key_name, |s| {
            json_str(&s.get(CLIENT_ID, &[CLIENT_ID, ""]))
        });
        field(&mut out, "owner_user_id", &self.owner_user_id, |i| json_str(&i.text()));
        if self.reference_extras {
            for (k, v) in [
                ("key_id", "\"445566778899001122\""),
                ("app_slug", "\"oauth_432119876543210241\""),
                ("organization_id", "null"),
                ("workspace_id", "null"),
                ("organization_membership_id", "null"),
                ("workspace_membership_id", "null"),
            ] {
                out.push((k.into(), v.into()));
            }
        }
        extras(&mut out, &self.extra, IDENTITY_KEYS);
        obj(out, false)
    }

    fn typed(&self) -> bool {
        self.deployment_id.typed(|_| true) && self.key_name.typed(|_| true) && self.owner_user_id.typed(|_| true)
    }
}

impl MetadataB {
    fn render(&self) -> String {
        let mut out = Vec::new();
        field(&mut out, "principal_type", &self.principal_type, |s| {
            json_str(&s.get("oauth_access_token", &["api_key", "OAUTH_ACCESS_TOKEN", ""]))
        });
        field(&mut out, "scopes", &self.scopes, |v| str_list(v));
        field(&mut out, "oauth_resource", &self.oauth_resource, |s| {
            json_str(&s.get("https://api.example.com", URNS))
        });
        field(&mut out, "granted_resource", &self.granted_resource, |s| {
            json_str(&s.get(URNS[0], URNS))
        });
        field(&mut out, "expires_at", &self.expires_at, |t| json_str(&t.render().0));
        extras(&mut out, &self.extra, METADATA_KEYS);
        obj(out, false)
    }

    fn typed(&self) -> bool {
        self.principal_type.typed(|_| true)
            && self.scopes.typed(|_| true)
            && self.oauth_resource.typed(|_| true)
            && self.granted_resource.typed(|_| true)
            && self.expires_at.typed(|_| true)
    }
}

impl BodyB {
    fn render(&self) -> String {
        let mut out = Vec::new();
        field(&mut out, "request_id", &self.request_id, |s| {
            json_str(&s.get("req_593812470012345678", &["req_unknown", ""]))
        });
        field(&mut out, "allowed", &self.allowed, |b| b.to_string());
        field(&mut out, "reason", &self.reason, |r| match r {
            Reason::PermissionDenied => "\"permission_denied\"".into(),
            Reason::RateLimited => "\"rate_limited\"".into(),
            Reason::Other(s) => json_str(s),
        });
        field(&mut out, "identity", &self.identity, IdentityB::render);
        field(&mut out, "permissions", &self.permissions, |v| str_list(v));
        field(&mut out, "metadata", &self.metadata, MetadataB::render);
        field(&mut out, "retry_after", &self.retry_after, u64::to_string);
        field(&mut out, "headers", &self.headers, |h| {
            let kv = h
                .iter()
                .map(|(k, v)| (k.name(), json_str(&v.get(CLIENT_ID, URNS))))
                .collect();
            obj(kv, false)
        });
        if self.reference_extras {
            out.push(("blocked_rule".into(), "null".into()));
            out.push((
                "rate_limits".into(),
                r#"[{"rule":"1000/60s","remaining":999,"limit":1000}]"#.into(),
            ));
        }
        extras(&mut out, &self.extra, TOP_KEYS);
        if let Some((i, j)) = &self.duplicate
            && !out.is_empty()
        {
            let key = out[usize::from(*i) % out.len()].0.clone();
            out.push((key, j.text()));
        }
        if !out.is_empty() {
            let n = usize::from(self.rotate) % out.len();
            out.rotate_left(n);
        }
        obj(out, self.pretty)
    }

    /// Every known field has its type and no key repeats: serde reads the body, so the
    /// decision follows from the values alone.
    fn typed(&self) -> bool {
        self.duplicate.is_none()
            && self.request_id.typed(|_| true)
            && self.allowed.typed(|_| true)
            && self.reason.typed(|_| true)
            && self.identity.typed(IdentityB::typed)
            && self.permissions.typed(|_| true)
            && self.metadata.typed(MetadataB::typed)
            && self.retry_after.typed(|_| true)
            && self.headers.typed(|h| known_headers_once(h))
    }
}

/// The decoder reads the three `headers` entries it needs as fields, and refuses a body that
/// repeats one of them (as it refuses repeated top-level keys): ambiguous, fail closed.
fn known_headers_once(headers: &[(HeaderKey, S)]) -> bool {
    ["x-wacht-oauth-client-id", "x-wacht-oauth-issuer", "x-wacht-granted-resource"]
        .iter()
        .all(|known| headers.iter().filter(|(k, _)| k.name() == *known).count() <= 1)
}

/// What the decoder must answer for a well-typed body, where the model can tell.
#[derive(Debug)]
enum Expect {
    Allowed {
        deployment: i64,
        client: String,
        expires: SystemTime,
    },
    PermissionDenied,
    RateLimited(Option<Duration>),
    NotAllowed,
    Unknown,
}

fn model(b: &BodyB) -> Expect {
    if !b.typed() {
        // A wrong type or a repeated key somewhere: never a grant unless the probe says so
        // (checked on every body); nothing more to predict.
        return Expect::Unknown;
    }
    match b.allowed.val() {
        // `allowed` is required and must be a boolean.
        None => return Expect::NotAllowed,
        Some(false) => {
            return match b.reason.val() {
                Some(Reason::PermissionDenied) => Expect::PermissionDenied,
                Some(Reason::RateLimited) => {
                    Expect::RateLimited(b.retry_after.val().map(|ms| Duration::from_millis(*ms)))
                }
                _ => Expect::NotAllowed,
            };
        }
        Some(true) => {}
    }
    let (Some(identity), Some(metadata)) = (b.identity.val(), b.metadata.val()) else {
        return Expect::NotAllowed;
    };
    let principal_ok = match metadata.principal_type.val() {
        None => true,
        Some(S::Ref) => true,
        Some(_) => return Expect::Unknown,
    };
    let Some(expires_ts) = metadata.expires_at.val() else {
        return Expect::NotAllowed;
    };
    let Some(deployment_id) = identity.deployment_id.val() else {
        return Expect::NotAllowed;
    };
    let owner_ok = identity.owner_user_id.val().is_none_or(|o| o.valid().is_some());
    let client = match identity.key_name.val() {
        Some(S::Ref) => CLIENT_ID.to_owned(),
        Some(S::Any(s)) if !s.is_empty() => s.clone(),
        _ => return Expect::Unknown,
    };
    match (principal_ok, deployment_id.valid(), owner_ok, expires_ts.render().1) {
        (true, Some(deployment), true, Some(expires)) => Expect::Allowed {
            deployment,
            client,
            expires,
        },
        _ => Expect::Unknown,
    }
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(b) = BodyB::arbitrary(&mut u) else { return };
    let body = b.render();
    let got = check(body.as_bytes());
    match (model(&b), &got) {
        (Expect::Unknown, _) => {}
        (
            Expect::Allowed {
                deployment,
                client,
                expires,
            },
            Ok(Decision::Allowed(g)),
        ) => {
            assert_eq!(g.deployment_id.map(|d| d.get()), Some(deployment));
            assert_eq!(g.client_id.as_str(), client);
            assert_eq!(g.expires_at, expires);
        }
        (Expect::PermissionDenied, Ok(Decision::PermissionDenied)) => {}
        (Expect::RateLimited(want), Ok(Decision::RateLimited { retry_after, .. })) => assert_eq!(retry_after, &want),
        (Expect::NotAllowed, Err(_) | Ok(Decision::PermissionDenied | Decision::RateLimited { .. })) => {}
        (want, got) => panic!("expected {want:?}, decoded {got:?}\nbody: {body}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(&b) if b >= 0x80 => structured(&data[1..]),
        _ => {
            let _ = check(data);
            check_api_key(data);
        }
    }
});
