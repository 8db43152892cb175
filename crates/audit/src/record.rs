//! One audit record, its canonical encoding and its hash.
//!
//! A record is one JSON line. Its `hash` is SHA-256 over a domain tag, the previous
//! record's hash and the canonical encoding of every other field (JSON with the fields in
//! declaration order, `null` for absent values), so editing any field, removing a record
//! or moving one breaks the chain at that record.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Separates this hash from any other SHA-256 use (and versions the encoding).
const DOMAIN: &[u8] = b"gpuwarden-audit-v1\n";

/// Longest kept text of a field; longer values (an attacker's path, a long comment) are
/// cut, with `…`, so a record stays small whatever the request held.
pub const MAX_FIELD_CHARS: usize = 256;
/// Longest kept `detail`.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// What came of the request or command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The change was made.
    Ok,
    /// Refused before it reached a handler or by authorization (401, 403, 415, 421, 429).
    Denied,
    /// Attempted, but it failed (bad request, not found, server error).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "denied" => Ok(Outcome::Denied),
            "error" => Ok(Outcome::Error),
            other => Err(format!("unknown result {other:?}: expected ok, denied or error")),
        }
    }
}

/// What to record: who did what, from where, with what result. The log adds the
/// sequence number and the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the epoch.
    pub ts_ms: i64,
    /// The principal's id (`anonymous`, `tok-…`, `oidc:…`, `cli:USER`).
    pub actor: String,
    /// viewer, operator, admin (or empty when unknown).
    pub role: String,
    pub tenant: Option<String>,
    /// The client's address (`ip:port`), or e.g. `cli` for a local command.
    pub client: Option<String>,
    /// What was done: `incident.resolve`, `silence.create`, `token.create`,
    /// `request.denied`, …
    pub action: String,
    /// What it was done to: an incident id, a silence id, a token id, a route.
    pub target: Option<String>,
    pub result: Outcome,
    /// The HTTP status answered, when there was one.
    pub status: Option<u16>,
    pub detail: Option<String>,
    /// How many requests this record stands for (more than 1 for aggregated denials).
    pub count: u64,
}

impl Entry {
    /// An entry with the given action and result, now, by `actor`; the other fields empty.
    pub fn new(actor: impl Into<String>, action: impl Into<String>, result: Outcome) -> Entry {
        Entry {
            ts_ms: now_ms(),
            actor: actor.into(),
            role: String::new(),
            tenant: None,
            client: None,
            action: action.into(),
            target: None,
            result,
            status: None,
            detail: None,
            count: 1,
        }
    }

    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }
    pub fn tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }
    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.client = Some(client.into());
        self
    }
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The entry with every text cut to its limit (see [`MAX_FIELD_CHARS`]).
    pub(crate) fn bounded(mut self) -> Entry {
        cut(&mut self.actor, MAX_FIELD_CHARS);
        cut(&mut self.role, MAX_FIELD_CHARS);
        cut(&mut self.action, MAX_FIELD_CHARS);
        for s in [&mut self.tenant, &mut self.client, &mut self.target]
            .into_iter()
            .flatten()
        {
            cut(s, MAX_FIELD_CHARS);
        }
        if let Some(d) = &mut self.detail {
            cut(d, MAX_DETAIL_CHARS);
        }
        self.count = self.count.max(1);
        self
    }
}

fn cut(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1, 2, 3, … without gaps, across rotated files.
    pub seq: u64,
    pub ts_ms: i64,
    pub actor: String,
    pub role: String,
    pub tenant: Option<String>,
    pub client: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub result: Outcome,
    pub status: Option<u16>,
    pub detail: Option<String>,
    pub count: u64,
    /// The previous record's `hash` ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 (hex) of the domain tag, `prev` and the canonical body.
    pub hash: String,
}

/// The hashed fields, in a fixed order: the canonical body.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts_ms: i64,
    actor: &'a str,
    role: &'a str,
    tenant: &'a Option<String>,
    client: &'a Option<String>,
    action: &'a str,
    target: &'a Option<String>,
    result: Outcome,
    status: Option<u16>,
    detail: &'a Option<String>,
    count: u64,
}

impl Record {
    /// The record for `entry` at `seq` after `prev`, with its hash.
    pub(crate) fn seal(entry: Entry, seq: u64, prev: &str) -> Record {
        let mut r = Record {
            seq,
            ts_ms: entry.ts_ms,
            actor: entry.actor,
            role: entry.role,
            tenant: entry.tenant,
            client: entry.client,
            action: entry.action,
            target: entry.target,
            result: entry.result,
            status: entry.status,
            detail: entry.detail,
            count: entry.count,
            prev: prev.to_string(),
            hash: String::new(),
        };
        r.hash = r.computed_hash();
        r
    }

    /// The hash this record's content gives (compare with `hash` to find an edit).
    pub fn computed_hash(&self) -> String {
        let body = Body {
            seq: self.seq,
            ts_ms: self.ts_ms,
            actor: &self.actor,
            role: &self.role,
            tenant: &self.tenant,
            client: &self.client,
            action: &self.action,
            target: &self.target,
            result: self.result,
            status: self.status,
            detail: &self.detail,
            count: self.count,
        };
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(self.prev.as_bytes());
        h.update(b"\n");
        // Serializing plain strings and integers cannot fail.
        h.update(serde_json::to_vec(&body).unwrap_or_default());
        hex::encode(h.finalize())
    }

    /// The JSON line (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one line.
    pub fn from_line(line: &str) -> Result<Record, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_field_change_changes_the_hash() {
        let e = Entry::new("alice", "incident.resolve", Outcome::Ok).target("inc-1");
        let r = Record::seal(e, 1, GENESIS);
        assert_eq!(r.hash, r.computed_hash());
        let parsed = Record::from_line(&r.to_line()).unwrap();
        assert_eq!(parsed, r);
        let mut m = r.clone();
        m.actor = "mallory".into();
        assert_ne!(m.computed_hash(), r.hash);
        let mut m = r.clone();
        m.prev = "1".repeat(64);
        assert_ne!(m.computed_hash(), r.hash);
        let mut m = r.clone();
        m.seq = 2;
        assert_ne!(m.computed_hash(), r.hash);
    }

    #[test]
    fn unknown_fields_are_refused_and_long_fields_cut() {
        let r = Record::seal(Entry::new("a", "x", Outcome::Ok), 1, GENESIS);
        let mut v: serde_json::Value = serde_json::from_str(&r.to_line()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(Record::from_line(&v.to_string()).is_err());
        let e = Entry::new("a".repeat(10_000), "x", Outcome::Ok)
            .detail("d".repeat(10_000))
            .bounded();
        assert_eq!(e.actor.chars().count(), MAX_FIELD_CHARS + 1);
        assert_eq!(e.detail.unwrap().chars().count(), MAX_DETAIL_CHARS + 1);
    }
}
