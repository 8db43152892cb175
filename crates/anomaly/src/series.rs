//! Per-series streaming anomaly detector: a robust adaptive baseline with daily
//! seasonality, turned into a calibrated score by Numenta-style anomaly likelihood.
//!
//! # Why this design
//!
//! The best NAB entries are all *online* and *self-calibrating*: Numenta HTM (70.5) is a
//! sequence memory whose raw prediction error only becomes a good alarm after its "anomaly
//! likelihood" post-processing (a short moving average of the raw score compared with its
//! own long-run distribution); CAD OSE (69.9) and ARTime (74.9) learn recurring patterns
//! and stay quiet for a rest period after each alarm; Skyline (58) and KNN-CAD (58) are
//! statistical ensembles and nearest-neighbour novelty. Netdata's per-metric k-means does
//! the k-NN idea on a fixed training window. What they share, and what we keep:
//!
//! 1. **A baseline that explains the normal signal.** Two models run side by side: a robust
//!    local level (EWMA with Huber-clipped updates, spread = EW mean absolute deviation, so
//!    one outlier neither drags the level nor inflates the spread) and a daily profile
//!    (per time-of-day bin EWMA, active once every bin has been seen twice). Their
//!    residuals are compared by a slow EW error; the one that has explained the series
//!    better is used, so daily-patterned series are judged against "this time yesterday"
//!    and the rest against the recent level. A robust model of the first difference catches
//!    spikes riding on trends. We chose these over HTM or ARTime because they are a few
//!    hundred bytes per series, O(1) per sample, explainable ("expected 40–55 °C, observed
//!    83 °C"), and have no file-wide min/max input (HTM and CAD OSE are given each NAB
//!    file's min and max up front; a live metric has none).
//! 2. **Level shifts adapt.** When a fast EWMA stays outside the band for `shift_samples`
//!    samples the level is moved to it: a flat line that moves once alarms once, not forever.
//! 3. **Calibration against the series' own history** (Numenta's "anomaly likelihood"
//!    idea). The raw surprise (a robust z, log-compressed) is averaged over the last
//!    `short_window` samples and located in an exponentially decayed 64-bin histogram of
//!    past short-term surprises; the score is `−log10(tail)/score_decades`, so "the most
//!    surprising thing in the last few thousand samples" scores near 1 on any series and a
//!    noisy series needs a bigger deviation than a quiet one, with one threshold for all.
//!    On NAB the empirical tail beat Numenta's Gaussian tail over a moving average (kept as
//!    `empirical: false`) by about 15 points: surprise distributions are heavy-tailed.
//! 4. **Rest after an alarm.** A decaying peak of recent scores damps repeats of the same
//!    excursion, as CAD OSE and ARTime do; a larger excursion still comes through.
//!
//! 5. **Sequence memory** (`shape_len` > 0): the last `shape_len` samples, quantised into
//!    `shape_levels` over the range seen so far, are hashed into a fixed table of pattern
//!    counts; a rarely seen shape adds `shape_weight × novelty` to the log-surprise. This is
//!    the shape novelty of HTM / ARTime / KNN-CAD at O(1) cost (one hash, one lookup)
//!    instead of a k-NN scan over stored windows, and 2 bytes per slot of fixed memory.
//!
//! 6. **Hold after an alarm** (`hold_samples`, `hold_level`): after a score of at least
//!    `hold_level`, `score` is 0 for `hold_samples` samples (CAD OSE's rest period; the
//!    unheld value stays available as [`AnomalyScore::calibrated`]). NAB charges every
//!    row above the threshold outside a window, and an excursion is one event.
//! 7. **Slow surprise** (`slow_halflife`): an EWMA of the log-surprise, calibrated in its
//!    own decayed histogram and combined by max, catches sustained moderate change (more
//!    noise, a drift) that no single sample shows.
//!
//! 8. **Weekly profile** (`weekly_bins`, hourly by default): the daily profile's
//!    mechanics over a week, used once a series spans two weeks and it explains the
//!    series clearly better (slow clipped error < 0.8×) than the level and, when that is
//!    in use, the daily profile. GPU fleets have weekday/weekend load; NAB mostly does not
//!    (equal-footing choice cost 0.7 points there, the 0.8 margin gains 0.25).
//!
//! Memory is fixed at construction (`seasonal_bins` + `weekly_bins` + `short_window` +
//! 2 × 64 floats + `shape_slots` u16: 5,984 bytes with the defaults); work per sample is constant
//! (~120–170 ns on the 2-core Xeon dev machine). Non-finite samples are skipped: they get
//! score 0 with [`ScoreNote::NotFinite`] and do not touch the state.
//!
//! Defaults ([`SeriesConfig::default`]) are the one configuration used for the whole NAB
//! corpus and in the product, never tuned per file. They come from searches over NAB:
//! part 3 (random 800 + local 600 trials on the even-indexed files) and part 4 (local
//! trials on the whole corpus, as NAB's rules allow and the published entries did:
//! `NAB_SELECT=all nab_search DIR 300 41 local`), then a fix found when the product's
//! analyzer misbehaved with them: the daily profile was used as soon as the *current*
//! time-of-day bin had been seen twice, which within one day just made it a slow moving
//! average that took over from the level model after a level shift; it now also needs
//! the series to span two days (`first_ts`). NAB standard profile with these defaults:
//! whole corpus **65.4** (even 69.2 / odd 62.3); with the weekly profile (8) added
//! afterwards **65.7** (even 69.8 / odd 61.8). That figure is in-sample: the settings
//! were selected on the same files. The held-out check of the selection *procedure*
//! (before the seasonal fix: choose on one half, score the other) gave 53.1 and 55.0, so
//! expect less on series NAB does not have.
//!
//! In the product the analyzer reads [`AnomalyScore::calibrated`] (no hold) and needs the
//! value outside the expected range; with those two, `gpuwarden bench detect` finds no
//! false incident on 3,680 fault-free GPU-hours with these defaults (the same defaults
//! read through `score`, or without the range check, opened 27–364 per 1,000 GPU-hours).
//!
//! Tried and not kept: a re-implementation of CAD OSE's context memory (facts = bits of
//! the value quantised into 8 levels; contexts learned from fact pairs; anomaly = share of
//! predictions not confirmed plus share of new contexts). Given each file's min/max it
//! scored 63.3 here, but with a running min/max (no look-ahead) only 47–48 alone and 53–54
//! combined with this score, at 20–60 µs per sample and memory that grows until capped
//! (a cap of 5,000 contexts: 42). Its strength on NAB comes largely from the file-wide
//! range it is given.
//!
//! Not done (yet): a true k-NN over recent windows (the hashed table
//! forgets which shapes are *near* each other; a bounded k-NN tried in part 4 lost 1–9
//! points at ~1.2 µs per sample).

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;
/// Histogram of log-surprise for the empirical calibration: 64 bins of 0.25 cover
/// ln(1+z) up to 16, i.e. any z that matters.
const HIST_BINS: usize = 64;
const HIST_WIDTH: f64 = 0.25;

/// Settings of a [`SeriesDetector`]. Half-lives are in samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeriesConfig {
    /// Half-life of the robust level. Long enough to ignore a spike, short enough to
    /// follow drift.
    pub level_halflife: f64,
    /// Half-life of the spread (EW mean absolute deviation).
    pub spread_halflife: f64,
    /// Residuals beyond this many spreads are clipped before updating level and spread.
    pub clip_spreads: f64,
    /// Samples a fast EWMA must stay outside `clip_spreads` before the level jumps to it.
    pub shift_samples: u32,
    /// Time-of-day bins of the daily profile (0 disables seasonality).
    pub seasonal_bins: usize,
    /// Per-visit EWMA weight of a seasonal bin (daily and weekly profiles).
    pub seasonal_alpha: f64,
    /// Bins of the weekly profile (0 disables it); used once a series spans two weeks
    /// and the weekly profile explains it better than the daily one and the level.
    pub weekly_bins: usize,
    /// Weight of the first-difference surprise relative to the level surprise.
    pub diff_weight: f64,
    /// Samples before any score is given (the baseline is still learning).
    pub warmup_samples: u32,
    /// Samples averaged into the short-term surprise of the likelihood.
    pub short_window: usize,
    /// Half-life of the long-run mean and variance of the surprise.
    pub long_halflife: f64,
    /// Half-life of the rest-period peak that damps repeated alarms (0 disables it).
    pub rest_halflife: f64,
    /// Calibrate by the empirical tail of past surprises (true) or a Gaussian likelihood.
    pub empirical: bool,
    /// Decades of tail probability mapped onto the score's [0, 1].
    pub score_decades: f64,
    /// Factor applied to a score that does not beat the rest-period peak.
    pub rest_damping: f64,
    /// Width of the reported expected range, in spreads.
    pub range_spreads: f64,
    /// Symbols in a shape (sequence-memory) key; 0 disables the shape memory.
    pub shape_len: usize,
    /// Quantisation levels of the shape symbols, over the range seen so far.
    pub shape_levels: u32,
    /// Slots of the hashed pattern-count table (fixed memory: 2 bytes each).
    pub shape_slots: usize,
    /// Weight of the shape novelty added to the log-surprise.
    pub shape_weight: f64,
    /// Half-life of a slow average of the log-surprise, calibrated in its own histogram
    /// and combined with the per-sample score by max (0 disables it): sustained moderate
    /// change (more noise, a drift) that no single sample shows.
    pub slow_halflife: f64,
    /// Samples after a score at or above `hold_level` during which scores are 0 (0
    /// disables it): one alarm per excursion, as CAD OSE's rest period.
    pub hold_samples: u32,
    pub hold_level: f64,
    /// Whether a score at or above `hold_level` during the hold starts it over (CAD OSE's
    /// rule: quiet only after `hold_samples` samples without one).
    pub hold_extend: bool,
}

impl Default for SeriesConfig {
    /// Chosen on the whole NAB corpus (see the module comment for the held-out check).
    fn default() -> Self {
        Self {
            level_halflife: 48.0,
            spread_halflife: 1000.0,
            clip_spreads: 3.0,
            shift_samples: 12,
            seasonal_bins: 48,
            seasonal_alpha: 0.05,
            weekly_bins: 168,
            diff_weight: 1.0,
            warmup_samples: 100,
            short_window: 4,
            long_halflife: 5000.0,
            rest_halflife: 100.0,
            empirical: true,
            score_decades: 4.0,
            rest_damping: 0.3,
            range_spreads: 3.0,
            shape_len: 5,
            shape_levels: 16,
            shape_slots: 1024,
            shape_weight: 2.0,
            slow_halflife: 10.0,
            hold_samples: 100,
            hold_level: 0.5,
            hold_extend: false,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be a positive finite number, got {value}")]
    NotPositive { name: &'static str, value: f64 },
    #[error("{name} must be in (0, 1], got {value}")]
    NotFraction { name: &'static str, value: f64 },
    #[error("short_window must be between 1 and 1024, got {0}")]
    ShortWindow(usize),
    #[error("seasonal_bins must be at most 1440, got {0}")]
    SeasonalBins(usize),
    #[error("weekly_bins must be at most 2016 (5-minute bins), got {0}")]
    WeeklyBins(usize),
}

impl SeriesConfig {
    /// Checks every field; [`SeriesDetector::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("level_halflife", self.level_halflife),
            ("spread_halflife", self.spread_halflife),
            ("clip_spreads", self.clip_spreads),
            ("long_halflife", self.long_halflife),
            ("range_spreads", self.range_spreads),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        for (name, value) in [
            ("diff_weight", self.diff_weight),
            ("rest_halflife", self.rest_halflife),
            ("shape_weight", self.shape_weight),
            ("slow_halflife", self.slow_halflife),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        if !(self.hold_level > 0.0 && self.hold_level <= 1.0) {
            return Err(ConfigError::NotFraction {
                name: "hold_level",
                value: self.hold_level,
            });
        }
        if !(self.seasonal_alpha > 0.0 && self.seasonal_alpha <= 1.0) {
            return Err(ConfigError::NotFraction {
                name: "seasonal_alpha",
                value: self.seasonal_alpha,
            });
        }
        if self.short_window == 0 || self.short_window > 1024 {
            return Err(ConfigError::ShortWindow(self.short_window));
        }
        if self.shape_slots > 1 << 20 {
            // Bounded memory: 2 MB per series is already far more than useful.
            return Err(ConfigError::NotFraction {
                name: "shape_slots (at most 1048576)",
                value: self.shape_slots as f64,
            });
        }
        if self.seasonal_bins > 1440 {
            return Err(ConfigError::SeasonalBins(self.seasonal_bins));
        }
        if self.weekly_bins > 2016 {
            return Err(ConfigError::WeeklyBins(self.weekly_bins));
        }
        Ok(())
    }
}

/// Why a score is what it is, when that is not the ordinary case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreNote {
    /// The sample was NaN or infinite: skipped, score 0, state untouched.
    NotFinite,
    /// Still learning the baseline: score 0.
    Warmup,
    /// The timestamp went backwards: scored, but the daily profile was not updated.
    OutOfOrder,
}

/// The detector's verdict on one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyScore {
    /// 0 (normal) to 1 (as unlikely as the detector can say); 0 during the hold after an
    /// alarm ([`SeriesConfig::hold_samples`]): one alarm per excursion.
    pub score: f64,
    /// The calibrated score before the hold and rest damping: how unusual this sample is
    /// on its own, also while an earlier alarm holds `score` at 0.
    #[serde(default)]
    pub calibrated: f64,
    /// The uncalibrated surprise: robust z of the sample against the baseline.
    pub surprise: f64,
    /// Lower end of the range the baseline expected.
    pub expected_low: f64,
    /// Upper end of the range the baseline expected.
    pub expected_high: f64,
    /// The sample as given.
    pub observed: f64,
    pub note: Option<ScoreNote>,
}

fn alpha(halflife: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / halflife)
}

/// Standard normal upper tail Q(x), for the Gaussian-likelihood calibration.
fn normal_sf(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// Complementary error function, Numerical Recipes' `erfcc` (relative error < 1.2e−7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Robust EW location/scale: Huber-clipped EWMA level, EW mean absolute deviation spread.
#[derive(Debug, Clone)]
struct RobustEw {
    level: f64,
    spread: f64,
    n: u32,
}

impl RobustEw {
    fn new() -> Self {
        Self {
            level: 0.0,
            spread: 0.0,
            n: 0,
        }
    }

    /// Spread with a floor, so a perfectly flat signal does not divide by zero: a relative
    /// floor for large values and an absolute one near zero.
    fn scale(&self) -> f64 {
        self.spread.max(1e-3 * self.level.abs()).max(1e-9)
    }

    fn z(&self, x: f64) -> f64 {
        (x - self.level) / self.scale()
    }

    fn update(&mut self, x: f64, a_level: f64, a_spread: f64, clip: f64) {
        if self.n == 0 {
            self.level = x;
        } else {
            let r = x - self.level;
            // During the first samples there is no spread to clip against: learn freely.
            let lim = if self.n < 8 { f64::INFINITY } else { clip * self.scale() };
            let rc = r.clamp(-lim, lim);
            let a_l = a_level.max(1.0 / f64::from(self.n + 1));
            let a_s = a_spread.max(1.0 / f64::from(self.n + 1));
            self.level += a_l * rc;
            self.spread += a_s * (rc.abs() - self.spread);
        }
        self.n = self.n.saturating_add(1);
    }
}

/// A seasonal profile (daily or weekly): per time-of-period bin an EWMA of the value, a
/// robust spread of its residuals, and slow clipped errors of it and of the level model
/// over the same samples, which decide whether it explains the series better.
#[derive(Debug, Clone)]
struct Profile {
    period_ms: i64,
    mean: Vec<f64>,
    seen: Vec<u16>,
    spread: RobustEw,
    err: f64,
    err_level: f64,
}

/// What one sample teaches a [`Profile`].
struct ProfileStep {
    value: f64,
    level: f64,
    level_scale: f64,
    a_spread: f64,
    a_err: f64,
    clip: f64,
    seasonal_alpha: f64,
    in_order: bool,
}

impl Profile {
    fn new(period_ms: i64, bins: usize) -> Self {
        Self {
            period_ms,
            mean: vec![0.0; bins],
            seen: vec![0; bins],
            spread: RobustEw::new(),
            err: 0.0,
            err_level: 0.0,
        }
    }

    fn memory_bytes(&self) -> usize {
        self.mean.capacity() * std::mem::size_of::<f64>() + self.seen.capacity() * std::mem::size_of::<u16>()
    }

    fn bin(&self, ts_ms: i64) -> Option<usize> {
        let nb = self.mean.len();
        (nb > 0).then(|| ((ts_ms.rem_euclid(self.period_ms) as i128 * nb as i128) / self.period_ms as i128) as usize)
    }

    /// Whether the profile is learned for bin `b` and explains the series clearly better
    /// than the level model. Only once the series spans two periods: a bin "seen twice"
    /// within one period is just a slow moving average.
    fn explains(&self, b: usize, span_ms: i64) -> bool {
        self.seen[b] >= 2 && self.spread.n >= 8 && span_ms >= 2 * self.period_ms && self.err < 0.8 * self.err_level
    }

    /// (expected value, scale, z) of `value` in bin `b`.
    fn predict(&self, b: usize, value: f64) -> (f64, f64, f64) {
        let p = self.mean[b];
        let s = self.spread.scale().max(1e-3 * p.abs());
        (p, s, (value - p) / s)
    }

    fn learn(&mut self, b: usize, x: &ProfileStep) {
        let e = x.value - self.mean[b];
        if self.seen[b] >= 1 {
            // Residuals of the profile centre on zero: only their spread is learned.
            self.spread.update(e, 0.0, x.a_spread, x.clip);
            self.spread.level = 0.0;
            // Slow, clipped errors of both models decide which one explains the series.
            let es = e.abs().min(x.clip * self.spread.scale());
            let el = (x.value - x.level).abs().min(x.clip * x.level_scale);
            self.err += x.a_err * (es - self.err);
            self.err_level += x.a_err * (el - self.err_level);
        }
        if x.in_order {
            let seen = self.seen[b];
            let a = if seen == 0 {
                1.0
            } else {
                x.seasonal_alpha.max(1.0 / f64::from(seen + 1))
            };
            self.mean[b] += a * (x.value - self.mean[b]);
            self.seen[b] = seen.saturating_add(1);
        }
    }
}

/// Sequence memory: how often has the recent *shape* (the last `len` samples, quantised
/// over the range seen so far) been seen before? Counts live in a fixed hashed table,
/// halved when one saturates, so old patterns fade and memory never grows. This is the
/// part of HTM / ARTime / KNN-CAD that a level-and-spread baseline lacks: a value inside
/// the usual range but in an unusual order (a missed beat of a periodic signal) is novel.
/// A hashed count table instead of a k-NN search keeps the cost O(1) (one hash, one
/// lookup) instead of O(stored windows).
#[derive(Debug, Clone)]
struct ShapeMemory {
    len: usize,
    levels: u32,
    counts: Vec<u16>,
    recent: u64,
    filled: usize,
    lo: f64,
    hi: f64,
    total: f64,
}

impl ShapeMemory {
    fn new(len: usize, levels: u32, slots: usize) -> Self {
        Self {
            len: len.min(8),
            levels: levels.clamp(2, 255),
            counts: if len == 0 { Vec::new() } else { vec![0; slots.max(1)] },
            recent: 0,
            filled: 0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            total: 0.0,
        }
    }

    /// Records `value` and returns the novelty of the shape it completes, in [0, 1]:
    /// 1 for a never-seen pattern, toward 0 for the most common one.
    fn observe(&mut self, value: f64) -> f64 {
        if self.counts.is_empty() {
            return 0.0;
        }
        self.lo = self.lo.min(value);
        self.hi = self.hi.max(value);
        let span = self.hi - self.lo;
        let sym = if span > 0.0 && span.is_finite() {
            (((value - self.lo) / span) * f64::from(self.levels - 1)).round() as u64
        } else {
            0
        };
        self.recent = (self.recent << 8) | sym;
        self.filled += 1;
        if self.filled < self.len {
            return 0.0;
        }
        let mask = if self.len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.len)) - 1
        };
        let key = (self.recent & mask).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = (key >> 32) as usize % self.counts.len();
        let c = f64::from(self.counts[slot]);
        let novelty = if self.total > 0.0 {
            ((self.total + 1.0) / (c + 1.0)).ln() / (self.total + 1.0).ln()
        } else {
            0.0
        };
        if self.counts[slot] == u16::MAX {
            for x in &mut self.counts {
                *x /= 2;
            }
            self.total /= 2.0;
        }
        self.counts[slot] += 1;
        self.total += 1.0;
        novelty.clamp(0.0, 1.0)
    }
}

/// One series' detector. Create one per (GPU, metric); feed samples in time order.
#[derive(Debug, Clone)]
pub struct SeriesDetector {
    cfg: SeriesConfig,
    a_level: f64,
    a_spread: f64,
    a_long: f64,
    a_fast: f64,
    rest_decay: f64,
    n: u32,
    last_ts: Option<i64>,
    /// Timestamp of the first sample: a seasonal profile is used only once the series
    /// spans two of its periods (see [`Profile::explains`]).
    first_ts: Option<i64>,
    last_value: f64,
    level: RobustEw,
    diff: RobustEw,
    fast: f64,
    outside_run: u32,
    outside_sign: f64,
    daily: Profile,
    weekly: Profile,
    short: Vec<f64>,
    short_pos: usize,
    short_sum: f64,
    long_mean: f64,
    long_var: f64,
    long_n: u32,
    rest_peak: f64,
    long_decay: f64,
    hist: Calib,
    shape: ShapeMemory,
    slow: f64,
    a_slow: f64,
    slow_hist: Calib,
    since_alarm: u32,
}

/// Exponentially decayed histogram of a log-surprise, giving the empirical tail of a new
/// value among the past ones.
#[derive(Debug, Clone)]
struct Calib {
    hist: [f64; HIST_BINS],
    total: f64,
    inc: f64,
}

impl Calib {
    fn new() -> Self {
        Self {
            hist: [0.0; HIST_BINS],
            total: 0.0,
            inc: 1.0,
        }
    }

    /// Tail of `x` among the past values (the current one counted with half weight), then
    /// learns `x` if `learn`.
    fn tail(&mut self, x: f64, learn: bool, decay: f64) -> f64 {
        let pos = (x / HIST_WIDTH).clamp(0.0, (HIST_BINS - 1) as f64);
        let b = pos as usize;
        let above: f64 = self.hist[b + 1..].iter().sum::<f64>() + self.hist[b] * (1.0 - (pos - b as f64));
        let tail = (above + 0.5 * self.inc) / (self.total + self.inc);
        if learn {
            self.hist[b] += self.inc;
            self.total += self.inc;
            self.inc /= decay;
            if self.inc > 1e200 {
                // Rescale before overflow; only ratios matter.
                for h in &mut self.hist {
                    *h /= self.inc;
                }
                self.total /= self.inc;
                self.inc = 1.0;
            }
        }
        tail
    }
}

impl Default for SeriesDetector {
    fn default() -> Self {
        Self::build(SeriesConfig::default())
    }
}

impl SeriesDetector {
    /// A detector with these settings, or why they cannot work.
    pub fn new(config: SeriesConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(cfg: SeriesConfig) -> Self {
        Self {
            a_level: alpha(cfg.level_halflife),
            a_spread: alpha(cfg.spread_halflife),
            a_long: alpha(cfg.long_halflife),
            a_fast: alpha(2.0),
            rest_decay: if cfg.rest_halflife > 0.0 {
                0.5f64.powf(1.0 / cfg.rest_halflife)
            } else {
                0.0
            },
            n: 0,
            last_ts: None,
            first_ts: None,
            last_value: f64::NAN,
            level: RobustEw::new(),
            diff: RobustEw::new(),
            fast: 0.0,
            outside_run: 0,
            outside_sign: 0.0,
            daily: Profile::new(DAY_MS, cfg.seasonal_bins),
            weekly: Profile::new(7 * DAY_MS, cfg.weekly_bins),
            short: vec![0.0; cfg.short_window],
            short_pos: 0,
            short_sum: 0.0,
            long_mean: 0.0,
            long_var: 0.0,
            long_n: 0,
            rest_peak: 0.0,
            long_decay: 0.5f64.powf(1.0 / cfg.long_halflife),
            hist: Calib::new(),
            shape: ShapeMemory::new(cfg.shape_len, cfg.shape_levels, cfg.shape_slots),
            slow: 0.0,
            a_slow: if cfg.slow_halflife > 0.0 {
                alpha(cfg.slow_halflife)
            } else {
                0.0
            },
            slow_hist: Calib::new(),
            since_alarm: u32::MAX,
            cfg,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &SeriesConfig {
        &self.cfg
    }

    /// Bytes this detector occupies (struct plus its fixed-size buffers).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.daily.memory_bytes()
            + self.weekly.memory_bytes()
            + self.short.capacity() * std::mem::size_of::<f64>()
            + self.shape.counts.capacity() * std::mem::size_of::<u16>()
    }

    /// Scores one sample and learns from it. O(1) time, no allocation.
    pub fn update(&mut self, ts_ms: i64, value: f64) -> AnomalyScore {
        if !value.is_finite() {
            return AnomalyScore {
                score: 0.0,
                calibrated: 0.0,
                surprise: 0.0,
                expected_low: self.level.level - self.cfg.range_spreads * self.level.scale(),
                expected_high: self.level.level + self.cfg.range_spreads * self.level.scale(),
                observed: value,
                note: Some(ScoreNote::NotFinite),
            };
        }
        let in_order = self.last_ts.is_none_or(|t| ts_ms >= t);
        let day_bin = self.daily.bin(ts_ms);
        let week_bin = self.weekly.bin(ts_ms);

        // --- surprise under each model (before learning this sample) ---
        let z_level = self.level.z(value);
        let span = ts_ms - *self.first_ts.get_or_insert(ts_ms);
        let daily = day_bin.filter(|&b| self.daily.explains(b, span));
        // The weekly profile must also beat the daily one when that one is in use.
        let weekly = week_bin
            .filter(|&b| self.weekly.explains(b, span))
            .filter(|_| daily.is_none() || self.weekly.err < 0.8 * self.daily.err);
        let (pred, scale, z_base) = match (weekly, daily) {
            (Some(b), _) => self.weekly.predict(b, value),
            (None, Some(b)) => self.daily.predict(b, value),
            _ => (self.level.level, self.level.scale(), z_level),
        };
        let z_diff = if self.n > 0 {
            self.diff.z(value - self.last_value)
        } else {
            0.0
        };
        let surprise = z_base.abs().max(self.cfg.diff_weight * z_diff.abs()).min(1e6);
        // The likelihood averages and compares surprises; on a log scale one z of 10^4 on a
        // quantised series does not swamp the long-run variance for thousands of samples.
        let novelty = self.shape.observe(value);
        let s_log = surprise.ln_1p() + self.cfg.shape_weight * novelty;

        // --- learn ---
        let clip = self.cfg.clip_spreads;
        let learn = ProfileStep {
            value,
            level: self.level.level,
            level_scale: self.level.scale(),
            a_spread: self.a_spread,
            a_err: alpha(self.cfg.spread_halflife * 4.0),
            clip,
            seasonal_alpha: self.cfg.seasonal_alpha,
            in_order,
        };
        if let Some(b) = day_bin {
            self.daily.learn(b, &learn);
        }
        if let Some(b) = week_bin {
            self.weekly.learn(b, &learn);
        }
        if self.n > 0 {
            self.diff.update(value - self.last_value, 0.0, self.a_spread, clip);
            self.diff.level = 0.0;
        }
        // Level shift: a fast EWMA that stays outside the band moves the level to it.
        self.fast = if self.n == 0 {
            value
        } else {
            self.fast + self.a_fast * (value - self.fast)
        };
        let dz = self.level.z(self.fast);
        if dz.abs() > clip && dz.signum() == self.outside_sign {
            self.outside_run += 1;
        } else {
            self.outside_run = u32::from(dz.abs() > clip);
            self.outside_sign = dz.signum();
        }
        if self.outside_run >= self.cfg.shift_samples && self.level.n >= 8 {
            self.level.spread = self.level.spread.max((self.fast - self.level.level).abs() / clip);
            self.level.level = self.fast;
            self.outside_run = 0;
        }
        self.level.update(value, self.a_level, self.a_spread, clip);

        self.n = self.n.saturating_add(1);
        if in_order {
            self.last_ts = Some(ts_ms);
        }
        self.last_value = value;

        // --- calibrate: short average of the surprise against its long-run distribution ---
        let w = self.cfg.short_window;
        self.short_sum += s_log - self.short[self.short_pos];
        self.short[self.short_pos] = s_log;
        self.short_pos = (self.short_pos + 1) % w;
        let filled = (self.n as usize).min(w);
        let short_mean = self.short_sum / filled as f64;
        let a = self.a_long.max(1.0 / f64::from(self.long_n + 1));
        let empirical = if self.cfg.empirical {
            // Empirical tail of the short-term surprise among the (decayed) past ones: the
            // current sample counts with half weight so a new maximum gets ~1/(2·N).
            let learn = self.n > self.cfg.warmup_samples;
            let tail = self.hist.tail(short_mean, learn, self.long_decay);
            Some((-tail.log10() / self.cfg.score_decades).clamp(0.0, 1.0))
        } else {
            None
        };
        let likelihood = if self.long_n >= 2 {
            let sd = self.long_var.sqrt().max(0.05 * self.long_mean.abs()).max(1e-6);
            1.0 - normal_sf((short_mean - self.long_mean) / sd)
        } else {
            0.5
        };
        if self.n > self.cfg.warmup_samples {
            let d = short_mean - self.long_mean;
            self.long_mean += a * d;
            self.long_var = (1.0 - a) * (self.long_var + a * d * d);
            self.long_n = self.long_n.saturating_add(1);
        }
        // Numenta's log-likelihood: 1 − 1e−10 maps to 1.
        let mut score =
            empirical.unwrap_or_else(|| ((1.000_000_000_1 - likelihood).ln() / (1e-10f64).ln()).clamp(0.0, 1.0));

        if self.cfg.slow_halflife > 0.0 {
            self.slow += self.a_slow.max(1.0 / f64::from(self.n)) * (s_log - self.slow);
            let learn = self.n > self.cfg.warmup_samples;
            let t = self.slow_hist.tail(self.slow, learn, self.long_decay);
            score = score.max((-t.log10() / self.cfg.score_decades).clamp(0.0, 1.0));
        }
        let mut calibrated = score;
        if self.cfg.hold_samples > 0 {
            let high = score >= self.cfg.hold_level && self.n > self.cfg.warmup_samples;
            if self.since_alarm < self.cfg.hold_samples {
                self.since_alarm = if high && self.cfg.hold_extend {
                    0
                } else {
                    self.since_alarm + 1
                };
                score = 0.0;
            } else if high {
                self.since_alarm = 0;
            }
        }
        // Rest period: a score no higher than the decaying peak of recent scores is damped.
        let peak = self.rest_peak;
        self.rest_peak = (self.rest_peak * self.rest_decay).max(score);
        if self.cfg.rest_halflife > 0.0 && score <= peak {
            score *= self.cfg.rest_damping;
        }

        let note = if self.n <= self.cfg.warmup_samples {
            score = 0.0;
            calibrated = 0.0;
            Some(ScoreNote::Warmup)
        } else if !in_order {
            Some(ScoreNote::OutOfOrder)
        } else {
            None
        };
        AnomalyScore {
            score,
            calibrated,
            surprise,
            expected_low: pred - self.cfg.range_spreads * scale,
            expected_high: pred + self.cfg.range_spreads * scale,
            observed: value,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn noise(i: u64) -> f64 {
        // Deterministic pseudo-noise in [-1, 1] (splitmix64), so the tests need no RNG crate.
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64 * 2.0 - 1.0
    }

    #[test]
    fn spike_scores_high_and_says_what_was_expected() {
        let mut d = SeriesDetector::default();
        let mut max_normal: f64 = 0.0;
        for i in 0..3000u64 {
            let a = d.update(i as i64 * 5 * MIN, 50.0 + noise(i));
            if i > 500 {
                max_normal = max_normal.max(a.score);
            }
        }
        let a = d.update(3000 * 5 * MIN, 80.0);
        assert!(a.score > 0.5, "spike score {}", a.score);
        assert!(a.score > max_normal, "{} vs normal {}", a.score, max_normal);
        assert!(
            a.expected_low < 50.0 && a.expected_high > 50.0 && a.expected_high < 60.0,
            "{a:?}"
        );
        assert_eq!(a.observed, 80.0);
        assert!(a.note.is_none());
    }

    #[test]
    fn a_second_spike_during_the_hold_scores_zero_but_keeps_its_calibrated_score() {
        // The hold on, with the long calibration memory it was searched with (a short one
        // learns three equal spikes as ordinary) and no rest damping: only the hold is seen.
        let mut d = SeriesDetector::new(SeriesConfig {
            hold_samples: 100,
            long_halflife: 3000.0,
            rest_halflife: 0.0,
            ..SeriesConfig::default()
        })
        .unwrap();
        for i in 0..3000u64 {
            d.update(i as i64 * MIN, 50.0 + noise(i));
        }
        let first = d.update(3000 * MIN, 80.0);
        assert!(first.score >= 0.5, "{first:?}");
        for i in 3001..3020u64 {
            d.update(i as i64 * MIN, 50.0 + noise(i));
        }
        let second = d.update(3020 * MIN, 80.0);
        assert_eq!(second.score, 0.0, "{second:?}");
        assert!(second.calibrated >= 0.5, "{second:?}");
        // After the hold a spike alarms again.
        for i in 3021..3200u64 {
            d.update(i as i64 * MIN, 50.0 + noise(i));
        }
        let third = d.update(3200 * MIN, 80.0);
        assert!(third.score >= 0.5, "{third:?}");
    }

    #[test]
    fn flat_line_that_moves_once_alarms_once_then_adapts() {
        let mut d = SeriesDetector::default();
        for i in 0..1000 {
            d.update(i * MIN, 10.0);
        }
        let first = d.update(1000 * MIN, 20.0);
        assert!(first.score > 0.5, "{first:?}");
        let mut last = first;
        for i in 1001..1200 {
            last = d.update(i * MIN, 20.0);
        }
        assert!(last.score < 0.1, "still alarming after the shift: {last:?}");
        assert!(last.expected_low <= 20.0 && last.expected_high >= 20.0, "{last:?}");
    }

    #[test]
    fn non_finite_samples_are_skipped_with_a_note() {
        let mut d = SeriesDetector::default();
        for i in 0..100 {
            d.update(i * MIN, 1.0 + 0.1 * noise(i as u64));
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let a = d.update(100 * MIN, v);
            assert_eq!(a.score, 0.0);
            assert_eq!(a.note, Some(ScoreNote::NotFinite));
        }
        let a = d.update(101 * MIN, 1.0);
        assert!(a.score.is_finite() && a.expected_low.is_finite() && a.expected_high.is_finite());
        // Huge and tiny values stay finite too.
        for (i, v) in [1e300, -1e300, 1e-300, 0.0].into_iter().enumerate() {
            let a = d.update((102 + i as i64) * MIN, v);
            assert!((0.0..=1.0).contains(&a.score), "{a:?}");
        }
    }

    #[test]
    fn daily_pattern_is_learned() {
        // A 5-minute series with a strong daily sine: after a week the peak of the day is
        // expected, and a flat stretch where the sine should be is not.
        let mut d = SeriesDetector::default();
        let day = 288u64;
        let v = |i: u64| 100.0 + 40.0 * ((i % day) as f64 / day as f64 * std::f64::consts::TAU).sin() + noise(i);
        let mut peak_scores = Vec::new();
        for i in 0..day * 10 {
            let a = d.update(i as i64 * 5 * MIN, v(i));
            if i > day * 7 {
                peak_scores.push(a.score);
            }
        }
        let normal_max = peak_scores.iter().copied().fold(0.0, f64::max);
        let mut flat_max: f64 = 0.0;
        for i in day * 10..day * 10 + 72 {
            flat_max = flat_max.max(d.update(i as i64 * 5 * MIN, 100.0).score);
        }
        assert!(flat_max > normal_max, "flat {flat_max} vs normal {normal_max}");
    }

    #[test]
    fn weekly_profile_learns_the_weekend() {
        // Busy on weekdays (~100), quiet at weekends (~20), 15-minute samples, 4 weeks.
        // Day 0 of the epoch was a Thursday, so days 2 and 3 of each week are the weekend.
        const STEP: i64 = 15 * MIN;
        let weekend = |ts: i64| matches!((ts / DAY_MS).rem_euclid(7), 2 | 3);
        let level = |ts: i64| if weekend(ts) { 20.0 } else { 100.0 };
        let run = |weekly_bins: usize| {
            let mut d = SeriesDetector::new(SeriesConfig {
                weekly_bins,
                ..SeriesConfig::default()
            })
            .unwrap();
            let mut i = 0u64;
            let mut ts = 0;
            while ts < 28 * DAY_MS {
                d.update(ts, level(ts) + 2.0 * noise(i));
                i += 1;
                ts += STEP;
            }
            // Week 5: a normal Saturday, then a Saturday at weekday load.
            let sat = 30 * DAY_MS + 12 * 3_600_000;
            assert!(weekend(sat));
            let normal = d.update(sat, 20.0);
            let busy = d.update(sat + STEP, 100.0);
            (normal, busy)
        };
        let (normal, busy) = run(168);
        assert!(
            normal.expected_low <= 20.0 && normal.expected_high >= 20.0,
            "{normal:?}"
        );
        assert!(normal.calibrated < 0.3, "{normal:?}");
        assert!(busy.calibrated >= 0.5, "{busy:?}");
        // Without the weekly profile the weekend is judged against the level or the daily
        // profile, which have not learned it.
        let (normal_no_weekly, _) = run(0);
        assert!(
            !(normal_no_weekly.expected_low <= 20.0 && normal_no_weekly.expected_high >= 20.0)
                || normal_no_weekly.calibrated > normal.calibrated,
            "{normal_no_weekly:?}"
        );
    }

    #[test]
    fn memory_is_bounded_and_config_is_checked() {
        let mut d = SeriesDetector::default();
        let before = d.memory_bytes();
        for i in 0..20_000 {
            d.update(i * MIN, noise(i as u64));
        }
        assert_eq!(d.memory_bytes(), before);
        assert!(before < 8192, "{before} bytes");
        let bad = SeriesConfig {
            level_halflife: f64::NAN,
            ..SeriesConfig::default()
        };
        assert!(SeriesDetector::new(bad).is_err());
        let bad = SeriesConfig {
            short_window: 0,
            ..SeriesConfig::default()
        };
        assert!(matches!(SeriesDetector::new(bad), Err(ConfigError::ShortWindow(0))));
        assert!(SeriesDetector::new(SeriesConfig::default()).is_ok());
    }
}
