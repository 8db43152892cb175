//! The push format between `gpuwarden agent` and `gpuwarden serve`.
//!
//! JSON, because it is debuggable with `curl` and the model types already serialise;
//! a batch of one 8-GPU host interval is about 20 KiB, so a binary form would save little
//! next to the HTTP overhead. The body is:
//!
//! ```json
//! {"version":1,"id":"…","node":"gpu-host-1","created_ms":1700000000000,
//!  "pages":[{"source":"nvml","gpus":[GpuIdentity…],"rows":[GpuSamples…]}],
//!  "events":[Event…]}
//! ```
//!
//! `id` is the idempotency key: the server remembers recent ids and answers a batch it
//! already stored with "duplicate" instead of storing it twice, so an agent may retry
//! any push whose answer it did not see. A page maps one-to-one to the scrape path's
//! `ExporterPage` (identities + rows), so the server ingests a pushed page exactly like
//! a scraped one.

use gpuwarden_collect::dcgm::{ExporterKind, ExporterPage, PageSummary};
use gpuwarden_model::{Event, GpuIdentity, GpuSamples, GpuUuid};
use serde::{Deserialize, Serialize};

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u32 = 1;
/// Longest accepted batch id.
pub const MAX_ID_LEN: usize = 128;

/// Why a batch body was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("batch is not valid JSON of the push format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("batch version {0} is not supported (this server reads version {WIRE_VERSION})")]
    Version(u32),
    #[error("batch id must be 1..={MAX_ID_LEN} characters of [A-Za-z0-9._:-]")]
    BadId,
    #[error("batch node name must not be empty")]
    EmptyNode,
    #[error("batch has {count} {what}, more than the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("row of GPU {gpu} is not described by an identity in its page")]
    UnknownGpu { gpu: String },
    #[error("row of GPU {gpu} at {ts_ms} lists field {field} more than once")]
    DuplicateField { gpu: String, ts_ms: i64, field: String },
}

/// An idempotency id: random, chosen by the agent when the batch is made, kept with the
/// batch in the spool so every retry carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub String);

impl BatchId {
    /// A fresh id: the node name would leak into logs anyway, so the id is only random
    /// (128 bits: collisions between agents are not a concern).
    pub fn random() -> Self {
        BatchId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Whether `s` is acceptable as an id (also used by the server on headers).
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One source's view of the host at one time: the same content as a scraped page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePage {
    /// Where it came from (`nvml`, `dcgm-exporter`, `nvidia-smi`); the server uses it in
    /// the target name so the live view tracks each source's GPUs separately.
    pub source: String,
    pub gpus: Vec<GpuIdentity>,
    pub rows: Vec<GpuSamples>,
}

impl WirePage {
    /// The page in the scrape path's shape, for `Ingestor::ingest_page`.
    pub fn to_exporter_page(&self) -> ExporterPage {
        let gpu_values = self.rows.iter().map(|r| r.values.len()).sum();
        ExporterPage {
            kind: if self.source == "dcgm-exporter" {
                ExporterKind::Dcgm
            } else {
                ExporterKind::Unknown
            },
            gpus: self.gpus.clone(),
            rows: self.rows.clone(),
            other: Vec::new(),
            summary: PageSummary {
                gpu_values,
                ..PageSummary::default()
            },
        }
    }

    /// From a mapped exporter page (a local dcgm-exporter scrape).
    pub fn from_exporter_page(source: &str, page: &ExporterPage) -> Self {
        WirePage {
            source: source.to_owned(),
            gpus: page.gpus.clone(),
            rows: page.rows.clone(),
        }
    }
}

/// What an agent pushes: everything it collected in one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u32,
    pub id: BatchId,
    /// The host the agent runs on.
    pub node: String,
    /// Agent wall time when the batch was made.
    pub created_ms: i64,
    #[serde(default)]
    pub pages: Vec<WirePage>,
    /// Events seen directly (NVML XID events, kernel-log XIDs, process starts).
    #[serde(default)]
    pub events: Vec<Event>,
}

/// Limits the server applies to one batch, beyond the body size.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_pages: usize,
    pub max_gpus_per_page: usize,
    pub max_rows_per_page: usize,
    pub max_events: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        // A 16-GPU host with MIG (7 slices each) and a minute of backlog per page stays
        // well inside; anything larger is a bug or an attack.
        BatchLimits {
            max_pages: 16,
            max_gpus_per_page: 1024,
            max_rows_per_page: 100_000,
            max_events: 10_000,
        }
    }
}

impl Batch {
    /// A new batch with a fresh id.
    pub fn new(node: impl Into<String>, created_ms: i64) -> Self {
        Batch {
            version: WIRE_VERSION,
            id: BatchId::random(),
            node: node.into(),
            created_ms,
            pages: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Number of sample values in all pages.
    pub fn sample_count(&self) -> usize {
        self.pages.iter().flat_map(|p| &p.rows).map(|r| r.values.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates a body. Never panics on any input.
    pub fn decode(body: &[u8], limits: &BatchLimits) -> Result<Batch, WireError> {
        let batch: Batch = serde_json::from_slice(body)?;
        batch.validate(limits)?;
        Ok(batch)
    }

    fn validate(&self, limits: &BatchLimits) -> Result<(), WireError> {
        if self.version != WIRE_VERSION {
            return Err(WireError::Version(self.version));
        }
        if !BatchId::is_valid(self.id.as_str()) {
            return Err(WireError::BadId);
        }
        if self.node.trim().is_empty() {
            return Err(WireError::EmptyNode);
        }
        let check = |what, count, limit| {
            if count > limit {
                Err(WireError::TooMany { what, count, limit })
            } else {
                Ok(())
            }
        };
        check("pages", self.pages.len(), limits.max_pages)?;
        let mut seen = std::collections::HashSet::new();
        check("events", self.events.len(), limits.max_events)?;
        for page in &self.pages {
            check("GPUs in a page", page.gpus.len(), limits.max_gpus_per_page)?;
            check("rows in a page", page.rows.len(), limits.max_rows_per_page)?;
            // A row without an identity would create a GPU the inventory knows nothing
            // about; refuse the batch rather than guess.
            // A set, not a scan: at the limits (1,024 identities, 100,000 rows) a scan
            // per row is ~10^8 string comparisons a page.
            let known: std::collections::HashSet<&GpuUuid> = page.gpus.iter().map(|g| &g.uuid).collect();
            for row in &page.rows {
                if !known.contains(&row.gpu) {
                    return Err(WireError::UnknownGpu {
                        gpu: row.gpu.to_string(),
                    });
                }
                // A row holds one value per field (as a scraped page's rows do): a field
                // listed twice has no one value, and repeats would pass the server's
                // distinct-names series limit unbounded.
                seen.clear();
                if let Some((field, _)) = row.values.iter().find(|(f, _)| !seen.insert(f)) {
                    return Err(WireError::DuplicateField {
                        gpu: row.gpu.to_string(),
                        ts_ms: row.ts_ms,
                        field: field.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{DcgmField, GpuUuid};

    fn batch() -> Batch {
        let mut b = Batch::new("host-1", 1_000);
        let uuid = GpuUuid::new("GPU-a");
        let mut row = GpuSamples::new(uuid.clone(), 1_000);
        row.values.push((DcgmField::GpuTemp.into(), 41.0));
        b.pages.push(WirePage {
            source: "nvml".into(),
            gpus: vec![GpuIdentity::new(uuid, "host-1")],
            rows: vec![row],
        });
        b
    }

    #[test]
    fn batch_round_trips_through_json() {
        let b = batch();
        let back = Batch::decode(&b.encode(), &BatchLimits::default()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.sample_count(), 1);
    }

    #[test]
    fn fresh_ids_differ_and_are_valid() {
        let (a, b) = (BatchId::random(), BatchId::random());
        assert_ne!(a, b);
        assert!(BatchId::is_valid(a.as_str()));
        assert!(!BatchId::is_valid("has space"));
        assert!(!BatchId::is_valid(""));
        assert!(!BatchId::is_valid(&"x".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let limits = BatchLimits::default();
        for body in [&b""[..], b"{", b"[]", b"null", b"{\"version\":1}", &[0xff, 0xfe, 0x00]] {
            assert!(Batch::decode(body, &limits).is_err());
        }
        let mut b = batch();
        b.version = 9;
        assert!(matches!(
            Batch::decode(&b.encode(), &limits),
            Err(WireError::Version(9))
        ));
    }

    #[test]
    fn row_without_identity_is_refused() {
        let mut b = batch();
        b.pages[0].gpus.clear();
        assert!(matches!(
            Batch::decode(&b.encode(), &BatchLimits::default()),
            Err(WireError::UnknownGpu { .. })
        ));
    }

    // Caught by the `push_batch` fuzz target: a pushed row listing one field 551 times
    // (31 distinct names) was stored whole, since the server's series limit counts
    // distinct names. Scraped rows never hold a field twice; pushed ones may not either.
    #[test]
    fn fuzz_row_listing_a_field_twice_is_refused() {
        let mut b = batch();
        b.pages[0].rows[0].values.push((DcgmField::GpuTemp.into(), 42.0));
        assert!(matches!(
            Batch::decode(&b.encode(), &BatchLimits::default()),
            Err(WireError::DuplicateField { ref field, .. }) if field == "DCGM_FI_DEV_GPU_TEMP"
        ));
        let mut b = batch();
        let values = &mut b.pages[0].rows[0].values;
        values.clear();
        for i in 0..551 {
            values.push((gpuwarden_model::FieldName::parse(&format!("m{}", i % 31)), 1.0));
        }
        assert!(matches!(
            Batch::decode(&b.encode(), &BatchLimits::default()),
            Err(WireError::DuplicateField { .. })
        ));
        // Distinct fields, known or not, are fine.
        let mut b = batch();
        b.pages[0].rows[0].values.push((DcgmField::PowerUsage.into(), 300.0));
        b.pages[0].rows[0]
            .values
            .push((gpuwarden_model::FieldName::parse("my_metric"), 1.0));
        assert!(Batch::decode(&b.encode(), &BatchLimits::default()).is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        let limits = BatchLimits {
            max_events: 0,
            ..BatchLimits::default()
        };
        let mut b = batch();
        b.events.push(Event {
            gpu: GpuUuid::new("GPU-a"),
            node: "host-1".into(),
            ts_ms: 1,
            kind: gpuwarden_model::EventKind::GpuAppeared,
        });
        assert!(matches!(
            Batch::decode(&b.encode(), &limits),
            Err(WireError::TooMany { .. })
        ));
    }
}
