//! Column codecs for sealed chunks: integer columns (timestamps, scaled decimals) and
//! float columns.
//!
//! Why these shapes: DCGM series are dominated by values that are exact short decimals
//! (integer °C, MHz, %, power with 3 decimals, ratios with ≤ 6 decimals) that either sit
//! still for long runs or wobble a little, and by timestamps on a regular scrape grid.
//!
//! * **Integer columns** store the first value as a varint, then the deltas in blocks of
//!   [`BLOCK`] values. Each block is bit-packed at the width that minimises its size, with
//!   the few values that do not fit (a clock step, a counter jump) stored as exceptions
//!   ("patched frame of reference"), and each block picks first-order deltas or
//!   delta-of-delta (counters with a steady rate, regular timestamps). A constant block
//!   costs 15 bits for 64 values, so long constant runs cost almost nothing.
//! * **Float columns** use the integer codec on `value × 10^k` when every value of the
//!   chunk is exactly such a decimal (`k ≤ 6`, checked bit-for-bit on the way back, so
//!   `-0.0`, NaN and ±Inf simply fail the test), else Gorilla XOR coding. The choice is
//!   per chunk: one NaN in a chunk of temperatures sends that chunk to Gorilla, which is
//!   still correct, only larger.
//!
//! All arithmetic on deltas is wrapping, so any `i64` (including `i64::MIN` next to
//! `i64::MAX`) round-trips exactly. Decoders never panic: malformed input is a
//! [`CodecError`].

/// Values per bit-packed block.
pub const BLOCK: usize = 64;

/// Malformed column bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub &'static str);

// ---------------------------------------------------------------------------------------
// Varints and zig-zag.

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(CodecError("varint runs past the end"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(CodecError("varint longer than 10 bytes"))
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Number of significant bits of `v` (0 for 0).
fn bit_len(v: u64) -> u32 {
    64 - v.leading_zeros()
}

// ---------------------------------------------------------------------------------------
// Bit streams (MSB-first within a 64-bit accumulator, flushed big-endian).

pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    /// Bits held in `acc` (always < 64 between calls).
    n: u32,
}

impl BitWriter {
    pub fn new(out: Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Writes the low `bits` bits of `v` (`bits` ≤ 64).
    pub fn write(&mut self, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let v = if bits == 64 { v } else { v & ((1u64 << bits) - 1) };
        let free = 64 - self.n;
        if bits < free {
            self.acc = (self.acc << bits) | v;
            self.n += bits;
        } else {
            // Fill the accumulator, flush it, keep the rest.
            let rest = bits - free;
            let acc = if free == 64 { 0 } else { self.acc << free };
            let head = if rest == 64 { 0 } else { v >> rest };
            self.out.extend_from_slice(&(acc | head).to_be_bytes());
            self.acc = if rest == 0 { 0 } else { v & ((1u64 << rest) - 1) };
            self.n = rest;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        let mut n = self.n;
        let mut acc = if n == 0 { 0 } else { self.acc << (64 - n) };
        while n > 0 {
            self.out.push((acc >> 56) as u8);
            acc <<= 8;
            n = n.saturating_sub(8);
        }
        self.out
    }
}

pub struct BitReader<'a> {
    buf: &'a [u8],
    /// Next bit to read, counted from the start of `buf`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    pub fn read(&mut self, bits: u32) -> Result<u64, CodecError> {
        if bits == 0 {
            return Ok(0);
        }
        let end = self.pos + bits as usize;
        if end > self.buf.len() * 8 {
            return Err(CodecError("bit stream runs past the end"));
        }
        let mut v: u64 = 0;
        let mut left = bits;
        while left > 0 {
            let byte = self.buf[self.pos / 8];
            let off = (self.pos % 8) as u32;
            let take = (8 - off).min(left);
            let chunk = (byte >> (8 - off - take)) & ((1u16 << take) - 1) as u8;
            v = if take == 64 {
                u64::from(chunk)
            } else {
                (v << take) | u64::from(chunk)
            };
            self.pos += take as usize;
            left -= take;
        }
        Ok(v)
    }

    pub fn read_bit(&mut self) -> Result<bool, CodecError> {
        Ok(self.read(1)? == 1)
    }
}

// ---------------------------------------------------------------------------------------
// Integer columns.

/// Appends an integer column: `count` varint, first value, then delta blocks.
pub fn encode_ints(vals: &[i64], out: &mut Vec<u8>) {
    put_uvarint(out, vals.len() as u64);
    let Some(&first) = vals.first() else { return };
    put_uvarint(out, zigzag(first));
    let mut w = BitWriter::new(std::mem::take(out));
    let mut prev = first;
    let mut prev_delta: i64 = 0;
    let mut deltas = [0u64; BLOCK];
    let mut dods = [0u64; BLOCK];
    let rest = &vals[1..];
    for block in rest.chunks(BLOCK) {
        for (i, &v) in block.iter().enumerate() {
            let d = v.wrapping_sub(prev);
            deltas[i] = zigzag(d);
            dods[i] = zigzag(d.wrapping_sub(prev_delta));
            prev = v;
            prev_delta = d;
        }
        let n = block.len();
        let (cost_d, width_d) = best_width(&deltas[..n]);
        let (cost_dd, width_dd) = best_width(&dods[..n]);
        let (mode, width, src) = if cost_dd < cost_d {
            (1u64, width_dd, &dods[..n])
        } else {
            (0u64, width_d, &deltas[..n])
        };
        write_block(&mut w, mode, width, src);
    }
    *out = w.finish();
}

/// Cost in bits and the packing width minimising it for one block.
fn best_width(vals: &[u64]) -> (u64, u32) {
    // hist[b] = how many values need exactly b bits.
    let mut hist = [0u64; 65];
    for &v in vals {
        hist[bit_len(v) as usize] += 1;
    }
    let max_bits = (0..=64).rev().find(|&b| hist[b] > 0).unwrap_or(0) as u32;
    let n = vals.len() as u64;
    let mut best = (u64::MAX, 0);
    // Values needing more than `w` bits become exceptions: 6-bit index + high bits.
    let mut exceptions = 0u64;
    for w in (0..=max_bits).rev() {
        let hi = max_bits - w;
        let exc_cost = if exceptions > 0 {
            7 + exceptions * (6 + u64::from(hi))
        } else {
            0
        };
        let cost = 8 + 7 + n * u64::from(w) + exc_cost;
        if cost <= best.0 {
            best = (cost, w);
        }
        exceptions += hist[w as usize];
    }
    best
}

fn write_block(w: &mut BitWriter, mode: u64, width: u32, vals: &[u64]) {
    w.write((mode << 7) | u64::from(width), 8);
    let fits = |v: u64| width == 64 || v >> width == 0;
    let exceptions = vals.iter().filter(|&&v| !fits(v)).count();
    w.write(exceptions as u64, 7);
    for &v in vals {
        w.write(v, width);
    }
    if exceptions > 0 {
        let hi_width = vals.iter().map(|&v| bit_len(v)).max().unwrap_or(0) - width;
        w.write(u64::from(hi_width), 7);
        for (i, &v) in vals.iter().enumerate() {
            if !fits(v) {
                w.write(i as u64, 6);
                w.write(v >> width, hi_width);
            }
        }
    }
}

/// Decodes an integer column starting at `*pos`; advances `*pos` past it.
pub fn decode_ints(buf: &[u8], pos: &mut usize) -> Result<Vec<i64>, CodecError> {
    let count = get_uvarint(buf, pos)?;
    // Each value takes at least one bit after the first: a cheap bound on hostile counts.
    if count > 1 + (buf.len() as u64).saturating_mul(8).saturating_mul(BLOCK as u64) {
        return Err(CodecError("integer column count larger than its bytes allow"));
    }
    let count = count as usize;
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return Ok(out);
    }
    let first = unzigzag(get_uvarint(buf, pos)?);
    out.push(first);
    let mut r = BitReader::new(&buf[*pos..]);
    let mut prev = first;
    let mut prev_delta: i64 = 0;
    let mut block = [0u64; BLOCK];
    let mut left = count - 1;
    while left > 0 {
        let n = left.min(BLOCK);
        let header = r.read(8)?;
        let mode = header >> 7;
        let width = (header & 0x7f) as u32;
        if width > 64 {
            return Err(CodecError("block width above 64 bits"));
        }
        let exceptions = r.read(7)? as usize;
        if exceptions > n {
            return Err(CodecError("more exceptions than values in a block"));
        }
        for slot in block.iter_mut().take(n) {
            *slot = r.read(width)?;
        }
        if exceptions > 0 {
            let hi_width = r.read(7)? as u32;
            if hi_width + width > 64 {
                return Err(CodecError("exception wider than 64 bits"));
            }
            for _ in 0..exceptions {
                let i = r.read(6)? as usize;
                let hi = r.read(hi_width)?;
                if i >= n {
                    return Err(CodecError("exception index outside its block"));
                }
                block[i] |= hi << width;
            }
        }
        for &z in &block[..n] {
            let d = if mode == 1 {
                prev_delta.wrapping_add(unzigzag(z))
            } else {
                unzigzag(z)
            };
            prev = prev.wrapping_add(d);
            prev_delta = d;
            out.push(prev);
        }
        left -= n;
    }
    *pos += r.pos.div_ceil(8);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Float columns.

const KIND_DECIMAL: u8 = 0;
const KIND_GORILLA: u8 = 1;
const MAX_SCALE: usize = 6;
const POW10: [f64; MAX_SCALE + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Largest magnitude an f64 holds as an exact integer.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// `v` as `i / 10^k` exactly, if possible.
fn scaled(v: f64, k: usize) -> Option<i64> {
    let s = (v * POW10[k]).round();
    // `is_finite` first: NaN and ±Inf are never decimals.
    if !s.is_finite() || s.abs() >= EXACT_INT {
        return None;
    }
    let i = s as i64;
    (unscale(i, k).to_bits() == v.to_bits()).then_some(i)
}

fn unscale(i: i64, k: usize) -> f64 {
    i as f64 / POW10[k]
}

/// The smallest decimal scale that represents every value exactly.
fn decimal_scale(vals: &[f64]) -> Option<usize> {
    let mut k = 0;
    for &v in vals {
        while scaled(v, k).is_none() {
            k += 1;
            if k > MAX_SCALE {
                return None;
            }
        }
    }
    Some(k)
}

/// Appends a float column.
pub fn encode_floats(vals: &[f64], out: &mut Vec<u8>) {
    if let Some(k) = decimal_scale(vals) {
        // Re-check at the final scale: a value found exact at a smaller k is exact at k
        // in practice, but the guarantee we rely on is the bit-for-bit check itself.
        let ints: Option<Vec<i64>> = vals.iter().map(|&v| scaled(v, k)).collect();
        if let Some(ints) = ints {
            out.push(KIND_DECIMAL);
            out.push(k as u8);
            encode_ints(&ints, out);
            return;
        }
    }
    out.push(KIND_GORILLA);
    encode_gorilla(vals, out);
}

pub fn decode_floats(buf: &[u8], pos: &mut usize) -> Result<Vec<f64>, CodecError> {
    let kind = *buf.get(*pos).ok_or(CodecError("float column is empty"))?;
    *pos += 1;
    match kind {
        KIND_DECIMAL => {
            let k = *buf.get(*pos).ok_or(CodecError("decimal column lacks its scale"))? as usize;
            *pos += 1;
            if k > MAX_SCALE {
                return Err(CodecError("decimal scale above 6"));
            }
            Ok(decode_ints(buf, pos)?.into_iter().map(|i| unscale(i, k)).collect())
        }
        KIND_GORILLA => decode_gorilla(buf, pos),
        _ => Err(CodecError("unknown float column kind")),
    }
}

/// Gorilla (Facebook, VLDB 2015) XOR coding: `0` for a repeat, `10` + meaningful bits
/// when they fit the previous window, `11` + 6-bit leading zeros + 6-bit length + bits.
fn encode_gorilla(vals: &[f64], out: &mut Vec<u8>) {
    put_uvarint(out, vals.len() as u64);
    let Some(first) = vals.first() else { return };
    let mut w = BitWriter::new(std::mem::take(out));
    let mut prev = first.to_bits();
    w.write(prev, 64);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for v in &vals[1..] {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        let l = x.leading_zeros().min(63);
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.write(0b10, 2);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            lead = l;
            trail = t;
            let len = 64 - l - t; // 1..=64
            w.write(0b11, 2);
            w.write(u64::from(l), 6);
            w.write(u64::from(len - 1), 6);
            w.write(x >> t, len);
        }
    }
    *out = w.finish();
}

fn decode_gorilla(buf: &[u8], pos: &mut usize) -> Result<Vec<f64>, CodecError> {
    let count = get_uvarint(buf, pos)?;
    if count > 1 + (buf.len() as u64).saturating_mul(8) {
        return Err(CodecError("float column count larger than its bytes allow"));
    }
    let count = count as usize;
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return Ok(out);
    }
    let mut r = BitReader::new(&buf[*pos..]);
    let mut prev = r.read(64)?;
    out.push(f64::from_bits(prev));
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for _ in 1..count {
        if r.read_bit()? {
            if r.read_bit()? {
                lead = r.read(6)? as u32;
                let len = r.read(6)? as u32 + 1;
                if lead + len > 64 {
                    return Err(CodecError("gorilla window wider than 64 bits"));
                }
                trail = 64 - lead - len;
            } else if lead == u32::MAX {
                return Err(CodecError("gorilla reuses a window before defining one"));
            }
            let x = r.read(64 - lead - trail)? << trail;
            prev ^= x;
        }
        out.push(f64::from_bits(prev));
    }
    *pos += r.pos.div_ceil(8);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ints_round_trip(vals: &[i64]) -> Vec<i64> {
        let mut buf = vec![0xAB]; // a prefix, to check offsets are honoured
        encode_ints(vals, &mut buf);
        buf.push(0xCD);
        let mut pos = 1;
        let back = decode_ints(&buf, &mut pos).unwrap();
        assert_eq!(buf[pos], 0xCD, "decoder must stop exactly at the column's end");
        back
    }

    fn floats_round_trip(vals: &[f64]) -> Vec<f64> {
        let mut buf = Vec::new();
        encode_floats(vals, &mut buf);
        let mut pos = 0;
        let back = decode_floats(&buf, &mut pos).unwrap();
        assert_eq!(pos, buf.len());
        back
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn extreme_integers_round_trip() {
        let v = vec![0, i64::MAX, i64::MIN, -1, i64::MIN, i64::MAX, 0, 1];
        assert_eq!(ints_round_trip(&v), v);
        assert_eq!(ints_round_trip(&[]), Vec::<i64>::new());
        assert_eq!(ints_round_trip(&[i64::MIN]), vec![i64::MIN]);
    }

    #[test]
    fn special_floats_round_trip_bit_exactly() {
        let v = [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            5e-324,
        ];
        assert_eq!(bits(&floats_round_trip(&v)), bits(&v));
    }

    #[test]
    fn constant_series_costs_almost_nothing() {
        let v = vec![1410.0; 3600];
        let mut buf = Vec::new();
        encode_floats(&v, &mut buf);
        assert!(buf.len() < 120, "3600 constant values took {} bytes", buf.len());
        let ts: Vec<i64> = (0..3600).map(|i| 1_700_000_000_000 + i * 1000).collect();
        let mut buf = Vec::new();
        encode_ints(&ts, &mut buf);
        assert!(buf.len() < 120, "3600 regular timestamps took {} bytes", buf.len());
    }

    #[test]
    fn three_decimal_power_is_stored_as_scaled_integers() {
        let v: Vec<f64> = (0..1000).map(|i| 300.0 + f64::from(i % 17) * 0.125 + 0.001).collect();
        let mut buf = Vec::new();
        encode_floats(&v, &mut buf);
        assert_eq!(buf[0], KIND_DECIMAL);
        assert_eq!(bits(&floats_round_trip(&v)), bits(&v));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..400 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode_ints(&buf, &mut 0);
            let _ = decode_floats(&buf, &mut 0);
        }
    }

    proptest! {
        #[test]
        fn any_i64_column_round_trips(v in proptest::collection::vec(any::<i64>(), 0..300)) {
            prop_assert_eq!(ints_round_trip(&v), v);
        }

        #[test]
        fn near_regular_timestamps_round_trip(
            start in any::<i64>(),
            jitter in proptest::collection::vec(-20i64..20, 0..300),
        ) {
            let v: Vec<i64> = jitter.iter().enumerate()
                .map(|(i, j)| start.wrapping_add(i as i64 * 1000 + j)).collect();
            prop_assert_eq!(ints_round_trip(&v), v);
        }

        #[test]
        fn any_f64_column_round_trips_bit_exactly(
            v in proptest::collection::vec(any::<u64>().prop_map(f64::from_bits), 0..300),
        ) {
            prop_assert_eq!(bits(&floats_round_trip(&v)), bits(&v));
        }

        #[test]
        fn decimal_like_columns_round_trip_bit_exactly(
            v in proptest::collection::vec((-1_000_000i64..1_000_000, 0usize..=7), 0..300),
        ) {
            // Mixes scales, and k = 7 values that must fall back to Gorilla.
            let v: Vec<f64> = v.iter().map(|&(i, k)| i as f64 / 10f64.powi(k as i32)).collect();
            prop_assert_eq!(bits(&floats_round_trip(&v)), bits(&v));
        }
    }
}
