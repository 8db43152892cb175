//! ArcSight Common Event Format (CEF) rev. 25 for a [`Notification`]:
//!
//! `CEF:0|gpuwarden|gpuwarden|VERSION|RULE|NAME|SEVERITY|EXTENSIONS`
//!
//! Header fields escape `\` and `|`; extension values escape `\` and `=` and encode
//! line breaks as `\n` / `\r` (CEF's rules). Severity is CEF's 0–10 scale: info 3,
//! warning 5, critical 8, fatal 10. Extensions used (all from the CEF dictionary):
//! `rt` (transition time, ms), `start`/`end`, `dhost` (the node), `externalId` (the
//! incident), `act` (recommended action), `msg`, `cat` (finding kind), `outcome`
//! (firing/acknowledged/resolved), `cn1` (transition sequence) and `cs1`–`cs5` with their
//! labels (gpu, deliveryKey, namespace, transition, mitreTechnique). An audit record
//! (labels `user.name`, `source.address`, `audit.target`, `event.outcome`) adds `suser`,
//! `src`/`spt` (or `shost`), `request`, and its `outcome` (success/failure).

use crate::message::Notification;
use gpuwarden_model::Severity;

pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 3,
        Severity::Warning => 5,
        Severity::Critical => 8,
        Severity::Fatal => 10,
    }
}

/// Escapes a header field (`\` and `|`; a line break would end the record, so it
/// becomes a space).
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an extension value (`\`, `=`, line breaks).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The CEF record of `n`.
pub fn format(n: &Notification) -> String {
    let name = format!("{} {}: {}", n.rule, n.transition.as_str(), n.summary);
    let mut ext: Vec<(&str, String)> = vec![("rt", n.ts_ms.to_string()), ("start", n.started_ms.to_string())];
    if let Some(end) = n.ended_ms {
        ext.push(("end", end.to_string()));
    }
    ext.push(("dhost", n.node.clone()));
    ext.push(("externalId", n.incident.clone()));
    ext.push(("act", n.action.as_str().to_string()));
    ext.push(("msg", n.summary.clone()));
    ext.push(("cat", format!("{:?}", n.kind).to_lowercase()));
    // An audit record (see `[audit] forward`) says who did it from where, and whether
    // it succeeded, in the CEF dictionary's own fields.
    let outcome = n
        .labels
        .get("event.outcome")
        .cloned()
        .unwrap_or_else(|| n.status.as_str().to_string());
    ext.push(("outcome", outcome));
    if let Some(u) = n.labels.get("user.name") {
        ext.push(("suser", u.clone()));
    }
    if let Some(a) = n.labels.get("source.address") {
        match a.parse::<std::net::SocketAddr>() {
            Ok(sa) => {
                ext.push(("src", sa.ip().to_string()));
                ext.push(("spt", sa.port().to_string()));
            }
            Err(_) => ext.push(("shost", a.clone())),
        }
    }
    if let Some(t) = n.labels.get("audit.target") {
        ext.push(("request", t.clone()));
    }
    ext.push(("cn1Label", "seq".into()));
    ext.push(("cn1", n.seq.to_string()));
    if let Some(g) = &n.gpu {
        ext.push(("cs1Label", "gpu".into()));
        ext.push(("cs1", g.clone()));
    }
    ext.push(("cs2Label", "deliveryKey".into()));
    ext.push(("cs2", n.delivery_key.clone()));
    if let Some(ns) = &n.namespace {
        ext.push(("cs3Label", "namespace".into()));
        ext.push(("cs3", ns.clone()));
    }
    ext.push(("cs4Label", "transition".into()));
    ext.push(("cs4", n.transition.as_str().to_string()));
    if let Some(t) = n
        .labels
        .get("threat.technique.id")
        .or_else(|| n.labels.get("mitre.technique"))
    {
        ext.push(("cs5Label", "mitreTechnique".into()));
        ext.push(("cs5", t.clone()));
    }
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", escape_value(&v)))
        .collect();
    format!(
        "CEF:0|gpuwarden|gpuwarden|{}|{}|{}|{}|{}",
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(&n.rule),
        escape_header(&name),
        severity(n.severity),
        ext.join(" ")
    )
}

/// A parsed record: the 7 header fields and the extensions, unescaped.
pub type Parsed = (Vec<String>, Vec<(String, String)>);

/// Parses a CEF record back into its 7 header fields and its extensions (unescaped).
/// For tests and for checking what a collector wrote.
pub fn parse(record: &str) -> Option<Parsed> {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = record.chars();
    while header.len() < 7 {
        let c = chars.next()?;
        match c {
            '\\' => cur.push(chars.next()?),
            '|' => header.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let rest: String = chars.collect();
    // Extensions: key=value pairs; a key starts after a space and runs to an unescaped '='.
    let mut ext = Vec::new();
    let mut key: Option<String> = None;
    let mut val = String::new();
    let mut token = String::new();
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next()? {
                'n' => token.push('\n'),
                'r' => token.push('\r'),
                o => token.push(o),
            },
            '=' => {
                // `token` holds "previous value words... newkey".
                let (prev, newkey) = match token.rfind(' ') {
                    Some(i) => (token[..i].to_string(), token[i + 1..].to_string()),
                    None => (String::new(), token.clone()),
                };
                if let Some(k) = key.take() {
                    val.push_str(&prev);
                    ext.push((k, std::mem::take(&mut val)));
                }
                key = Some(newkey);
                token.clear();
            }
            c => token.push(c),
        }
    }
    if let Some(k) = key {
        val.push_str(&token);
        ext.push((k, val));
    }
    Some((header, ext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;
    use crate::message::Transition;

    #[test]
    fn escaping_round_trips_through_the_parser() {
        let mut n = sample(Transition::Opened);
        n.summary = "a|b \\ c=d\nnext line".into();
        n.rule = "weird|rule\\x".into();
        let rec = format(&n);
        assert!(rec.contains("weird\\|rule\\\\x"), "{rec}");
        assert!(rec.contains("msg=a|b \\\\ c\\=d\\nnext line"), "{rec}");
        let (h, ext) = parse(&rec).unwrap();
        assert_eq!(h[0], "CEF:0");
        assert_eq!(h[1], "gpuwarden");
        assert_eq!(h[4], "weird|rule\\x");
        assert_eq!(h[6], "8");
        let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("msg").as_deref(), Some("a|b \\ c=d\nnext line"));
        assert_eq!(get("dhost").as_deref(), Some("node-a"));
        assert_eq!(get("cs1").as_deref(), Some("GPU-1"));
        assert_eq!(get("cs2").as_deref(), Some("inc-000007#1"));
    }

    #[test]
    fn audit_records_name_the_user_source_and_outcome() {
        let mut n = sample(Transition::Detected);
        for (k, v) in [
            ("user.name", "tok-01"),
            ("source.address", "192.0.2.7:40000"),
            ("audit.target", "POST /api/v1/silences"),
            ("event.outcome", "failure"),
        ] {
            n.labels.insert(k.into(), v.into());
        }
        let (_, ext) = parse(&format(&n)).unwrap();
        let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("suser").as_deref(), Some("tok-01"));
        assert_eq!(get("src").as_deref(), Some("192.0.2.7"));
        assert_eq!(get("spt").as_deref(), Some("40000"));
        assert_eq!(get("request").as_deref(), Some("POST /api/v1/silences"));
        assert_eq!(get("outcome").as_deref(), Some("failure"));
        // Incidents keep their status as the outcome.
        let (_, ext) = parse(&format(&sample(Transition::Opened))).unwrap();
        assert!(ext.iter().any(|(k, v)| k == "outcome" && v == "firing"));
        assert!(!ext.iter().any(|(k, _)| k == "suser"));
    }
}
