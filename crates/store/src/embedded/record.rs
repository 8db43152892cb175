//! The payloads of write-ahead-log records: sample batches, events and GPU upserts.
//!
//! Sample batches are the hot path (a million samples per second per core is the goal),
//! so they have a compact hand-written binary form: a dictionary of the field names used
//! in the batch, then per row the GPU UUID, the timestamp and `(field index, f64 bits)`
//! pairs — about 9 bytes a sample. Names are written as strings, not as `DcgmField`
//! discriminants, so that a WAL stays readable when the model's field list is reordered
//! or extended. Events and GPU identities are rare and written as JSON.

use super::codec::{get_uvarint, put_uvarint, CodecError};
use crate::StoreError;
use gpuwarden_model::{DcgmField, Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};

const TAG_SAMPLES: u8 = 1;
const TAG_EVENTS: u8 = 2;
const TAG_GPUS: u8 = 3;
/// A whole scrape page: `[part count: uvarint]` then per part `[length: uvarint][a
/// samples, events or gpus record, with its tag]`. One record, so one CRC: after a crash
/// the page is there whole or not at all.
const TAG_PAGE: u8 = 4;

/// A decoded WAL record.
#[derive(Debug)]
pub enum Record {
    Samples(Vec<GpuSamples>),
    Events(Vec<Event>),
    Gpus {
        seen_ms: TimestampMs,
        gpus: Vec<GpuIdentity>,
    },
    /// The parts of a page (never nested pages).
    Page(Vec<Record>),
}

/// Whether `tag` starts a record this version knows (the WAL reader's resync uses it to
/// reject most false frame starts cheaply).
pub fn is_known_tag(tag: u8) -> bool {
    matches!(tag, TAG_SAMPLES | TAG_EVENTS | TAG_GPUS | TAG_PAGE)
}

/// Encodes a scrape page as one record; empty parts are left out.
pub fn encode_page(page: &crate::PageWrite<'_>, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(3);
    if page.rows.iter().any(|r| !r.values.is_empty()) {
        let mut p = Vec::new();
        encode_samples(page.rows, &mut p);
        parts.push(p);
    }
    if !page.events.is_empty() {
        let mut p = Vec::new();
        encode_events(page.events, &mut p)?;
        parts.push(p);
    }
    if !page.gpus.is_empty() {
        let mut p = Vec::new();
        encode_gpus(page.gpus, page.seen_ms, &mut p)?;
        parts.push(p);
    }
    out.push(TAG_PAGE);
    put_uvarint(out, parts.len() as u64);
    for p in &parts {
        put_uvarint(out, p.len() as u64);
        out.extend_from_slice(p);
    }
    Ok(())
}

fn decode_page(body: &[u8]) -> Result<Record, CodecError> {
    let mut pos = 0;
    let n = get_uvarint(body, &mut pos)?;
    if n > 3 {
        return Err(CodecError("page record with more than 3 parts"));
    }
    let mut parts = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = get_uvarint(body, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| CodecError("page part length overflows"))?;
        let part = get_bytes(body, &mut pos, len)?;
        if part.first() == Some(&TAG_PAGE) {
            return Err(CodecError("page record nested in a page"));
        }
        parts.push(decode(part)?);
    }
    if pos != body.len() {
        return Err(CodecError("trailing bytes after page parts"));
    }
    Ok(Record::Page(parts))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], CodecError> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= buf.len())
        .ok_or(CodecError("record truncated"))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

fn get_str<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a str, CodecError> {
    let n = get_uvarint(buf, pos)?;
    let n = usize::try_from(n).map_err(|_| CodecError("string length overflows"))?;
    std::str::from_utf8(get_bytes(buf, pos, n)?).map_err(|_| CodecError("string is not UTF-8"))
}

/// Encodes a batch of sample rows.
pub fn encode_samples(rows: &[GpuSamples], out: &mut Vec<u8>) {
    out.push(TAG_SAMPLES);
    // Dictionary: dense slot per known field, a hash map for other names (a page may
    // carry tens of thousands of them; a list searched per value made that quadratic).
    const NONE: u32 = u32::MAX;
    let mut dcgm_slot = [NONE; DcgmField::ALL.len()];
    let mut names: Vec<&FieldName> = Vec::new();
    let mut other: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut slots: Vec<u32> = Vec::with_capacity(rows.iter().map(|r| r.values.len()).sum());
    for row in rows {
        for (f, _) in &row.values {
            let slot = match f {
                FieldName::Dcgm(d) => {
                    let s = &mut dcgm_slot[d.index()];
                    if *s == NONE {
                        *s = names.len() as u32;
                        names.push(f);
                    }
                    *s
                }
                FieldName::Other(name) => *other.entry(&**name).or_insert_with(|| {
                    names.push(f);
                    (names.len() - 1) as u32
                }),
            };
            slots.push(slot);
        }
    }
    put_uvarint(out, names.len() as u64);
    for n in &names {
        put_str(out, n.as_str());
    }
    put_uvarint(out, rows.len() as u64);
    let mut slots = slots.into_iter();
    for row in rows {
        put_str(out, row.gpu.as_str());
        out.extend_from_slice(&row.ts_ms.to_le_bytes());
        put_uvarint(out, row.values.len() as u64);
        for (_, v) in &row.values {
            put_uvarint(out, u64::from(slots.next().unwrap_or(0)));
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
}

pub fn encode_events(events: &[Event], out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.push(TAG_EVENTS);
    serde_json::to_writer(&mut *out, events).map_err(|e| StoreError::Encoding {
        what: "events for the WAL".into(),
        reason: e.to_string(),
    })
}

pub fn encode_gpus(gpus: &[GpuIdentity], seen_ms: TimestampMs, out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.push(TAG_GPUS);
    out.extend_from_slice(&seen_ms.to_le_bytes());
    serde_json::to_writer(&mut *out, gpus).map_err(|e| StoreError::Encoding {
        what: "GPU identities for the WAL".into(),
        reason: e.to_string(),
    })
}

/// Decodes one record. Consecutive rows of the same GPU share one UUID `Arc`.
pub fn decode(buf: &[u8]) -> Result<Record, CodecError> {
    let (&tag, body) = buf.split_first().ok_or(CodecError("empty record"))?;
    match tag {
        TAG_SAMPLES => decode_samples(body).map(Record::Samples),
        TAG_EVENTS => serde_json::from_slice(body)
            .map(Record::Events)
            .map_err(|_| CodecError("events record is not valid JSON")),
        TAG_GPUS => {
            let mut pos = 0;
            let seen = get_bytes(body, &mut pos, 8)?;
            let seen_ms = i64::from_le_bytes(seen.try_into().map_err(|_| CodecError("short"))?);
            let gpus = serde_json::from_slice(&body[pos..]).map_err(|_| CodecError("gpus record is not valid JSON"))?;
            Ok(Record::Gpus { seen_ms, gpus })
        }
        TAG_PAGE => decode_page(body),
        _ => Err(CodecError("unknown record tag")),
    }
}

fn decode_samples(buf: &[u8]) -> Result<Vec<GpuSamples>, CodecError> {
    let mut pos = 0;
    let n_names = get_uvarint(buf, &mut pos)?;
    if n_names > buf.len() as u64 {
        return Err(CodecError("field dictionary larger than its record"));
    }
    let mut names = Vec::with_capacity(n_names as usize);
    for _ in 0..n_names {
        names.push(FieldName::parse(get_str(buf, &mut pos)?));
    }
    let n_rows = get_uvarint(buf, &mut pos)?;
    if n_rows > buf.len() as u64 {
        return Err(CodecError("row count larger than its record"));
    }
    let mut rows = Vec::with_capacity(n_rows as usize);
    let mut last_gpu: Option<GpuUuid> = None;
    for _ in 0..n_rows {
        let uuid = get_str(buf, &mut pos)?;
        let gpu = match &last_gpu {
            Some(g) if g.as_str() == uuid => g.clone(),
            _ => GpuUuid::new(uuid),
        };
        last_gpu = Some(gpu.clone());
        let ts = get_bytes(buf, &mut pos, 8)?;
        let ts_ms = i64::from_le_bytes(ts.try_into().map_err(|_| CodecError("short"))?);
        let n = get_uvarint(buf, &mut pos)?;
        if n > buf.len() as u64 {
            return Err(CodecError("value count larger than its record"));
        }
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let slot = get_uvarint(buf, &mut pos)?;
            let name = names
                .get(slot as usize)
                .ok_or(CodecError("field index outside dictionary"))?;
            let bits = get_bytes(buf, &mut pos, 8)?;
            let v = f64::from_bits(u64::from_le_bytes(bits.try_into().map_err(|_| CodecError("short"))?));
            values.push((name.clone(), v));
        }
        rows.push(GpuSamples { gpu, ts_ms, values });
    }
    if pos != buf.len() {
        return Err(CodecError("trailing bytes after sample rows"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::EventKind;

    #[test]
    fn samples_round_trip_with_known_and_unknown_fields() {
        let g = GpuUuid::new("GPU-1");
        let rows = vec![
            GpuSamples {
                gpu: g.clone(),
                ts_ms: -5,
                values: vec![
                    (DcgmField::GpuTemp.into(), 41.0),
                    (FieldName::parse("MY_METRIC"), f64::NAN),
                    (DcgmField::PowerUsage.into(), -0.0),
                ],
            },
            GpuSamples {
                gpu: GpuUuid::new("GPU-2"),
                ts_ms: i64::MAX,
                values: vec![],
            },
        ];
        let mut buf = Vec::new();
        encode_samples(&rows, &mut buf);
        let Record::Samples(back) = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].values[0], rows[0].values[0]);
        assert!(back[0].values[1].1.is_nan());
        assert_eq!(back[0].values[2].1.to_bits(), (-0.0f64).to_bits());
        assert_eq!(back[1].ts_ms, i64::MAX);
    }

    #[test]
    fn events_and_gpus_round_trip() {
        let e = Event {
            gpu: GpuUuid::new("GPU-1"),
            node: "n1".into(),
            ts_ms: 7,
            kind: EventKind::Xid {
                code: 79,
                message: None,
                pid: None,
                process: None,
            },
        };
        let mut buf = Vec::new();
        encode_events(std::slice::from_ref(&e), &mut buf).unwrap();
        let Record::Events(back) = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(back, vec![e]);
        let id = GpuIdentity::new(GpuUuid::new("GPU-1"), "n1");
        let mut buf = Vec::new();
        encode_gpus(std::slice::from_ref(&id), 9, &mut buf).unwrap();
        let Record::Gpus { seen_ms, gpus } = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!((seen_ms, gpus), (9, vec![id]));
    }

    #[test]
    fn page_round_trips_and_truncations_are_errors() {
        let rows = vec![GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: 1,
            values: vec![(DcgmField::GpuTemp.into(), 41.0)],
        }];
        let id = GpuIdentity::new(GpuUuid::new("GPU-1"), "n1");
        let page = crate::PageWrite {
            rows: &rows,
            events: &[],
            gpus: std::slice::from_ref(&id),
            seen_ms: 5,
        };
        let mut buf = Vec::new();
        encode_page(&page, &mut buf).unwrap();
        let Record::Page(parts) = decode(&buf).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[0], Record::Samples(r) if r.len() == 1));
        assert!(matches!(&parts[1], Record::Gpus { seen_ms: 5, gpus } if gpus == &vec![id]));
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err());
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let rows = vec![GpuSamples {
            gpu: GpuUuid::new("GPU-1"),
            ts_ms: 1,
            values: vec![(DcgmField::GpuTemp.into(), 41.0)],
        }];
        let mut buf = Vec::new();
        encode_samples(&rows, &mut buf);
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err());
        }
    }
}
