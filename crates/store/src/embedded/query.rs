//! Read-side helpers shared by the query paths (embedded and PostgreSQL): range
//! downsampling, and one point per time.

use crate::Point;
use gpuwarden_model::TimestampMs;

/// Keeps, of points with equal times in a time-sorted list, the last one (the latest
/// arrival when the sort was stable over arrival order).
pub fn last_of_equal_times(mut points: Vec<Point>) -> Vec<Point> {
    if points.windows(2).all(|w| w[0].ts_ms != w[1].ts_ms) {
        return points;
    }
    let mut out: Vec<Point> = Vec::with_capacity(points.len());
    for p in points.drain(..) {
        match out.last_mut() {
            Some(last) if last.ts_ms == p.ts_ms => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// Downsamples sorted points of `[from, to)` to at most `max_points` bucket averages.
///
/// Buckets are fixed-width time slices starting at `from` (width = span / max_points,
/// rounded up), each stamped at its start; empty buckets produce no point. NaN values are
/// left out of a bucket's average (a bucket of only NaN averages to NaN), so one
/// unreadable scrape does not blank a whole bucket on a chart.
pub fn downsample(points: Vec<Point>, from: TimestampMs, to: TimestampMs, max_points: usize) -> Vec<Point> {
    if points.len() <= max_points {
        return points;
    }
    if max_points == 0 {
        return Vec::new();
    }
    // i128: `to - from` can exceed i64 for extreme arguments.
    let span = (i128::from(to) - i128::from(from)).max(1);
    let width = ((span + max_points as i128 - 1) / max_points as i128).max(1);
    let mut out: Vec<Point> = Vec::with_capacity(max_points);
    let mut current: Option<(i128, f64, u64)> = None; // bucket, sum of non-NaN, their count
    let emit = |b: i128, sum: f64, n: u64, out: &mut Vec<Point>| {
        let ts_ms = (i128::from(from) + b * width) as TimestampMs;
        out.push(Point {
            ts_ms,
            value: if n == 0 { f64::NAN } else { sum / n as f64 },
        });
    };
    for p in points {
        let b = (i128::from(p.ts_ms) - i128::from(from)) / width;
        match &mut current {
            Some((cb, sum, n)) if *cb == b => {
                if !p.value.is_nan() {
                    *sum += p.value;
                    *n += 1;
                }
            }
            _ => {
                if let Some((cb, sum, n)) = current.take() {
                    emit(cb, sum, n, &mut out);
                }
                let ok = !p.value.is_nan();
                current = Some((b, if ok { p.value } else { 0.0 }, u64::from(ok)));
            }
        }
    }
    if let Some((cb, sum, n)) = current {
        emit(cb, sum, n, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(n: i64) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                ts_ms: i * 1000,
                value: i as f64,
            })
            .collect()
    }

    #[test]
    fn small_ranges_are_returned_as_is() {
        assert_eq!(downsample(pts(10), 0, 10_000, 10), pts(10));
    }

    #[test]
    fn buckets_average_and_start_at_bucket_start() {
        let out = downsample(pts(100), 0, 100_000, 10);
        assert_eq!(out.len(), 10);
        assert_eq!(out[0], Point { ts_ms: 0, value: 4.5 });
        assert_eq!(
            out[9],
            Point {
                ts_ms: 90_000,
                value: 94.5
            }
        );
    }

    #[test]
    fn nan_is_left_out_of_averages() {
        let mut p = pts(4);
        p[1].value = f64::NAN;
        let out = downsample(p, 0, 4000, 2);
        assert_eq!(out[0].value, 0.0);
        assert_eq!(out[1].value, 2.5);
    }

    #[test]
    fn extreme_bounds_do_not_overflow() {
        let out = downsample(pts(10), i64::MIN, i64::MAX, 3);
        assert!(out.len() <= 3 && !out.is_empty());
    }
}
