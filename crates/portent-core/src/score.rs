//! What a model says about a sample: a calibrated score, the expected band and a reason.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A value was not a valid score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("score: {0} is not in [0, 1]")]
pub struct ScoreError(pub f64);

/// An anomaly score in `[0, 1]`: 0 is entirely expected, 1 is as unusual as portent can say.
///
/// Calibrated so that a healthy series rarely reaches [`Score::ALERT`] at default sensitivity.
#[derive(Copy, Clone, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Score(f64);

impl Score {
    /// Nothing unusual.
    pub const ZERO: Score = Score(0.0);
    /// As unusual as it gets.
    pub const ONE: Score = Score(1.0);
    /// The documented default alerting threshold.
    pub const ALERT: Score = Score(0.8);

    /// A score, if `v` is in `[0, 1]`.
    pub fn new(v: f64) -> Result<Self, ScoreError> {
        if (0.0..=1.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(ScoreError(v))
        }
    }

    /// `v` clamped into `[0, 1]`; NaN becomes 0 (no evidence is no anomaly).
    pub fn saturating(v: f64) -> Self {
        if v.is_nan() {
            Self(0.0)
        } else {
            Self(v.clamp(0.0, 1.0))
        }
    }

    /// The score as a number.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Score {
    type Error = ScoreError;
    fn try_from(v: f64) -> Result<Self, ScoreError> {
        Self::new(v)
    }
}

impl From<Score> for f64 {
    fn from(s: Score) -> f64 {
        s.0
    }
}

/// Why a sample scored as it did: the kind of deviation that dominates its score.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A short excursion away from the expected band.
    Spike,
    /// The series moved to a new level and stays there.
    LevelShift,
    /// A slow, persistent departure (a leak, a creep) that adaptation would otherwise absorb.
    Drift,
    /// The value is normal overall but not for this time of day or week.
    SeasonalityBreak,
    /// The series became noisier than it has ever been: each value may be in range, but they
    /// swing around the expectation more widely than before (a flapping dependency, a
    /// retry storm, a failing disk's latency).
    Volatility,
    /// The series stopped changing (a stuck exporter).
    Flatline,
    /// Samples stopped arriving, or arrived as NaN/Inf.
    MissingData,
    /// Each of an entity's values may be in its usual range, but together they are unusual: a
    /// multivariate model's verdict on the row (last, so that stored verdicts keep their
    /// encoding).
    Combination,
}

impl Reason {
    /// Every reason, in a fixed order.
    pub const ALL: [Reason; 8] = [
        Reason::Spike,
        Reason::LevelShift,
        Reason::Drift,
        Reason::SeasonalityBreak,
        Reason::Volatility,
        Reason::Flatline,
        Reason::MissingData,
        Reason::Combination,
    ];

    /// The name used in outputs and labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Spike => "spike",
            Reason::LevelShift => "level_shift",
            Reason::Drift => "drift",
            Reason::SeasonalityBreak => "seasonality_break",
            Reason::Volatility => "volatility",
            Reason::Flatline => "flatline",
            Reason::MissingData => "missing_data",
            Reason::Combination => "combination",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reason {s:?}"))
    }
}

/// The verdict on one sample.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The sample's time.
    pub t: Timestamp,
    /// The sample's value (NaN when scoring a missing sample).
    pub value: f64,
    /// How unusual it is.
    pub score: Score,
    /// The expected value; NaN while the model has not learnt enough to expect anything.
    pub yhat: f64,
    /// The lower edge of the expected band.
    pub yhat_lower: f64,
    /// The upper edge of the expected band.
    pub yhat_upper: f64,
    /// What kind of deviation dominates the score, if the score is notable.
    pub reason: Option<Reason>,
}

impl Scored {
    /// A sample the model could say nothing about yet.
    pub fn unknown(t: Timestamp, value: f64) -> Self {
        Self {
            t,
            value,
            score: Score::ZERO,
            yhat: f64::NAN,
            yhat_lower: f64::NAN,
            yhat_upper: f64::NAN,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bounds() {
        assert!(Score::new(0.5).is_ok());
        assert!(Score::new(1.5).is_err());
        assert!(Score::new(f64::NAN).is_err());
        assert_eq!(Score::saturating(f64::NAN), Score::ZERO);
        assert_eq!(Score::saturating(7.0), Score::ONE);
        assert_eq!(Score::saturating(-1.0), Score::ZERO);
        assert!(serde_json::from_str::<Score>("1.2").is_err());
        assert_eq!(serde_json::from_str::<Score>("0.25").unwrap().get(), 0.25);
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert!("bogus".parse::<Reason>().is_err());
    }
}
