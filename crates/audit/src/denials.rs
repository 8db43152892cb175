//! Denied requests, bounded against floods.
//!
//! Anyone who can reach the listener can make it refuse requests, as fast as the network
//! allows; writing (and fsyncing) one record per refusal would let them fill the disk and
//! slow every change behind the audit lock. So denials are **aggregated**:
//!
//! - per window (default 60 s), the first denial of each key — (client IP, actor, action,
//!   status, reason) — is recorded at once, with all its details;
//! - repeats of a key in the window are only counted, and one record per key with the
//!   count (`count`, and the time span in `detail`) is written when the window ends;
//! - at most `max_keys` (default 100) keys per window: past that, denials of new keys
//!   are counted under one overflow record (`client` `*`), so varying the source address
//!   (an IPv6 /64 has 2^64) buys nothing;
//! - recording never waits: records go through a bounded queue to one writer thread
//!   ([`AuditLog::spawn_writer`]); if it is full, the record is dropped and counted, and
//!   the count is written as an `audit.dropped` record.
//!
//! Bound: at most `2 × max_keys + 3` denial records per window, whatever the request
//! rate — with the defaults about 200 records (≈ 80 KB) a minute, ≈ 115 MB a day under a
//! sustained attack from many addresses, and a handful a minute from one address.

use crate::error::AuditError;
use crate::log::AuditLog;
use crate::record::{now_ms, Entry, Outcome};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Limits of the denial aggregation.
#[derive(Debug, Clone)]
pub struct DenialLimits {
    /// Length of one aggregation window. Default 60 s.
    pub window_ms: i64,
    /// Distinct keys recorded per window. Default 100.
    pub max_keys: usize,
    /// Records waiting for the writer thread. Default 1024.
    pub queue: usize,
}

impl Default for DenialLimits {
    fn default() -> Self {
        DenialLimits {
            window_ms: 60_000,
            max_keys: 100,
            queue: 1024,
        }
    }
}

/// (client IP, actor, action, status, reason)
type Key = (String, String, String, Option<u16>, String);

struct Seen {
    first: Entry,
    repeats: u64,
    last_ms: i64,
}

/// The aggregation state of the current window (pure: time comes in as arguments).
pub(crate) struct Aggregator {
    limits: DenialLimits,
    window_start: Option<i64>,
    keys: HashMap<Key, Seen>,
    overflow: u64,
    overflow_first: Option<Entry>,
}

/// The client address without its port (connections from one host differ in port).
fn client_ip(client: &Option<String>) -> String {
    let Some(c) = client else { return String::new() };
    if let Ok(sa) = c.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    c.clone()
}

impl Aggregator {
    pub(crate) fn new(limits: DenialLimits) -> Self {
        Aggregator {
            limits,
            window_start: None,
            keys: HashMap::new(),
            overflow: 0,
            overflow_first: None,
        }
    }

    /// Takes one denial at `now`; returns the record to write at once, if any.
    pub(crate) fn observe(&mut self, entry: Entry, now: i64) -> Option<Entry> {
        self.window_start.get_or_insert(now);
        let key: Key = (
            client_ip(&entry.client),
            entry.actor.clone(),
            entry.action.clone(),
            entry.status,
            entry.detail.clone().unwrap_or_default(),
        );
        if let Some(seen) = self.keys.get_mut(&key) {
            seen.repeats += entry.count.max(1);
            seen.last_ms = now;
            return None;
        }
        if self.keys.len() < self.limits.max_keys {
            self.keys.insert(
                key,
                Seen {
                    first: entry.clone(),
                    repeats: 0,
                    last_ms: now,
                },
            );
            return Some(entry);
        }
        self.overflow += entry.count.max(1);
        if self.overflow_first.is_none() {
            self.overflow_first = Some(entry.clone());
            let mut e = entry;
            let note = format!(
                "{} different denial sources in this window (the limit): further new ones are only counted until it ends",
                self.limits.max_keys
            );
            e.detail = Some(match e.detail {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
            return Some(e);
        }
        None
    }

    /// When the window has ended at `now` (or `force`), the summary records of its
    /// repeats and overflow; starts the next window.
    pub(crate) fn roll(&mut self, now: i64, force: bool) -> Vec<Entry> {
        let Some(start) = self.window_start else {
            return Vec::new();
        };
        if !force && now < start + self.limits.window_ms {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut seen: Vec<Seen> = self.keys.drain().map(|(_, v)| v).collect();
        seen.sort_by_key(|s| s.first.ts_ms);
        for s in seen.into_iter().filter(|s| s.repeats > 0) {
            let mut e = s.first;
            e.count = s.repeats;
            e.ts_ms = now;
            e.detail = Some(format!(
                "{} more like this (aggregated) from {} ms to {} ms{}",
                s.repeats,
                start,
                s.last_ms,
                e.detail.map(|d| format!("; {d}")).unwrap_or_default()
            ));
            out.push(e);
        }
        if let Some(first) = self.overflow_first.take() {
            // The first overflowed denial was recorded on its own; count the rest.
            let rest = self.overflow.saturating_sub(first.count.max(1));
            if rest > 0 {
                let mut e = Entry::new("*", first.action.clone(), Outcome::Denied);
                e.client = Some("*".into());
                e.count = rest;
                e.ts_ms = now;
                e.detail = Some(format!(
                    "{rest} denials beyond the limit of {} sources per window, from {start} ms to {now} ms (aggregated)",
                    self.limits.max_keys
                ));
                out.push(e);
            }
        }
        self.overflow = 0;
        self.window_start = None;
        out
    }
}

impl AuditLog {
    /// Records a denied request, or a failed attempt at a change — anything an attacker
    /// could repeat at will: aggregated (see the module doc) and, with a writer thread
    /// ([`AuditLog::spawn_writer`]), never blocking. Without one (a CLI command) the
    /// record is written here; a failure is logged, not returned.
    pub fn best_effort(&self, entry: Entry) {
        let now = now_ms();
        let (due, first) = {
            let mut agg = self.denials.lock();
            let due = agg.roll(now, false);
            (due, agg.observe(entry, now))
        };
        for e in due.into_iter().chain(first) {
            self.submit(e);
        }
    }

    /// Whether a writer thread takes the best-effort records.
    pub fn has_writer(&self) -> bool {
        self.queue.lock().is_some()
    }

    /// Queues a record for the writer thread when there is one, else writes it at once.
    fn submit(&self, entry: Entry) {
        let queue = self.queue.lock().clone();
        match queue {
            Some(tx) => match tx.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped_total.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                if let Err(e) = self.append(entry) {
                    tracing::error!("audit record not written: {e}");
                }
            }
        }
    }

    /// Starts the writer thread for [`AuditLog::best_effort`] and [`AuditLog::submit`]; it
    /// also writes each window's summaries when the window ends. Stop it with
    /// [`AuditWriter::stop`] (or by dropping it): what is counted is written first.
    pub fn spawn_writer(self: &Arc<Self>) -> Result<AuditWriter, AuditError> {
        let (tx, rx) = sync_channel::<Entry>(self.options().denials.queue.max(1));
        *self.queue.lock() = Some(tx);
        let log = self.clone();
        let tick = Duration::from_millis((self.options().denials.window_ms / 4).clamp(10, 1000) as u64);
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || loop {
                let mut batch = Vec::new();
                let closed = match rx.recv_timeout(tick) {
                    Ok(e) => {
                        batch.push(e);
                        while batch.len() < 256 {
                            match rx.try_recv() {
                                Ok(e) => batch.push(e),
                                Err(_) => break,
                            }
                        }
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                batch.extend(log.denials.lock().roll(now_ms(), closed));
                let dropped = log.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let mut e = Entry::new("gpuwarden", "audit.dropped", Outcome::Error)
                        .role("system")
                        .detail(format!(
                            "{dropped} best-effort records dropped: the audit writer's queue was full"
                        ));
                    e.count = dropped;
                    batch.push(e);
                }
                if !batch.is_empty() {
                    if let Err(e) = log.append_all(batch) {
                        tracing::error!("audit records not written: {e}");
                    }
                }
                if closed {
                    return;
                }
            })
            .map_err(AuditError::io(self.dir(), "starting the audit writer thread"))?;
        Ok(AuditWriter {
            log: self.clone(),
            handle: Some(handle),
        })
    }
}

/// The running writer thread; stopping it writes what is queued and counted.
pub struct AuditWriter {
    log: Arc<AuditLog>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriter {
    /// Writes what is queued and counted, and stops the thread.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        // Dropping the sender ends the thread's loop after a last flush.
        self.log.queue.lock().take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(client: &str, status: u16, reason: &str) -> Entry {
        Entry::new("anonymous", "request.denied", Outcome::Denied)
            .client(client)
            .status(status)
            .target("POST /api/v1/silences")
            .detail(reason)
    }

    #[test]
    fn repeats_are_counted_and_summarized_at_the_end_of_the_window() {
        let mut a = Aggregator::new(DenialLimits {
            window_ms: 1000,
            max_keys: 10,
            queue: 8,
        });
        assert!(a.observe(denial("10.0.0.1:1000", 403, "cross_origin"), 0).is_some());
        // Same host, another port: the same key.
        for i in 0..99 {
            assert!(a
                .observe(denial(&format!("10.0.0.1:{}", 2000 + i), 403, "cross_origin"), 10)
                .is_none());
        }
        // Another reason: another key.
        assert!(a
            .observe(denial("10.0.0.1:1000", 421, "host_not_allowed"), 20)
            .is_some());
        assert!(a.roll(999, false).is_empty(), "the window has not ended");
        let out = a.roll(1000, false);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].count, 99);
        assert_eq!(out[0].status, Some(403));
        assert!(out[0].detail.as_deref().unwrap().contains("99 more"), "{out:?}");
        // A new window starts fresh.
        assert!(a.observe(denial("10.0.0.1:1000", 403, "cross_origin"), 1001).is_some());
    }

    #[test]
    fn many_sources_are_bounded_per_window() {
        let max_keys = 5;
        let mut a = Aggregator::new(DenialLimits {
            window_ms: 1000,
            max_keys,
            queue: 8,
        });
        let mut immediate = 0;
        for i in 0..10_000u32 {
            let ip = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255);
            // Every source twice.
            for _ in 0..2 {
                immediate += usize::from(a.observe(denial(&ip, 401, "unauthenticated"), 5).is_some());
            }
        }
        let summaries = a.roll(1005, false);
        assert_eq!(immediate, max_keys + 1);
        assert_eq!(summaries.len(), max_keys + 1, "{summaries:?}");
        let counted: u64 = summaries.iter().map(|e| e.count).sum::<u64>() + immediate as u64;
        assert_eq!(counted, 20_000, "every denial is counted");
        let overflow = summaries.last().unwrap();
        assert_eq!(overflow.client.as_deref(), Some("*"));
    }
}
