//! Anomalous intervals from a backtest's verdicts: per series, each maximal run of verdicts at
//! or above the model's threshold, with its peak. Fed step by step, so a backtest over a long
//! history need not keep every verdict.

use std::collections::HashMap;
use std::sync::Arc;

use portent_core::{Labels, Score, Scored, Timestamp};

use crate::schedule::StepScore;

/// One anomalous interval of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// The model alias.
    pub model: Arc<str>,
    /// The query alias.
    pub query: Arc<str>,
    /// The series.
    pub labels: Labels,
    /// The first verdict at or above the threshold.
    pub from: Timestamp,
    /// The last one of the run.
    pub to: Timestamp,
    /// The highest-scoring verdict of the run (the first of equals).
    pub peak: Scored,
}

type Key = (Arc<str>, Arc<str>, Labels);

/// Collects [`Interval`]s from verdicts given in time order per series.
#[derive(Debug)]
pub struct IntervalTracker {
    default: Score,
    per_model: HashMap<String, Score>,
    open: HashMap<Key, Interval>,
    done: Vec<Interval>,
}

impl IntervalTracker {
    /// A tracker with `default` as every model's threshold.
    pub fn new(default: Score) -> Self {
        Self {
            default,
            per_model: HashMap::new(),
            open: HashMap::new(),
            done: Vec::new(),
        }
    }

    /// Sets `model`'s threshold (the config's `models.<alias>.threshold`).
    pub fn with_threshold(mut self, model: &str, threshold: Score) -> Self {
        self.per_model.insert(model.to_owned(), threshold);
        self
    }

    /// Takes one verdict; a series' verdicts must come in time order.
    pub fn push(&mut self, s: &StepScore) {
        let threshold = self
            .per_model
            .get(&*s.model)
            .copied()
            .unwrap_or(self.default);
        let key = (s.model.clone(), s.query.clone(), s.labels.clone());
        if s.scored.score >= threshold {
            let i = self.open.entry(key).or_insert_with(|| Interval {
                model: s.model.clone(),
                query: s.query.clone(),
                labels: s.labels.clone(),
                from: s.scored.t,
                to: s.scored.t,
                peak: s.scored,
            });
            i.to = s.scored.t;
            if s.scored.score > i.peak.score {
                i.peak = s.scored;
            }
        } else if let Some(i) = self.open.remove(&key) {
            self.done.push(i);
        }
    }

    /// Closes the intervals still open and returns them all, by start time, then series.
    pub fn finish(mut self) -> Vec<Interval> {
        self.done.extend(self.open.into_values());
        self.done.sort_by(|a, b| {
            (a.from, &a.model, &a.query, &a.labels).cmp(&(b.from, &b.model, &b.query, &b.labels))
        });
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(labels: &Labels, model: &str, t: i64, score: f64) -> StepScore {
        let mut scored = Scored::unknown(Timestamp::from_secs(t), 1.0);
        scored.score = Score::new(score).unwrap();
        StepScore {
            model: model.into(),
            query: "q".into(),
            labels: labels.clone(),
            scored,
            first: false,
        }
    }

    #[test]
    fn runs_above_the_threshold_become_intervals() {
        let a = Labels::new([("pod", "a")]).unwrap();
        let b = Labels::new([("pod", "b")]).unwrap();
        let mut t =
            IntervalTracker::new(Score::ALERT).with_threshold("lax", Score::new(0.5).unwrap());
        let scores = [
            (0, 0.1, 0.6),
            (60, 0.9, 0.6),
            (120, 0.95, 0.1),
            (180, 0.85, 0.1),
            (240, 0.2, 0.1),
            (300, 0.99, 0.1),
        ];
        for (time, sa, sb) in scores {
            t.push(&verdict(&a, "strict", time, sa));
            t.push(&verdict(&b, "lax", time, sb));
        }
        let got = t.finish();
        let spans: Vec<(&str, i64, i64, f64)> = got
            .iter()
            .map(|i| {
                (
                    i.labels.get("pod").unwrap(),
                    i.from.millis() / 1000,
                    i.to.millis() / 1000,
                    i.peak.score.get(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("b", 0, 60, 0.6),
                ("a", 60, 180, 0.95),
                ("a", 300, 300, 0.99)
            ]
        );
        assert_eq!(got[1].peak.t, Timestamp::from_secs(120));
        assert_eq!(&*got[0].model, "lax");
    }
}
