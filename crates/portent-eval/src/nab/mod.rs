//! The Numenta Anomaly Benchmark: its corpus, its scoring rules, and its results layout.
//!
//! * [`Corpus::load`] reads NAB's `data/` and `labels/combined_windows.json`; windows become
//!   row ranges.
//! * [`score`] scores one detector's per-row anomaly scores under a [`Profile`], choosing the
//!   threshold as NAB's optimiser does; [`score_at`] uses a fixed threshold. [`Sweep`] sorts the
//!   scores once for several profiles.
//! * [`write_results`] and [`write_null_results`] write NAB's `results/` layout, so that NAB's
//!   own Python scorer can check these numbers.
//!
//! # Where NAB's code and its README differ
//!
//! This module follows the code (`nab/sweeper.py`, `nab/optimizer.py`, `nab/scorer.py`,
//! `nab/runner.py`, `nab/labeler.py` at NAB v1.1):
//!
//! * **Null baseline.** Normalisation uses the null detector's *scored* raw result (its
//!   threshold optimised like any detector's), not `-A_FN * windows`. The two agree on NAB's
//!   data; a window wholly inside a probationary period would count for the perfect score
//!   (`A_TP * windows in the labels file`) but not against the null detector.
//! * **Threshold candidates.** Besides every distinct score of a row outside the probationary
//!   period, the optimiser tries 1.1, "detect nothing" ([`NO_DETECTION_THRESHOLD`]). On a tie
//!   the highest threshold wins.
//! * **Window term.** A window keeps `max(-A_FN, best detection)`, which is the earliest
//!   detection for NAB's weights.
//! * **Results files.** The scorer reads only `anomaly_score` from them, by row position;
//!   timestamps and windows come from the data and label files.
//! * **Edge cases where NAB fails**, not reached by its own data: a detection after a one-row
//!   window divides by zero (here it is worth `-A_FP`, the limit), and a fixed threshold below
//!   every scorable score of a file finds no row (here `>=` applies as everywhere else).
//!
//! Per file, raw scores are summed in NAB's order, so they agree with NAB's to the bit; the
//! corpus total adds files in key order (NAB: directory-walk order).
//!
//! ```no_run
//! use std::path::Path;
//! use portent_eval::nab::{Corpus, Profile, Sweep};
//!
//! let corpus = Corpus::load(Path::new("datasets/nab"))?;
//! // A detector that never fires scores 0 in every profile.
//! let scores: Vec<Vec<f64>> = corpus.files.iter().map(|f| vec![0.0; f.len()]).collect();
//! let sweep = Sweep::new(&corpus, &scores)?;
//! for profile in Profile::all() {
//!     let s = sweep.optimize(&profile)?;
//!     println!("{}: {:.2} (raw {:.3}, threshold {})", s.profile, s.normalized, s.raw, s.threshold);
//! }
//! # Ok::<(), portent_eval::nab::NabError>(())
//! ```

mod corpus;
mod error;
mod profile;
mod results;
mod sweep;

pub use corpus::{Corpus, CorpusFile, PROBATIONARY_PERCENT, Window, probationary_len};
pub use error::NabError;
pub use profile::Profile;
pub use results::{NULL_DETECTOR, results_path, write_null_results, write_results};
pub use sweep::{NO_DETECTION_THRESHOLD, ProfileScore, Sweep, scaled_sigmoid, score, score_at};
