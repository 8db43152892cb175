//! Sealed segment files: the compressed, immutable home of samples and events.
//!
//! A segment holds what one memtable held when it was sealed. Layout of
//! `seg-<id>.seg`:
//!
//! ```text
//! "GWSEG\0\0\x01"                       8-byte magic
//! blocks …                               timestamp columns, value columns, events JSON
//! index                                  binary, varints (see `encode_index`)
//! index offset u64 LE | index length u64 LE | index CRC-32 u32 LE | "GWSEGEND"
//! ```
//!
//! Each series is cut into chunks of at most `chunk_max_samples` points; a chunk is a
//! timestamp column and a value column (see [`super::codec`]), each with its own CRC in
//! the index. Series of one GPU are scraped together and so usually share identical
//! timestamp columns: identical columns are written once and referenced by every chunk
//! that has them, which removes most of the timestamp cost even when scrape times jitter.
//!
//! The index (GPU and field names, chunk time ranges, offsets, the last value of each
//! chunk) is read into memory at open; chunk data is read with positioned reads on
//! demand. A segment is written to `*.tmp`, synced, renamed, and the directory synced, so
//! a segment file either exists whole or not at all. Its header records `wal_upto`: the
//! WAL files it makes redundant.

use super::codec::{self, get_uvarint, put_uvarint, unzigzag, zigzag, CodecError};
use super::memtable::Frozen;
use crate::{Point, StoreError};
use gpuwarden_model::{Event, FieldName, GpuUuid, TimestampMs};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"GWSEG\x00\x00\x01";
const END_MAGIC: &[u8; 8] = b"GWSEGEND";
const FOOTER: usize = 8 + 8 + 4 + 8;
const INDEX_VERSION: u64 = 1;

pub fn file_name(id: u64) -> String {
    format!("seg-{id:020}.seg")
}

pub fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".seg")?.parse().ok()
}

/// Where a column lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

/// One chunk of one series.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub count: u64,
    pub min_ts: TimestampMs,
    pub max_ts: TimestampMs,
    /// Value at `max_ts` (the chunk's last point), for `latest` at open.
    pub last_value: f64,
    pub ts: BlockRef,
    pub vals: BlockRef,
}

/// An open, sealed segment.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    file: File,
    /// WAL files with sequence ≤ this are contained in this segment (or older ones).
    pub wal_upto: u64,
    /// Time range of everything in it (samples and events); `None` when empty.
    pub span: Option<(TimestampMs, TimestampMs)>,
    pub samples: u64,
    pub series: HashMap<GpuUuid, HashMap<FieldName, Vec<Chunk>>>,
    pub events: Vec<Event>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a segment from frozen data and events; returns it opened.
pub fn write(
    dir: &Path,
    id: u64,
    wal_upto: u64,
    frozen: &Frozen,
    events: &[Event],
    chunk_max_samples: usize,
    sync: bool,
) -> Result<Segment, StoreError> {
    let chunk_max = chunk_max_samples.max(1);
    let mut data: Vec<u8> = MAGIC.to_vec();
    let mut ts_blocks: HashMap<Vec<u8>, BlockRef> = HashMap::new();
    let mut put_block = |data: &mut Vec<u8>, bytes: Vec<u8>, dedupe: bool| -> BlockRef {
        if dedupe {
            if let Some(r) = ts_blocks.get(&bytes) {
                return *r;
            }
        }
        let r = BlockRef {
            offset: data.len() as u64,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
        };
        data.extend_from_slice(&bytes);
        if dedupe {
            ts_blocks.insert(bytes, r);
        }
        r
    };
    // Deterministic order (GPU, field) so equal inputs give equal files.
    let mut gpus: Vec<&GpuUuid> = frozen.series.keys().collect();
    gpus.sort();
    let mut series: HashMap<GpuUuid, HashMap<FieldName, Vec<Chunk>>> = HashMap::new();
    let mut span: Option<(TimestampMs, TimestampMs)> = None;
    let mut widen = |lo: TimestampMs, hi: TimestampMs| {
        span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    };
    let mut samples = 0u64;
    for gpu in gpus {
        let fields = &frozen.series[gpu];
        let mut names: Vec<&FieldName> = fields.keys().collect();
        names.sort();
        let out = series.entry(gpu.clone()).or_default();
        for name in names {
            let buf = &fields[name];
            let mut chunks = Vec::new();
            for (ts, vals) in buf.ts.chunks(chunk_max).zip(buf.vals.chunks(chunk_max)) {
                let (Some(&min_ts), Some(&max_ts), Some(&last_value)) = (ts.first(), ts.last(), vals.last()) else {
                    continue;
                };
                let mut tb = Vec::new();
                codec::encode_ints(ts, &mut tb);
                let mut vb = Vec::new();
                codec::encode_floats(vals, &mut vb);
                let ts_ref = put_block(&mut data, tb, true);
                let val_ref = put_block(&mut data, vb, false);
                widen(min_ts, max_ts);
                samples += ts.len() as u64;
                chunks.push(Chunk {
                    count: ts.len() as u64,
                    min_ts,
                    max_ts,
                    last_value,
                    ts: ts_ref,
                    vals: val_ref,
                });
            }
            out.insert(name.clone(), chunks);
        }
    }
    for e in events {
        widen(e.ts_ms, e.ts_ms);
    }
    let events_json = serde_json::to_vec(events).map_err(|e| StoreError::Encoding {
        what: "segment events".into(),
        reason: e.to_string(),
    })?;
    let events_ref = put_block(&mut data, events_json, false);

    let index = encode_index(wal_upto, span, &series, events_ref, events.len() as u64);
    let index_offset = data.len() as u64;
    data.extend_from_slice(&index);
    data.extend_from_slice(&index_offset.to_le_bytes());
    data.extend_from_slice(&(index.len() as u64).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
    data.extend_from_slice(END_MAGIC);

    let path = dir.join(file_name(id));
    let tmp = dir.join(format!("{}.tmp", file_name(id)));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&data).map_err(io_err(&tmp))?;
        if sync {
            f.sync_all().map_err(io_err(&tmp))?;
        }
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if sync {
        super::sync_dir(dir)?;
    }
    let file = File::open(&path).map_err(io_err(&path))?;
    Ok(Segment {
        path,
        file,
        wal_upto,
        span,
        samples,
        series,
        events: events.to_vec(),
    })
}

fn put_ref(out: &mut Vec<u8>, r: BlockRef) {
    put_uvarint(out, r.offset);
    put_uvarint(out, r.len);
    out.extend_from_slice(&r.crc.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Index: version, wal_upto, span flag (+ min, max), events ref + count, GPU count, then
/// per GPU: UUID, field count, per field: name, chunk count, per chunk: count, min_ts,
/// max_ts − min_ts, last value bits, timestamp ref, value ref.
fn encode_index(
    wal_upto: u64,
    span: Option<(TimestampMs, TimestampMs)>,
    series: &HashMap<GpuUuid, HashMap<FieldName, Vec<Chunk>>>,
    events: BlockRef,
    n_events: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, INDEX_VERSION);
    put_uvarint(&mut out, wal_upto);
    match span {
        None => out.push(0),
        Some((lo, hi)) => {
            out.push(1);
            put_uvarint(&mut out, zigzag(lo));
            put_uvarint(&mut out, zigzag(hi));
        }
    }
    put_ref(&mut out, events);
    put_uvarint(&mut out, n_events);
    let mut gpus: Vec<_> = series.iter().collect();
    gpus.sort_by(|a, b| a.0.cmp(b.0));
    put_uvarint(&mut out, gpus.len() as u64);
    for (gpu, fields) in gpus {
        put_str(&mut out, gpu.as_str());
        let mut fields: Vec<_> = fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        put_uvarint(&mut out, fields.len() as u64);
        for (name, chunks) in fields {
            put_str(&mut out, name.as_str());
            put_uvarint(&mut out, chunks.len() as u64);
            for c in chunks {
                put_uvarint(&mut out, c.count);
                put_uvarint(&mut out, zigzag(c.min_ts));
                put_uvarint(&mut out, c.max_ts.wrapping_sub(c.min_ts) as u64);
                out.extend_from_slice(&c.last_value.to_bits().to_le_bytes());
                put_ref(&mut out, c.ts);
                put_ref(&mut out, c.vals);
            }
        }
    }
    out
}

struct IndexReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl IndexReader<'_> {
    fn uvarint(&mut self) -> Result<u64, CodecError> {
        get_uvarint(self.buf, &mut self.pos)
    }
    fn bytes(&mut self, n: u64) -> Result<&[u8], CodecError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or(CodecError("index truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64_raw(&mut self) -> Result<u64, CodecError> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| CodecError("index truncated"))?,
        ))
    }
    fn string(&mut self) -> Result<&str, CodecError> {
        let n = self.uvarint()?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| CodecError("index string is not UTF-8"))
    }
    fn block(&mut self, file_len: u64) -> Result<BlockRef, CodecError> {
        let offset = self.uvarint()?;
        let len = self.uvarint()?;
        let crc = self.u32()?;
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(CodecError("block reference outside the file"));
        }
        Ok(BlockRef { offset, len, crc })
    }
    /// A count that is plausible for the bytes left (each item takes at least one byte).
    fn count(&mut self) -> Result<u64, CodecError> {
        let n = self.uvarint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(CodecError("index count larger than the index"));
        }
        Ok(n)
    }
}

impl Segment {
    /// Opens a segment and reads its index and events. Any inconsistency is
    /// [`StoreError::Corrupt`] with the offset concerned.
    pub fn open(path: &Path) -> Result<Segment, StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let corrupt = |offset: u64, reason: &str| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.to_string(),
        };
        if file_len < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt(0, "segment shorter than header and footer"));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).map_err(io_err(path))?;
        if &head != MAGIC {
            return Err(corrupt(0, "not a gpuwarden segment (bad magic)"));
        }
        let footer_at = file_len - FOOTER as u64;
        let mut footer = [0u8; FOOTER];
        file.read_exact_at(&mut footer, footer_at).map_err(io_err(path))?;
        if &footer[20..28] != END_MAGIC {
            return Err(corrupt(footer_at, "segment footer missing (truncated file?)"));
        }
        let index_offset = u64::from_le_bytes(footer[0..8].try_into().unwrap_or_default());
        let index_len = u64::from_le_bytes(footer[8..16].try_into().unwrap_or_default());
        let index_crc = u32::from_le_bytes(footer[16..20].try_into().unwrap_or_default());
        if index_offset.checked_add(index_len) != Some(footer_at) {
            return Err(corrupt(footer_at, "segment footer points outside the file"));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_offset).map_err(io_err(path))?;
        if crc32fast::hash(&index) != index_crc {
            return Err(corrupt(index_offset, "segment index CRC mismatch"));
        }
        let mut r = IndexReader { buf: &index, pos: 0 };
        let parsed = (|| -> Result<_, CodecError> {
            if r.uvarint()? != INDEX_VERSION {
                return Err(CodecError("unsupported segment index version"));
            }
            let wal_upto = r.uvarint()?;
            let span = match r.bytes(1)?[0] {
                0 => None,
                _ => Some((unzigzag(r.uvarint()?), unzigzag(r.uvarint()?))),
            };
            let events_ref = r.block(file_len)?;
            let n_events = r.uvarint()?;
            let mut series = HashMap::new();
            let mut samples = 0u64;
            for _ in 0..r.count()? {
                let gpu = GpuUuid::new(r.string()?);
                let mut fields = HashMap::new();
                for _ in 0..r.count()? {
                    let name = FieldName::parse(r.string()?);
                    let n_chunks = r.count()?;
                    let mut chunks = Vec::with_capacity(n_chunks as usize);
                    for _ in 0..n_chunks {
                        let count = r.uvarint()?;
                        let min_ts = unzigzag(r.uvarint()?);
                        let max_ts = min_ts.wrapping_add(r.uvarint()? as i64);
                        let last_value = f64::from_bits(r.u64_raw()?);
                        let ts = r.block(file_len)?;
                        let vals = r.block(file_len)?;
                        samples = samples.saturating_add(count);
                        chunks.push(Chunk {
                            count,
                            min_ts,
                            max_ts,
                            last_value,
                            ts,
                            vals,
                        });
                    }
                    fields.insert(name, chunks);
                }
                series.insert(gpu, fields);
            }
            Ok((wal_upto, span, events_ref, n_events, series, samples))
        })();
        let (wal_upto, span, events_ref, n_events, series, samples) =
            parsed.map_err(|e| corrupt(index_offset + r.pos as u64, e.0))?;
        let mut seg = Segment {
            path: path.to_path_buf(),
            file,
            wal_upto,
            span,
            samples,
            series,
            events: Vec::new(),
        };
        let events_json = seg.read_block(events_ref)?;
        seg.events = serde_json::from_slice(&events_json)
            .map_err(|e| corrupt(events_ref.offset, &format!("segment events are not valid JSON: {e}")))?;
        if seg.events.len() as u64 != n_events {
            return Err(corrupt(
                events_ref.offset,
                "segment event count disagrees with its index",
            ));
        }
        Ok(seg)
    }

    fn read_block(&self, r: BlockRef) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; r.len as usize];
        self.file
            .read_exact_at(&mut buf, r.offset)
            .map_err(io_err(&self.path))?;
        if crc32fast::hash(&buf) != r.crc {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                offset: r.offset,
                reason: "block CRC mismatch".into(),
            });
        }
        Ok(buf)
    }

    /// Decodes a chunk into points.
    pub fn read_chunk(&self, c: &Chunk) -> Result<Vec<Point>, StoreError> {
        let corrupt = |r: BlockRef, e: CodecError| StoreError::Corrupt {
            path: self.path.clone(),
            offset: r.offset,
            reason: e.0.to_string(),
        };
        let tb = self.read_block(c.ts)?;
        let ts = codec::decode_ints(&tb, &mut 0).map_err(|e| corrupt(c.ts, e))?;
        let vb = self.read_block(c.vals)?;
        let vals = codec::decode_floats(&vb, &mut 0).map_err(|e| corrupt(c.vals, e))?;
        if ts.len() as u64 != c.count || vals.len() as u64 != c.count {
            return Err(corrupt(c.vals, CodecError("chunk length disagrees with its index")));
        }
        Ok(ts
            .into_iter()
            .zip(vals)
            .map(|(ts_ms, value)| Point { ts_ms, value })
            .collect())
    }

    pub fn chunks(&self, gpu: &GpuUuid, field: &FieldName) -> &[Chunk] {
        self.series
            .get(gpu)
            .and_then(|f| f.get(field))
            .map_or(&[], |c| c.as_slice())
    }
}
