//! Detection-quality evaluation for portent.
//!
//! # What NAB measures
//!
//! The [Numenta Anomaly Benchmark](https://github.com/numenta/NAB) (NAB) is 58 labelled time
//! series (365,558 rows) from real systems and synthetic generators. Around each labelled
//! anomaly is a *window* of rows, 116 in all. A detector streams through each series and gives
//! every row an anomaly score in [0, 1]; a row whose score reaches a threshold is a detection.
//! NAB rewards detecting an anomaly **early**: the first detection in a window earns a weight
//! that falls along a sigmoid from the window's first row to its last; a window without one
//! costs a miss; each detection outside every window costs a false positive, less when it
//! comes soon after a window. The first 15% of each file (at most 750 rows) is a probationary
//! period in which nothing counts. Three application profiles weight these terms differently,
//! one threshold per detector and profile is tuned over the whole corpus, and the sum is
//! normalised so that a detector that never fires scores 0 and a perfect one 100.
//!
//! NAB has been criticised for noisy and trivial labels (Wu & Keogh, 2021), and its threshold is
//! tuned on the data it scores, so a NAB score is optimistic and is not proof of quality alone.
//!
//! # This implementation
//!
//! [`nab`] is an independent Rust implementation of NAB v1.1's corpus loading and scoring
//! rules, written from a reading of NAB's scorer (`nab/sweeper.py`, `nab/scorer.py`,
//! `nab/optimizer.py`, `nab/runner.py`, `nab/labeler.py`); no NAB code is included. Where NAB's
//! code and its documentation differ, it follows the code; [`nab`]'s items say where that
//! matters. It writes NAB's results layout too, so NAB's own scorer can check its numbers.

pub mod nab;
pub mod replay;
pub mod sim;
