//! Application profiles: the weights NAB gives true positives, false positives and misses.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::NabError;

/// An application profile (NAB's cost matrix): the weights of a detected window (`tp`), a false
/// positive (`fp`) and a missed window (`fn_`). NAB's `tnWeight` is never used by its scorer,
/// so it has no field here.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// NAB's profile name, as in `config/profiles.json` and `results/final_results.json`.
    pub name: String,
    /// A_TP: what a detection at a window's first row earns.
    pub tp: f64,
    /// A_FP: what a false positive far from any window costs.
    pub fp: f64,
    /// A_FN: what a window without a detection costs.
    pub fn_: f64,
}

impl Profile {
    /// NAB's `standard` profile: A_TP 1, A_FP 0.11, A_FN 1.
    pub fn standard() -> Self {
        Self::new("standard", 1.0, 0.11, 1.0)
    }

    /// NAB's `reward_low_FP_rate` profile: A_TP 1, A_FP 0.22, A_FN 1.
    pub fn reward_low_fp() -> Self {
        Self::new("reward_low_FP_rate", 1.0, 0.22, 1.0)
    }

    /// NAB's `reward_low_FN_rate` profile: A_TP 1, A_FP 0.11, A_FN 2.
    pub fn reward_low_fn() -> Self {
        Self::new("reward_low_FN_rate", 1.0, 0.11, 2.0)
    }

    /// The three NAB profiles: standard, reward low FP rate, reward low FN rate.
    pub fn all() -> [Profile; 3] {
        [
            Self::standard(),
            Self::reward_low_fp(),
            Self::reward_low_fn(),
        ]
    }

    fn new(name: &str, tp: f64, fp: f64, fn_: f64) -> Self {
        Self {
            name: name.to_owned(),
            tp,
            fp,
            fn_,
        }
    }

    /// Reads NAB's `config/profiles.json`: an object of profile names, each with a `CostMatrix`
    /// of `tpWeight`, `fpWeight`, `fnWeight` and (ignored) `tnWeight`. Weights must be finite and
    /// not negative. The profiles come back sorted by name.
    pub fn load(path: &Path) -> Result<Vec<Profile>, NabError> {
        let text = fs::read_to_string(path).map_err(|source| NabError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: BTreeMap<String, RawProfile> =
            serde_json::from_str(&text).map_err(|source| NabError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        raw.into_iter()
            .map(|(name, p)| {
                let m = p.cost_matrix;
                let weights = [("tpWeight", m.tp), ("fpWeight", m.fp), ("fnWeight", m.fn_)];
                for (field, w) in weights {
                    if !(w.is_finite() && w >= 0.0) {
                        return Err(NabError::Profile {
                            path: path.to_path_buf(),
                            name,
                            reason: format!(
                                "{field} is {w}; weights must be finite and not negative"
                            ),
                        });
                    }
                }
                Ok(Profile {
                    name,
                    tp: m.tp,
                    fp: m.fp,
                    fn_: m.fn_,
                })
            })
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(rename = "CostMatrix")]
    cost_matrix: RawCostMatrix,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCostMatrix {
    #[serde(rename = "tpWeight")]
    tp: f64,
    #[serde(rename = "fpWeight")]
    fp: f64,
    #[serde(rename = "fnWeight")]
    fn_: f64,
    /// Present in NAB's file, never used by its scorer.
    #[serde(rename = "tnWeight")]
    #[allow(dead_code)]
    tn: Option<f64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bad_weights_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profiles.json");
        fs::write(
            &path,
            r#"{"odd": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": -0.1, "fnWeight": 1.0}}}"#,
        )
        .unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.ends_with("profiles.json: profile \"odd\": fpWeight is -0.1; weights must be finite and not negative"), "{e}");
        fs::write(
            &path,
            r#"{"odd": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.1}}}"#,
        )
        .unwrap();
        let e = Profile::load(&path).unwrap_err().to_string();
        assert!(e.contains("missing field `fnWeight` at line 1"), "{e}");
    }
}
