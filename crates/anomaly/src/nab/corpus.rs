//! Reading a NAB checkout: series (`data/**.csv`), labelled windows
//! (`labels/combined_windows.json`), profiles, and published per-row results of other
//! detectors (`results/<detector>/<category>/<detector>_<file>.csv`).
//!
//! This is the only module of the crate that touches the file system; the parsers it uses
//! take text so they are testable without the corpus.

use super::profile::Profile;
use super::sweep::FileRows;
use super::time::parse_timestamp_ms;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What can go wrong reading a NAB directory.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{root}: no labels/combined_windows.json — a corpus needs its labelled anomaly windows \
         (NAB layout: data/<category>/<file>.csv and labels/combined_windows.json mapping \
         \"<category>/<file>.csv\" to [[start, end], …]; [] for a file without anomalies)"
    )]
    NoLabels { root: PathBuf },
    #[error(
        "{root}: {count} data file(s) have no entry in labels/combined_windows.json, e.g. {examples}; \
         add them (with [] when they hold no anomaly) or remove them — scoring without their \
         labels would count every detection in them as false"
    )]
    Unlabelled {
        root: PathBuf,
        count: usize,
        examples: String,
    },
    #[error("{path}: {rows} scores for a series of {expected} rows")]
    Length {
        path: PathBuf,
        rows: usize,
        expected: usize,
    },
}

/// `results/final_results.json`: detector → profile → normalised score.
pub type PublishedResults = BTreeMap<String, BTreeMap<String, f64>>;

/// An inclusive labelled anomaly window, in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One NAB series with its windows. `name` is NAB's key, e.g. `realKnownCause/nyc_taxi.csv`.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    pub windows: Vec<Window>,
}

/// A loaded NAB corpus: every labelled series, in the order of the label file's keys.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub root: PathBuf,
    pub series: Vec<Series>,
    pub profiles: Vec<Profile>,
}

fn read(path: &Path) -> Result<String, NabError> {
    std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the label file: `{ "cat/file.csv": [["start", "end"], …], … }`.
pub fn parse_windows_json(text: &str, path: &Path) -> Result<BTreeMap<String, Vec<Window>>, NabError> {
    let raw: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(text).map_err(|source| NabError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    raw.into_iter()
        .map(|(name, ws)| {
            let windows = ws
                .iter()
                .map(|(a, b)| match (parse_timestamp_ms(a), parse_timestamp_ms(b)) {
                    (Some(start_ms), Some(end_ms)) => Ok(Window { start_ms, end_ms }),
                    _ => Err(NabError::Parse {
                        path: path.to_path_buf(),
                        line: 0,
                        message: format!("bad window [{a}, {b}] for {name}"),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name, windows))
        })
        .collect()
}

/// Reads the named columns of a simple comma-separated file (NAB's files have no quoting).
/// Returns one `Vec<String>` per requested column.
pub fn parse_columns(text: &str, columns: &[&str], path: &Path) -> Result<Vec<Vec<String>>, NabError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| NabError::Parse {
        path: path.to_path_buf(),
        line: 1,
        message: "empty file".into(),
    })?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let idx = columns
        .iter()
        .map(|c| {
            names.iter().position(|n| n == c).ok_or_else(|| NabError::Parse {
                path: path.to_path_buf(),
                line: 1,
                message: format!("no column {c:?} in header {header:?}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![Vec::new(); columns.len()];
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        for (o, &i) in out.iter_mut().zip(&idx) {
            let f = fields.get(i).ok_or_else(|| NabError::Parse {
                path: path.to_path_buf(),
                line: n + 2,
                message: format!("missing field {i}"),
            })?;
            o.push(f.trim().to_string());
        }
    }
    Ok(out)
}

fn parse_f64(s: &str, path: &Path, line: usize) -> Result<f64, NabError> {
    s.parse::<f64>().map_err(|_| NabError::Parse {
        path: path.to_path_buf(),
        line,
        message: format!("not a number: {s:?}"),
    })
}

/// Parses a NAB series file (`timestamp,value`).
pub fn parse_series_csv(text: &str, path: &Path) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let cols = parse_columns(text, &["timestamp", "value"], path)?;
    let mut ts = Vec::with_capacity(cols[0].len());
    let mut vs = Vec::with_capacity(cols[0].len());
    for (i, (t, v)) in cols[0].iter().zip(&cols[1]).enumerate() {
        ts.push(parse_timestamp_ms(t).ok_or_else(|| NabError::Parse {
            path: path.to_path_buf(),
            line: i + 2,
            message: format!("bad timestamp {t:?}"),
        })?);
        vs.push(parse_f64(v, path, i + 2)?);
    }
    Ok((ts, vs))
}

/// Every `*.csv` under `data`, as NAB names them (`<category>/<file>.csv`, `/`-separated).
fn data_files(data: &Path) -> Result<Vec<String>, NabError> {
    let mut out = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // A corpus without data/ fails below, naming the first labelled file it misses.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(NabError::Io { path: dir, source }),
        };
        for entry in entries {
            let path = entry
                .map_err(|source| NabError::Io {
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "csv") {
                if let Ok(rel) = path.strip_prefix(data) {
                    let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect();
                    out.push(parts.join("/"));
                }
            }
        }
    }
    Ok(out)
}

impl Corpus {
    /// Loads every series named in `labels/combined_windows.json` under `root`, and the
    /// profiles from `config/profiles.json` (NAB's built-in values when that file is absent).
    pub fn load(root: impl AsRef<Path>) -> Result<Self, NabError> {
        let root = root.as_ref().to_path_buf();
        let labels_path = root.join("labels/combined_windows.json");
        if !labels_path.is_file() {
            return Err(NabError::NoLabels { root });
        }
        let labels = parse_windows_json(&read(&labels_path)?, &labels_path)?;
        let mut unlabelled: Vec<String> = data_files(&root.join("data"))?
            .into_iter()
            .filter(|name| !labels.contains_key(name))
            .collect();
        if !unlabelled.is_empty() {
            unlabelled.sort();
            let examples = unlabelled.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            return Err(NabError::Unlabelled {
                root,
                count: unlabelled.len(),
                examples,
            });
        }
        let profiles_path = root.join("config/profiles.json");
        let profiles = if profiles_path.exists() {
            Profile::parse_profiles_json(&read(&profiles_path)?).map_err(|source| NabError::Json {
                path: profiles_path.clone(),
                source,
            })?
        } else {
            Profile::nab_defaults()
        };
        let mut series = Vec::with_capacity(labels.len());
        for (name, windows) in labels {
            let path = root.join("data").join(&name);
            let (timestamps, values) = parse_series_csv(&read(&path)?, &path)?;
            series.push(Series {
                name,
                timestamps,
                values,
                windows,
            });
        }
        Ok(Self { root, series, profiles })
    }

    /// Row classes and weights of every series, for the scorer.
    pub fn file_rows(&self) -> Vec<FileRows> {
        self.series
            .iter()
            .map(|s| FileRows::new(&s.name, &s.timestamps, &s.windows))
            .collect()
    }

    /// The published per-row `anomaly_score` of a detector (`results/<detector>/…`), one
    /// vector per series in corpus order.
    pub fn published_scores(&self, detector: &str) -> Result<Vec<Vec<f64>>, NabError> {
        self.series
            .iter()
            .map(|s| {
                let (category, file) = s.name.split_once('/').unwrap_or(("", &s.name));
                let path = self
                    .root
                    .join("results")
                    .join(detector)
                    .join(category)
                    .join(format!("{detector}_{file}"));
                let cols = parse_columns(&read(&path)?, &["anomaly_score"], &path)?;
                let scores = cols[0]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| parse_f64(v, &path, i + 2))
                    .collect::<Result<Vec<_>, _>>()?;
                if scores.len() != s.values.len() {
                    return Err(NabError::Length {
                        path,
                        rows: scores.len(),
                        expected: s.values.len(),
                    });
                }
                Ok(scores)
            })
            .collect()
    }

    /// The threshold NAB used for a detector and profile: the `Threshold` column of
    /// `results/<detector>/<detector>_<profile>_scores.csv` (preferred over
    /// `config/thresholds.json`, which is stale for some detectors).
    pub fn published_threshold(&self, detector: &str, profile: &str) -> Result<f64, NabError> {
        let path = self
            .root
            .join("results")
            .join(detector)
            .join(format!("{detector}_{profile}_scores.csv"));
        let cols = parse_columns(&read(&path)?, &["Threshold"], &path)?;
        let first = cols[0].iter().find(|t| !t.is_empty()).ok_or_else(|| NabError::Parse {
            path: path.clone(),
            line: 2,
            message: "no threshold".into(),
        })?;
        parse_f64(first, &path, 2)
    }

    /// `results/final_results.json`: detector → profile → normalised score; `None` when
    /// the corpus has no such file (corpora other than NAB), an error when it is there but
    /// unreadable or malformed.
    pub fn published_final_results(&self) -> Result<Option<PublishedResults>, NabError> {
        let path = self.root.join("results/final_results.json");
        if !path.exists() {
            return Ok(None);
        }
        serde_json::from_str(&read(&path)?)
            .map(Some)
            .map_err(|source| NabError::Json { path, source })
    }

    /// Labelled windows in the corpus.
    pub fn windows(&self) -> usize {
        self.series.iter().map(|s| s.windows.len()).sum()
    }

    /// Splits the series into two halves for the held-out protocol: within each category
    /// (the part of the name before `/`), in name order, alternately to the first and the
    /// second half — so both halves hold every kind of series, and the split does not
    /// depend on scores. Returns the indices of each half.
    pub fn halves(&self) -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..self.series.len()).collect();
        order.sort_by(|&a, &b| self.series[a].name.cmp(&self.series[b].name));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut last_category = None;
        let mut nth = 0usize;
        for i in order {
            let category = self.series[i].name.split_once('/').map(|(c, _)| c.to_string());
            if category != last_category {
                last_category = category;
                nth = 0;
            }
            if nth.is_multiple_of(2) {
                a.push(i)
            } else {
                b.push(i)
            }
            nth += 1;
        }
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_and_windows() {
        let p = Path::new("x.csv");
        let (ts, vs) =
            parse_series_csv("timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,2\n", p).unwrap();
        assert_eq!(ts[1] - ts[0], 300_000);
        assert_eq!(vs, vec![1.5, 2.0]);
        let w = parse_windows_json(
            r#"{"a/b.csv": [["2014-01-01 00:00:00.000000", "2014-01-01 00:05:00.000000"]], "c/d.csv": []}"#,
            p,
        )
        .unwrap();
        assert_eq!(
            w["a/b.csv"],
            vec![Window {
                start_ms: ts[0],
                end_ms: ts[1]
            }]
        );
        assert!(w["c/d.csv"].is_empty());
        assert!(parse_series_csv("timestamp,value\nbad,1\n", p).is_err());
        assert!(parse_series_csv("time,value\n", p).is_err());
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const SERIES: &str = "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,2\n";

    #[test]
    fn a_corpus_without_labels_is_refused_with_the_layout_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/a/x.csv", SERIES);
        let e = Corpus::load(dir.path()).unwrap_err();
        assert!(matches!(e, NabError::NoLabels { .. }), "{e}");
        assert!(e.to_string().contains("labels/combined_windows.json"));
    }

    #[test]
    fn data_files_missing_from_the_labels_are_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/a/x.csv", SERIES);
        write(dir.path(), "data/a/y.csv", SERIES);
        write(dir.path(), "labels/combined_windows.json", r#"{"a/x.csv": []}"#);
        let e = Corpus::load(dir.path()).unwrap_err();
        assert!(matches!(e, NabError::Unlabelled { count: 1, .. }), "{e}");
        assert!(e.to_string().contains("a/y.csv"), "{e}");
        // Labelled, it loads; a corpus without published results says so (None).
        write(
            dir.path(),
            "labels/combined_windows.json",
            r#"{"a/x.csv": [], "a/y.csv": []}"#,
        );
        let c = Corpus::load(dir.path()).unwrap();
        assert_eq!(c.series.len(), 2);
        assert!(c.published_final_results().unwrap().is_none());
        write(dir.path(), "results/final_results.json", "{not json");
        assert!(
            c.published_final_results().is_err(),
            "a malformed file is an error, not an empty table"
        );
    }

    #[test]
    fn halves_alternate_within_each_category() {
        let s = |name: &str| Series {
            name: name.into(),
            timestamps: vec![],
            values: vec![],
            windows: vec![],
        };
        let c = Corpus {
            root: PathBuf::new(),
            series: vec![s("b/2.csv"), s("a/1.csv"), s("b/1.csv"), s("a/2.csv"), s("a/3.csv")],
            profiles: Profile::nab_defaults(),
        };
        let (a, b) = c.halves();
        let names = |ix: &[usize]| ix.iter().map(|&i| c.series[i].name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), ["a/1.csv", "a/3.csv", "b/1.csv"]);
        assert_eq!(names(&b), ["a/2.csv", "b/2.csv"]);
    }
}
