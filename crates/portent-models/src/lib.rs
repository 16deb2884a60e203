//! portent's streaming univariate detectors.
//!
//! Every model here is causal (a sample is scored against earlier samples only), deterministic
//! (no randomness at all in the univariate models), and serialisable, so that a restart restores
//! its state exactly. [`DetectorConfig`] builds the default [`Detector`], which combines them:
//!
//! * [`seasonal`]: a trend plus daily and weekly Fourier seasonality, fitted robustly;
//! * [`select`]: seasonality detection and level smoothing chosen per series from history;
//! * a robust online level and scale, CUSUM drift detection, flatline and missing-data
//!   detection, and the calibration of everything into one score ([`detector`]);
//! * [`exhaustion`]: time until a growing series reaches a known limit;
//! * [`multivariate`]: Isolation Forest and an autoencoder over rows of one entity's metrics,
//!   with each metric's contribution, and their combination with the univariate scores.
//!
//! ```
//! use portent_core::{Detect, Fit, Sample, Timestamp};
//! use portent_models::DetectorConfig;
//!
//! let mut d = DetectorConfig::default().fit(&[]).unwrap();
//! let mut last = None;
//! for i in 0..500 {
//!     let v = if i == 400 { 50.0 } else { 10.0 + (i % 7) as f64 * 0.1 };
//!     last = Some(d.observe(Sample::new(Timestamp::from_secs(i * 60), v)));
//!     if i == 400 {
//!         assert!(last.unwrap().score.get() > 0.8);
//!     }
//! }
//! assert!(last.unwrap().score.get() < 0.5);
//! ```

pub mod detector;
pub mod exhaustion;
mod linalg;
pub mod multivariate;
pub mod online;
pub mod seasonal;
pub mod select;
pub mod tail;

pub use detector::{Detector, DetectorConfig, calibrate};
pub use exhaustion::Exhaustion;
pub use seasonal::{SeasonalBaseline, SeasonalConfig, Seasonality};
pub use select::{Selection, select_model};
