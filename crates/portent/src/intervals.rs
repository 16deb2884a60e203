//! Anomalous intervals: runs of samples that score at or above the threshold, merged across
//! short quiet stretches, as a person would describe them ("anomalous from 10:05 to 10:40").

use portent_core::{Reason, Scored, Timestamp};

/// One anomalous interval of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Interval {
    pub(crate) start: Timestamp,
    pub(crate) end: Timestamp,
    /// The highest score inside.
    pub(crate) peak: f64,
    /// When the peak happened and the value then.
    pub(crate) peak_at: Timestamp,
    pub(crate) peak_value: f64,
    pub(crate) expected: f64,
    /// The reason of the peak.
    pub(crate) reason: Option<Reason>,
    /// Samples at or above the threshold.
    pub(crate) samples: usize,
}

/// Groups samples scoring `>= threshold` into intervals; two runs less than `merge_gap` samples
/// apart become one.
pub(crate) fn intervals(scored: &[Scored], threshold: f64, merge_gap: usize) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    let mut last_hit: Option<usize> = None;
    for (i, s) in scored.iter().enumerate() {
        let score = s.score.get();
        if score < threshold {
            continue;
        }
        let extend = last_hit.is_some_and(|j| i - j <= merge_gap);
        match out.last_mut() {
            Some(cur) if extend => {
                cur.end = s.t;
                cur.samples += 1;
                if score > cur.peak {
                    cur.peak = score;
                    cur.peak_at = s.t;
                    cur.peak_value = s.value;
                    cur.expected = s.yhat;
                    cur.reason = s.reason;
                }
            }
            _ => out.push(Interval {
                start: s.t,
                end: s.t,
                peak: score,
                peak_at: s.t,
                peak_value: s.value,
                expected: s.yhat,
                reason: s.reason,
                samples: 1,
            }),
        }
        last_hit = Some(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::Score;

    fn scored(scores: &[f64]) -> Vec<Scored> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let mut x = Scored::unknown(Timestamp::from_secs(i as i64 * 60), i as f64);
                x.score = Score::saturating(s);
                x
            })
            .collect()
    }

    #[test]
    fn runs_merge_across_short_gaps() {
        let s = scored(&[0.0, 0.9, 0.95, 0.1, 0.85, 0.0, 0.0, 0.0, 0.0, 0.9]);
        let iv = intervals(&s, 0.8, 2);
        assert_eq!(iv.len(), 2);
        assert_eq!(iv[0].start, Timestamp::from_secs(60));
        assert_eq!(iv[0].end, Timestamp::from_secs(240));
        assert_eq!(iv[0].samples, 3);
        assert_eq!(iv[0].peak, 0.95);
        assert_eq!(iv[1].start, Timestamp::from_secs(540));
    }

    #[test]
    fn nothing_above_threshold_is_no_interval() {
        assert!(intervals(&scored(&[0.1, 0.5, 0.79]), 0.8, 5).is_empty());
    }
}
