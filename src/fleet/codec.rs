//! What fleet mode stores in Redis and sends on its channel, and how it is protected.
//!
//! * Keys never hold a token: a token is known by HMAC-SHA256(fleet secret, token), which is
//!   also the replica's local cache key in fleet mode, so an invalidation event names the
//!   same key on every replica. Every key is namespaced by the check profile (an HMAC of the
//!   gateway URL, method, resource and pins), so two differently configured services sharing
//!   one Redis never read each other's decisions.
//! * Every value and every event carries an HMAC-SHA256 tag over what it says and where it is
//!   stored (the key, or the channel): an entry written by anyone without the secret, or
//!   copied under another key, is refused, never turned into a principal.
//! * Values are a small length-prefixed binary record (about 250 bytes for a typical grant),
//!   decoded with bounds checked at every step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac};

use crate::principal::{ClientId, DeploymentId, Grant, RequestId, ResourceUrn, StringSet, UserId, VerifiedBy};
use crate::token::TokenHash;

/// Format version of entries and events.
const VERSION: u8 = 2;
const KIND_ALLOWED: u8 = 1;
const KIND_REJECTED: u8 = 2;
const TAG_LEN: usize = 32;
/// More strings than this in one set, or a string longer than this, is not a grant we wrote.
const MAX_ITEMS: usize = 4096;

/// Keys derived from the fleet secret, one per job, and the profile's key prefix.
pub(crate) struct Codec {
    /// Hashes tokens into cache keys.
    token_key: hmac::Key,
    /// Tags stored entries and events.
    tag_key: hmac::Key,
    prefix: String,
    denials_prefix: String,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A shared answer as read back: the grant and the fleet epoch its gateway call started in.
#[derive(Debug)]
pub(crate) struct StoredAnswer {
    pub(crate) grant: Grant,
    pub(crate) epoch: u64,
    /// When the writer's `PX` ends, sealed with the answer: Redis's own expiry can be
    /// extended by anyone who can write to it, this cannot.
    pub(crate) valid_until: SystemTime,
}

/// An event on the invalidation channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Keep-alive: proves the channel still delivers.
    Heartbeat,
    /// One token's answers are void.
    Token(TokenHash),
    /// One client's answers are void.
    Client(String),
    /// Every answer is void.
    All,
    /// A client is denied (and its answers void).
    Deny(String),
    /// A client is allowed again.
    Allow(String),
    /// A JWT session (`sid`) is denied.
    DenySession(String),
    /// A JWT token id (`jti`) is denied.
    DenyTokenId(String),
}

impl Codec {
    /// Keys every hash and tag with `secret`; `profile` names the check profile.
    ///
    /// Token hashes and entry tags use separate keys derived from the secret: a hash is
    /// published (in Redis keys and events) for any string passed to `invalidate`, so with
    /// one key for both, a chosen string's hash would be a valid tag over a forged entry.
    pub(crate) fn new(secret: &[u8], profile: &str) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive = |label: &str| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label.as_bytes()).as_ref());
        let namespace = |label: String| format!("wacht:{}:", hex(&hmac::sign(&root, label.as_bytes()).as_ref()[..8]));
        Codec {
            token_key: derive("tower-wacht token hash key"),
            tag_key: derive("tower-wacht entry tag key"),
            // The format version is part of the namespace of sealed entries, markers and the
            // channel: releases that cannot read each other's never share them.
            prefix: namespace(format!("tower-wacht profile\0v{VERSION}\0{profile}")),
            // Denials are plain ids that every release reads alike: they outlive upgrades.
            denials_prefix: namespace(format!("tower-wacht profile\0{profile}")),
        }
    }

    /// The Redis key of a set of denied ids (`denied`, `denied-sid`, `denied-jti`), shared by
    /// every release of this profile.
    pub(crate) fn denials_key(&self, kind: &str) -> String {
        format!("{}{kind}:", self.denials_prefix)
    }

    /// The cache key of a raw token string (for `invalidate(token)`).
    pub(crate) fn hash_of(&self, token: &[u8]) -> TokenHash {
        let tag = hmac::sign(&self.token_key, token);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        TokenHash::from_bytes(bytes)
    }

    /// A Redis key of this profile: `wacht:<profile>:<kind>:<rest>`.
    pub(crate) fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// A token's Redis key of `kind` (`a` answer, `n` rejection, `l` lease, `v` void).
    pub(crate) fn token_redis_key(&self, kind: &str, hash: &TokenHash) -> String {
        self.key(kind, &hex(hash.as_bytes()))
    }

    /// The profile's key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The profile's invalidation channel.
    pub(crate) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// An allowed answer for storage under `key`: tag ‖ record.
    pub(crate) fn encode_answer(&self, key: &str, grant: &Grant, epoch: u64, valid_until: SystemTime) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_ALLOWED);
        w.u64(epoch);
        w.i64(millis(valid_until));
        w.i64(millis(grant.expires_at));
        w.u8(match grant.verified_by {
            VerifiedBy::Gateway => 0,
            _ => 1,
        });
        w.opt_i64(grant.deployment_id.map(DeploymentId::get));
        w.opt_i64(grant.owner_user_id.map(UserId::get));
        w.str(grant.client_id.as_str());
        w.opt_str(grant.granted_resource.as_ref().map(ToString::to_string).as_deref());
        w.opt_str(grant.oauth_resource.as_deref());
        w.opt_str(grant.issuer.as_deref());
        w.opt_str(grant.request_id.as_ref().map(ToString::to_string).as_deref());
        w.opt_str(grant.session_id.as_deref());
        w.opt_str(grant.token_id.as_deref());
        w.set(&grant.scopes);
        w.set(&grant.permissions);
        self.seal(key, w.0)
    }

    /// Reads back an answer stored under `key`; `None` when the tag does not verify or the
    /// record is not one this format writes.
    pub(crate) fn decode_answer(&self, key: &str, value: &[u8]) -> Option<StoredAnswer> {
        let record = self.open(key, value)?;
        let mut r = Reader(record);
        if r.u8()? != VERSION || r.u8()? != KIND_ALLOWED {
            return None;
        }
        let epoch = r.u64()?;
        let valid_until = from_millis(r.i64()?)?;
        let mut grant = Grant::new("", from_millis(r.i64()?)?);
        grant.verified_by = match r.u8()? {
            0 => VerifiedBy::Gateway,
            1 => VerifiedBy::JwtSignature,
            _ => return None,
        };
        grant.deployment_id = r.opt_i64()?.map(DeploymentId);
        grant.owner_user_id = r.opt_i64()?.map(UserId);
        grant.client_id = ClientId::new(r.str()?);
        grant.granted_resource = r.opt_str()?.map(ResourceUrn::parse);
        grant.oauth_resource = r.opt_str()?.map(Into::into);
        grant.issuer = r.opt_str()?.map(Into::into);
        grant.request_id = r.opt_str()?.map(RequestId::new);
        grant.session_id = r.opt_str()?.map(Into::into);
        grant.token_id = r.opt_str()?.map(Into::into);
        grant.scopes = r.set()?;
        grant.permissions = r.set()?;
        if !r.0.is_empty() || grant.client_id.as_str().is_empty() {
            return None;
        }
        Some(StoredAnswer {
            grant,
            epoch,
            valid_until,
        })
    }

    /// A rejection (the gateway's 401) for storage under `key`.
    pub(crate) fn encode_rejection(&self, key: &str, epoch: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_REJECTED);
        w.u64(epoch);
        self.seal(key, w.0)
    }

    /// The epoch of a rejection stored under `key`, if it verifies.
    pub(crate) fn decode_rejection(&self, key: &str, value: &[u8]) -> Option<u64> {
        let mut r = Reader(self.open(key, value)?);
        if r.u8()? != VERSION || r.u8()? != KIND_REJECTED {
            return None;
        }
        let epoch = r.u64()?;
        r.0.is_empty().then_some(epoch)
    }

    /// An event from `replica` for `channel`.
    pub(crate) fn encode_event(&self, channel: &str, replica: u64, event: &Event) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u64(replica);
        match event {
            Event::Heartbeat => w.u8(0),
            Event::Token(hash) => {
                w.u8(1);
                w.0.extend_from_slice(hash.as_bytes());
            }
            Event::Client(id) => {
                w.u8(2);
                w.str(id);
            }
            Event::All => w.u8(3),
            Event::Deny(id) => {
                w.u8(4);
                w.str(id);
            }
            Event::DenySession(id) => {
                w.u8(6);
                w.str(id);
            }
            Event::DenyTokenId(id) => {
                w.u8(7);
                w.str(id);
            }
            Event::Allow(id) => {
                w.u8(5);
                w.str(id);
            }
        }
        self.seal(channel, w.0)
    }

    /// The sender and the event, if the message verifies.
    pub(crate) fn decode_event(&self, channel: &str, message: &[u8]) -> Option<(u64, Event)> {
        let mut r = Reader(self.open(channel, message)?);
        if r.u8()? != VERSION {
            return None;
        }
        let replica = r.u64()?;
        let event = match r.u8()? {
            0 => Event::Heartbeat,
            1 => {
                let bytes: [u8; 32] = r.take(32)?.try_into().ok()?;
                Event::Token(TokenHash::from_bytes(bytes))
            }
            2 => Event::Client(r.str()?.to_owned()),
            3 => Event::All,
            4 => Event::Deny(r.str()?.to_owned()),
            5 => Event::Allow(r.str()?.to_owned()),
            6 => Event::DenySession(r.str()?.to_owned()),
            7 => Event::DenyTokenId(r.str()?.to_owned()),
            _ => return None,
        };
        r.0.is_empty().then_some((replica, event))
    }

    /// tag ‖ record, the tag over `place` and the record.
    fn seal(&self, place: &str, record: Vec<u8>) -> Vec<u8> {
        let tag = self.tag(place, &record);
        let mut out = Vec::with_capacity(TAG_LEN + record.len());
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&record);
        out
    }

    /// The record of a sealed value, if its tag verifies (compared in constant time).
    fn open<'a>(&self, place: &str, value: &'a [u8]) -> Option<&'a [u8]> {
        if value.len() < TAG_LEN {
            return None;
        }
        let (tag, record) = value.split_at(TAG_LEN);
        let expected = self.tag(place, record);
        constant_time::verify_slices_are_equal(expected.as_ref(), tag).ok()?;
        Some(record)
    }

    fn tag(&self, place: &str, record: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.tag_key);
        ctx.update(&u32::try_from(place.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(place.as_bytes());
        ctx.update(record);
        ctx.sign()
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    fn str(&mut self, s: &str) {
        // Longer strings are cut at the limit a reader accepts (never produced by the gateway).
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        self.0
            .extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn set(&mut self, set: &StringSet) {
        self.0
            .extend_from_slice(&u16::try_from(set.len()).unwrap_or(u16::MAX).to_be_bytes());
        for s in set.iter() {
            self.str(s);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    fn set(&mut self) -> Option<StringSet> {
        let n = usize::from(self.u16()?);
        if n > MAX_ITEMS {
            return None;
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.str()?);
        }
        Some(StringSet::new(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::OrganizationId;

    fn grant() -> Grant {
        let mut g = Grant::new(
            "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl",
            UNIX_EPOCH + Duration::from_millis(1_782_745_511_123),
        );
        g.granted_resource = Some(ResourceUrn::Organization(OrganizationId(427001234567890561)));
        g.scopes = StringSet::new(["projects:read", "projects:write"]);
        g.permissions = StringSet::new(["org:projects:read", "projects:read", "projects:write"]);
        g.oauth_resource = Some("https://api.example.com/mcp".into());
        g.issuer = Some("https://auth.example.com".into());
        g.deployment_id = Some(DeploymentId(418223109876543489));
        g.owner_user_id = Some(UserId(432119876543210241));
        g.request_id = Some(RequestId::new("req_593812470012345678"));
        g
    }

    #[test]
    fn a_token_hash_is_never_a_valid_tag() {
        // Attack: pass the bytes a tag covers (length, place, record) to `invalidate`, read
        // their hash from Redis, and use it as the tag of a forged entry.
        let codec = Codec::new(b"fleet secret of at least 32 bytes!!", "profile");
        let place = codec.token_redis_key("a", &codec.hash_of(b"victim token"));
        let record = b"a forged record";
        let sealed = codec.seal(&place, record.to_vec());
        let mut covered = u32::try_from(place.len()).unwrap().to_be_bytes().to_vec();
        covered.extend_from_slice(place.as_bytes());
        covered.extend_from_slice(record);
        let chosen_hash = codec.hash_of(&covered);
        let mut forged = chosen_hash.as_bytes().to_vec();
        forged.extend_from_slice(record);
        assert_eq!(codec.open(&place, &sealed), Some(&record[..]));
        assert_eq!(codec.open(&place, &forged), None);
    }

    #[test]
    fn an_answer_round_trips_and_is_compact() {
        let codec = Codec::new(b"fleet secret of at least thirty-two bytes", "profile");
        let key = codec.key("a", "x");
        let valid_until = UNIX_EPOCH + Duration::from_millis(1_782_745_000_000);
        let sealed = codec.encode_answer(&key, &grant(), 7, valid_until);
        // 322 bytes for this grant: the 32-byte tag and the record.
        assert!(sealed.len() < 400, "{} bytes", sealed.len());
        let back = codec.decode_answer(&key, &sealed).unwrap_or_else(|| unreachable!());
        assert_eq!(back.epoch, 7);
        assert_eq!(back.valid_until, valid_until);
        let (a, b) = (grant(), back.grant);
        assert_eq!(a.client_id, b.client_id);
        assert_eq!(a.granted_resource, b.granted_resource);
        assert_eq!(a.scopes, b.scopes);
        assert_eq!(a.permissions, b.permissions);
        assert_eq!(a.expires_at, b.expires_at);
        assert_eq!(a.oauth_resource, b.oauth_resource);
        assert_eq!(a.issuer, b.issuer);
        assert_eq!(a.deployment_id, b.deployment_id);
        assert_eq!(a.owner_user_id, b.owner_user_id);
        assert_eq!(a.request_id, b.request_id);
        assert_eq!(
            (a.session_id, a.token_id, a.verified_by),
            (b.session_id, b.token_id, b.verified_by)
        );
    }

    #[test]
    fn forged_moved_or_truncated_values_are_refused() {
        let codec = Codec::new(b"fleet secret of at least thirty-two bytes", "profile");
        let other = Codec::new(b"another secret of at least thirty-two bytes", "profile");
        let key = codec.key("a", "x");
        let sealed = codec.encode_answer(&key, &grant(), 7, SystemTime::now());
        assert!(
            codec.decode_answer(&codec.key("a", "y"), &sealed).is_none(),
            "moved to another key"
        );
        assert!(other.decode_answer(&key, &sealed).is_none(), "another secret");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(codec.decode_answer(&key, &flipped).is_none(), "altered");
        for cut in [0, 10, 32, sealed.len() - 1] {
            assert!(codec.decode_answer(&key, &sealed[..cut]).is_none(), "cut at {cut}");
        }
        let rejection = codec.encode_rejection(&key, 3);
        assert!(
            codec.decode_answer(&key, &rejection).is_none(),
            "a rejection is no answer"
        );
        assert_eq!(codec.decode_rejection(&key, &rejection), Some(3));
    }

    #[test]
    fn events_round_trip_and_profiles_differ() {
        let codec = Codec::new(b"fleet secret of at least thirty-two bytes", "profile");
        let channel = codec.channel();
        for event in [
            Event::Heartbeat,
            Event::Token(TokenHash::of("oat_x")),
            Event::Client("oc_1".into()),
            Event::All,
            Event::Deny("oc_2".into()),
            Event::Allow("oc_3".into()),
            Event::DenySession("590011223344556677".into()),
            Event::DenyTokenId("593812470098765432".into()),
        ] {
            let message = codec.encode_event(&channel, 42, &event);
            assert_eq!(codec.decode_event(&channel, &message), Some((42, event)));
        }
        let other_profile = Codec::new(b"fleet secret of at least thirty-two bytes", "profile 2");
        assert_ne!(codec.prefix(), other_profile.prefix());
        let message = codec.encode_event(&channel, 1, &Event::All);
        assert!(other_profile.decode_event(&other_profile.channel(), &message).is_none());
    }

    #[test]
    fn the_token_key_is_keyed() {
        let a = Codec::new(b"fleet secret of at least thirty-two bytes", "p");
        let b = Codec::new(b"another secret of at least thirty-two bytes", "p");
        assert_ne!(a.hash_of(b"oat_x"), b.hash_of(b"oat_x"));
        assert_ne!(a.hash_of(b"oat_x"), TokenHash::of("oat_x"));
        assert_eq!(a.hash_of(b"oat_x"), a.hash_of(b"oat_x"));
    }
}
