//! Silences: "do not send notifications that match this, from START to END", with who
//! asked and why. A silenced notification is still written to the outbox (state
//! `silenced`, naming the silence), so what was held back stays visible.
//!
//! Silences are few and change rarely: they live in one JSON file
//! (`outbox/silences.json`) rewritten atomically (temp file, fsync, rename) on each
//! change.

use crate::matcher::Matchers;
use crate::message::Notification;
use gpuwarden_model::TimestampMs;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Expired silences are forgotten this long after their end.
const FORGET_AFTER_MS: TimestampMs = 7 * 24 * 3600 * 1000;

/// Bounds on silences, so that the API cannot grow the file (rewritten on each change)
/// or the answers without limit. `[notify.silences]` in the configuration overrides them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceLimits {
    /// Silences kept at once (active, pending and recently expired). Default 1000.
    pub max_count: usize,
    /// Patterns in all matcher lists of one silence, plus its sinks. Default 100.
    pub max_matchers: usize,
    /// Longest single matcher pattern or sink name, in bytes. Default 256.
    pub max_matcher_len: usize,
    /// Longest author, in bytes. Default 256.
    pub max_author_len: usize,
    /// Longest comment, in bytes. Default 4096.
    pub max_comment_len: usize,
    /// Longest silence (end − start), in milliseconds. Default one year.
    pub max_duration_ms: i64,
}

impl Default for SilenceLimits {
    fn default() -> Self {
        SilenceLimits {
            max_count: 1000,
            max_matchers: 100,
            max_matcher_len: 256,
            max_author_len: 256,
            max_comment_len: 4096,
            max_duration_ms: 365 * 24 * 3600 * 1000,
        }
    }
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// `sil-` and 16 hex digits.
    pub id: String,
    /// What it silences (at least one matcher or one sink).
    pub matchers: Matchers,
    /// Only these sinks (empty: every sink).
    #[serde(default)]
    pub sinks: Vec<String>,
    pub author: String,
    pub comment: String,
    pub starts_ms: TimestampMs,
    pub ends_ms: TimestampMs,
    pub created_ms: TimestampMs,
    /// The part of the fleet the silence is confined to (set by the server for a
    /// tenant's silence; `None`: anywhere its matchers match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Confinement>,
}

/// A tenant's part of the fleet, which its silences cannot reach beyond: a notification
/// is inside when its node is one of `nodes`, or (for a GPU's notification) its
/// workload's namespace is one of `namespaces` or its Slurm account one of `accounts`.
/// The same union as the API's tenant scope; names are compared exactly; what is not
/// known (no namespace, no account) is outside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl Confinement {
    /// Whether `n` lies inside. Every namespace the notification names (the GPU's when it
    /// was sent, and the one its incident recorded) must be one of `namespaces`, so a
    /// workload that changed hands is not caught by either owner's silence alone.
    pub fn contains(&self, n: &Notification) -> bool {
        if self.nodes.contains(&n.node) {
            return true;
        }
        if n.gpu.is_none() {
            return false; // a node's own notification: owners of the node only
        }
        let namespaces: Vec<&str> = [
            n.namespace.as_deref(),
            n.labels.get("gpuwarden.namespace").map(String::as_str),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !namespaces.is_empty() && namespaces.iter().all(|ns| self.namespaces.iter().any(|x| x == ns)) {
            return true;
        }
        n.labels
            .get("gpuwarden.account")
            .is_some_and(|a| self.accounts.iter().any(|x| x == a))
    }

    /// Whether every part of `self` is also part of `outer` (a silence confined to
    /// `self` can only silence what a caller confined to `outer` may see).
    pub fn is_within(&self, outer: &Confinement) -> bool {
        let sub = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x));
        sub(&self.namespaces, &outer.namespaces)
            && sub(&self.accounts, &outer.accounts)
            && sub(&self.nodes, &outer.nodes)
    }
}

/// Where a silence is in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now_ms: TimestampMs) -> SilenceState {
        if now_ms >= self.ends_ms {
            SilenceState::Expired
        } else if now_ms < self.starts_ms {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether it holds back `n` for `sink` at `now_ms`.
    pub fn silences(&self, n: &Notification, sink: &str, now_ms: TimestampMs) -> bool {
        self.state(now_ms) == SilenceState::Active
            && (self.sinks.is_empty() || self.sinks.iter().any(|s| s == sink))
            && self.matchers.matches(n)
            && self.within.as_ref().is_none_or(|c| c.contains(n))
    }
}

/// A new silence, as the API and CLI take it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    #[serde(default)]
    pub matchers: Matchers,
    #[serde(default)]
    pub sinks: Vec<String>,
    pub author: String,
    pub comment: String,
    /// Default: now.
    pub starts_ms: Option<TimestampMs>,
    pub ends_ms: TimestampMs,
    /// Confines the silence to a tenant's part of the fleet. Set by the server from the
    /// caller's scope, never taken from a request body.
    #[serde(skip)]
    pub within: Option<Confinement>,
}

/// Why a silence was refused or could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence must end after it starts (starts {starts_ms}, ends {ends_ms})")]
    EndsBeforeStart {
        starts_ms: TimestampMs,
        ends_ms: TimestampMs,
    },
    #[error("a silence must end in the future")]
    EndsInPast,
    #[error("a silence needs at least one matcher or sink (it would silence everything)")]
    MatchesEverything,
    #[error("a silence needs an author and a comment")]
    MissingAuthorOrComment,
    #[error("silence names sink '{0}', which is not configured")]
    UnknownSink(String),
    #[error("a silence may last at most {max_ms} ms (about {} days); this one lasts {got_ms} ms", max_ms / 86_400_000)]
    TooLong { max_ms: i64, got_ms: i64 },
    #[error("{what} is {got} long; the limit is {max}: shorten it")]
    TooBig { what: &'static str, got: usize, max: usize },
    #[error("there are already {0} silences, the limit: expire some (DELETE /api/v1/silences/ID) before adding more")]
    TooMany(usize),
    #[error("no silence '{0}'")]
    NotFound(String),
    #[error("saving silences to {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The silences in the PostgreSQL store could not be read or written.
    #[error("silences in the database: {0}")]
    Shared(String),
}

/// Reads every silence from the shared store; a row this build cannot read is skipped
/// (logged), not fatal.
#[cfg(feature = "postgres")]
fn load_shared(db: &gpuwarden_store::postgres::PgHandle) -> Result<Vec<Silence>, SilenceError> {
    let rows = db.silences_load().map_err(|e| SilenceError::Shared(e.to_string()))?;
    Ok(rows
        .iter()
        .filter_map(|j| match serde_json::from_str::<Silence>(j) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("a silence in the database is not readable by this build, skipped: {e}");
                None
            }
        })
        .collect())
}

/// Where silences are kept: the seam between [`Silences`] and its storage.
enum Backend {
    /// One JSON file, replaced whole on every change (one process).
    File(PathBuf),
    /// One row per silence in the PostgreSQL store, shared by every instance on it; the
    /// list in memory is refreshed from there (at most every [`SHARED_REFRESH`]).
    #[cfg(feature = "postgres")]
    Postgres {
        db: gpuwarden_store::postgres::PgHandle,
        refreshed: parking_lot::Mutex<Option<std::time::Instant>>,
    },
}

/// How stale a shared list may be: a silence created on another instance holds here
/// within this long.
#[cfg(feature = "postgres")]
const SHARED_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The silences of one gpuwarden, saved in one file (or, shared, in PostgreSQL).
pub struct Silences {
    backend: Backend,
    list: parking_lot::RwLock<Vec<Silence>>,
    limits: SilenceLimits,
}

impl Silences {
    /// Loads `path` (missing: none). An unreadable file is an error: starting without
    /// silences someone set would page people who asked not to be.
    pub fn open(path: &Path) -> Result<Silences, SilenceError> {
        let io = |source| SilenceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let list = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(Silences {
            backend: Backend::File(path.to_path_buf()),
            list: parking_lot::RwLock::new(list),
            limits: SilenceLimits::default(),
        })
    }

    /// The silences of every instance sharing the PostgreSQL store behind `db`.
    #[cfg(feature = "postgres")]
    pub fn open_shared(db: &gpuwarden_store::postgres::PgHandle) -> Result<Silences, SilenceError> {
        let list = load_shared(db)?;
        Ok(Silences {
            backend: Backend::Postgres {
                db: db.clone(),
                refreshed: parking_lot::Mutex::new(Some(std::time::Instant::now())),
            },
            list: parking_lot::RwLock::new(list),
            limits: SilenceLimits::default(),
        })
    }

    /// Shared: reads the list again when it is older than [`SHARED_REFRESH`]. A failed
    /// read keeps the list held (logged): better old silences than none.
    fn refresh(&self) {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { db, refreshed } = &self.backend {
            let mut at = refreshed.lock();
            if at.is_some_and(|t| t.elapsed() < SHARED_REFRESH) {
                return;
            }
            match load_shared(db) {
                Ok(list) => {
                    *self.list.write() = list;
                    *at = Some(std::time::Instant::now());
                }
                Err(e) => tracing::warn!("silences: {e}; using the list read before"),
            }
        }
    }

    /// The same silences under other bounds (those already saved are kept as they are).
    pub fn with_limits(mut self, limits: SilenceLimits) -> Silences {
        self.limits = limits;
        self
    }

    /// Refuses a silence larger than the limits before anything is stored.
    fn check_size(&self, new: &NewSilence) -> Result<(), SilenceError> {
        let l = &self.limits;
        let too_big = |what, got: usize, max: usize| {
            if got > max {
                Err(SilenceError::TooBig { what, got, max })
            } else {
                Ok(())
            }
        };
        too_big("the author", new.author.len(), l.max_author_len)?;
        too_big("the comment", new.comment.len(), l.max_comment_len)?;
        let m = &new.matchers;
        let patterns = || {
            m.rules
                .iter()
                .chain(&m.nodes)
                .chain(&m.namespaces)
                .chain(&m.gpus)
                .chain(&new.sinks)
        };
        let count = patterns().count() + m.kinds.len() + m.transitions.len();
        too_big("the number of matchers and sinks", count, l.max_matchers)?;
        if let Some(p) = patterns().max_by_key(|p| p.len()) {
            too_big("a matcher pattern or sink name", p.len(), l.max_matcher_len)?;
        }
        Ok(())
    }

    /// Adds a silence and saves; returns it with its id.
    pub fn create(
        &self,
        new: NewSilence,
        known_sinks: &[String],
        now_ms: TimestampMs,
    ) -> Result<Silence, SilenceError> {
        let starts_ms = new.starts_ms.unwrap_or(now_ms);
        if new.ends_ms <= starts_ms {
            return Err(SilenceError::EndsBeforeStart {
                starts_ms,
                ends_ms: new.ends_ms,
            });
        }
        if new.ends_ms <= now_ms {
            return Err(SilenceError::EndsInPast);
        }
        if new.matchers.is_empty() && new.sinks.is_empty() {
            return Err(SilenceError::MatchesEverything);
        }
        if new.author.trim().is_empty() || new.comment.trim().is_empty() {
            return Err(SilenceError::MissingAuthorOrComment);
        }
        self.check_size(&new)?;
        // Checked: `ends_ms - starts_ms` of two arbitrary i64 may overflow.
        let got_ms = new.ends_ms.checked_sub(starts_ms).unwrap_or(i64::MAX);
        if got_ms > self.limits.max_duration_ms {
            return Err(SilenceError::TooLong {
                max_ms: self.limits.max_duration_ms,
                got_ms,
            });
        }
        if let Some(s) = new.sinks.iter().find(|s| !known_sinks.contains(s)) {
            return Err(SilenceError::UnknownSink(s.clone()));
        }
        let silence = Silence {
            id: format!("sil-{:016x}", rand::random::<u64>()),
            matchers: new.matchers,
            sinks: new.sinks,
            author: new.author,
            comment: new.comment,
            starts_ms,
            ends_ms: new.ends_ms,
            created_ms: now_ms,
            within: new.within,
        };
        self.refresh();
        let mut list = self.list.write();
        let forgotten: Vec<String> = list
            .iter()
            .filter(|s| s.ends_ms.saturating_add(FORGET_AFTER_MS) <= now_ms)
            .map(|s| s.id.clone())
            .collect();
        list.retain(|s| s.ends_ms.saturating_add(FORGET_AFTER_MS) > now_ms);
        if list.len() >= self.limits.max_count {
            return Err(SilenceError::TooMany(list.len()));
        }
        list.push(silence.clone());
        if let Err(e) = self.save(&list, &silence, forgotten, now_ms) {
            list.pop();
            return Err(e);
        }
        Ok(silence)
    }

    /// Ends a silence now (an expired one stays expired); returns it.
    pub fn expire(&self, id: &str, now_ms: TimestampMs) -> Result<Silence, SilenceError> {
        self.refresh();
        let mut list = self.list.write();
        let s = list
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        if s.ends_ms > now_ms {
            s.ends_ms = now_ms;
            s.starts_ms = s.starts_ms.min(now_ms);
        }
        let out = s.clone();
        self.save(&list, &out, Vec::new(), now_ms)?;
        Ok(out)
    }

    /// Every silence known, newest first.
    pub fn list(&self) -> Vec<Silence> {
        self.refresh();
        let mut v = self.list.read().clone();
        v.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| b.id.cmp(&a.id)));
        v
    }

    /// The id of an active silence that holds back `n` for `sink`.
    pub fn silenced_by(&self, n: &Notification, sink: &str, now_ms: TimestampMs) -> Option<String> {
        self.refresh();
        self.list
            .read()
            .iter()
            .find(|s| s.silences(n, sink, now_ms))
            .map(|s| s.id.clone())
    }

    /// Persists a change: the file backend rewrites `list` whole; the shared one writes
    /// `changed` and deletes `forgotten` (rows, so two instances changing different
    /// silences at once lose nothing).
    fn save(
        &self,
        list: &[Silence],
        changed: &Silence,
        forgotten: Vec<String>,
        now_ms: TimestampMs,
    ) -> Result<(), SilenceError> {
        let path = match &self.backend {
            Backend::File(path) => path,
            #[cfg(feature = "postgres")]
            Backend::Postgres { db, .. } => {
                let json = serde_json::to_string(changed).expect("silences serialize");
                return db
                    .silences_save(vec![(changed.id.clone(), json)], forgotten, now_ms)
                    .map_err(|e| SilenceError::Shared(e.to_string()));
            }
        };
        let _ = (changed, forgotten, now_ms);
        let io = |source| SilenceError::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(list).expect("silences serialize");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            std::io::Write::write_all(&mut f, &bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;
    use crate::message::Transition;

    fn new(ends_ms: TimestampMs) -> NewSilence {
        NewSilence {
            matchers: Matchers {
                rules: vec!["ecc.*".into()],
                ..Default::default()
            },
            sinks: vec!["am".into()],
            author: "alice".into(),
            comment: "maintenance".into(),
            starts_ms: None,
            ends_ms,
            within: None,
        }
    }

    #[test]
    fn a_confined_silence_matches_only_inside_its_part_of_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let s = Silences::open(&dir.path().join("s.json")).unwrap();
        let n = sample(Transition::Opened); // node-a, GPU, namespace ml-team
        let mut mine = new(2_000);
        mine.sinks.clear();
        mine.within = Some(Confinement {
            namespaces: vec!["other-team".into()],
            ..Confinement::default()
        });
        let other = s.create(mine.clone(), &[], 1_000).unwrap();
        assert_eq!(s.silenced_by(&n, "am", 1_500), None, "another tenant's notification");
        mine.within = Some(Confinement {
            namespaces: vec!["ml-team".into()],
            ..Confinement::default()
        });
        let ours = s.create(mine.clone(), &[], 1_000).unwrap();
        assert_eq!(s.silenced_by(&n, "am", 1_500), Some(ours.id.clone()));
        // Survives a reload with its confinement.
        let s = Silences::open(&dir.path().join("s.json")).unwrap();
        assert_eq!(
            s.list().iter().find(|x| x.id == other.id).unwrap().within,
            Some(Confinement {
                namespaces: vec!["other-team".into()],
                ..Confinement::default()
            })
        );
        // A node-level notification only for owners of the node.
        let mut node_level = n.clone();
        node_level.gpu = None;
        let c = Confinement {
            namespaces: vec!["ml-team".into()],
            ..Confinement::default()
        };
        assert!(!c.contains(&node_level));
        let by_node = Confinement {
            nodes: vec!["node-a".into()],
            ..Confinement::default()
        };
        assert!(by_node.contains(&node_level));
        // A workload that changed hands: both namespaces must be inside.
        let mut moved = n.clone();
        moved.labels.insert("gpuwarden.namespace".into(), "other-team".into());
        assert!(!c.contains(&moved));
        assert!(c.is_within(&Confinement {
            namespaces: vec!["ml-team".into(), "x".into()],
            nodes: vec!["n".into()],
            ..Confinement::default()
        }));
        assert!(!by_node.is_within(&c));
    }

    #[test]
    fn a_silence_holds_back_its_sink_until_it_ends_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("silences.json");
        let s = Silences::open(&p).unwrap();
        let sil = s.create(new(2_000), &["am".into(), "hook".into()], 1_000).unwrap();
        let n = sample(Transition::Opened);
        assert_eq!(s.silenced_by(&n, "am", 1_500), Some(sil.id.clone()));
        assert_eq!(s.silenced_by(&n, "hook", 1_500), None);
        assert_eq!(s.silenced_by(&n, "am", 2_000), None, "expired at its end");
        let s = Silences::open(&p).unwrap();
        assert_eq!(s.list().len(), 1);
        s.expire(&sil.id, 1_200).unwrap();
        assert_eq!(s.silenced_by(&n, "am", 1_300), None);
        assert_eq!(s.list()[0].state(1_300), SilenceState::Expired);
    }

    #[test]
    fn silences_beyond_the_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SilenceLimits {
            max_count: 2,
            max_matchers: 3,
            max_matcher_len: 10,
            max_author_len: 8,
            max_comment_len: 20,
            max_duration_ms: 10_000,
        };
        let s = Silences::open(&dir.path().join("s.json")).unwrap().with_limits(limits);
        let sinks = vec!["am".to_string()];
        let mut long = new(1_000 + 10_001);
        assert!(matches!(
            s.create(long.clone(), &sinks, 1_000),
            Err(SilenceError::TooLong { .. })
        ));
        long.ends_ms = i64::MAX;
        long.starts_ms = Some(i64::MIN + 1);
        assert!(s.create(long, &sinks, 1_000).is_err(), "no overflow on a huge span");
        let mut author = new(5_000);
        author.author = "a".repeat(9);
        assert!(matches!(
            s.create(author, &sinks, 1_000),
            Err(SilenceError::TooBig { .. })
        ));
        let mut comment = new(5_000);
        comment.comment = "c".repeat(21);
        assert!(matches!(
            s.create(comment, &sinks, 1_000),
            Err(SilenceError::TooBig { .. })
        ));
        let mut many = new(5_000);
        many.matchers.nodes = vec!["a".into(), "b".into(), "c".into()];
        assert!(matches!(
            s.create(many, &sinks, 1_000),
            Err(SilenceError::TooBig { .. })
        ));
        let mut wide = new(5_000);
        wide.matchers.rules = vec!["x".repeat(11)];
        assert!(matches!(
            s.create(wide, &sinks, 1_000),
            Err(SilenceError::TooBig { .. })
        ));
        s.create(new(5_000), &sinks, 1_000).unwrap();
        s.create(new(5_000), &sinks, 1_000).unwrap();
        assert!(matches!(
            s.create(new(5_000), &sinks, 1_000),
            Err(SilenceError::TooMany(2))
        ));
    }

    #[test]
    fn nonsense_silences_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Silences::open(&dir.path().join("s.json")).unwrap();
        let sinks = vec!["am".to_string()];
        assert!(matches!(
            s.create(new(500), &sinks, 1_000),
            Err(SilenceError::EndsBeforeStart { .. })
        ));
        let mut everything = new(5_000);
        everything.matchers = Matchers::default();
        everything.sinks.clear();
        assert!(matches!(
            s.create(everything, &sinks, 1_000),
            Err(SilenceError::MatchesEverything)
        ));
        let mut unknown = new(5_000);
        unknown.sinks = vec!["nope".into()];
        assert!(matches!(
            s.create(unknown, &sinks, 1_000),
            Err(SilenceError::UnknownSink(_))
        ));
    }
}
