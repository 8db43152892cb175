//! The scrape collector: fetches exporter pages over HTTP on an interval, concurrently,
//! with a timeout and a body-size limit, and keeps per-target state (up/down, last
//! error, last duration, samples).
//!
//! Targets come from static URLs and from file-based target lists in Prometheus's
//! `file_sd` JSON format (`[{"targets": ["host:9400"], "labels": {...}}]`), re-read when
//! the file changes. The collector only fetches and parses; what to do with a page (store
//! it, mark GPUs stale) is the pipeline's job, so the collector never knows about storage.

mod targets;

pub use targets::{load_target_file, TargetFileError, TargetSpec};

use crate::dcgm::{map_exporter_page, ExporterPage};
use crate::prom::{Limits, ParseError};
use gpuwarden_model::{Clock, TimestampMs};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Why one scrape failed. Each variant names the target URL.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("scraping {url}: request failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("scraping {url}: timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("scraping {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("scraping {url}: body larger than the limit of {limit} bytes; raise scrape.max_body_bytes if this exporter is legitimately that large")]
    TooLarge { url: String, limit: usize },
    #[error("scraping {url}: {source}")]
    Parse {
        url: String,
        #[source]
        source: ParseError,
    },
}

/// How the collector scrapes.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// Time between two scrapes of the same target.
    pub interval: Duration,
    /// A scrape that takes longer fails with [`ScrapeError::Timeout`].
    pub timeout: Duration,
    /// Parser limits; `max_body_bytes` also bounds the HTTP body.
    pub limits: Limits,
    /// Scrapes in flight at once. A round over 10,000 targets opened 10,000 connections
    /// at the same instant (file descriptors, a burst of parse work and memory); with a
    /// bound the round is spread over a few hundred connections, each scrape's timeout
    /// starting only when it is sent.
    pub max_concurrent: usize,
}

/// Default of [`ScrapeConfig::max_concurrent`].
pub const DEFAULT_MAX_CONCURRENT_SCRAPES: usize = 256;

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(4),
            limits: Limits::default(),
            max_concurrent: DEFAULT_MAX_CONCURRENT_SCRAPES,
        }
    }
}

/// The result of one scrape of one target.
#[derive(Debug)]
pub struct ScrapeOutcome {
    pub target: TargetSpec,
    /// Wall-clock time the scrape started.
    pub started_ms: TimestampMs,
    pub duration: Duration,
    pub result: Result<ExporterPage, ScrapeError>,
}

/// What the collector knows about one target, for the API and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetState {
    pub url: String,
    /// Node name used when the exporter does not say (`Hostname` label).
    pub node_hint: String,
    /// Where the target came from: `static` or the target file's path.
    pub source: String,
    /// `None` until the first scrape finished.
    pub up: Option<bool>,
    pub last_scrape_ms: Option<TimestampMs>,
    pub last_duration_ms: Option<f64>,
    pub last_error: Option<String>,
    pub last_samples: u64,
    pub scrapes_total: u64,
    pub errors_total: u64,
}

/// Shared, read-only view of every target's state.
#[derive(Debug, Clone, Default)]
pub struct TargetStates(Arc<RwLock<BTreeMap<String, TargetState>>>);

impl TargetStates {
    pub fn snapshot(&self) -> Vec<TargetState> {
        self.0.read().values().cloned().collect()
    }

    fn sync_targets(&self, targets: &[TargetSpec]) {
        let mut map = self.0.write();
        // A set, not a scan of the list per target: that was quadratic in the number of
        // targets, every round.
        let wanted: std::collections::HashSet<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        map.retain(|url, _| wanted.contains(url.as_str()));
        for t in targets {
            map.entry(t.url.clone()).or_insert_with(|| TargetState {
                url: t.url.clone(),
                node_hint: t.node_hint.clone(),
                source: t.source.clone(),
                up: None,
                last_scrape_ms: None,
                last_duration_ms: None,
                last_error: None,
                last_samples: 0,
                scrapes_total: 0,
                errors_total: 0,
            });
        }
    }

    fn record(&self, outcome: &ScrapeOutcome) {
        let mut map = self.0.write();
        let Some(state) = map.get_mut(&outcome.target.url) else {
            return;
        };
        state.scrapes_total += 1;
        state.last_scrape_ms = Some(outcome.started_ms);
        state.last_duration_ms = Some(outcome.duration.as_secs_f64() * 1000.0);
        match &outcome.result {
            Ok(page) => {
                state.up = Some(true);
                state.last_error = None;
                state.last_samples = page.sample_count() as u64;
            }
            Err(e) => {
                state.up = Some(false);
                state.errors_total += 1;
                state.last_error = Some(e.to_string());
                state.last_samples = 0;
            }
        }
    }
}

/// Where targets come from.
#[derive(Debug, Clone, Default)]
pub struct TargetSources {
    /// Fixed targets.
    pub static_targets: Vec<TargetSpec>,
    /// `file_sd` JSON files, re-read when their modification time changes.
    pub files: Vec<PathBuf>,
}

/// Scrapes every target every `interval` and sends each outcome down a channel.
pub struct Scraper {
    config: ScrapeConfig,
    sources: TargetSources,
    client: reqwest::Client,
    states: TargetStates,
    clock: Arc<dyn Clock>,
}

impl Scraper {
    pub fn new(config: ScrapeConfig, sources: TargetSources, clock: Arc<dyn Clock>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("gpuwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Scraper {
            config,
            sources,
            client,
            states: TargetStates::default(),
            clock,
        }
    }

    /// The live per-target state, updated after every scrape.
    pub fn states(&self) -> TargetStates {
        self.states.clone()
    }

    /// Scrapes until `shutdown` turns true. Each round scrapes all targets concurrently
    /// and waits for all of them (each bounded by the timeout) before sleeping until the
    /// next tick, so a slow target never makes rounds overlap.
    pub async fn run(self, out: mpsc::Sender<ScrapeOutcome>, mut shutdown: watch::Receiver<bool>) {
        let mut file_cache = FileTargets::default();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let mut targets = self.sources.static_targets.clone();
            targets.extend(file_cache.refresh(&self.sources.files));
            self.states.sync_targets(&targets);
            let mut tasks = tokio::task::JoinSet::new();
            let slots = Arc::new(tokio::sync::Semaphore::new(self.config.max_concurrent.max(1)));
            for target in targets {
                let client = self.client.clone();
                let config = self.config.clone();
                let clock = self.clock.clone();
                let slots = slots.clone();
                tasks.spawn(async move {
                    // Never closed, so acquiring cannot fail; a failure would only mean
                    // scraping without the bound.
                    let _slot = slots.acquire_owned().await.ok();
                    scrape_once(&client, &config, target, clock.as_ref()).await
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let Ok(outcome) = joined else { continue };
                self.states.record(&outcome);
                if out.send(outcome).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Remembers the targets of each file and re-reads a file only when it changed.
#[derive(Default)]
struct FileTargets {
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<TargetSpec>)>,
}

impl FileTargets {
    fn refresh(&mut self, paths: &[PathBuf]) -> Vec<TargetSpec> {
        let mut all = Vec::new();
        for path in paths {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let entry = self.files.entry(path.clone()).or_insert((None, Vec::new()));
            if mtime.is_some() && entry.0 != mtime {
                match load_target_file(path) {
                    Ok(targets) => {
                        tracing::info!(path = %path.display(), targets = targets.len(), "loaded target file");
                        *entry = (mtime, targets);
                    }
                    // Keep the previous good list: a half-written file must not drop
                    // every target of the fleet.
                    Err(e) => tracing::warn!("{e}; keeping the previous target list"),
                }
            } else if mtime.is_none() && entry.0.is_some() {
                tracing::warn!(path = %path.display(), "target file disappeared; keeping the previous target list");
            }
            all.extend(entry.1.iter().cloned());
        }
        all
    }
}

/// Scrapes one target once: GET, bounded body, parse.
pub async fn scrape_once(
    client: &reqwest::Client,
    config: &ScrapeConfig,
    target: TargetSpec,
    clock: &dyn Clock,
) -> ScrapeOutcome {
    let started_ms = clock.now_ms();
    let start = Instant::now();
    let result = match tokio::time::timeout(
        config.timeout,
        fetch(client, &target.url, config.limits.max_body_bytes, config.timeout),
    )
    .await
    {
        Err(_) => Err(ScrapeError::Timeout {
            url: target.url.clone(),
            timeout: config.timeout,
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(body)) => map_exporter_page(&body, &target.node_hint, started_ms, &config.limits).map_err(|source| {
            ScrapeError::Parse {
                url: target.url.clone(),
                source,
            }
        }),
    };
    ScrapeOutcome {
        target,
        started_ms,
        duration: start.elapsed(),
        result,
    }
}

async fn fetch(client: &reqwest::Client, url: &str, limit: usize, timeout: Duration) -> Result<Vec<u8>, ScrapeError> {
    // The client's own timeout (the same length as the scrape's) can fire first, while
    // the body is being read; reqwest reports that as a body/decoding error. It is a
    // timeout, and says so.
    let request_error = |source: reqwest::Error| {
        if source.is_timeout() {
            ScrapeError::Timeout {
                url: url.to_string(),
                timeout,
            }
        } else {
            ScrapeError::Request {
                url: url.to_string(),
                source,
            }
        }
    };
    let mut resp = client
        .get(url)
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .await
        .map_err(request_error)?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(ScrapeError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    // Read chunk by chunk so a body without Content-Length cannot grow past the limit.
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024).min(limit as u64) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > limit {
            return Err(ScrapeError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
