//! The contract every streaming model keeps.
//!
//! A model configuration implements [`Fit`]: from a window of history it builds a fitted
//! detector. The fitted detector implements [`Detect`]: it scores each new sample against what
//! it learnt from *earlier* samples only, then learns from it. Its whole state is serde
//! serialisable, so a restart restores it exactly instead of refitting.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Sample, Scored, Timestamp};

/// Fitting failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Too little usable history to estimate anything.
    #[error("fit: need at least {needed} usable samples, got {got}")]
    NotEnoughData {
        /// The minimum the model needs.
        needed: usize,
        /// What it was given.
        got: usize,
    },
    /// A refit was given a shorter history than the model in use was chosen on: it could not
    /// even consider that model's seasonality, so the detector keeps its model.
    #[error(
        "refit: the model in use needs {needed_ms} ms of history to be reconsidered, got {got_ms} ms"
    )]
    ShorterThanModel {
        /// The span of history the model's seasonality needs.
        needed_ms: i64,
        /// The span given.
        got_ms: i64,
    },
    /// The model's configuration cannot work.
    #[error("fit: {0}")]
    Config(String),
}

/// A model configuration that learns a [`Detect`]or from history.
pub trait Fit {
    /// The fitted, streaming detector.
    type Fitted: Detect;

    /// Learns from `history` (sorted by time; may hold NaN, Inf and gaps).
    fn fit(&self, history: &[Sample]) -> Result<Self::Fitted, FitError>;
}

/// A fitted streaming detector.
pub trait Detect: Serialize + DeserializeOwned {
    /// Scores `sample` against the past, then learns from it.
    ///
    /// Samples must arrive in time order; one at or before the last seen time is scored
    /// as unknown and otherwise ignored.
    fn observe(&mut self, sample: Sample) -> Scored;

    /// Re-estimates the slow parts (trend, seasonality) from `history`, keeping online state.
    fn refit(&mut self, history: &[Sample]) -> Result<(), FitError>;

    /// Called when the clock reaches `now` without a new sample: reports missing data once
    /// the series is overdue.
    fn tick(&mut self, now: Timestamp) -> Option<Scored>;
}

/// Which deviations count as anomalous.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only values above the expected band (latency, errors, memory).
    Above,
    /// Only values below it (traffic, throughput).
    Below,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    /// Whether a deviation of this sign (`value - expected`) counts.
    pub fn admits(self, deviation: f64) -> bool {
        match self {
            Direction::Above => deviation > 0.0,
            Direction::Below => deviation < 0.0,
            Direction::Both => true,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Above => "above",
            Direction::Below => "below",
            Direction::Both => "both",
        })
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "above" => Ok(Direction::Above),
            "below" => Ok(Direction::Below),
            "both" => Ok(Direction::Both),
            _ => Err(format!(
                "unknown direction {s:?}: expected above, below or both"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_admits_by_sign() {
        assert!(Direction::Above.admits(1.0) && !Direction::Above.admits(-1.0));
        assert!(Direction::Below.admits(-1.0) && !Direction::Below.admits(1.0));
        assert!(Direction::Both.admits(-1.0) && Direction::Both.admits(1.0));
        assert_eq!("below".parse::<Direction>(), Ok(Direction::Below));
        assert!(
            "up".parse::<Direction>()
                .unwrap_err()
                .contains("above, below or both")
        );
    }
}
