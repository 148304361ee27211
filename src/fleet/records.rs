//! What fleet mode stores and sends, byte for byte: shared answers and rejections, change-log
//! entries, channel notices, and the text records of client and JWT denials. Every binary
//! record is a small length-prefixed format decoded with bounds checked at every step, and
//! sealed by [`Codec`].

use std::time::SystemTime;

use super::bytes::{Reader, Writer, from_millis, millis};
pub(crate) use super::bytes::{from_unix_millis, unix_micros, unix_millis};
use super::codec::{Codec, LINK_LEN, Link, VERSION, hex, link_of, unhex};
pub(crate) use crate::change::Change;
use crate::principal::{
    ApiKeyId, ApiKeyIdentity, ClientId, DeploymentId, Grant, MembershipId, OrganizationId, RequestId, ResourceUrn,
    UserId, VerifiedBy, WorkspaceId,
};

const KIND_ALLOWED: u8 = 1;
const KIND_REJECTED: u8 = 2;
const KIND_ENTRY: u8 = 3;
const KIND_NOTICE: u8 = 4;

/// One incarnation of the fleet's state in Redis: random, made when Redis is found without
/// state (new, flushed, restarted empty, restored from an older snapshot, failed over to a
/// replica that lags). Every log entry and shared answer names the incarnation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Incarnation(pub(crate) [u8; 16]);

impl Incarnation {
    /// A fresh random incarnation.
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system RNG failed: fall back to the time and a process-random value (an
            // incarnation needs to differ from the last one, not to be secret).
            let now = unix_micros(SystemTime::now()).to_be_bytes();
            bytes[..8].copy_from_slice(&now);
            bytes[8..].copy_from_slice(&super::random_u64().to_be_bytes());
        }
        Incarnation(bytes)
    }

    pub(crate) fn to_hex(self) -> String {
        hex(&self.0)
    }

    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        unhex::<16>(text).map(Incarnation)
    }
}

/// Where an answer was stamped: the incarnation and log position when its gateway call
/// started. A change logged after it (a higher sequence number) that covers it voids it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) incarnation: Incarnation,
    pub(crate) seq: u64,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) incarnation: Incarnation,
    pub(crate) seq: u64,
    /// The link of the entry before it (or of the incarnation's start).
    pub(crate) prev: Link,
    /// The replica that wrote it, and the change's number there (so that a writer that lost
    /// the script's reply recognises its own changes in the log).
    pub(crate) replica: u64,
    pub(crate) id: u64,
    pub(crate) change: Change,
}

/// A message on the notice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The log grew: read it.
    Appended,
    /// A replica is alive; `pending` while it holds changes Redis has not taken.
    Heartbeat { pending: bool },
    /// A change Redis has not taken yet (its `id` on the sending replica, and the log
    /// position the sender had applied when it was made): receivers apply what restricts.
    Unwritten { id: u64, base: u64, change: Change },
}

/// Who sent a notice, and which of its notices it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sender {
    pub(crate) replica: u64,
    /// Increases with every notice the replica sends.
    pub(crate) counter: u64,
    /// When it was sent (Unix ms, the sender's clock).
    pub(crate) sent_at: u64,
}

/// A shared answer as read back.
#[derive(Debug)]
pub(crate) struct StoredAnswer {
    pub(crate) grant: Grant,
    pub(crate) stamp: Stamp,
    /// When the writer's `PX` ends, sealed with the answer: Redis's own expiry can be
    /// extended by anyone who can write to it, this cannot.
    pub(crate) valid_until: SystemTime,
}

/// The client record (`d` denied / `a` allowed, and the version) as the records hash holds
/// it: `<kind><version, 20 digits>` sealed as text. Fixed-width digits order as numbers, so
/// the log's script can compare versions without reading the seal.
pub(crate) fn client_record(codec: &Codec, key: &str, client: &str, denied: bool, version: u64) -> String {
    let kind = if denied { 'd' } else { 'a' };
    codec.seal_text(&record_place(key, client), &format!("{kind}{version:020}"))
}

/// A verified client record: denied?, version.
pub(crate) fn read_client_record(codec: &Codec, key: &str, client: &str, sealed: &str) -> Option<(bool, u64)> {
    let text = codec.open_text(&record_place(key, client), sealed)?;
    let (kind, version) = text.split_at_checked(1)?;
    let version = version.parse().ok()?;
    match kind {
        "d" => Some((true, version)),
        "a" => Some((false, version)),
        _ => None,
    }
}

/// A JWT denial as a sorted-set member: `<until ms, 20 digits>:<id>` sealed as text.
pub(crate) fn jwt_denial_member(codec: &Codec, key: &str, id: &str, until: u64) -> String {
    codec.seal_text(key, &format!("{until:020}:{id}"))
}

/// A verified JWT denial member: id, until (Unix ms).
pub(crate) fn read_jwt_denial(codec: &Codec, key: &str, sealed: &str) -> Option<(String, u64)> {
    let text = codec.open_text(key, sealed)?;
    let (until, id) = text.split_once(':')?;
    Some((id.to_owned(), until.parse().ok()?))
}

fn record_place(key: &str, field: &str) -> String {
    format!("{key}\0{field}")
}

impl Codec {
    /// An allowed answer for storage under `key`: tag ‖ record.
    pub(crate) fn encode_answer(&self, key: &str, grant: &Grant, stamp: Stamp, valid_until: SystemTime) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_ALLOWED);
        w.stamp(stamp);
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
        match &grant.api_key {
            None => w.u8(0),
            Some(k) => {
                w.u8(1);
                w.i64(k.key_id.get());
                w.str(&k.key_name);
                w.str(&k.app_slug);
                w.opt_i64(k.organization_id.map(OrganizationId::get));
                w.opt_i64(k.workspace_id.map(WorkspaceId::get));
                w.opt_i64(k.organization_membership_id.map(MembershipId::get));
                w.opt_i64(k.workspace_membership_id.map(MembershipId::get));
                w.str(&serde_json::Value::Object(k.metadata.clone()).to_string());
            }
        }
        self.seal(key, w.0)
    }

    /// Reads back an answer stored under `key`; `None` when the tag does not verify or the
    /// record is not one this format writes.
    pub(crate) fn decode_answer(&self, key: &str, value: &[u8]) -> Option<StoredAnswer> {
        let mut r = Reader(self.open(key, value)?);
        if r.u8()? != VERSION || r.u8()? != KIND_ALLOWED {
            return None;
        }
        let stamp = r.stamp()?;
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
        grant.api_key = match r.u8()? {
            0 => None,
            1 => {
                let mut k = ApiKeyIdentity::new(ApiKeyId(r.i64()?), r.str()?, r.str()?);
                k.organization_id = r.opt_i64()?.map(OrganizationId);
                k.workspace_id = r.opt_i64()?.map(WorkspaceId);
                k.organization_membership_id = r.opt_i64()?.map(MembershipId);
                k.workspace_membership_id = r.opt_i64()?.map(MembershipId);
                k.metadata = match serde_json::from_str(r.str()?).ok()? {
                    serde_json::Value::Object(map) => map,
                    _ => return None,
                };
                Some(std::sync::Arc::new(k))
            }
            _ => return None,
        };
        if !r.0.is_empty() || grant.client_id.as_str().is_empty() {
            return None;
        }
        Some(StoredAnswer {
            grant,
            stamp,
            valid_until,
        })
    }

    /// A rejection (the gateway's 401) for storage under `key`.
    pub(crate) fn encode_rejection(&self, key: &str, stamp: Stamp) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_REJECTED);
        w.stamp(stamp);
        self.seal(key, w.0)
    }

    /// The stamp of a rejection stored under `key`, if it verifies.
    pub(crate) fn decode_rejection(&self, key: &str, value: &[u8]) -> Option<Stamp> {
        let mut r = Reader(self.open(key, value)?);
        if r.u8()? != VERSION || r.u8()? != KIND_REJECTED {
            return None;
        }
        let stamp = r.stamp()?;
        r.0.is_empty().then_some(stamp)
    }

    /// A log entry, sealed for the log; and its link (what the next entry names as `prev`).
    pub(crate) fn encode_entry(&self, entry: &Entry) -> (Vec<u8>, Link) {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_ENTRY);
        w.stamp(Stamp {
            incarnation: entry.incarnation,
            seq: entry.seq,
        });
        w.0.extend_from_slice(&entry.prev);
        w.u64(entry.replica);
        w.u64(entry.id);
        w.change(&entry.change);
        let sealed = self.seal(&self.log_key(), w.0);
        let link = link_of(&sealed).unwrap_or([0; LINK_LEN]);
        (sealed, link)
    }

    /// A log entry read from the log, and its link, if it verifies.
    pub(crate) fn decode_entry(&self, sealed: &[u8]) -> Option<(Entry, Link)> {
        let mut r = Reader(self.open(&self.log_key(), sealed)?);
        if r.u8()? != VERSION || r.u8()? != KIND_ENTRY {
            return None;
        }
        let stamp = r.stamp()?;
        let prev = r.take(LINK_LEN)?.try_into().ok()?;
        let replica = r.u64()?;
        let id = r.u64()?;
        let change = r.change()?;
        if !r.0.is_empty() {
            return None;
        }
        let entry = Entry {
            incarnation: stamp.incarnation,
            seq: stamp.seq,
            prev,
            replica,
            id,
            change,
        };
        Some((entry, link_of(sealed)?))
    }

    /// The link an incarnation starts from: what its first entry names as `prev`.
    pub(crate) fn genesis(&self, incarnation: Incarnation, seq: u64) -> Link {
        let sealed = self.seal(&self.head_key(), [&incarnation.0[..], &seq.to_be_bytes()].concat());
        link_of(&sealed).unwrap_or([0; LINK_LEN])
    }

    /// A notice from `replica`: its `counter`-th, sent at `sent_at` (Unix ms). Both are
    /// sealed, so a captured notice published again is told from a new one.
    pub(crate) fn encode_notice(&self, from: Sender, notice: &Notice) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(VERSION);
        w.u8(KIND_NOTICE);
        w.u64(from.replica);
        w.u64(from.counter);
        w.u64(from.sent_at);
        match notice {
            Notice::Appended => w.u8(0),
            Notice::Heartbeat { pending } => {
                w.u8(1);
                w.u8(u8::from(*pending));
            }
            Notice::Unwritten { id, base, change } => {
                w.u8(2);
                w.u64(*id);
                w.u64(*base);
                w.change(change);
            }
        }
        self.seal(&self.channel(), w.0)
    }

    /// The sender and the notice, if the message verifies.
    pub(crate) fn decode_notice(&self, message: &[u8]) -> Option<(Sender, Notice)> {
        let mut r = Reader(self.open(&self.channel(), message)?);
        if r.u8()? != VERSION || r.u8()? != KIND_NOTICE {
            return None;
        }
        let from = Sender {
            replica: r.u64()?,
            counter: r.u64()?,
            sent_at: r.u64()?,
        };
        let notice = match r.u8()? {
            0 => Notice::Appended,
            1 => Notice::Heartbeat {
                pending: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            },
            2 => Notice::Unwritten {
                id: r.u64()?,
                base: r.u64()?,
                change: r.change()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some((from, notice))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::principal::{OrganizationId, StringSet};
    use crate::token::TokenHash;

    fn codec() -> Codec {
        Codec::new(b"fleet secret of at least thirty-two bytes", "profile")
    }

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

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            incarnation: Incarnation([7; 16]),
            seq,
        }
    }

    #[test]
    fn an_answer_round_trips_and_is_compact() {
        let codec = codec();
        let key = codec.key("a", "x");
        let valid_until = UNIX_EPOCH + Duration::from_millis(1_782_745_000_000);
        let sealed = codec.encode_answer(&key, &grant(), stamp(7), valid_until);
        // 338 bytes for this grant: the 32-byte tag and the record.
        assert!(sealed.len() < 400, "{} bytes", sealed.len());
        let back = codec.decode_answer(&key, &sealed).unwrap_or_else(|| unreachable!());
        assert_eq!(back.stamp, stamp(7));
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
        let codec = codec();
        let other = Codec::new(b"another secret of at least thirty-two bytes", "profile");
        let key = codec.key("a", "x");
        let sealed = codec.encode_answer(&key, &grant(), stamp(7), SystemTime::now());
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
        let rejection = codec.encode_rejection(&key, stamp(3));
        assert!(
            codec.decode_answer(&key, &rejection).is_none(),
            "a rejection is no answer"
        );
        assert_eq!(codec.decode_rejection(&key, &rejection), Some(stamp(3)));
    }

    fn changes() -> Vec<Change> {
        vec![
            Change::Token(TokenHash::of("oat_x")),
            Change::Client("oc_1".into()),
            Change::All,
            Change::Deny {
                client: "oc_2".into(),
                version: 9,
            },
            Change::Allow {
                client: "oc_3".into(),
                lifts: 9,
                version: 12,
            },
            Change::DenySession {
                id: "590011223344556677".into(),
                until: 1_790_000_000_000,
            },
            Change::DenyTokenId {
                id: "593812470098765432".into(),
                until: 1_790_000_000_000,
            },
            Change::Target(crate::change::Target::User(432119876543210241)),
            Change::Target(crate::change::Target::ApiKey(7001)),
            Change::Target(crate::change::Target::Organization(427001234567890561)),
            Change::Target(crate::change::Target::Workspace(-1)),
            Change::Target(crate::change::Target::OrganizationMembership(9001)),
            Change::Target(crate::change::Target::WorkspaceMembership(i64::MAX)),
        ]
    }

    #[test]
    fn entries_round_trip_chain_and_refuse_tampering() {
        let codec = codec();
        let genesis = codec.genesis(Incarnation([1; 16]), 100);
        let mut prev = genesis;
        for (i, change) in changes().into_iter().enumerate() {
            let entry = Entry {
                incarnation: Incarnation([1; 16]),
                seq: 101 + i as u64,
                prev,
                replica: 42,
                id: i as u64,
                change,
            };
            let (sealed, link) = codec.encode_entry(&entry);
            let (back, back_link) = codec.decode_entry(&sealed).unwrap_or_else(|| unreachable!());
            assert_eq!((back, back_link), (entry, link));
            assert_ne!(link, prev);
            prev = link;
            let mut altered = sealed.clone();
            let last = altered.len() - 1;
            altered[last] ^= 1;
            assert!(codec.decode_entry(&altered).is_none());
        }
        assert_ne!(genesis, codec.genesis(Incarnation([1; 16]), 101));
        assert_ne!(genesis, codec.genesis(Incarnation([2; 16]), 100));
    }

    #[test]
    fn notices_round_trip_and_profiles_differ() {
        let codec = codec();
        let mut notices = vec![
            Notice::Appended,
            Notice::Heartbeat { pending: false },
            Notice::Heartbeat { pending: true },
        ];
        notices.extend(changes().into_iter().map(|change| Notice::Unwritten {
            id: 3,
            base: 77,
            change,
        }));
        let from = Sender {
            replica: 42,
            counter: 7,
            sent_at: 1_790_000_000_000,
        };
        for notice in notices {
            let message = codec.encode_notice(from, &notice);
            assert_eq!(codec.decode_notice(&message), Some((from, notice)));
        }
        let other_profile = Codec::new(b"fleet secret of at least thirty-two bytes", "profile 2");
        let message = codec.encode_notice(from, &Notice::Appended);
        assert!(other_profile.decode_notice(&message).is_none());
    }

    #[test]
    fn client_and_jwt_records_round_trip_and_order_by_version() {
        let codec = codec();
        let key = codec.records_key("clients");
        let denied = client_record(&codec, &key, "oc_a", true, 41);
        let allowed = client_record(&codec, &key, "oc_a", false, 1_765_000_000_000_001);
        assert_eq!(read_client_record(&codec, &key, "oc_a", &denied), Some((true, 41)));
        assert_eq!(
            read_client_record(&codec, &key, "oc_a", &allowed),
            Some((false, 1_765_000_000_000_001))
        );
        assert_eq!(read_client_record(&codec, &key, "oc_b", &denied), None, "moved");
        // What the log's script compares: the digits after the kind letter.
        assert!(denied[1..21] < allowed[1..21]);
        let sessions = codec.records_key("sessions");
        let member = jwt_denial_member(&codec, &sessions, "590011", 1_790_000_000_000);
        assert_eq!(
            read_jwt_denial(&codec, &sessions, &member),
            Some(("590011".to_owned(), 1_790_000_000_000))
        );
        assert_eq!(read_jwt_denial(&codec, &codec.records_key("token-ids"), &member), None);
    }
}
