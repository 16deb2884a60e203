//! Scoring a detector: NAB's per-row sweep values, the threshold sweep, and normalisation.

use serde::Serialize;

use super::corpus::probationary_len;
use super::{Corpus, NabError, Profile};

/// The threshold NAB reports when the best choice is to detect nothing. NAB's sweep starts
/// above every possible score, at 1.1, and records that threshold as its first candidate.
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// A detector's result under one profile, as NAB reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileScore {
    /// The profile's name.
    pub profile: String,
    /// The threshold used: a row is a detection when its score is `>=` this.
    /// [`NO_DETECTION_THRESHOLD`] when detecting nothing scored best.
    pub threshold: f64,
    /// The raw score: the sum over files of their window and false-positive terms.
    pub raw: f64,
    /// The null detector's raw score (its threshold optimised the same way).
    pub null_raw: f64,
    /// The perfect detector's raw score: A_TP times the number of windows.
    pub perfect_raw: f64,
    /// `100 * (raw - null_raw) / (perfect_raw - null_raw)`: 0 for the null detector, 100 for
    /// a perfect one, below 0 for a detector worse than doing nothing.
    pub normalized: f64,
    /// Windows with at least one detection outside the probationary period.
    pub detected_windows: usize,
    /// Windows without one (windows wholly inside the probationary period are not counted).
    pub missed_windows: usize,
    /// Detections outside every window and outside the probationary period.
    pub false_positives: usize,
}

/// The value of a detection at relative position `y`, NAB's scaled sigmoid:
/// `2 / (1 + exp(5y)) - 1`, and exactly -1 for `y > 3`.
///
/// Written in the same operation order as NAB's `scaledSigmoid(x) = 2 * sigmoid(-5x) - 1` with
/// `sigmoid(z) = 1 / (1 + exp(-z))`, so the values agree to the bit.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 * (1.0 / (1.0 + (-(-5.0 * y)).exp())) - 1.0
    }
}

/// Marks a row that lies outside every window.
const OUTSIDE: u32 = u32::MAX;

/// A row outside the probationary period: the rows the scorer looks at.
#[derive(Copy, Clone, Debug)]
struct Row {
    /// Index of its file in the corpus.
    file: u32,
    /// Corpus-wide index of its window, or [`OUTSIDE`].
    window: u32,
    /// The scaled sigmoid of its position, before the profile's weight: in a window, the value
    /// of a detection there (before dividing by `scaled_sigmoid(-1)`); outside, the value of a
    /// false positive there.
    unweighted: f64,
}

/// A detector's scores on a corpus, checked and sorted once so that any number of profiles
/// and thresholds can be scored cheaply: [`Sweep::optimize`] is one pass over the rows.
///
/// This mirrors NAB's `Sweeper`: per-row values as in `calcSweepScore`, and the walk down the
/// distinct scores as in `calcScoreByThreshold`.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// Scorable rows in corpus order (file, then row).
    rows: Vec<Row>,
    /// Indices into `rows`, by score descending, ties in corpus order (NAB's stable sort).
    order: Vec<u32>,
    /// The score of `rows[order[k]]`.
    sorted_scores: Vec<f64>,
    /// Per file, its scorable windows in order of first appearance in `order`: the order in
    /// which NAB's per-file score adds them up.
    window_order: Vec<Vec<u32>>,
    /// Per file, its scorable windows in row order: the null detector's summation order.
    null_window_order: Vec<Vec<u32>>,
    /// Windows in the corpus, scorable or not.
    windows: usize,
}

impl Sweep {
    /// Checks `scores` against `corpus` (one vector per file, one finite score in [0, 1] per
    /// row) and prepares them for scoring.
    pub fn new(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<Self, NabError> {
        check_scores(corpus, scores)?;
        let files = u32::try_from(corpus.files.len()).ok();
        let windows = corpus.window_count();
        let rows_total = corpus.rows();
        if files.is_none() || u32::try_from(windows).is_err() || u32::try_from(rows_total).is_err()
        {
            return Err(NabError::Corpus {
                key: "(whole corpus)".to_owned(),
                reason: format!(
                    "{} files, {windows} windows and {rows_total} rows exceed what the scorer indexes (2^32 - 1)",
                    corpus.files.len()
                ),
            });
        }

        let mut rows = Vec::with_capacity(rows_total);
        let mut keys: Vec<(u64, u32)> = Vec::with_capacity(rows_total);
        let mut null_window_order = Vec::with_capacity(corpus.files.len());
        let mut first_window = 0u32;
        for (fi, (file, scores)) in corpus.files.iter().zip(scores).enumerate() {
            let probation = probationary_len(file.len());
            let fi = fi as u32; // checked above
            null_window_order.push(
                file.windows
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.end >= probation)
                    .map(|(k, _)| first_window + k as u32)
                    .collect(),
            );
            let mut next = 0usize; // the first window not yet left behind
            let mut prev: Option<(usize, f64)> = None; // (right edge, width) of the last window left
            for (i, &score) in scores.iter().enumerate() {
                let current = file.windows.get(next).filter(|w| w.start <= i);
                if i >= probation {
                    let (window, unweighted) = match current {
                        Some(w) => {
                            let width = w.width() as f64;
                            let y = -((w.end - i + 1) as f64) / width;
                            (first_window + next as u32, scaled_sigmoid(y))
                        }
                        None => {
                            let v = match prev {
                                None => -1.0,
                                // NAB divides by zero here after a one-row window; the limit,
                                // a detection infinitely far away, is worth -1.
                                Some((end, width)) => {
                                    scaled_sigmoid((i - end) as f64 / (width - 1.0))
                                }
                            };
                            (OUTSIDE, v)
                        }
                    };
                    // Scores are in [0, 1], so their bit patterns sort as they do; adding 0.0
                    // turns -0.0 into 0.0, which NAB treats as the same threshold.
                    keys.push((!(score + 0.0).to_bits(), rows.len() as u32));
                    rows.push(Row {
                        file: fi,
                        window,
                        unweighted,
                    });
                }
                if let Some(w) = current
                    && w.end == i
                {
                    prev = Some((w.end, w.width() as f64));
                    next += 1;
                }
            }
            first_window += file.windows.len() as u32;
        }

        // Descending score, ties in corpus order: the order of NAB's stable sort.
        keys.sort_unstable();
        let order: Vec<u32> = keys.iter().map(|&(_, r)| r).collect();
        let sorted_scores = keys.iter().map(|&(k, _)| f64::from_bits(!k)).collect();

        let mut window_order = vec![Vec::new(); corpus.files.len()];
        let mut seen = vec![false; windows];
        for &r in &order {
            let row = rows[r as usize];
            if row.window != OUTSIDE && !seen[row.window as usize] {
                seen[row.window as usize] = true;
                window_order[row.file as usize].push(row.window);
            }
        }

        Ok(Self {
            rows,
            order,
            sorted_scores,
            window_order,
            null_window_order,
            windows,
        })
    }

    /// Scores under `profile` at the threshold NAB's optimiser would choose.
    ///
    /// Every distinct score of a row outside the probationary period is a candidate threshold,
    /// and so is [`NO_DETECTION_THRESHOLD`]. The candidate with the highest corpus raw score
    /// wins; of equal scores, the highest threshold wins (NAB sorts the candidates, which it
    /// produced from the highest threshold down, with a stable sort).
    pub fn optimize(&self, profile: &Profile) -> Result<ProfileScore, NabError> {
        let threshold = self.best_threshold(profile);
        self.at(profile, threshold)
    }

    /// Scores under `profile` with a fixed threshold: a row is a detection when its score is
    /// `>=` `threshold`.
    pub fn at(&self, profile: &Profile, threshold: f64) -> Result<ProfileScore, NabError> {
        if threshold.is_nan() {
            return Err(NabError::Threshold(threshold));
        }
        let detected = self.sorted_scores.partition_point(|&s| s >= threshold);
        let tally = self.tally(
            profile,
            self.order[..detected]
                .iter()
                .map(|&r| &self.rows[r as usize]),
            &self.window_order,
        );
        let null_raw = self.null_raw(profile);
        let perfect_raw = profile.tp * self.windows as f64;
        // Also refuses NaN weights.
        if (perfect_raw - null_raw).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(NabError::Normalise {
                null: null_raw,
                perfect: perfect_raw,
            });
        }
        Ok(ProfileScore {
            profile: profile.name.clone(),
            threshold,
            raw: tally.raw,
            null_raw,
            perfect_raw,
            // NAB's operation order: 100 * (raw - base) / (perfect - base).
            normalized: 100.0 * (tally.raw - null_raw) / (perfect_raw - null_raw),
            detected_windows: tally.detected_windows,
            missed_windows: tally.missed_windows,
            false_positives: tally.false_positives,
        })
    }

    /// The threshold NAB's optimiser picks: one pass down the sorted scores, keeping the
    /// running false-positive sum and the sum of each window's best value up to date.
    fn best_threshold(&self, profile: &Profile) -> f64 {
        let max_tp = scaled_sigmoid(-1.0);
        let mut best_value = vec![-profile.fn_; self.windows];
        let mut window_sum = 0.0;
        for order in &self.window_order {
            for _ in order {
                window_sum += -profile.fn_;
            }
        }
        let mut fp_sum = 0.0;

        let mut best_threshold = NO_DETECTION_THRESHOLD;
        let mut best_score = f64::NEG_INFINITY;
        let mut current = NO_DETECTION_THRESHOLD;
        for (&r, &score) in self.order.iter().zip(&self.sorted_scores) {
            if score != current {
                // Every row scoring `current` or more is applied: record that candidate.
                let total = fp_sum + window_sum;
                if total > best_score {
                    best_score = total;
                    best_threshold = current;
                }
                current = score;
            }
            let row = &self.rows[r as usize];
            if row.window == OUTSIDE {
                fp_sum += row.unweighted * profile.fp;
            } else {
                let v = row.unweighted * profile.tp / max_tp;
                let best = &mut best_value[row.window as usize];
                if v > *best {
                    window_sum += v - *best;
                    *best = v;
                }
            }
        }
        if fp_sum + window_sum > best_score {
            best_threshold = current;
        }
        best_threshold
    }

    /// The null detector's raw score: it gives every row the same score, so NAB's optimiser
    /// has two candidates, detecting nothing and detecting every row, and keeps the better
    /// (nothing, on a tie).
    fn null_raw(&self, profile: &Profile) -> f64 {
        let nothing = self.tally(profile, std::iter::empty(), &self.null_window_order);
        let everything = self.tally(profile, self.rows.iter(), &self.null_window_order);
        if everything.raw > nothing.raw {
            everything.raw
        } else {
            nothing.raw
        }
    }

    /// Scores one set of detections (`detected`, in the order NAB accumulates them) as NAB's
    /// per-file scorer does: per file, the false-positive sum, then each window's best value
    /// (or -A_FN) in `window_order`; then the files in corpus order.
    fn tally<'a>(
        &self,
        profile: &Profile,
        detected: impl Iterator<Item = &'a Row>,
        window_order: &[Vec<u32>],
    ) -> Tally {
        let max_tp = scaled_sigmoid(-1.0);
        let mut fp_sum = vec![0.0; window_order.len()];
        let mut best = vec![-profile.fn_; self.windows];
        let mut hit = vec![false; self.windows];
        let mut false_positives = 0;
        for row in detected {
            if row.window == OUTSIDE {
                fp_sum[row.file as usize] += row.unweighted * profile.fp;
                false_positives += 1;
            } else {
                let w = row.window as usize;
                let v = row.unweighted * profile.tp / max_tp;
                if v > best[w] {
                    best[w] = v;
                }
                hit[w] = true;
            }
        }
        let mut tally = Tally {
            raw: 0.0,
            detected_windows: 0,
            missed_windows: 0,
            false_positives,
        };
        for (fp, windows) in fp_sum.iter().zip(window_order) {
            let mut file_score = *fp;
            for &w in windows {
                file_score += best[w as usize];
                if hit[w as usize] {
                    tally.detected_windows += 1;
                } else {
                    tally.missed_windows += 1;
                }
            }
            tally.raw += file_score;
        }
        tally
    }
}

/// What [`Sweep::tally`] adds up.
struct Tally {
    raw: f64,
    detected_windows: usize,
    missed_windows: usize,
    false_positives: usize,
}

/// Checks that there is one score vector per file, one score per row, each finite and in
/// [0, 1], and that every file is consistent.
pub(crate) fn check_scores(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<(), NabError> {
    if scores.len() != corpus.files.len() {
        return Err(NabError::ScoreFiles {
            expected: corpus.files.len(),
            found: scores.len(),
        });
    }
    for (file, scores) in corpus.files.iter().zip(scores) {
        file.check()?;
        if scores.len() != file.len() {
            return Err(NabError::Scores {
                key: file.key.clone(),
                reason: format!("{} scores for {} rows", scores.len(), file.len()),
            });
        }
        if let Some((row, s)) = scores
            .iter()
            .enumerate()
            .find(|(_, s)| !(0.0..=1.0).contains(*s))
        {
            return Err(NabError::Scores {
                key: file.key.clone(),
                reason: format!(
                    "row {row} (data line {}): score {s} is not in [0, 1]",
                    row + 2
                ),
            });
        }
    }
    Ok(())
}

/// Scores a detector on `corpus` under `profile` at the threshold NAB's optimiser chooses.
///
/// `scores[i]` holds the anomaly scores for `corpus.files[i]`, one per row, each in [0, 1].
/// To score several profiles, build one [`Sweep`] and call [`Sweep::optimize`] for each.
pub fn score(
    corpus: &Corpus,
    scores: &[Vec<f64>],
    profile: &Profile,
) -> Result<ProfileScore, NabError> {
    Sweep::new(corpus, scores)?.optimize(profile)
}

/// Scores a detector on `corpus` under `profile` with a fixed `threshold` (detection when the
/// score is `>=` the threshold).
pub fn score_at(
    corpus: &Corpus,
    scores: &[Vec<f64>],
    profile: &Profile,
    threshold: f64,
) -> Result<ProfileScore, NabError> {
    Sweep::new(corpus, scores)?.at(profile, threshold)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nab::{CorpusFile, Window};

    #[test]
    fn scaled_sigmoid_matches_nab() {
        // The values NAB's Python gives (printed with repr).
        assert_eq!(scaled_sigmoid(-1.0), 0.9866142981514305);
        assert_eq!(scaled_sigmoid(-0.8), 0.9640275800758169);
        assert_eq!(scaled_sigmoid(1.0 / 3.0), -0.6822617902381697);
        assert_eq!(scaled_sigmoid(3.0), -0.9999993881955461);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_eq!(scaled_sigmoid(3.000_001), -1.0);
    }

    /// One file of 100 rows (rows 0..15 probationary: floor(0.15 * 100) = 15) with windows
    /// A = rows 40..=49 (width 10) and B = rows 70..=74 (width 5).
    fn hand_corpus() -> Corpus {
        let file = CorpusFile::synthetic(
            "hand",
            "worked",
            vec![0.0; 100],
            vec![Window::new(40, 49), Window::new(70, 74)],
        )
        .unwrap();
        Corpus::from_files(vec![file]).unwrap()
    }

    /// Detections (score 1.0; every other row scores 0.0):
    /// * row 10: probationary, ignored;
    /// * row 20: no window before it, so -A_FP;
    /// * row 42: in A at y = -(49 - 42 + 1) / 10 = -0.8, worth
    ///   A_TP * sig(-0.8) / sig(-1) = 0.9640275800758169 / 0.9866142981514305 = 0.9771068409226045;
    /// * row 45: in A after row 42, adds nothing;
    /// * row 52: after A at y = (52 - 49) / (10 - 1) = 1/3, worth A_FP * sig(1/3) = A_FP * -0.6822617902381697;
    /// * row 95: after B at y = (95 - 74) / (5 - 1) = 5.25 > 3, worth -A_FP;
    /// * window B has no detection: -A_FN.
    fn hand_scores() -> Vec<Vec<f64>> {
        let mut s = vec![0.0; 100];
        for row in [10, 20, 42, 45, 52, 95] {
            s[row] = 1.0;
        }
        vec![s]
    }

    #[test]
    fn hand_worked_case() {
        let corpus = hand_corpus();
        let scores = hand_scores();
        let tp = 0.9771068409226045;
        let sig_third = -0.6822617902381697;
        for (profile, a_fp, a_fn) in [
            (Profile::standard(), 0.11, 1.0),
            (Profile::reward_low_fp(), 0.22, 1.0),
            (Profile::reward_low_fn(), 0.11, 2.0),
        ] {
            // standard: 0.9771068409226045 - 0.11 - 0.11 * 0.6822617902381697 - 0.11 - 1
            //         = 0.9771068409226045 - 0.11 - 0.07504879692619866 - 0.11 - 1 = -0.3179419560035942
            let expected = tp - a_fp + a_fp * sig_third - a_fp - a_fn;
            let s = score_at(&corpus, &scores, &profile, 0.5).unwrap();
            assert!(
                (s.raw - expected).abs() < 1e-9,
                "{}: {} vs {expected}",
                profile.name,
                s.raw
            );
            assert_eq!(
                (s.detected_windows, s.missed_windows, s.false_positives),
                (1, 1, 3)
            );
            // Null: both windows missed. Perfect: both hit.
            assert_eq!(s.null_raw, -2.0 * a_fn);
            assert_eq!(s.perfect_raw, 2.0);
            let normalized = 100.0 * (expected + 2.0 * a_fn) / (2.0 + 2.0 * a_fn);
            assert!((s.normalized - normalized).abs() < 1e-9);
        }
        let s = score_at(&corpus, &scores, &Profile::standard(), 0.5).unwrap();
        // NAB's own summation order (false positives by row, then window A, then B) gives this to the bit.
        assert_eq!(s.raw, -0.3179419560035942);
    }

    #[test]
    fn optimiser_prefers_the_higher_threshold_on_a_tie() {
        let corpus = hand_corpus();
        // Row 42 at 0.9 and row 45 at 0.8: both in window A, so thresholds 0.9 and 0.8 score
        // the same; NAB keeps 0.9.
        let mut s = vec![0.0; 100];
        s[42] = 0.9;
        s[45] = 0.8;
        let scores = vec![s];
        let r = score(&corpus, &scores, &Profile::standard()).unwrap();
        assert_eq!(r.threshold, 0.9);
        assert_eq!(r.raw, 0.9771068409226045 - 1.0);

        // Only false positives: detecting nothing wins, reported at 1.1.
        let mut s = vec![0.0; 100];
        s[20] = 0.7;
        let r = score(&corpus, &[s], &Profile::standard()).unwrap();
        assert_eq!(r.threshold, NO_DETECTION_THRESHOLD);
        assert_eq!((r.raw, r.normalized), (-2.0, 0.0));
        assert_eq!(
            (r.detected_windows, r.missed_windows, r.false_positives),
            (0, 2, 0)
        );
    }

    #[test]
    fn probationary_scores_are_not_candidates() {
        let corpus = hand_corpus();
        // Row 3 is probationary: 0.95 is no candidate, so the best threshold is row 40's 0.6.
        let mut s = vec![0.0; 100];
        s[3] = 0.95;
        s[40] = 0.6;
        s[70] = 0.6;
        let r = score(&corpus, &[s], &Profile::standard()).unwrap();
        assert_eq!(r.threshold, 0.6);
        assert_eq!(r.raw, 2.0);
        assert_eq!(r.normalized, 100.0);
    }

    #[test]
    fn windows_inside_the_probationary_period_only_count_for_perfect() {
        // 100 rows, probation 15: window 5..=9 lies inside it. NAB's null detector does not
        // miss it (it has no scorable row), but the perfect score counts it.
        let file = CorpusFile::synthetic(
            "p",
            "f",
            vec![0.0; 100],
            vec![Window::new(5, 9), Window::new(50, 59)],
        )
        .unwrap();
        let corpus = Corpus::from_files(vec![file]).unwrap();
        let r = score(&corpus, &[vec![0.0; 100]], &Profile::standard()).unwrap();
        assert_eq!((r.null_raw, r.perfect_raw, r.raw), (-1.0, 2.0, -1.0));
        assert_eq!(r.missed_windows, 1);
    }

    #[test]
    fn bad_scores_are_rejected_with_their_row() {
        let corpus = hand_corpus();
        let mut s = vec![0.0; 100];
        s[7] = f64::NAN;
        let e = score(&corpus, &[s], &Profile::standard())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "scores: hand/worked.csv: row 7 (data line 9): score NaN is not in [0, 1]"
        );
        let e = score(&corpus, &[vec![0.0; 99]], &Profile::standard())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "scores: hand/worked.csv: 99 scores for 100 rows");
        let e = score(&corpus, &[], &Profile::standard())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("scores: 0 score vectors for a corpus of 1 files"),
            "{e}"
        );
        let e = score_at(&corpus, &hand_scores(), &Profile::standard(), f64::NAN).unwrap_err();
        assert!(matches!(e, NabError::Threshold(_)));
    }

    #[test]
    fn a_corpus_without_windows_cannot_be_normalised() {
        let file = CorpusFile::synthetic("n", "f", vec![0.0; 50], vec![]).unwrap();
        let corpus = Corpus::from_files(vec![file]).unwrap();
        let e = score(&corpus, &[vec![0.0; 50]], &Profile::standard()).unwrap_err();
        assert!(matches!(e, NabError::Normalise { .. }), "{e}");
    }

    /// A seeded generator for the randomised test (splitmix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The README's rules applied row by row, written independently of [`Sweep`].
    fn brute_force_raw(corpus: &Corpus, scores: &[Vec<f64>], p: &Profile, threshold: f64) -> f64 {
        let sig = |y: f64| {
            if y > 3.0 {
                -1.0
            } else {
                2.0 / (1.0 + (5.0 * y).exp()) - 1.0
            }
        };
        let mut raw = 0.0;
        for (file, scores) in corpus.files.iter().zip(scores) {
            let probation = (file.len() as f64 * 0.15).floor().min(750.0) as usize;
            for w in &file.windows {
                if w.end < probation {
                    continue;
                }
                let first = (w.start.max(probation)..=w.end).find(|&i| scores[i] >= threshold);
                raw += match first {
                    Some(i) => {
                        let width = (w.end - w.start + 1) as f64;
                        p.tp * sig(-((w.end - i + 1) as f64) / width) / sig(-1.0)
                    }
                    None => -p.fn_,
                };
            }
            for (i, &score) in scores.iter().enumerate().skip(probation) {
                if score < threshold || file.windows.iter().any(|w| w.contains(i)) {
                    continue;
                }
                let before = file.windows.iter().rev().find(|w| w.end < i);
                raw += match before {
                    None => -p.fp,
                    Some(w) => p.fp * sig((i - w.end) as f64 / (w.width() as f64 - 1.0)),
                };
            }
        }
        raw
    }

    #[test]
    fn sweep_equals_brute_force() {
        let mut rng = Rng(7);
        let mut files = Vec::new();
        for f in 0..6 {
            let n = 60 + rng.below(300) as usize;
            let mut windows = Vec::new();
            let mut at = rng.below(n as u64 / 2) as usize;
            while at + 3 < n {
                let width = 2 + rng.below(25) as usize;
                let end = (at + width - 1).min(n - 1);
                windows.push(Window::new(at, end));
                at = end + 1 + 1 + rng.below(60) as usize;
            }
            files.push(
                CorpusFile::synthetic("rand", &format!("f{f}"), vec![0.0; n], windows).unwrap(),
            );
        }
        let corpus = Corpus::from_files(files).unwrap();
        // Scores on a coarse grid, so that thresholds tie across rows and files.
        let scores: Vec<Vec<f64>> = corpus
            .files
            .iter()
            .map(|f| (0..f.len()).map(|_| rng.below(41) as f64 / 40.0).collect())
            .collect();
        let mut candidates: Vec<f64> = scores.iter().flatten().copied().collect();
        candidates.push(NO_DETECTION_THRESHOLD);
        candidates.sort_by(|a, b| b.total_cmp(a));
        candidates.dedup();

        let sweep = Sweep::new(&corpus, &scores).unwrap();
        for profile in Profile::all() {
            let mut best: Option<(f64, f64)> = None;
            for &t in &candidates {
                let brute = brute_force_raw(&corpus, &scores, &profile, t);
                let fixed = sweep.at(&profile, t).unwrap();
                assert!(
                    (fixed.raw - brute).abs() < 1e-9,
                    "{} at {t}: {} vs {brute}",
                    profile.name,
                    fixed.raw
                );
                // Highest threshold first, so only a strictly better score replaces the best.
                if best.is_none_or(|(_, b)| brute > b + 1e-9) {
                    best = Some((t, brute));
                }
            }
            let (t, raw) = best.unwrap();
            let swept = sweep.optimize(&profile).unwrap();
            assert_eq!(swept.threshold, t, "{}", profile.name);
            assert!((swept.raw - raw).abs() < 1e-9);
            assert_eq!(score(&corpus, &scores, &profile).unwrap(), swept);
        }
    }
}
