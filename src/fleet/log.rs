//! The change log in Redis: a Stream of sealed entries, its head, and the records its entries
//! maintain, each changed by one Lua script so that state, log and notice never disagree.
//!
//! | key | holds |
//! | --- | --- |
//! | `<p>head` | hash: `inc` the incarnation, `seq` the last sequence number (20 digits), `link` the last entry's link, `id` its stream id, `run` the `run_id` of the Redis process that wrote it (a head written by another process may come from an older snapshot) |
//! | `<p>log` | stream: field `e`, one sealed [`Entry`] each, trimmed to about `max_log_len` |
//! | `<r>clients` | hash: client id → sealed `d`/`a` record with its version (no expiry) |
//! | `<r>sessions`, `<r>token-ids` | sorted sets: sealed `<until>:<id>` members scored by when each denial ends (no expiry; pruned by score) |
//!
//! `<p>` is the format-versioned profile prefix, `<r>` the records prefix every release reads.
//! Nothing here carries a TTL, so a `volatile-*` eviction policy never picks it.
//!
//! An append is a compare-and-set on the head: the writer seals entries numbered from the
//! head it has applied, and the script refuses them if the head moved (another replica
//! appended first: the writer reads the log and tries again). So sequence numbers have no
//! gaps, each entry names the link of the one before it, and a reader can tell a replayed,
//! removed or forked entry from the next one.

use redis::Value;

use super::Fleet;
use super::codec::{Link, hex, unhex};
use super::records::{Change, Entry, Incarnation, client_record, jwt_denial_member, unix_millis};
use super::view::Head;

/// Most entries appended by one script call.
pub(crate) const MAX_BATCH: usize = 64;
/// Most entries read by one catch-up call.
pub(crate) const READ_COUNT: usize = 256;
/// Most live JWT denials of each kind kept in Redis (a replica keeps as many).
pub(crate) const MAX_JWT_DENIALS: u64 = 100_000;

/// The one test of a head's form, in every script that reads a head (and in [`remote_head`]):
/// `inc` 32 lower-case hex digits, `seq` 20 decimal digits, `link` 32 lower-case hex digits,
/// `id` present. Any other head is no head.
const CANONICAL: &str = r"
local function canonical(h)
  return type(h[1]) == 'string' and #h[1] == 32 and string.find(h[1], '^[0-9a-f]+$') ~= nil
    and type(h[2]) == 'string' and #h[2] == 20 and string.find(h[2], '^[0-9]+$') ~= nil
    and type(h[3]) == 'string' and #h[3] == 32 and string.find(h[3], '^[0-9a-f]+$') ~= nil
    and type(h[4]) == 'string' and #h[4] > 0
end
";

/// KEYS: head, log, clients, sessions, token-ids. ARGV: expected incarnation, expected seq,
/// new seq, new link, max log length, channel, notice, now (ms), max JWT denials, entry
/// count, then five per entry: sealed entry, op, field, value, condition.
/// Checked before it runs (no `no-writes` flag): refused as a whole when Redis refuses writes.
const APPEND: &str = r"#!lua
local function kind(key) return redis.call('TYPE', key)['ok'] end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
if kind(KEYS[1]) ~= 'hash' then return {'nohead'} end
local h = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'link', 'id', 'run')
if not canonical(h) or h[5] ~= run then return {'nohead'} end
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return {'stale'} end
for i = 2, 5 do
  local want = ({'stream', 'hash', 'zset', 'zset'})[i - 1]
  local k = kind(KEYS[i])
  if k ~= 'none' and k ~= want then redis.call('DEL', KEYS[i]) end
end
local n = tonumber(ARGV[10])
-- The client records as the batch leaves them, entry by entry: every condition is checked
-- before anything is written (all or nothing), against what the entries before it did.
local records = {}
local function record(field)
  if records[field] == nil then records[field] = redis.call('HGET', KEYS[3], field) end
  return records[field]
end
for i = 0, n - 1 do
  local b = 11 + i * 5
  local op, field, value, cond = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if op == 'allow' then
    if record(field) ~= cond then return {'superseded', tostring(i)} end
    records[field] = value
  elseif op == 'deny' then
    local current = record(field)
    if not current or string.sub(current, 2, 21) < cond then records[field] = value end
  end
end
-- The entries first: adding to a stream is the one write that can still fail (its ids
-- exhausted by a tampered entry); then nothing else has been written.
local id = ''
for i = 0, n - 1 do
  local ok, added = pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'e', ARGV[11 + i * 5])
  if not ok then return {'unusable'} end
  id = added
end
for i = 0, n - 1 do
  local b = 11 + i * 5
  local op, field, value, cond = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if op == 'deny' or op == 'allow' then
    if records[field] then redis.call('HSET', KEYS[3], field, records[field]) end
  elseif op == 'sid' or op == 'jti' then
    local key = KEYS[4]
    if op == 'jti' then key = KEYS[5] end
    redis.call('ZADD', key, cond, value)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[8])
    redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[9]) + 1))
  end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'link', ARGV[4], 'id', id, 'run', run)
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {'ok', id}
";

/// KEYS: head, log. ARGV: the last stream id read, count. Returns the head's four fields,
/// the entries after that id, and whether Redis restarted since the head was written.
const READ: &str = r"#!lua flags=no-writes
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return {false, false, false, false, {}, 0} end
local h = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'link', 'id', 'run')
if not canonical(h) then return {false, false, false, false, {}, 0} end
local ok, entries = pcall(redis.call, 'XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
if not ok then entries = {} end
local restarted = 0
if h[5] ~= run then restarted = 1 end
return {h[1], h[2], h[3], h[4], entries, restarted}
";

/// KEYS: head, log, clients, sessions, token-ids. ARGV: now (ms), how far back (ms) the
/// entries are wanted, count. Returns the head's four fields, the client records, the live
/// JWT denials, the log's entries of that window, and whether Redis restarted since the head
/// was written, all from one moment.
const SNAPSHOT: &str = r"#!lua flags=no-writes
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
local function read(...)
  local ok, v = pcall(redis.call, ...)
  if ok then return v end
  return {}
end
local h = {false, false, false, false, false}
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then h = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'link', 'id', 'run') end
if not canonical(h) then h = {false, false, false, false, false} end
local restarted = 0
if h[1] and h[5] ~= run then restarted = 1 end
local t = redis.call('TIME')
local since = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
if since < 0 then since = 0 end
return {h[1], h[2], h[3], h[4], read('HGETALL', KEYS[3]),
        read('ZRANGEBYSCORE', KEYS[4], ARGV[1], '+inf'), read('ZRANGEBYSCORE', KEYS[5], ARGV[1], '+inf'),
        read('XRANGE', KEYS[2], tostring(since), '+', 'COUNT', ARGV[3]), restarted}
";

/// KEYS: head, log. ARGV: the incarnation and seq seen (empty if none), the new
/// incarnation, its first seq, its genesis link, channel, notice. Starts a new incarnation
/// unless another replica already did.
const NEW_INCARNATION: &str = r"#!lua
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
local inc, seq, h = '', '', {}
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  h = redis.call('HMGET', KEYS[1], 'inc', 'seq', 'link', 'id')
  inc, seq = h[1] or '', h[2] or ''
end
-- A head no replica could have written (its numbering a day past the clock, or unreadable)
-- is replaced whatever the caller saw.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local readable = canonical(h) and tonumber(h[2]) <= now_us + 86400000000
if readable and (inc ~= ARGV[1] or seq ~= ARGV[2]) then return 'moved' end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'inc', ARGV[3], 'seq', ARGV[4], 'link', ARGV[5], 'id', '0-0', 'run', run)
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'ok'
";

/// The head as Redis has it, if it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteHead {
    pub(crate) incarnation: Incarnation,
    pub(crate) seq: u64,
    pub(crate) link: Link,
    pub(crate) stream_id: String,
    /// Redis restarted (or another node took over) since this head was written: what it
    /// holds may be an older snapshot, so it cannot be trusted.
    pub(crate) restarted: bool,
}

impl RemoteHead {
    pub(crate) fn into_head(self) -> Head {
        Head {
            incarnation: self.incarnation,
            seq: self.seq,
            link: self.link,
            stream_id: self.stream_id,
        }
    }
}

/// The head Redis has (`None`: no state, or unreadable), and sealed entries by stream id.
pub(crate) struct LogRead {
    pub(crate) head: Option<RemoteHead>,
    pub(crate) entries: Vec<(String, Vec<u8>)>,
}

/// Everything a replica needs to take Redis's state as its own.
pub(crate) struct Snapshot {
    pub(crate) head: Option<RemoteHead>,
    /// Client id → sealed record.
    pub(crate) clients: Vec<(String, String)>,
    pub(crate) sessions: Vec<String>,
    pub(crate) token_ids: Vec<String>,
    /// The log's entries of the void window, oldest first.
    pub(crate) recent: Vec<(String, Vec<u8>)>,
}

/// What an append did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Written; the stream id of the last entry.
    Written(String),
    /// The head moved since it was read: read the log, then try again.
    Stale,
    /// Redis has no head: it lost its state (or never had any).
    NoHead,
    /// The entry at this index is an allow whose denial is no longer the current one.
    Superseded(usize),
    /// The stream takes no more entries (its ids exhausted by a tampered entry): nothing
    /// was written; the log must start anew.
    Unusable,
}

/// An entry ready to append: sealed, with the state change the script makes for it.
pub(crate) struct Prepared {
    pub(crate) sealed: Vec<u8>,
    op: &'static str,
    field: String,
    value: String,
    condition: String,
}

/// The scripts, hashed once (`EVALSHA`, falling back to `EVAL` when Redis does not know them).
mod scripts {
    use std::sync::LazyLock;

    use redis::Script;

    /// A script with the shared head test after its first line (the `#!lua` flags).
    fn with_canonical(script: &str) -> Script {
        let (flags, body) = script.split_once('\n').unwrap_or((script, ""));
        Script::new(&format!("{flags}\n{}{body}", super::CANONICAL))
    }

    pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| with_canonical(super::APPEND));
    pub(super) static READ: LazyLock<Script> = LazyLock::new(|| with_canonical(super::READ));
    pub(super) static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| with_canonical(super::SNAPSHOT));
    pub(super) static NEW_INCARNATION: LazyLock<Script> = LazyLock::new(|| with_canonical(super::NEW_INCARNATION));
}

impl Fleet {
    /// The script arguments of `entry` (sealed as `sealed`).
    pub(crate) fn prepare(&self, entry: &Entry, sealed: Vec<u8>) -> Prepared {
        let clients = self.codec.records_key("clients");
        let (op, field, value, condition) = match &entry.change {
            Change::Deny { client, version } => {
                let version = if *version == 0 { entry.seq } else { *version };
                let value = client_record(&self.codec, &clients, client, true, version);
                ("deny", client.clone(), value, format!("{version:020}"))
            }
            Change::Allow { client, lifts, version } => {
                let version = if *version == 0 { entry.seq } else { *version };
                let value = client_record(&self.codec, &clients, client, false, version);
                let current = client_record(&self.codec, &clients, client, true, *lifts);
                ("allow", client.clone(), value, current)
            }
            Change::DenySession { id, until } => {
                let member = jwt_denial_member(&self.codec, &self.codec.records_key("sessions"), id, *until);
                ("sid", String::new(), member, until.to_string())
            }
            Change::DenyTokenId { id, until } => {
                let member = jwt_denial_member(&self.codec, &self.codec.records_key("token-ids"), id, *until);
                ("jti", String::new(), member, until.to_string())
            }
            Change::Token(_) | Change::Client(_) | Change::All | Change::Target(_) => {
                ("", String::new(), String::new(), String::new())
            }
        };
        Prepared {
            sealed,
            op,
            field,
            value,
            condition,
        }
    }

    /// Appends `batch` after `head` (compare-and-set), updating the records and notifying.
    pub(crate) async fn append(
        &self,
        head: &Head,
        batch: &[Prepared],
        last: (u64, Link),
    ) -> redis::RedisResult<Appended> {
        let mut invocation = scripts::APPEND.prepare_invoke();
        invocation
            .key(self.codec.head_key())
            .key(self.codec.log_key())
            .key(self.codec.records_key("clients"))
            .key(self.codec.records_key("sessions"))
            .key(self.codec.records_key("token-ids"))
            .arg(head.incarnation.to_hex())
            .arg(format!("{:020}", head.seq))
            .arg(format!("{:020}", last.0))
            .arg(hex(&last.1))
            .arg(self.config.max_log_len)
            .arg(self.codec.channel())
            .arg(
                self.codec
                    .encode_notice(self.sender(), &super::records::Notice::Appended),
            )
            .arg(unix_millis(std::time::SystemTime::now()))
            .arg(MAX_JWT_DENIALS)
            .arg(batch.len());
        for p in batch {
            invocation
                .arg(p.sealed.as_slice())
                .arg(p.op)
                .arg(p.field.as_str())
                .arg(p.value.as_str())
                .arg(p.condition.as_str());
        }
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
        let word = |i: usize| reply.get(i).and_then(text);
        Ok(match word(0).as_deref() {
            Some("ok") => Appended::Written(word(1).unwrap_or_default()),
            Some("stale") => Appended::Stale,
            Some("superseded") => Appended::Superseded(word(1).and_then(|i| i.parse().ok()).unwrap_or(0)),
            Some("unusable") => Appended::Unusable,
            _ => Appended::NoHead,
        })
    }

    /// The head and the entries after `stream_id`.
    pub(crate) async fn read_after(&self, stream_id: &str) -> redis::RedisResult<LogRead> {
        let mut invocation = scripts::READ.prepare_invoke();
        invocation
            .key(self.codec.head_key())
            .key(self.codec.log_key())
            .arg(stream_id)
            .arg(READ_COUNT);
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
        Ok(LogRead {
            head: remote_head(&reply, 5),
            entries: reply.get(4).map(stream_entries).unwrap_or_default(),
        })
    }

    /// Redis's whole shared state, and the log of the last `window_ms`.
    pub(crate) async fn read_snapshot(&self, window_ms: u64) -> redis::RedisResult<Snapshot> {
        let mut invocation = scripts::SNAPSHOT.prepare_invoke();
        invocation
            .key(self.codec.head_key())
            .key(self.codec.log_key())
            .key(self.codec.records_key("clients"))
            .key(self.codec.records_key("sessions"))
            .key(self.codec.records_key("token-ids"))
            .arg(unix_millis(std::time::SystemTime::now()))
            .arg(window_ms)
            .arg(self.config.max_log_len);
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
        let texts = |i: usize| match reply.get(i) {
            Some(Value::Array(items)) => items.iter().filter_map(text).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let flat = texts(4);
        let clients = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        Ok(Snapshot {
            head: remote_head(&reply, 8),
            clients,
            sessions: texts(5),
            token_ids: texts(6),
            recent: reply.get(7).map(stream_entries).unwrap_or_default(),
        })
    }

    /// Starts `incarnation` at `seq` unless Redis's head is no longer `seen`. True if started.
    pub(crate) async fn start_incarnation(
        &self,
        seen: Option<&RemoteHead>,
        incarnation: Incarnation,
        seq: u64,
    ) -> redis::RedisResult<bool> {
        let mut invocation = scripts::NEW_INCARNATION.prepare_invoke();
        invocation
            .key(self.codec.head_key())
            .key(self.codec.log_key())
            .arg(seen.map(|h| h.incarnation.to_hex()).unwrap_or_default())
            .arg(seen.map(|h| format!("{:020}", h.seq)).unwrap_or_default())
            .arg(incarnation.to_hex())
            .arg(format!("{seq:020}"))
            .arg(hex(&self.codec.genesis(incarnation, seq)))
            .arg(self.codec.channel())
            .arg(
                self.codec
                    .encode_notice(self.sender(), &super::records::Notice::Appended),
            );
        let mut conn = self.conn.clone();
        let reply: String = invocation.invoke_async(&mut conn).await?;
        Ok(reply == "ok")
    }
}

/// The head of a script reply's first four fields (and its restart flag at `restarted`), if
/// it reads.
fn remote_head(reply: &[Value], restarted: usize) -> Option<RemoteHead> {
    let field = |i: usize| reply.get(i).and_then(text);
    let incarnation = Incarnation::from_hex(&field(0)?)?;
    let seq = field(1)?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = seq.parse().ok().filter(|seq| plausible(*seq))?;
    let link = unhex::<16>(&field(2)?)?;
    let stream_id = field(3).filter(|id| !id.is_empty())?;
    Some(RemoteHead {
        incarnation,
        seq,
        link,
        stream_id,
        restarted: field(restarted).as_deref() == Some("1"),
    })
}

/// True if `seq` can be a log position: numbering starts from the time in microseconds when
/// an incarnation starts and grows by one per change, so a head numbered more than a day of
/// microseconds ahead of the clock was not written by a replica (it would make numbering
/// overflow). Such a head reads as no head: lost state, recovered from.
pub(crate) fn plausible(seq: u64) -> bool {
    const DAY_MICROS: u64 = 86_400_000_000;
    seq <= super::records::unix_micros(std::time::SystemTime::now()).saturating_add(DAY_MICROS)
}

/// `XRANGE`'s reply: (id, the `e` field's bytes) of every well-formed entry.
fn stream_entries(value: &Value) -> Vec<(String, Vec<u8>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else { return None };
            let id = text(parts.first()?)?;
            let Value::Array(fields) = parts.get(1)? else {
                return None;
            };
            let position = fields.iter().position(|f| text(f).as_deref() == Some("e"))?;
            match fields.get(position + 1)? {
                Value::BulkString(bytes) => Some((id, bytes.clone())),
                _ => None,
            }
        })
        .collect()
}

/// A string reply as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}
