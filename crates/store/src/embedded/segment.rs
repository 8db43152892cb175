//! Sealed segment files: the compressed, immutable home of samples and events.
//!
//! A segment holds what one memtable held when it was sealed. Layout of
//! `seg-<id>.seg`:
//!
//! ```text
//! "GWSEG\0\0\x01"                       8-byte magic
//! blocks …                               timestamp columns, value columns, events JSON
//! index                                  binary, varints (see `encode_index_head`)
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
//! chunk) is checked and read at open, then dropped: a segment keeps only its span, its
//! counts and its events in memory, and the index is read again when a query needs it
//! (the store keeps a few loaded, see `EmbeddedOptions::segment_index_cache`). Kept for
//! every segment, the indexes grew with retention × series — about 200 bytes per series
//! per segment, gigabytes for a 20,000-GPU fleet after an hour. Chunk data is read with
//! positioned reads on demand.
//!
//! A segment written by compaction (see `super::compact`) holds the data of a run of
//! consecutive older segments; its index records the oldest id it replaces
//! (`covers_from`), so segments left behind by a crash between writing it and deleting
//! its inputs are recognised as duplicates at open. A segment is written to `*.tmp`, synced, renamed, and the directory synced, so
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
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"GWSEG\x00\x00\x01";
const END_MAGIC: &[u8; 8] = b"GWSEGEND";
const FOOTER: usize = 8 + 8 + 4 + 8;
/// Version 1: no `covers_from` (a segment covers only itself). Version 2 adds it.
const INDEX_VERSION: u64 = 2;

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

/// A segment's index as read from its file: the encoded bytes (~40 bytes a series,
/// against ~200 parsed into maps) and where each GPU's entries start, so a query parses
/// only its GPU's entries.
#[derive(Debug)]
pub struct SeriesIndex {
    bytes: Vec<u8>,
    file_len: u64,
    gpus: HashMap<GpuUuid, usize>,
    /// GPUs in index (UUID) order, for merges.
    order: Vec<(GpuUuid, usize)>,
}

impl SeriesIndex {
    /// The chunks of one series (empty when the segment has none).
    pub fn chunks(&self, gpu: &GpuUuid, field: &FieldName) -> Vec<Chunk> {
        let Some(&at) = self.gpus.get(gpu) else {
            return Vec::new();
        };
        self.gpu_entries(at)
            .ok()
            .and_then(|fields| fields.into_iter().find(|(f, _)| f == field))
            .map(|(_, c)| c)
            .unwrap_or_default()
    }

    /// Every field of the GPU whose entries start at `at`, with its chunks.
    fn gpu_entries(&self, at: usize) -> Result<Vec<(FieldName, Vec<Chunk>)>, CodecError> {
        let mut r = IndexReader {
            buf: &self.bytes,
            pos: at,
        };
        r.string()?;
        read_gpu_fields(&mut r, self.file_len)
    }

    /// Every GPU with its fields and chunks, in UUID order.
    pub fn iter(&self) -> impl Iterator<Item = (&GpuUuid, Vec<(FieldName, Vec<Chunk>)>)> + '_ {
        self.order
            .iter()
            .map(|(gpu, at)| (gpu, self.gpu_entries(*at).unwrap_or_default()))
    }
}

/// One GPU's field entries (after its UUID).
fn read_gpu_fields(r: &mut IndexReader<'_>, file_len: u64) -> Result<Vec<(FieldName, Vec<Chunk>)>, CodecError> {
    let n_fields = r.count()?;
    let mut fields = Vec::with_capacity(n_fields as usize);
    for _ in 0..n_fields {
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
            chunks.push(Chunk {
                count,
                min_ts,
                max_ts,
                last_value,
                ts,
                vals,
            });
        }
        fields.push((name, chunks));
    }
    Ok(fields)
}

/// An open, sealed segment.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    file: File,
    /// The id in the file name.
    pub id: u64,
    /// The oldest segment id whose data this one holds: `id` itself, or the first input
    /// of the compaction that wrote it.
    pub covers_from: u64,
    /// WAL files with sequence ≤ this are contained in this segment (or older ones).
    pub wal_upto: u64,
    /// Time range of everything in it (samples and events); `None` when empty.
    pub span: Option<(TimestampMs, TimestampMs)>,
    pub samples: u64,
    pub events: Vec<Event>,
    /// The index's place in the file, to read it again on demand.
    index_at: BlockRef,
    /// The index while loaded (see the module docs).
    index: parking_lot::Mutex<Option<Arc<SeriesIndex>>>,
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
    let mut b = Builder::create(dir, id, chunk_max_samples)?;
    // Deterministic order (GPU, field) so equal inputs give equal files; the index is
    // written in this order too.
    let mut gpus: Vec<&GpuUuid> = frozen.series.keys().collect();
    gpus.sort();
    for gpu in gpus {
        let fields = &frozen.series[gpu];
        let mut names: Vec<&FieldName> = fields.keys().collect();
        names.sort();
        b.begin_gpu(gpu);
        for name in names {
            let buf = &fields[name];
            b.add_series(name, &buf.ts, &buf.vals)?;
        }
        b.end_gpu();
    }
    b.finish(id, wal_upto, events, sync)
}

/// Writes one segment file series by series, GPUs in UUID order and fields in name
/// order: blocks go straight to the file (`*.tmp`) and index entries are encoded as
/// they come, so neither a seal nor a compaction holds the file or a parsed index in
/// memory.
pub struct Builder {
    chunk_max: usize,
    dir: PathBuf,
    id: u64,
    tmp: PathBuf,
    out: std::io::BufWriter<File>,
    offset: u64,
    /// Identical timestamp columns are written once (see the module docs); cleared when
    /// it grows large (GPUs of one node, which share scrape times, are adjacent).
    ts_blocks: HashMap<Vec<u8>, BlockRef>,
    /// Encoded index entries of the finished GPUs, and how many.
    index_body: Vec<u8>,
    gpus: u64,
    /// The GPU being written: UUID, encoded field entries, field count.
    current: Option<(GpuUuid, Vec<u8>, u64)>,
    span: Option<(TimestampMs, TimestampMs)>,
    samples: u64,
}

const MAX_DEDUPED_TS_BLOCKS: usize = 65_536;

impl Builder {
    /// Starts `seg-<id>.seg.tmp` in `dir`.
    pub fn create(dir: &Path, id: u64, chunk_max_samples: usize) -> Result<Self, StoreError> {
        let tmp = dir.join(format!("{}.tmp", file_name(id)));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC).map_err(io_err(&tmp))?;
        Ok(Builder {
            chunk_max: chunk_max_samples.max(1),
            dir: dir.to_path_buf(),
            id,
            tmp,
            out,
            offset: MAGIC.len() as u64,
            ts_blocks: HashMap::new(),
            index_body: Vec::new(),
            gpus: 0,
            current: None,
            span: None,
            samples: 0,
        })
    }

    fn widen(&mut self, lo: TimestampMs, hi: TimestampMs) {
        self.span = Some(self.span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }

    fn put_block(&mut self, bytes: Vec<u8>, dedupe: bool) -> Result<BlockRef, StoreError> {
        if dedupe {
            if let Some(r) = self.ts_blocks.get(&bytes) {
                return Ok(*r);
            }
        }
        let r = BlockRef {
            offset: self.offset,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
        };
        self.out.write_all(&bytes).map_err(io_err(&self.tmp))?;
        self.offset += bytes.len() as u64;
        if dedupe {
            if self.ts_blocks.len() >= MAX_DEDUPED_TS_BLOCKS {
                self.ts_blocks.clear();
            }
            self.ts_blocks.insert(bytes, r);
        }
        Ok(r)
    }

    /// Starts the entries of `gpu` (UUIDs in increasing order).
    pub fn begin_gpu(&mut self, gpu: &GpuUuid) {
        self.end_gpu();
        self.current = Some((gpu.clone(), Vec::new(), 0));
    }

    /// Finishes the current GPU's entries (nothing when it got no points).
    pub fn end_gpu(&mut self) {
        if let Some((gpu, fields, n)) = self.current.take() {
            if n > 0 {
                put_str(&mut self.index_body, gpu.as_str());
                put_uvarint(&mut self.index_body, n);
                self.index_body.extend_from_slice(&fields);
                self.gpus += 1;
            }
        }
    }

    /// Adds one series of the current GPU (fields in increasing order, points sorted by
    /// time), cut into chunks.
    pub fn add_series(&mut self, name: &FieldName, ts: &[TimestampMs], vals: &[f64]) -> Result<(), StoreError> {
        let mut chunks = Vec::new();
        for (ts, vals) in ts.chunks(self.chunk_max).zip(vals.chunks(self.chunk_max)) {
            let (Some(&min_ts), Some(&max_ts), Some(&last_value)) = (ts.first(), ts.last(), vals.last()) else {
                continue;
            };
            let mut tb = Vec::new();
            codec::encode_ints(ts, &mut tb);
            let mut vb = Vec::new();
            codec::encode_floats(vals, &mut vb);
            let ts_ref = self.put_block(tb, true)?;
            let val_ref = self.put_block(vb, false)?;
            self.widen(min_ts, max_ts);
            self.samples += ts.len() as u64;
            chunks.push(Chunk {
                count: ts.len() as u64,
                min_ts,
                max_ts,
                last_value,
                ts: ts_ref,
                vals: val_ref,
            });
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let Some((_, fields, n)) = self.current.as_mut() else {
            return Err(StoreError::Encoding {
                what: "segment".into(),
                reason: "a series was added outside a GPU".into(),
            });
        };
        encode_field(fields, name, &chunks);
        *n += 1;
        Ok(())
    }

    /// Writes the events and the index, fsyncs, renames over `seg-<id>.seg`, fsyncs the
    /// directory, and returns the segment opened (index not loaded). `covers_from`: the
    /// oldest segment id whose data it holds (`id` for a seal).
    pub fn finish(
        mut self,
        covers_from: u64,
        wal_upto: u64,
        events: &[Event],
        sync: bool,
    ) -> Result<Segment, StoreError> {
        self.end_gpu();
        for e in events {
            self.widen(e.ts_ms, e.ts_ms);
        }
        let events_json = serde_json::to_vec(events).map_err(|e| StoreError::Encoding {
            what: "segment events".into(),
            reason: e.to_string(),
        })?;
        let events_ref = self.put_block(events_json, false)?;
        let span = self.span;
        let mut index = encode_index_head(wal_upto, covers_from, span, events_ref, events.len() as u64);
        put_uvarint(&mut index, self.gpus);
        index.extend_from_slice(&self.index_body);
        let index_offset = self.offset;
        let index_crc = crc32fast::hash(&index);
        let mut tail = index.clone();
        tail.extend_from_slice(&index_offset.to_le_bytes());
        tail.extend_from_slice(&(index.len() as u64).to_le_bytes());
        tail.extend_from_slice(&index_crc.to_le_bytes());
        tail.extend_from_slice(END_MAGIC);
        self.out.write_all(&tail).map_err(io_err(&self.tmp))?;
        let file = self.out.into_inner().map_err(|e| StoreError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        if sync {
            file.sync_all().map_err(io_err(&self.tmp))?;
        }
        drop(file);
        let path = self.dir.join(file_name(self.id));
        std::fs::rename(&self.tmp, &path).map_err(io_err(&path))?;
        if sync {
            super::sync_dir(&self.dir)?;
        }
        let file = File::open(&path).map_err(io_err(&path))?;
        Ok(Segment {
            path,
            file,
            id: self.id,
            covers_from,
            wal_upto,
            span,
            samples: self.samples,
            events: events.to_vec(),
            index_at: BlockRef {
                offset: index_offset,
                len: index.len() as u64,
                crc: index_crc,
            },
            index: parking_lot::Mutex::new(None),
        })
    }
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

/// Index: version, wal_upto, covers_from (version 2), span flag (+ min, max), events
/// ref and count, GPU count, then per GPU (by UUID): UUID, field count, per field (by
/// name): name, chunk count, per chunk: count, min_ts, max_ts − min_ts, last value bits,
/// timestamp ref, value ref. This writes everything before the GPU count.
fn encode_index_head(
    wal_upto: u64,
    covers_from: u64,
    span: Option<(TimestampMs, TimestampMs)>,
    events: BlockRef,
    n_events: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    put_uvarint(&mut out, INDEX_VERSION);
    put_uvarint(&mut out, wal_upto);
    put_uvarint(&mut out, covers_from);
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
    out
}

/// One field's index entry.
fn encode_field(out: &mut Vec<u8>, name: &FieldName, chunks: &[Chunk]) {
    put_str(out, name.as_str());
    put_uvarint(out, chunks.len() as u64);
    for c in chunks {
        put_uvarint(out, c.count);
        put_uvarint(out, zigzag(c.min_ts));
        put_uvarint(out, c.max_ts.wrapping_sub(c.min_ts) as u64);
        out.extend_from_slice(&c.last_value.to_bits().to_le_bytes());
        put_ref(out, c.ts);
        put_ref(out, c.vals);
    }
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
    /// Opens a segment, checks and reads its index (kept loaded until
    /// [`unload_index`](Self::unload_index)) and reads its events. Any inconsistency is
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
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_name)
            .unwrap_or(0);
        let index_at = BlockRef {
            offset: index_offset,
            len: index_len,
            crc: index_crc,
        };
        let index = read_index(&file, path, index_at, file_len)?;
        let mut seg = Segment {
            path: path.to_path_buf(),
            file,
            id,
            covers_from: index.covers_from.unwrap_or(id),
            wal_upto: index.wal_upto,
            span: index.span,
            samples: index.samples,
            events: Vec::new(),
            index_at,
            index: parking_lot::Mutex::new(Some(Arc::new(index.series))),
        };
        let events_ref = index.events_ref;
        let events_json = seg.read_block(events_ref)?;
        seg.events = serde_json::from_slice(&events_json)
            .map_err(|e| corrupt(events_ref.offset, &format!("segment events are not valid JSON: {e}")))?;
        if seg.events.len() as u64 != index.n_events {
            return Err(corrupt(
                events_ref.offset,
                "segment event count disagrees with its index",
            ));
        }
        Ok(seg)
    }

    /// The series index, read from the file unless loaded; keeps it loaded.
    pub fn index(&self) -> Result<Arc<SeriesIndex>, StoreError> {
        if let Some(i) = self.index.lock().as_ref() {
            return Ok(i.clone());
        }
        let loaded = self.read_index()?;
        *self.index.lock() = Some(loaded.clone());
        Ok(loaded)
    }

    /// The series index without keeping it loaded (a compaction reading its inputs
    /// once).
    pub fn read_index(&self) -> Result<Arc<SeriesIndex>, StoreError> {
        if let Some(i) = self.index.lock().as_ref() {
            return Ok(i.clone());
        }
        let file_len = self.index_at.offset + self.index_at.len + FOOTER as u64;
        Ok(Arc::new(
            read_index(&self.file, &self.path, self.index_at, file_len)?.series,
        ))
    }

    /// Drops the loaded index (readers holding it keep their copy).
    pub fn unload_index(&self) {
        *self.index.lock() = None;
    }

    /// Whether the index is loaded now.
    #[cfg(test)]
    pub fn index_loaded(&self) -> bool {
        self.index.lock().is_some()
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
}

/// What an index holds.
struct ParsedIndex {
    wal_upto: u64,
    covers_from: Option<u64>,
    span: Option<(TimestampMs, TimestampMs)>,
    events_ref: BlockRef,
    n_events: u64,
    series: SeriesIndex,
    samples: u64,
}

/// Reads, checks (CRC and every entry) and indexes the index at `at`.
fn read_index(file: &File, path: &Path, at: BlockRef, file_len: u64) -> Result<ParsedIndex, StoreError> {
    let corrupt = |offset: u64, reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    let mut index = vec![0u8; at.len as usize];
    file.read_exact_at(&mut index, at.offset).map_err(io_err(path))?;
    if crc32fast::hash(&index) != at.crc {
        return Err(corrupt(at.offset, "segment index CRC mismatch"));
    }
    let mut r = IndexReader { buf: &index, pos: 0 };
    let parsed = (|| -> Result<_, CodecError> {
        let version = r.uvarint()?;
        if version != 1 && version != INDEX_VERSION {
            return Err(CodecError("unsupported segment index version"));
        }
        let wal_upto = r.uvarint()?;
        let covers_from = if version >= 2 { Some(r.uvarint()?) } else { None };
        let span = match r.bytes(1)?[0] {
            0 => None,
            _ => Some((unzigzag(r.uvarint()?), unzigzag(r.uvarint()?))),
        };
        let events_ref = r.block(file_len)?;
        let n_events = r.uvarint()?;
        let n_gpus = r.count()?;
        let mut gpus = HashMap::with_capacity(n_gpus as usize);
        let mut order = Vec::with_capacity(n_gpus as usize);
        let mut samples = 0u64;
        for _ in 0..n_gpus {
            let at = r.pos;
            let gpu = GpuUuid::new(r.string()?);
            for (_, chunks) in read_gpu_fields(&mut r, file_len)? {
                samples = chunks.iter().fold(samples, |n, c| n.saturating_add(c.count));
            }
            gpus.insert(gpu.clone(), at);
            order.push((gpu, at));
        }
        Ok((wal_upto, covers_from, span, events_ref, n_events, gpus, order, samples))
    })();
    let (wal_upto, covers_from, span, events_ref, n_events, gpus, order, samples) =
        parsed.map_err(|e| corrupt(at.offset + r.pos as u64, e.0))?;
    Ok(ParsedIndex {
        wal_upto,
        covers_from,
        span,
        events_ref,
        n_events,
        series: SeriesIndex {
            bytes: index,
            file_len,
            gpus,
            order,
        },
        samples,
    })
}
