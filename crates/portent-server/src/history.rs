//! Recent verdicts per series, in memory, for the web UI's charts and sparklines.
//!
//! [`Scores`](crate::Scores) holds one verdict per series; a chart needs the last few hundred.
//! Keeping those for every series of a daemon carrying a million would cost gigabytes, so
//! [`History`] is bounded twice:
//!
//! * at most `max_points` verdicts per series ([`DEFAULT_MAX_POINTS`]: 720, twelve hours at a
//!   one-minute step), the oldest dropped first;
//! * at most `max_series` series ([`DEFAULT_MAX_SERIES`]: 2,000). Once full, a series not yet
//!   kept is only taken in when its verdict scores at least [`ADMIT_SCORE`]: the UI is for what
//!   is unusual, and a million calm series must not churn the map every step. To make room,
//!   the tenth of the kept series with the lowest latest score (ties: scored longest ago) is
//!   dropped at once, so the cost of ranking is paid once per many admissions.
//!
//! A point is 32 bytes (values as `f32`: enough to draw, not to compute with), so the default
//! bounds cap the history at about 46 MB. A series the daemon stops scoring stays until it is
//! evicted.
//!
//! Series are named by [`series_id`]: 16 hex digits of a stable 64-bit hash of the query and
//! model aliases and the labels, the same on every run, so a URL to a series page keeps
//! working after a restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use portent_core::{Labels, LabelsHash, Reason, Scored, Timestamp};

use crate::ScoreKey;

/// Verdicts kept per series by default: twelve hours at a one-minute step.
pub const DEFAULT_MAX_POINTS: usize = 720;
/// Series kept by default.
pub const DEFAULT_MAX_SERIES: usize = 2_000;
/// Once [`History`] is full, the lowest score a new series' verdict needs to be taken in.
pub const ADMIT_SCORE: f64 = 0.5;

/// One verdict as the UI draws it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The sample's time.
    pub t: Timestamp,
    /// The sample's value (NaN when missing).
    pub value: f32,
    /// The expected value (NaN while unknown).
    pub yhat: f32,
    /// The lower edge of the expected band.
    pub yhat_lower: f32,
    /// The upper edge of the expected band.
    pub yhat_upper: f32,
    /// The anomaly score, in [0, 1].
    pub score: f32,
    /// What kind of deviation dominates the score, if notable.
    pub reason: Option<Reason>,
}

impl From<&Scored> for Point {
    // Narrowing to f32 is deliberate: the points are drawn, never computed with.
    #[allow(clippy::cast_possible_truncation)]
    fn from(s: &Scored) -> Self {
        Self {
            t: s.t,
            value: s.value as f32,
            yhat: s.yhat as f32,
            yhat_lower: s.yhat_lower as f32,
            yhat_upper: s.yhat_upper as f32,
            score: s.score.get() as f32,
            reason: s.reason,
        }
    }
}

/// The stable ID of a series: 16 lowercase hex digits of an FNV-1a hash of the query and
/// model aliases and the labels (names and values), with separators that cannot occur in
/// them so that no two different series run together into the same bytes.
pub fn series_id(query: &str, model: &str, labels: &Labels) -> String {
    format!("{:016x}", hash(query, model, labels))
}

fn hash(query: &str, model: &str, labels: &Labels) -> u64 {
    // FNV-1a: tiny, and unlike std's hasher stable across runs and Rust versions.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    // 0xff and 0xfe never occur in UTF-8.
    eat(query.as_bytes());
    eat(&[0xff]);
    eat(model.as_bytes());
    for l in labels.iter() {
        eat(&[0xff]);
        eat(l.name.as_bytes());
        eat(&[0xfe]);
        eat(l.value.as_bytes());
    }
    h
}

/// Parses an ID as [`series_id`] writes it.
fn parse_id(id: &str) -> Option<u64> {
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// Whether `id` has the shape of a [`series_id`] (whether or not such a series is kept).
pub fn is_series_id(id: &str) -> bool {
    parse_id(id).is_some()
}

/// Recent verdicts per series, bounded (see the [module docs](self)). Cloning gives another
/// handle on the same history.
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    max_points: usize,
    max_series: usize,
    series: HashMap<u64, Kept>,
    /// The label sets' own hashes ([`LabelsHash`]) of the kept series, and maybe of some
    /// since dropped: once the history is full, a calm verdict whose labels are not in here
    /// is passed over without computing its ID. The daemon offers every verdict of every
    /// step, and at 100,000 series hashing each label set byte by byte was 3% of its cycles.
    kept_labels: HashSet<u64, LabelsHash>,
}

#[derive(Debug)]
struct Kept {
    key: ScoreKey,
    points: VecDeque<Point>,
}

impl Kept {
    /// Eviction order: lowest latest score first, then scored longest ago.
    fn rank(&self) -> (f32, Timestamp) {
        self.points
            .back()
            .map_or((0.0, Timestamp::from_millis(i64::MIN)), |p| (p.score, p.t))
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_POINTS, DEFAULT_MAX_SERIES)
    }
}

impl History {
    /// An empty history keeping at most `max_points` verdicts of at most `max_series` series
    /// (each at least 1).
    pub fn new(max_points: usize, max_series: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                max_points: max_points.max(1),
                max_series: max_series.max(1),
                series: HashMap::new(),
                kept_labels: HashSet::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map consistent, so a panic elsewhere does not spoil it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one step's verdicts, each `(query, model, labels, verdict)`, under one lock. A
    /// verdict not newer than the series' latest kept one is ignored (replays, late batches).
    /// The key is only cloned for a series seen for the first time.
    pub fn record<'a>(
        &self,
        verdicts: impl IntoIterator<Item = (&'a Arc<str>, &'a Arc<str>, &'a Labels, &'a Scored)>,
    ) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.kept_labels.len() > 2 * inner.series.len() + 64 {
            inner.kept_labels = inner
                .series
                .values()
                .map(|k| LabelsHash.hash_one(&k.key.labels))
                .collect();
        }
        for (query, model, labels, scored) in verdicts {
            if inner.series.len() >= inner.max_series
                && scored.score.get() < ADMIT_SCORE
                && !inner.kept_labels.contains(&LabelsHash.hash_one(labels))
            {
                continue;
            }
            let id = hash(query, model, labels);
            if let Some(kept) = inner.series.get_mut(&id) {
                // A 64-bit collision between two live series is unlikely enough to accept
                // losing the second one's history; it must not mix into the first's.
                if kept.key.query != *query
                    || kept.key.model != *model
                    || &kept.key.labels != labels
                {
                    continue;
                }
                if kept.points.back().is_some_and(|p| p.t >= scored.t) {
                    continue;
                }
                if kept.points.len() >= inner.max_points {
                    kept.points.pop_front();
                }
                kept.points.push_back(Point::from(scored));
                continue;
            }
            if inner.series.len() >= inner.max_series {
                if scored.score.get() < ADMIT_SCORE {
                    continue;
                }
                evict(&mut inner.series, inner.max_series);
            }
            let mut points = VecDeque::new();
            points.push_back(Point::from(scored));
            inner.kept_labels.insert(LabelsHash.hash_one(labels));
            inner.series.insert(
                id,
                Kept {
                    key: ScoreKey::new(Arc::clone(query), Arc::clone(model), labels.clone()),
                    points,
                },
            );
        }
    }

    /// The series `id` ([`series_id`]) and its kept verdicts, oldest first.
    pub fn get(&self, id: &str) -> Option<(ScoreKey, Vec<Point>)> {
        let inner = self.lock();
        let kept = inner.series.get(&parse_id(id)?)?;
        Some((kept.key.clone(), kept.points.iter().copied().collect()))
    }

    /// The last `n` verdicts of `key`, oldest first (empty when not kept): a sparkline.
    pub fn recent(&self, key: &ScoreKey, n: usize) -> Vec<Point> {
        let inner = self.lock();
        let id = hash(&key.query, &key.model, &key.labels);
        inner
            .series
            .get(&id)
            .filter(|k| &k.key == key)
            .map(|k| {
                let skip = k.points.len().saturating_sub(n);
                k.points.iter().skip(skip).copied().collect()
            })
            .unwrap_or_default()
    }

    /// Keeps only the series for which `keep` is true: the daemon drops those it stopped
    /// tracking (expired, ended, or gone with a reload), so their charts do not outlive them.
    pub fn retain(&self, mut keep: impl FnMut(&ScoreKey) -> bool) -> usize {
        let mut inner = self.lock();
        let before = inner.series.len();
        inner.series.retain(|_, k| keep(&k.key));
        before - inner.series.len()
    }

    /// How many series are kept.
    pub fn len(&self) -> usize {
        self.lock().series.len()
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().series.is_empty()
    }

    /// How many verdicts are kept over all series.
    pub fn points(&self) -> usize {
        self.lock().series.values().map(|k| k.points.len()).sum()
    }
}

/// Drops the lowest-ranked tenth (at least one) of `series`, which holds `max_series`.
fn evict(series: &mut HashMap<u64, Kept>, max_series: usize) {
    let drop = (max_series / 10).max(1);
    let mut ranked: Vec<(u64, (f32, Timestamp))> =
        series.iter().map(|(id, k)| (*id, k.rank())).collect();
    ranked.sort_by(|a, b| {
        a.1.0
            .total_cmp(&b.1.0)
            .then(a.1.1.cmp(&b.1.1))
            .then(a.0.cmp(&b.0))
    });
    for (id, _) in ranked.into_iter().take(drop) {
        series.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use portent_core::Score;

    use super::*;

    fn labels(pod: &str) -> Labels {
        Labels::new([("__name__", "cpu"), ("pod", pod)]).unwrap()
    }

    fn scored(t: i64, score: f64) -> Scored {
        let mut s = Scored::unknown(Timestamp::from_secs(t), t as f64);
        s.score = Score::new(score).unwrap();
        s
    }

    fn record(h: &History, pod: &str, s: &Scored) {
        let (q, m): (Arc<str>, Arc<str>) = ("q".into(), "m".into());
        let l = labels(pod);
        h.record([(&q, &m, &l, s)]);
    }

    fn id(pod: &str) -> String {
        series_id("q", "m", &labels(pod))
    }

    #[test]
    fn ids_are_stable_and_tell_series_apart() {
        // Pinned (computed independently): a changed hash would break every saved link to
        // a series page.
        assert_eq!(id("a"), "1498bf030ec412a7");
        assert_eq!(id("a").len(), 16);
        assert!(is_series_id(&id("a")));
        assert_ne!(id("a"), id("b"));
        assert_ne!(
            series_id("qm", "", &labels("a")),
            series_id("q", "m", &labels("a"))
        );
        assert!(!is_series_id("xyz"));
        assert!(!is_series_id("0123456789abcdeg"));
    }

    #[test]
    fn series_the_daemon_stopped_tracking_are_dropped() {
        let h = History::new(3, 10);
        record(&h, "a", &scored(1, 0.1));
        record(&h, "b", &scored(1, 0.1));
        assert_eq!(h.retain(|k| k.labels.get("pod") == Some("a")), 1);
        assert!(h.get(&id("a")).is_some());
        assert!(h.get(&id("b")).is_none());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn points_per_series_are_capped_oldest_dropped_first() {
        let h = History::new(3, 10);
        for t in 1..=5 {
            record(&h, "a", &scored(t, 0.1));
        }
        // A replayed, older verdict is ignored.
        record(&h, "a", &scored(2, 0.9));
        let (key, points) = h.get(&id("a")).unwrap();
        assert_eq!(&*key.query, "q");
        let ts: Vec<i64> = points.iter().map(|p| p.t.millis() / 1000).collect();
        assert_eq!(ts, [3, 4, 5]);
        assert_eq!(h.recent(&key, 2).len(), 2);
        assert_eq!(h.recent(&key, 2)[1].value, 5.0);
        assert_eq!(h.points(), 3);
    }

    #[test]
    fn series_are_capped_calm_newcomers_wait_and_the_calmest_go_first() {
        let h = History::new(5, 10);
        for i in 0..10 {
            // Series 0 is the calmest and was scored longest ago among equals.
            record(&h, &format!("p{i}"), &scored(100 + i, 0.01 * i as f64));
        }
        assert_eq!(h.len(), 10);
        // Full: a calm newcomer is not taken in.
        record(&h, "calm", &scored(200, 0.1));
        assert_eq!(h.len(), 10);
        assert!(h.get(&id("calm")).is_none());
        // An anomalous one is, and the lowest-scored tenth (one series) makes room.
        record(&h, "hot", &scored(200, 0.95));
        assert_eq!(h.len(), 10);
        assert!(h.get(&id("hot")).is_some());
        assert!(h.get(&id("p0")).is_none());
        assert!(h.get(&id("p1")).is_some());
        // Never more than the cap, however many anomalous series arrive.
        for i in 0..100 {
            record(&h, &format!("storm{i}"), &scored(300, 0.9));
            assert!(h.len() <= 10);
        }
        assert!(h.points() <= 50);
    }

    #[test]
    fn unknown_ids_are_none() {
        let h = History::default();
        assert!(h.is_empty());
        assert!(h.get("not-an-id").is_none());
        assert!(h.get(&id("a")).is_none());
    }
}
