//! The compiled security policy: wildcard patterns, business hours and the driver floor,
//! validated once from [`SecurityConfig`] so that rules only ask yes/no questions.

use crate::config::{NodeBaseline, SecurityConfig};
use crate::error::SecurityError;
use gpuwarden_model::{TimestampMs, Workload};
use std::collections::BTreeMap;

/// A name pattern: exact, or with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: &str) -> Pattern {
        Pattern(p.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wildcard match (`*` = any run of characters, including none).
    pub fn matches(&self, s: &str) -> bool {
        wildcard(self.0.as_bytes(), s.as_bytes())
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    // Iterative glob with backtracking to the last star: linear in practice, no recursion.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn any(patterns: &[Pattern], s: &str) -> bool {
    patterns.iter().any(|p| p.matches(s))
}

/// A weekly window of local time, e.g. Monday to Friday 07:00–20:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Days the window starts on, Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight.
    pub from_min: u32,
    pub to_min: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Parses `"mon-fri 07:00-20:00"`, `"sat,sun 10:00-14:00"`, `"daily 22:00-06:00"`
    /// (a window ending before it starts runs past midnight).
    pub fn parse(s: &str) -> Result<Window, String> {
        let (days_s, time_s) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("'{s}': expected DAYS HH:MM-HH:MM, e.g. \"mon-fri 07:00-20:00\""))?;
        let mut days = [false; 7];
        let day = |d: &str| {
            DAYS.iter()
                .position(|x| *x == d)
                .ok_or_else(|| format!("'{d}' is not a day (mon..sun)"))
        };
        for part in days_s.to_ascii_lowercase().split(',') {
            match part {
                "daily" | "all" => days = [true; 7],
                _ => match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        let mut d = a;
                        loop {
                            days[d] = true;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days[day(part)?] = true,
                },
            }
        }
        let (from, to) = time_s
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("'{time_s}': expected HH:MM-HH:MM"))?;
        let hm = |t: &str| -> Result<u32, String> {
            let (h, m) = t.split_once(':').ok_or_else(|| format!("'{t}' is not HH:MM"))?;
            let (h, m): (u32, u32) = (
                h.parse().map_err(|_| format!("'{t}' is not HH:MM"))?,
                m.parse().map_err(|_| format!("'{t}' is not HH:MM"))?,
            );
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(format!("'{t}' is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        Ok(Window {
            days,
            from_min: hm(from)?,
            to_min: hm(to)?,
        })
    }

    /// Whether local (weekday, minute of day) falls in the window.
    fn contains(&self, weekday: usize, minute: u32) -> bool {
        if self.from_min <= self.to_min {
            self.days[weekday] && minute >= self.from_min && minute < self.to_min
        } else {
            // Overnight: from the start day's evening into the next morning.
            (self.days[weekday] && minute >= self.from_min) || (self.days[(weekday + 6) % 7] && minute < self.to_min)
        }
    }
}

/// Local weekday (0 = Monday) and minute of the day of a UTC timestamp.
pub fn local_time(ts_ms: TimestampMs, utc_offset_minutes: i32) -> (usize, u32) {
    let local_min = ts_ms.div_euclid(60_000) + utc_offset_minutes as i64;
    let day = local_min.div_euclid(1440);
    // 1970-01-01 was a Thursday (index 3 when Monday is 0).
    let weekday = (day + 3).rem_euclid(7) as usize;
    (weekday, local_min.rem_euclid(1440) as u32)
}

/// Parses a dotted numeric version (`550.90.07`) into its components.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = v.trim().split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

/// Whether the workload is attributed to a namespace / account the policy approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// No workload labels at all.
    Unattributed,
    /// Attributed, and every policy that applies approves it.
    Approved,
    /// Attributed to a namespace or account the policy does not approve.
    Unapproved,
    /// Attributed, but no policy applies (e.g. an HPC job without account label).
    NoPolicy,
}

impl Approval {
    pub const fn as_str(self) -> &'static str {
        match self {
            Approval::Unattributed => "unattributed",
            Approval::Approved => "approved",
            Approval::Unapproved => "unapproved",
            Approval::NoPolicy => "no_policy",
        }
    }
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    pub approved_namespaces: Vec<Pattern>,
    pub approved_accounts: Vec<Pattern>,
    pub business_hours: Vec<Window>,
    pub utc_offset_minutes: i32,
    pub hours_restricted_namespaces: Vec<Pattern>,
    allow_pods: Vec<(Pattern, Pattern)>,
    allow_jobs: Vec<Pattern>,
    pub attribution_expected: bool,
    pub min_driver: Option<(String, Vec<u64>)>,
    pub baseline: BTreeMap<String, NodeBaseline>,
}

impl Policy {
    pub fn from_config(c: &SecurityConfig) -> Result<Policy, SecurityError> {
        let bad = |key: &str, problem: String| SecurityError::InvalidValue {
            key: key.to_string(),
            problem,
        };
        let pats = |v: &[String]| v.iter().map(|p| Pattern::new(p)).collect::<Vec<_>>();
        let business_hours = c
            .business_hours
            .iter()
            .map(|w| Window::parse(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("business_hours", e))?;
        if !(-14 * 60..=14 * 60).contains(&c.utc_offset_minutes) {
            return Err(bad("utc_offset_minutes", "must be within ±840".into()));
        }
        let mut allow_pods = Vec::new();
        let mut allow_jobs = Vec::new();
        for a in &c.allowlist {
            if let Some(job) = a.strip_prefix("job:") {
                allow_jobs.push(Pattern::new(job));
            } else if let Some((ns, pod)) = a.split_once('/') {
                allow_pods.push((Pattern::new(ns), Pattern::new(pod)));
            } else {
                return Err(bad(
                    "allowlist",
                    format!("'{a}': expected \"namespace/pod\" or \"job:ID\" (wildcards allowed)"),
                ));
            }
        }
        let min_driver = match &c.min_driver_version {
            Some(v) => Some((
                v.clone(),
                parse_version(v).ok_or_else(|| bad("min_driver_version", format!("'{v}' is not a dotted version")))?,
            )),
            None => None,
        };
        for (node, b) in &c.baseline {
            if let Some(w) = b.power_limit_w {
                if !(w.is_finite() && w > 0.0) {
                    return Err(bad(
                        &format!("baseline.\"{node}\".power_limit_w"),
                        "must be a positive number".into(),
                    ));
                }
            }
        }
        Ok(Policy {
            enabled: c.enabled,
            approved_namespaces: pats(&c.approved_namespaces),
            approved_accounts: pats(&c.approved_accounts),
            business_hours,
            utc_offset_minutes: c.utc_offset_minutes,
            hours_restricted_namespaces: pats(&c.hours_restricted_namespaces),
            allow_pods,
            allow_jobs,
            attribution_expected: c.attribution_expected,
            min_driver,
            baseline: c.baseline.clone(),
        })
    }

    /// Whether `ts_ms` falls outside every business-hours window. No windows configured:
    /// never off-hours (the hour-based rules then stay quiet).
    pub fn off_hours(&self, ts_ms: TimestampMs) -> bool {
        if self.business_hours.is_empty() {
            return false;
        }
        let (d, m) = local_time(ts_ms, self.utc_offset_minutes);
        !self.business_hours.iter().any(|w| w.contains(d, m))
    }

    /// Whether the workload is on the allowlist.
    pub fn allowlisted(&self, w: &Workload) -> bool {
        let pod_ok = match (&w.namespace, &w.pod) {
            (Some(ns), Some(pod)) => self.allow_pods.iter().any(|(n, p)| n.matches(ns) && p.matches(pod)),
            _ => false,
        };
        let job_ok = w.job.as_deref().is_some_and(|j| any(&self.allow_jobs, j));
        pod_ok || job_ok
    }

    /// Whether the workload's namespace or account is approved. `account` is the
    /// `account` / `slurm_account` label when the exporter attaches one.
    pub fn approval(&self, w: &Workload, account: Option<&str>) -> Approval {
        if w.is_empty() {
            return Approval::Unattributed;
        }
        let mut policy_applied = false;
        if let Some(ns) = &w.namespace {
            if !self.approved_namespaces.is_empty() {
                policy_applied = true;
                if !any(&self.approved_namespaces, ns) {
                    return Approval::Unapproved;
                }
            }
        }
        if let Some(acct) = account {
            if !self.approved_accounts.is_empty() {
                policy_applied = true;
                if !any(&self.approved_accounts, acct) {
                    return Approval::Unapproved;
                }
            }
        }
        if policy_applied {
            Approval::Approved
        } else {
            Approval::NoPolicy
        }
    }

    /// Whether the namespace may use GPUs only during business hours.
    pub fn hours_restricted(&self, namespace: &str) -> bool {
        any(&self.hours_restricted_namespaces, namespace)
    }

    /// The configured baseline of a node: its own entry, else `"*"`.
    pub fn baseline_for(&self, node: &str) -> Option<&NodeBaseline> {
        self.baseline.get(node).or_else(|| self.baseline.get("*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_globs() {
        assert!(Pattern::new("team-*").matches("team-a"));
        assert!(Pattern::new("*-dev").matches("personal-dev"));
        assert!(Pattern::new("a*b*c").matches("axxbyyc"));
        assert!(!Pattern::new("a*b*c").matches("axxbyy"));
        assert!(Pattern::new("inference").matches("inference"));
        assert!(!Pattern::new("inference").matches("inference-2"));
        assert!(Pattern::new("*").matches(""));
    }

    #[test]
    fn business_hours_follow_local_weekday_and_time() {
        let w = Window::parse("mon-fri 07:00-20:00").unwrap();
        let p = Policy {
            business_hours: vec![w],
            ..Policy::from_config(&SecurityConfig::default()).unwrap()
        };
        // 2025-01-01 (a Wednesday) 00:00 UTC.
        let wed = 1_735_689_600_000;
        assert_eq!(local_time(wed, 0), (2, 0));
        assert!(p.off_hours(wed + 3 * 3_600_000));
        assert!(!p.off_hours(wed + 12 * 3_600_000));
        // Saturday noon.
        assert!(p.off_hours(wed + (3 * 24 + 12) * 3_600_000));
        let night = Window::parse("daily 22:00-06:00").unwrap();
        assert!(night.contains(0, 23 * 60) && night.contains(1, 60) && !night.contains(1, 12 * 60));
        assert!(Window::parse("weekdays 7-8").is_err());
        assert!(Window::parse("mon 25:00-26:00").is_err());
    }

    #[test]
    fn approval_needs_a_policy_and_labels() {
        let c = SecurityConfig {
            approved_namespaces: vec!["ml-*".into(), "inference".into()],
            allowlist: vec!["ml-training/membench-*".into(), "job:42*".into()],
            ..SecurityConfig::default()
        };
        let p = Policy::from_config(&c).unwrap();
        let w = |ns: &str, pod: &str| Workload {
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            ..Workload::default()
        };
        assert_eq!(p.approval(&w("ml-training", "x"), None), Approval::Approved);
        assert_eq!(p.approval(&w("crypto-free", "x"), None), Approval::Unapproved);
        assert_eq!(p.approval(&Workload::default(), None), Approval::Unattributed);
        let job = Workload {
            job: Some("4211".into()),
            ..Workload::default()
        };
        assert_eq!(p.approval(&job, None), Approval::NoPolicy);
        assert!(p.allowlisted(&job));
        assert!(p.allowlisted(&w("ml-training", "membench-1")));
        assert!(!p.allowlisted(&w("ml-training", "train-1")));
        assert!(Policy::from_config(&SecurityConfig {
            allowlist: vec!["nopod".into()],
            ..SecurityConfig::default()
        })
        .is_err());
    }

    #[test]
    fn versions_parse_and_compare_numerically() {
        assert!(parse_version("535.54.03").unwrap() < parse_version("550.90.07").unwrap());
        assert!(parse_version("550.100.1").unwrap() > parse_version("550.90.07").unwrap());
        assert_eq!(parse_version("abc"), None);
    }
}
