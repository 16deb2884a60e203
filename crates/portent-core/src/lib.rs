//! portent's core vocabulary, shared by every other crate.
//!
//! * [`Labels`]: the identity of a series, a sorted, validated, hashable label set;
//! * [`Timestamp`], [`Sample`], [`Gap`], [`Series`]: what flows in;
//! * [`Score`], [`Reason`], [`Scored`]: what a model says about each sample;
//! * [`Fit`] and [`Detect`]: the contract every streaming model keeps.
//!
//! This crate does no I/O and knows nothing of Prometheus' wire formats or of any model.
//!
//! ```
//! use portent_core::{Labels, Sample, Timestamp};
//!
//! let labels = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
//! assert_eq!(labels.to_string(), r#"up{job="node"}"#);
//! let s = Sample::new(Timestamp::from_millis(1_700_000_000_000), 1.0);
//! assert!(s.is_finite());
//! ```

mod detector;
mod labels;
pub mod prefetch;
mod sample;
mod score;
pub mod seeded;

pub use detector::{Detect, Direction, Fit, FitError};
pub use labels::{
    Label, LabelRef, Labels, LabelsError, LabelsHash, LabelsHasher, LabelsIter, LabelsRef, NotUtf8,
    PackedLabels,
};
pub use sample::{Gap, STALE_NAN_BITS, Sample, Series, Timestamp, is_stale_marker, median_step};
pub use score::{Reason, Score, ScoreError, Scored};
