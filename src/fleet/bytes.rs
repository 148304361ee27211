//! The binary record format of fleet mode: a small length-prefixed encoding (big-endian
//! integers, `u16`-prefixed strings and sets), read back with bounds checked at every step.
//! What is written with it is in `records`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::records::{Change, Incarnation, Stamp};
use crate::change::Target;
use crate::principal::StringSet;
use crate::token::TokenHash;

/// More strings than this in one set is not a grant we wrote.
const MAX_ITEMS: usize = 4096;

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Unix milliseconds, saturating.
pub(crate) fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix microseconds, saturating.
pub(crate) fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The instant `ms` Unix milliseconds name.
pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Appends a record.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn stamp(&mut self, stamp: Stamp) {
        self.0.extend_from_slice(&stamp.incarnation.0);
        self.u64(stamp.seq);
    }
    pub(crate) fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn str(&mut self, s: &str) {
        // Longer strings are cut at the limit a reader accepts (never produced by the gateway).
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        self.0
            .extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn set(&mut self, set: &StringSet) {
        self.0
            .extend_from_slice(&u16::try_from(set.len()).unwrap_or(u16::MAX).to_be_bytes());
        for s in set.iter() {
            self.str(s);
        }
    }
    pub(crate) fn change(&mut self, change: &Change) {
        match change {
            Change::Token(hash) => {
                self.u8(1);
                self.0.extend_from_slice(hash.as_bytes());
            }
            Change::Client(id) => {
                self.u8(2);
                self.str(id);
            }
            Change::All => self.u8(3),
            Change::Deny { client, version } => {
                self.u8(4);
                self.str(client);
                self.u64(*version);
            }
            Change::Allow { client, lifts, version } => {
                self.u8(5);
                self.str(client);
                self.u64(*lifts);
                self.u64(*version);
            }
            Change::DenySession { id, until } => {
                self.u8(6);
                self.str(id);
                self.u64(*until);
            }
            Change::DenyTokenId { id, until } => {
                self.u8(7);
                self.str(id);
                self.u64(*until);
            }
            Change::Target(target) => {
                self.u8(8);
                let (kind, id) = match *target {
                    Target::User(id) => (1, id),
                    Target::ApiKey(id) => (2, id),
                    Target::Organization(id) => (3, id),
                    Target::Workspace(id) => (4, id),
                    Target::OrganizationMembership(id) => (5, id),
                    Target::WorkspaceMembership(id) => (6, id),
                };
                self.u8(kind);
                self.i64(id);
            }
        }
    }
}

/// Reads a record, front to back.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn stamp(&mut self) -> Option<Stamp> {
        let incarnation = Incarnation(self.take(16)?.try_into().ok()?);
        Some(Stamp {
            incarnation,
            seq: self.u64()?,
        })
    }
    pub(crate) fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).ok()
    }
    pub(crate) fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
    pub(crate) fn set(&mut self) -> Option<StringSet> {
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
    pub(crate) fn change(&mut self) -> Option<Change> {
        Some(match self.u8()? {
            1 => Change::Token(TokenHash::from_bytes(self.take(32)?.try_into().ok()?)),
            2 => Change::Client(self.str()?.to_owned()),
            3 => Change::All,
            4 => Change::Deny {
                client: self.str()?.to_owned(),
                version: self.u64()?,
            },
            5 => Change::Allow {
                client: self.str()?.to_owned(),
                lifts: self.u64()?,
                version: self.u64()?,
            },
            6 => Change::DenySession {
                id: self.str()?.to_owned(),
                until: self.u64()?,
            },
            7 => Change::DenyTokenId {
                id: self.str()?.to_owned(),
                until: self.u64()?,
            },
            8 => {
                let kind = self.u8()?;
                let id = self.i64()?;
                Change::Target(match kind {
                    1 => Target::User(id),
                    2 => Target::ApiKey(id),
                    3 => Target::Organization(id),
                    4 => Target::Workspace(id),
                    5 => Target::OrganizationMembership(id),
                    6 => Target::WorkspaceMembership(id),
                    _ => return None,
                })
            }
            _ => return None,
        })
    }
}
