//! Routing: which sinks a notification goes to. Routes are tried in order like
//! Alertmanager's: the first that matches takes the notification, unless it says
//! `continue = true`, in which case the next matching routes add their sinks too.
//! Without any route, every sink gets everything.

use crate::matcher::Matchers;
use crate::message::Notification;
use serde::Deserialize;

/// One route of `[[notify.routes]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// What this route takes (empty: everything).
    #[serde(default, rename = "match")]
    pub matchers: Matchers,
    /// Names of the sinks (`[notify.sinks.NAME]`) it delivers to.
    pub sinks: Vec<String>,
    /// Keep trying the routes after this one when it matched (default false).
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

/// The routes, checked against the configured sinks.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteConfig>,
    all_sinks: Vec<String>,
}

impl Router {
    pub fn new(routes: Vec<RouteConfig>, all_sinks: Vec<String>) -> Self {
        Router { routes, all_sinks }
    }

    /// The sinks for `n`, each once, in the order first named.
    pub fn sinks_for(&self, n: &Notification) -> Vec<String> {
        if self.routes.is_empty() {
            return self.all_sinks.clone();
        }
        let mut out: Vec<String> = Vec::new();
        for r in &self.routes {
            if !r.matchers.matches(n) {
                continue;
            }
            for s in &r.sinks {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            if !r.continue_matching {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;
    use crate::message::Transition;
    use gpuwarden_model::Severity;

    fn route(m: Matchers, sinks: &[&str], cont: bool) -> RouteConfig {
        RouteConfig {
            matchers: m,
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
            continue_matching: cont,
        }
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let n = sample(Transition::Opened);
        let critical = Matchers {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        };
        let all = Matchers::default();
        let r = Router::new(
            vec![
                route(critical.clone(), &["pager"], false),
                route(all.clone(), &["chat"], false),
            ],
            vec![],
        );
        assert_eq!(r.sinks_for(&n), vec!["pager"]);
        let r = Router::new(
            vec![
                route(critical, &["pager", "siem"], true),
                route(all, &["siem", "chat"], false),
            ],
            vec![],
        );
        assert_eq!(r.sinks_for(&n), vec!["pager", "siem", "chat"]);
    }

    #[test]
    fn no_routes_means_every_sink_and_no_match_means_none() {
        let n = sample(Transition::Opened);
        let r = Router::new(vec![], vec!["a".into(), "b".into()]);
        assert_eq!(r.sinks_for(&n), vec!["a", "b"]);
        let only_xid = Matchers {
            rules: vec!["xid.*".into()],
            ..Default::default()
        };
        let r = Router::new(vec![route(only_xid, &["a"], false)], vec!["a".into()]);
        assert!(r.sinks_for(&n).is_empty());
    }
}
