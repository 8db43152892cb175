//! NAB application profiles: the weights of a true positive, a false positive and a false
//! negative (`config/profiles.json`). Built in so the scorer works without the file; the
//! corpus loader reads the file when present and the conformance test checks they agree.

use serde::Deserialize;

/// One NAB cost matrix. `tp` is the reward of a detection at the very start of a window,
/// `fp` the cost of a detection far from any window, `fn_` the cost of a missed window.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

impl Profile {
    fn new(name: &str, tp: f64, fp: f64, fn_: f64) -> Self {
        Self {
            name: name.to_string(),
            tp,
            fp,
            fn_,
        }
    }

    /// The three NAB v1.1 profiles, in the order NAB's scoreboard lists them.
    pub fn nab_defaults() -> Vec<Profile> {
        vec![
            Profile::new("standard", 1.0, 0.11, 1.0),
            Profile::new("reward_low_FP_rate", 1.0, 0.22, 1.0),
            Profile::new("reward_low_FN_rate", 1.0, 0.11, 2.0),
        ]
    }

    /// Parses NAB's `profiles.json` (`{name: {CostMatrix: {tpWeight, fpWeight, fnWeight}}}`),
    /// keeping NAB's scoreboard order for the known names.
    pub fn parse_profiles_json(text: &str) -> Result<Vec<Profile>, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Cost {
            tp_weight: f64,
            fp_weight: f64,
            fn_weight: f64,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "CostMatrix")]
            cost_matrix: Cost,
        }
        let map: std::collections::BTreeMap<String, Entry> = serde_json::from_str(text)?;
        let order = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];
        let mut out: Vec<Profile> = map
            .into_iter()
            .map(|(name, e)| Profile {
                name,
                tp: e.cost_matrix.tp_weight,
                fp: e.cost_matrix.fp_weight,
                fn_: e.cost_matrix.fn_weight,
            })
            .collect();
        out.sort_by_key(|p| order.iter().position(|o| *o == p.name).unwrap_or(order.len()));
        Ok(out)
    }
}
