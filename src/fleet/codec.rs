//! The fleet's keys: where things live in Redis, and how they are protected.
//!
//! * Keys never hold a token: a token is known by HMAC-SHA256(fleet secret, token), which is
//!   also the replica's local cache key in fleet mode, so a change names the same key on every
//!   replica. Every key is namespaced by the check profile (an HMAC of everything that changes
//!   a decision), so two differently configured services sharing one Redis never read each
//!   other's state.
//! * Every value, log entry and notice carries an HMAC-SHA256 tag over what it says and where
//!   it is stored (the key, or the channel): anything written by someone without the secret,
//!   or copied under another key, is refused, never turned into a principal or a change.
//! * Token hashes and tags use separate keys derived from the secret: a hash is published (in
//!   keys and log entries) for any string passed to `invalidate`, so with one key for both, a
//!   chosen string's hash would be a valid tag over a forged record.

use aws_lc_rs::{constant_time, digest, hmac};

use crate::token::TokenHash;

/// Format version of sealed records, log entries and notices. Part of the namespace of
/// everything sealed: releases that cannot read each other's records never share them.
/// (4: invalidations by user, API key, tenant and membership, which a release reading
/// version 3 would skip, keeping shared answers they void.)
pub(crate) const VERSION: u8 = 4;
/// Length of a full tag.
pub(crate) const TAG_LEN: usize = 32;
/// Length of the tag prefix that chains log entries and seals text records.
pub(crate) const LINK_LEN: usize = 16;

/// A tag prefix: links one log entry to the one before it.
pub(crate) type Link = [u8; LINK_LEN];

/// Keys derived from the fleet secret, one per job, and the profile's key prefixes.
pub(crate) struct Codec {
    /// Hashes tokens into cache keys.
    token_key: hmac::Key,
    /// Tags stored records, log entries and notices.
    tag_key: hmac::Key,
    /// Fingerprints the secret for the shared-secret check (never the secret itself).
    fingerprint: String,
    /// Sealed answers, the log, its head and the channel (format-versioned).
    prefix: String,
    /// The client and JWT denial records, in a text format every release reads alike, so
    /// that denials outlive upgrades.
    records_prefix: String,
    /// The key every replica of this profile writes its secret's fingerprint to, whatever
    /// its secret (see `marker`).
    marker_key: String,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// Keys every hash and tag with `secret`; `profile` names the check profile.
    pub(crate) fn new(secret: &[u8], profile: &str) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive = |label: &str| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label.as_bytes()).as_ref());
        let namespace = |label: String| format!("wacht:{}:", hex(&hmac::sign(&root, label.as_bytes()).as_ref()[..8]));
        let fingerprint = hex(&hmac::sign(&derive("tower-wacht secret fingerprint"), profile.as_bytes()).as_ref()[..8]);
        // The marker depends on the profile alone: replicas with different secrets find it.
        let profile_digest = digest::digest(&digest::SHA256, format!("tower-wacht profile\0{profile}").as_bytes());
        Codec {
            token_key: derive("tower-wacht token hash key"),
            tag_key: derive("tower-wacht entry tag key"),
            fingerprint,
            prefix: namespace(format!("tower-wacht profile\0v{VERSION}\0{profile}")),
            records_prefix: namespace(format!("tower-wacht profile\0{profile}")),
            marker_key: format!("wacht-fleet:{}:secrets", hex(&profile_digest.as_ref()[..8])),
        }
    }

    /// The cache key of a token's bytes.
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

    /// A token's Redis key of `kind` (`a` answer, `n` rejection, `l` lease).
    pub(crate) fn token_key(&self, kind: &str, hash: &TokenHash) -> String {
        self.key(kind, &hex(hash.as_bytes()))
    }

    /// The change log (a Redis Stream).
    pub(crate) fn log_key(&self) -> String {
        self.key("log", "")
    }

    /// The log's head: incarnation, last sequence number, last link, last stream id.
    pub(crate) fn head_key(&self) -> String {
        self.key("head", "")
    }

    /// A record key (`clients`, `sessions`, `token-ids`), shared by every release.
    pub(crate) fn records_key(&self, kind: &str) -> String {
        format!("{}{kind}", self.records_prefix)
    }

    /// The profile's notice channel.
    pub(crate) fn channel(&self) -> String {
        self.key("notices", "")
    }

    /// The profile's key prefix (for logs).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared-secret marker key (depends on the profile only).
    pub(crate) fn marker_key(&self) -> &str {
        &self.marker_key
    }

    /// A keyed fingerprint of the secret: equal on replicas sharing it, and no help to
    /// anyone guessing it.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// tag ‖ record, the tag over `place` and the record.
    pub(crate) fn seal(&self, place: &str, record: Vec<u8>) -> Vec<u8> {
        let tag = self.tag(place, &record);
        let mut out = Vec::with_capacity(TAG_LEN + record.len());
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&record);
        out
    }

    /// The record of a sealed value, if its tag verifies (compared in constant time).
    pub(crate) fn open<'a>(&self, place: &str, value: &'a [u8]) -> Option<&'a [u8]> {
        if value.len() < TAG_LEN {
            return None;
        }
        let (tag, record) = value.split_at(TAG_LEN);
        let expected = self.tag(place, record);
        constant_time::verify_slices_are_equal(expected.as_ref(), tag).ok()?;
        Some(record)
    }

    /// `text.<hex tag prefix>`: a text record sealed for `place`, readable by a Lua script
    /// (which compares and orders them, never verifies them).
    pub(crate) fn seal_text(&self, place: &str, text: &str) -> String {
        let tag = self.tag(place, text.as_bytes());
        format!("{text}.{}", hex(&tag.as_ref()[..LINK_LEN]))
    }

    /// The text of a sealed text record, if its tag verifies.
    pub(crate) fn open_text<'a>(&self, place: &str, sealed: &'a str) -> Option<&'a str> {
        let (text, tag) = sealed.rsplit_once('.')?;
        let expected = self.seal_text(place, text);
        constant_time::verify_slices_are_equal(expected.as_bytes(), sealed.as_bytes()).ok()?;
        (tag.len() == LINK_LEN * 2).then_some(text)
    }

    fn tag(&self, place: &str, record: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.tag_key);
        ctx.update(&u32::try_from(place.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(place.as_bytes());
        ctx.update(record);
        ctx.sign()
    }
}

/// The link of a sealed value: its tag's first bytes.
pub(crate) fn link_of(sealed: &[u8]) -> Option<Link> {
    sealed.get(..LINK_LEN)?.try_into().ok()
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

/// The bytes of lower-case hex (the one form this crate writes), if it is hex of exactly `N`
/// bytes.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_is_never_a_valid_tag() {
        // Attack: pass the bytes a tag covers (length, place, record) to `invalidate`, read
        // their hash from Redis, and use it as the tag of a forged entry.
        let codec = Codec::new(b"fleet secret of at least 32 bytes!!", "profile");
        let place = codec.token_key("a", &codec.hash_of(b"victim token"));
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
    fn text_records_verify_only_where_they_were_sealed() {
        let codec = Codec::new(b"fleet secret of at least thirty-two bytes", "profile");
        let other = Codec::new(b"another secret of at least thirty-two bytes", "profile");
        let sealed = codec.seal_text("clients\0oc_a", "d00000000000000000042");
        assert_eq!(codec.open_text("clients\0oc_a", &sealed), Some("d00000000000000000042"));
        assert_eq!(codec.open_text("clients\0oc_b", &sealed), None, "moved");
        assert_eq!(other.open_text("clients\0oc_a", &sealed), None, "another secret");
        let altered = sealed.replacen("d000", "a000", 1);
        assert_eq!(codec.open_text("clients\0oc_a", &altered), None, "altered");
        assert_eq!(codec.open_text("clients\0oc_a", "d0042"), None, "unsealed");
    }

    #[test]
    fn keys_are_keyed_and_the_marker_is_not() {
        let a = Codec::new(b"fleet secret of at least thirty-two bytes", "p");
        let b = Codec::new(b"another secret of at least thirty-two bytes", "p");
        assert_ne!(a.hash_of(b"oat_x"), b.hash_of(b"oat_x"));
        assert_ne!(a.hash_of(b"oat_x"), TokenHash::of("oat_x"));
        assert_eq!(a.hash_of(b"oat_x"), a.hash_of(b"oat_x"));
        assert_ne!(a.prefix(), b.prefix(), "another secret shares nothing");
        assert_eq!(a.marker_key(), b.marker_key(), "but finds the same marker");
        assert_ne!(a.fingerprint(), b.fingerprint());
        let other_profile = Codec::new(b"fleet secret of at least thirty-two bytes", "p2");
        assert_ne!(a.marker_key(), other_profile.marker_key());
        assert_ne!(a.prefix(), other_profile.prefix());
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex::<4>(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex::<4>("00"), None);
        assert_eq!(unhex::<1>("zz"), None);
        assert_eq!(unhex::<1>("AB"), None, "one form only: lower case");
    }
}
