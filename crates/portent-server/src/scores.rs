//! The scores as Prometheus series: `portent_anomaly_score`, `portent_yhat`, `portent_yhat_lower`
//! and `portent_yhat_upper`, one of each per scored input series and model.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};

use hashbrown::{Equivalent, HashMap};
use portent_core::{Labels, LabelsError, LabelsHash, Sample, Scored, Series, Timestamp};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The label carrying the query alias on every output series.
pub const QUERY_LABEL: &str = "query";
/// The label carrying the model alias on every output series.
pub const MODEL_LABEL: &str = "model";
/// The label that takes the input series' metric name (`__name__`) on the output series.
pub const METRIC_LABEL: &str = "metric";

/// What an input label must not be called on the output, since portent sets these itself.
const RESERVED: [&str; 3] = [QUERY_LABEL, MODEL_LABEL, METRIC_LABEL];

/// One output metric: its name, help text and which number of a [`Scored`] it carries.
struct OutputMetric {
    name: &'static str,
    help: &'static str,
    value: fn(&Scored) -> f64,
}

/// The four output metrics, in exposition order.
const OUTPUTS: [OutputMetric; 4] = [
    OutputMetric {
        name: "portent_anomaly_score",
        help: "How unusual the latest sample of the input series is, in [0, 1]: 0 is expected, \
               0.8 the default alerting threshold. High at the onset of an anomaly and while it \
               worsens.",
        value: |s| s.score.get(),
    },
    OutputMetric {
        name: "portent_yhat",
        help: "The value the model expected for the latest sample; NaN while it has not learnt \
               enough to expect anything.",
        value: |s| s.yhat,
    },
    OutputMetric {
        name: "portent_yhat_lower",
        help: "The lower edge of the expected band; NaN while unknown.",
        value: |s| s.yhat_lower,
    },
    OutputMetric {
        name: "portent_yhat_upper",
        help: "The upper edge of the expected band; NaN while unknown.",
        value: |s| s.yhat_upper,
    },
];

/// The names of the four output metrics, in exposition order.
pub const OUTPUT_METRICS: [&str; 4] = [
    OUTPUTS[0].name,
    OUTPUTS[1].name,
    OUTPUTS[2].name,
    OUTPUTS[3].name,
];

/// Which scored series an output belongs to: the query and model aliases and the input series'
/// labels.
///
/// It hashes as its labels alone (equal keys have equal labels), so that a map of keys with
/// [`LabelsHash`] puts a series where the engine's maps do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScoreKey {
    /// The query alias (its `query` label).
    pub query: Arc<str>,
    /// The model alias (its `model` label).
    pub model: Arc<str>,
    /// The input series' labels, as the source gave them.
    pub labels: Labels,
}

impl Hash for ScoreKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels.hash(state);
    }
}

/// A [`ScoreKey`] made of borrowed parts, to look one up without cloning three `Arc`s.
struct KeyRef<'a> {
    query: &'a str,
    model: &'a str,
    labels: &'a Labels,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.labels.hash(state);
    }
}

impl Equivalent<ScoreKey> for KeyRef<'_> {
    fn equivalent(&self, key: &ScoreKey) -> bool {
        *self.labels == key.labels && self.query == &*key.query && self.model == &*key.model
    }
}

impl ScoreKey {
    /// A key; `query` and `model` are shared `Arc`s so that a million keys do not copy them.
    pub fn new(query: Arc<str>, model: Arc<str>, labels: Labels) -> Self {
        Self {
            query,
            model,
            labels,
        }
    }

    /// The labels of this key's output series, without `__name__`, in the order they are
    /// exposed: the input labels renamed by [`output_label_name`], then `query` and `model`.
    pub fn output_labels(&self) -> impl Iterator<Item = (Cow<'_, str>, &str)> {
        output_labels(&self.query, &self.model, &self.labels)
    }

    /// The label set of the output series `metric` (one of [`OUTPUT_METRICS`]), `__name__`
    /// included: what remote_write sends.
    pub fn output_series_labels(&self, metric: &str) -> Result<Labels, LabelsError> {
        Labels::new(
            self.output_labels()
                .chain([(Cow::Borrowed(Labels::METRIC_NAME), metric)]),
        )
    }

    /// The four output series of `scored`, each with one sample at the scored sample's time,
    /// in the order of [`OUTPUT_METRICS`]: what a remote_write output sends for one verdict
    /// (a tick's verdicts, not the whole [`Scores`], so nothing is sent twice).
    ///
    /// NaN (an unknown expectation) is sent as an ordinary NaN, never as Prometheus' stale
    /// marker. Output labels are always valid (input names are, and renames keep them so);
    /// were one not, its series would be left out rather than sent wrong.
    pub fn output_series(&self, scored: &Scored) -> impl Iterator<Item = Series> {
        OUTPUTS.iter().filter_map(move |m| {
            Some(Series {
                labels: self.output_series_labels(m.name).ok()?,
                samples: vec![Sample::new(scored.t, (m.value)(scored))],
            })
        })
    }
}

/// [`ScoreKey::output_labels`] of borrowed parts.
fn output_labels<'a>(
    query: &'a str,
    model: &'a str,
    labels: &'a Labels,
) -> impl Iterator<Item = (Cow<'a, str>, &'a str)> {
    labels
        .iter()
        .map(|l| (output_label_name(labels, l.name), l.value))
        .chain([
            (Cow::Borrowed(QUERY_LABEL), query),
            (Cow::Borrowed(MODEL_LABEL), model),
        ])
}

/// The name an input label has on portent's output series.
///
/// portent adds `query`, `model` and, from the input's `__name__`, `metric`. An input label
/// with one of those names is renamed with an `exported_` prefix, as Prometheus renames a
/// scraped label that clashes with a target label; the prefix repeats until the name is free
/// (`query` becomes `exported_exported_query` when the input also has `exported_query`). Every
/// other name is kept, so an alert on the score carries the same `namespace`, `pod` … as the
/// input series. Nothing is dropped, so two input series never merge into one output series.
pub fn output_label_name<'a>(input: &Labels, name: &'a str) -> Cow<'a, str> {
    if name == Labels::METRIC_NAME {
        return Cow::Borrowed(METRIC_LABEL);
    }
    if !RESERVED.contains(&name) {
        return Cow::Borrowed(name);
    }
    let mut renamed = format!("exported_{name}");
    while input.get(&renamed).is_some() {
        renamed.insert_str(0, "exported_");
    }
    Cow::Owned(renamed)
}

/// The latest score of every series, exposed on `/metrics`, and read by the web UI and the
/// API.
///
/// Either a table of its own ([`Scores::new`]), set with [`Scores::update`] or
/// [`Scores::sync`] and emptied with [`Scores::remove_older_than`] or [`Scores::remove`] as
/// series expire, so that they disappear from `/metrics` and Prometheus marks them stale; or a
/// view of verdicts someone else holds ([`Scores::live`]): the daemon's model store, read in
/// place. Cloning gives another handle on the same scores.
///
/// Exposed in the holder's order, the same in each family. A table holds each series once for
/// all four metrics; a scrape reads it under a shared lock, so an update waits for a scrape in
/// progress (about 0.8 s per 100,000 series) and the other way round.
#[derive(Clone)]
pub struct Scores {
    inner: Arc<Backing>,
    /// Each multivariate verdict's features and their shares of its score, exposed as
    /// [`CONTRIBUTION_METRIC`].
    contributions: Arc<RwLock<Contributions>>,
}

/// Where [`Scores`] reads its verdicts.
enum Backing {
    Table(RwLock<Held>),
    Live(Box<dyn LatestScores>),
}

impl Default for Scores {
    fn default() -> Self {
        Self {
            inner: Arc::new(Backing::Table(RwLock::default())),
            contributions: Arc::default(),
        }
    }
}

/// Verdicts held elsewhere, read in place by a [`Scores::live`]: at 100,000 series a copy of
/// every verdict in a table of its own was 170 bytes a series of resident memory, and setting
/// it after every step a pass over every series.
pub trait LatestScores: Send + Sync {
    /// Calls `read` once with the verdicts as they are, held still (under the holder's lock)
    /// until it returns: a scrape's four families read one state.
    fn read(&self, read: &mut dyn FnMut(&dyn Verdicts));
}

/// One state of the latest verdicts (see [`LatestScores::read`]).
pub trait Verdicts {
    /// Calls `visit` with every verdict as `(query, model, labels, verdict)`, in an order that
    /// stays the same while no series comes or goes.
    fn for_each(&self, visit: &mut dyn FnMut(&str, &str, &Labels, &Scored));
    /// The verdict of one series.
    fn get(&self, query: &str, model: &str, labels: &Labels) -> Option<Scored>;
    /// How many verdicts there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Verdicts for Held {
    fn for_each(&self, visit: &mut dyn FnMut(&str, &str, &Labels, &Scored)) {
        for (k, v) in self.map.iter() {
            visit(&k.query, &k.model, &k.labels, &v.scored);
        }
    }

    fn get(&self, query: &str, model: &str, labels: &Labels) -> Option<Scored> {
        let key = KeyRef {
            query,
            model,
            labels,
        };
        self.map.get(&key).map(|v| v.scored)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The latest verdict of every series, in a hash table: when the daemon set all of them after
/// every step (before it read its store in place), at 100,000 series the ordered map this was
/// spent more time comparing label sets than the engine spent scoring (a third of the daemon's
/// cycles). Keys hash as their labels, with [`LabelsHash`], in the engine's order.
#[derive(Debug, Default)]
struct Held {
    map: HashMap<ScoreKey, Verdict, LabelsHash>,
    /// The number of the last [`Scores::sync`], to find the series it did not set.
    pass: u32,
}

#[derive(Clone, Copy, Debug)]
struct Verdict {
    scored: Scored,
    /// The [`Held::pass`] that last set it.
    pass: u32,
}

/// Per multivariate verdict (keyed as its score), each feature's name and share of the score.
pub type Contributions = BTreeMap<ScoreKey, Vec<(Arc<str>, f64)>>;

/// The metric that carries each feature's share of a multivariate model's latest score.
pub const CONTRIBUTION_METRIC: &str = "portent_feature_contribution";
/// The label naming the feature (the query alias) on [`CONTRIBUTION_METRIC`].
pub const FEATURE_LABEL: &str = "feature";

impl fmt::Debug for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scores")
            .field("series", &self.len())
            .finish()
    }
}

impl Scores {
    /// No scores yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores read in place from `latest`: [`Scores::update`], [`Scores::sync`] and the
    /// removals do nothing on them, since their holder's state is the truth.
    pub fn live(latest: impl LatestScores + 'static) -> Self {
        Self {
            inner: Arc::new(Backing::Live(Box::new(latest))),
            contributions: Arc::default(),
        }
    }

    /// Adds the four output metrics to `registry`, backed by these scores.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The table, to change; `None` for live scores.
    fn write(&self) -> Option<RwLockWriteGuard<'_, Held>> {
        match &*self.inner {
            Backing::Table(t) => Some(t.write().unwrap_or_else(PoisonError::into_inner)),
            Backing::Live(_) => None,
        }
    }

    /// `f` of the held verdicts, held still while it runs; `None` if a live holder never
    /// called back.
    fn with<R>(&self, f: impl FnOnce(&dyn Verdicts) -> R) -> Option<R> {
        match &*self.inner {
            // A panic elsewhere while holding the lock leaves a map that is still consistent
            // (every operation on it is a single insert or remove).
            Backing::Table(t) => Some(f(&*t.read().unwrap_or_else(PoisonError::into_inner))),
            Backing::Live(l) => {
                let (mut f, mut out) = (Some(f), None);
                l.read(&mut |v| {
                    if let Some(f) = f.take() {
                        out = Some(f(v));
                    }
                });
                out
            }
        }
    }

    /// Calls `visit` with every held verdict as `(query, model, labels, verdict)`.
    fn each(&self, visit: &mut dyn FnMut(&str, &str, &Labels, &Scored)) {
        self.with(|v| v.for_each(visit));
    }

    /// Sets the latest score of each series, under one lock. A score older than the one held
    /// (by sample time) is ignored, so replays and late batches never move a series back.
    pub fn update(&self, scored: impl IntoIterator<Item = (ScoreKey, Scored)>) {
        let Some(mut held) = self.write() else {
            return;
        };
        let pass = held.pass;
        for (key, s) in scored {
            match held.map.get_mut(&key) {
                Some(v) if v.scored.t > s.t => {}
                Some(v) => v.scored = s,
                None => {
                    held.map.insert(key, Verdict { scored: s, pass });
                }
            }
        }
    }

    /// Makes the held scores exactly `latest`, each `(query, model, labels, verdict)`: those
    /// given are set (whatever their time: the caller's state is the truth), those not given
    /// are forgotten. One lock, one lookup per series, and a key is only built for a series
    /// not held yet: the daemon calls this after every step with every series it tracks.
    /// Returns how many series were forgotten.
    pub fn sync<'a>(
        &self,
        latest: impl IntoIterator<Item = (&'a str, &'a str, &'a Labels, Scored)>,
    ) -> usize {
        let Some(mut held) = self.write() else {
            return 0;
        };
        let held = &mut *held;
        held.pass = held.pass.wrapping_add(1);
        let pass = held.pass;
        // Aliases of new keys, shared: a few distinct ones over any number of series.
        let mut names = Aliases::default();
        let mut set = 0usize;
        for (query, model, labels, scored) in latest {
            let found = held.map.get_mut(&KeyRef {
                query,
                model,
                labels,
            });
            match found {
                Some(v) => {
                    set += usize::from(v.pass != pass);
                    *v = Verdict { scored, pass };
                }
                None => {
                    let key = names.key(query, model, labels);
                    held.map.insert(key, Verdict { scored, pass });
                    set += 1;
                }
            }
        }
        let before = held.map.len();
        if before > set {
            held.map.retain(|_, v| v.pass == pass);
        }
        before - held.map.len()
    }

    /// Sets the latest score of one series (see [`Scores::update`]).
    pub fn set(&self, key: ScoreKey, scored: Scored) {
        self.update([(key, scored)]);
    }

    /// The score held for `key`.
    pub fn get(&self, key: &ScoreKey) -> Option<Scored> {
        self.with(|v| v.get(&key.query, &key.model, &key.labels))
            .flatten()
    }

    /// Forgets the given series; returns how many were held.
    pub fn remove<'a>(&self, keys: impl IntoIterator<Item = &'a ScoreKey>) -> usize {
        let Some(mut held) = self.write() else {
            return 0;
        };
        keys.into_iter()
            .filter(|k| held.map.remove(*k).is_some())
            .count()
    }

    /// Forgets every series whose latest sample is older than `cutoff` (stale series, with
    /// `cutoff` = now − retention); returns how many.
    pub fn remove_older_than(&self, cutoff: Timestamp) -> usize {
        self.retain(|_, s| s.t >= cutoff)
    }

    /// Keeps only the series for which `keep` is true (e.g. those of models still configured
    /// after a reload); returns how many were removed.
    pub fn retain(&self, mut keep: impl FnMut(&ScoreKey, &Scored) -> bool) -> usize {
        let Some(mut held) = self.write() else {
            return 0;
        };
        let before = held.map.len();
        held.map.retain(|k, v| keep(k, &v.scored));
        before - held.map.len()
    }

    /// The `n` highest scores (highest first; ties by series), for "what is unusual now".
    pub fn top(&self, n: usize) -> Vec<(ScoreKey, Scored)> {
        self.best(n, false)
    }

    /// The `n` highest scores, calm series (score 0) included, highest first (ties by
    /// series): the web UI's overview, which lists series even when nothing is unusual.
    pub fn ranked(&self, n: usize) -> Vec<(ScoreKey, Scored)> {
        self.best(n, true)
    }

    /// The `n` highest scores in one pass, a key built only for a verdict that may be among
    /// them: a million series are neither all sorted nor all copied for a page of 50.
    fn best(&self, n: usize, calm: bool) -> Vec<(ScoreKey, Scored)> {
        let mut best: Vec<(ScoreKey, Scored)> = Vec::new();
        if n == 0 {
            return best;
        }
        let order = |a: &(ScoreKey, Scored), b: &(ScoreKey, Scored)| {
            b.1.score
                .get()
                .total_cmp(&a.1.score.get())
                .then_with(|| a.0.cmp(&b.0))
        };
        let mut names = Aliases::default();
        // The `n`-th best at the last cut: a verdict ranked after it cannot be among the best.
        let mut cut: Option<(ScoreKey, Scored)> = None;
        self.each(&mut |query, model, labels, scored| {
            if !calm && scored.score.get() <= 0.0 {
                return;
            }
            if let Some((k, s)) = &cut {
                let after = scored
                    .score
                    .get()
                    .total_cmp(&s.score.get())
                    .reverse()
                    .then_with(|| (query, model, labels).cmp(&(&*k.query, &*k.model, &k.labels)))
                    .is_gt();
                if after {
                    return;
                }
            }
            let key = names.key(query, model, labels);
            best.push((key, *scored));
            if best.len() >= 2 * n {
                best.sort_by(order);
                best.truncate(n);
                cut = best.last().cloned();
            }
        });
        best.sort_by(order);
        best.truncate(n);
        best
    }

    /// A held series for which `f` is true (any one, if several are), with its score.
    pub fn find(&self, mut f: impl FnMut(&ScoreKey) -> bool) -> Option<(ScoreKey, Scored)> {
        let mut names = Aliases::default();
        let mut found = None;
        self.each(&mut |query, model, labels, scored| {
            if found.is_none() {
                let key = names.key(query, model, labels);
                if f(&key) {
                    found = Some((key, *scored));
                }
            }
        });
        found
    }

    /// How many series are held.
    pub fn len(&self) -> usize {
        self.with(|v| v.len()).unwrap_or(0)
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every multivariate verdict's feature shares (the daemon sets them all after
    /// each step, so entities it forgot disappear with them).
    pub fn set_contributions(&self, contributions: Contributions) {
        *self
            .contributions
            .write()
            .unwrap_or_else(PoisonError::into_inner) = contributions;
    }

    /// The feature shares held for `key`.
    pub fn contributions(&self, key: &ScoreKey) -> Option<Vec<(Arc<str>, f64)>> {
        self.contributions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The four output series of every held score (see [`ScoreKey::output_series`]): a full
    /// snapshot, e.g. for a remote_write output's first send.
    pub fn to_series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        let mut names = Aliases::default();
        self.each(&mut |query, model, labels, scored| {
            let key = names.key(query, model, labels);
            out.extend(key.output_series(scored));
        });
        out
    }
}

/// Query and model aliases as shared `Arc`s for the keys built in one pass: a few distinct
/// ones over any number of series.
#[derive(Default)]
struct Aliases(Vec<Arc<str>>);

impl Aliases {
    /// The key of `labels` under `query` and `model`, with shared aliases.
    fn key(&mut self, query: &str, model: &str, labels: &Labels) -> ScoreKey {
        ScoreKey::new(self.get(query), self.get(model), labels.clone())
    }

    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.0.iter().find(|a| &***a == name) {
            return Arc::clone(a);
        }
        let a: Arc<str> = name.into();
        self.0.push(Arc::clone(&a));
        a
    }
}

/// A series' output labels (query, model, input labels) as prometheus-client encodes them,
/// with a `feature` label for [`CONTRIBUTION_METRIC`].
struct OutputLabels<'a>((&'a str, &'a str, &'a Labels), Option<&'a str>);

impl EncodeLabelSet for OutputLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        let (query, model, labels) = self.0;
        for (name, value) in output_labels(query, model, labels) {
            EncodeLabel::encode(&(name, value), encoder.encode_label())?;
        }
        if let Some(feature) = self.1 {
            EncodeLabel::encode(&(FEATURE_LABEL, feature), encoder.encode_label())?;
        }
        Ok(())
    }
}

impl Collector for Scores {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        // In the holder's order, the same in every family and from one scrape to the next while
        // no series comes or goes. Sorting by key took a third more CPU per scrape at 100,000
        // series (1.17 s against 0.87 s), for an order no Prometheus needs.
        // One state for the four families: a step between two of them would pair one tick's
        // scores with the next one's bands.
        self.with(|verdicts| {
            for m in &OUTPUTS {
                let mut family =
                    encoder.encode_descriptor(m.name, m.help, None, MetricType::Gauge)?;
                let mut result = Ok(());
                verdicts.for_each(&mut |query, model, labels, scored| {
                    if result.is_ok() {
                        let labels = OutputLabels((query, model, labels), None);
                        result = family
                            .encode_family(&labels)
                            .and_then(|e| ConstGauge::new((m.value)(scored)).encode(e));
                    }
                });
                result?;
            }
            Ok::<(), fmt::Error>(())
        })
        .unwrap_or(Ok(()))?;
        let contributions = self
            .contributions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if !contributions.is_empty() {
            let mut family = encoder.encode_descriptor(
                CONTRIBUTION_METRIC,
                "Each feature's share, in [0, 1], of a multivariate model's latest score for the \
                 entity (the shares sum to 1, or are all 0 when nothing stood out): which of \
                 its metrics made the row unusual.",
                None,
                MetricType::Gauge,
            )?;
            for (key, features) in contributions.iter() {
                for (feature, share) in features {
                    let labels = OutputLabels((&key.query, &key.model, &key.labels), Some(feature));
                    ConstGauge::new(*share).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn clashing_names_get_exported_prefixes() {
        let input = labels(&[
            ("__name__", "up"),
            ("query", "q"),
            ("exported_query", "e"),
            ("model", "m"),
            ("metric", "x"),
            ("pod", "p"),
        ]);
        let key = ScoreKey::new("cpu".into(), "default".into(), input);
        let out: Vec<(String, String)> = key
            .output_labels()
            .map(|(n, v)| (n.into_owned(), v.to_owned()))
            .collect();
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "metric",
                "exported_query",
                "exported_metric",
                "exported_model",
                "pod",
                "exported_exported_query",
                "query",
                "model"
            ]
        );
        let series = key.output_series_labels("portent_yhat").unwrap();
        assert_eq!(series.len(), 9, "nothing merged or dropped: {series}");
        assert_eq!(series.get("exported_exported_query"), Some("q"));
        assert_eq!(series.get("exported_query"), Some("e"));
        assert_eq!(series.get("query"), Some("cpu"));
        assert_eq!(series.get("metric"), Some("up"));
        assert_eq!(series.metric_name(), Some("portent_yhat"));
    }

    #[test]
    fn older_scores_do_not_replace_newer_ones() {
        let scores = Scores::new();
        let key = ScoreKey::new("q".into(), "m".into(), labels(&[("a", "1")]));
        let mut s = Scored::unknown(Timestamp::from_secs(100), 1.0);
        scores.set(key.clone(), s);
        s.t = Timestamp::from_secs(50);
        s.value = 2.0;
        scores.set(key.clone(), s);
        assert_eq!(scores.get(&key).unwrap().value, 1.0);
        assert_eq!(scores.remove_older_than(Timestamp::from_secs(101)), 1);
        assert!(scores.is_empty());
    }

    #[test]
    fn a_sync_sets_what_it_is_given_and_forgets_the_rest() {
        let scores = Scores::new();
        let a = labels(&[("pod", "a")]);
        let b = labels(&[("pod", "b")]);
        let at = |secs: i64, value: f64| Scored::unknown(Timestamp::from_secs(secs), value);
        // Two models over the same series are two keys with one hash.
        assert_eq!(
            scores.sync([
                ("q", "m1", &a, at(10, 1.0)),
                ("q", "m2", &a, at(10, 2.0)),
                ("q", "m1", &b, at(10, 3.0)),
            ]),
            0
        );
        assert_eq!(scores.len(), 3);
        let key = |m: &str, l: &Labels| ScoreKey::new("q".into(), m.into(), l.clone());
        assert_eq!(scores.get(&key("m2", &a)).unwrap().value, 2.0);
        // The state given is the truth, older or not; what is not given goes.
        assert_eq!(
            scores.sync([("q", "m1", &a, at(5, 4.0)), ("q", "m1", &b, at(11, 5.0))]),
            1
        );
        assert_eq!(scores.len(), 2);
        assert_eq!(scores.get(&key("m1", &a)).unwrap().value, 4.0);
        assert_eq!(scores.get(&key("m1", &b)).unwrap().value, 5.0);
        assert!(scores.get(&key("m2", &a)).is_none());
        // A series set in between by `update` and not given to the next sync goes too.
        scores.set(key("m3", &b), at(12, 6.0));
        assert_eq!(scores.sync([("q", "m1", &a, at(13, 7.0))]), 2);
        assert_eq!(scores.len(), 1);
        // Keys new in one sync share their aliases.
        let c = labels(&[("pod", "c")]);
        scores.sync([("q", "m1", &b, at(14, 0.0)), ("q", "m1", &c, at(14, 0.0))]);
        let Backing::Table(table) = &*scores.inner else {
            panic!("a table")
        };
        let held = table.read().unwrap();
        let keys: Vec<&ScoreKey> = held.map.keys().collect();
        assert!(Arc::ptr_eq(&keys[0].query, &keys[1].query));
    }

    #[test]
    fn feature_contributions_are_exposed_per_feature() {
        let scores = Scores::new();
        let key = ScoreKey::new(
            "pods".into(),
            "pods".into(),
            labels(&[("namespace", "shop"), ("pod", "cart-1")]),
        );
        scores.set(key.clone(), Scored::unknown(Timestamp::from_secs(7), 0.5));
        scores.set_contributions(BTreeMap::from([(
            key.clone(),
            vec![("memory".into(), 0.75), ("latency".into(), 0.25)],
        )]));
        let mut registry = Registry::default();
        scores.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE portent_feature_contribution gauge"),
            "{text}"
        );
        assert!(
            text.contains(
                "portent_feature_contribution{namespace=\"shop\",pod=\"cart-1\",query=\"pods\",\
                 model=\"pods\",feature=\"memory\"} 0.75"
            ),
            "{text}"
        );
        assert_eq!(scores.contributions(&key).unwrap().len(), 2);
        scores.set_contributions(BTreeMap::new());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("portent_feature_contribution"), "{text}");
    }

    /// Verdicts held elsewhere, as the daemon's store holds them.
    struct Kept(Vec<(String, String, Labels, Scored)>);

    impl LatestScores for Kept {
        fn read(&self, read: &mut dyn FnMut(&dyn Verdicts)) {
            read(self);
        }
    }

    impl Verdicts for Kept {
        fn for_each(&self, visit: &mut dyn FnMut(&str, &str, &Labels, &Scored)) {
            for (q, m, l, s) in &self.0 {
                visit(q, m, l, s);
            }
        }

        fn get(&self, query: &str, model: &str, labels: &Labels) -> Option<Scored> {
            self.0
                .iter()
                .find(|(q, m, l, _)| q == query && m == model && l == labels)
                .map(|v| v.3)
        }

        fn len(&self) -> usize {
            self.0.len()
        }
    }

    /// 600 verdicts over two queries and models, half of them calm and many tied.
    fn verdicts() -> Vec<(String, String, Labels, Scored)> {
        (0..600u32)
            .map(|i| {
                let score = if i % 2 == 0 {
                    0.0
                } else {
                    f64::from(i % 7) / 7.0
                };
                let mut s = Scored::unknown(Timestamp::from_secs(1_000), f64::from(i));
                s.score = portent_core::Score::new(score).unwrap();
                (s.yhat, s.yhat_lower, s.yhat_upper) = (1.0, 0.5, 1.5);
                let pod = format!("p{}", (i * 7919) % 600);
                (
                    format!("q{}", i % 2),
                    format!("m{}", i % 3),
                    labels(&[("pod", &pod)]),
                    s,
                )
            })
            .collect()
    }

    #[test]
    fn live_scores_read_in_place_as_a_table_would_hold_them() {
        let table = Scores::new();
        table.sync(
            verdicts()
                .iter()
                .map(|(q, m, l, s)| (q.as_str(), m.as_str(), l, *s)),
        );
        let live = Scores::live(Kept(verdicts()));
        // The best `n` in one pass are the first `n` of a full sort, calm or not, ties by key.
        let mut sorted: Vec<(ScoreKey, Scored)> = verdicts()
            .into_iter()
            .map(|(q, m, l, s)| (ScoreKey::new(q.into(), m.into(), l), s))
            .collect();
        sorted.sort_by(|a, b| {
            b.1.score
                .get()
                .total_cmp(&a.1.score.get())
                .then(a.0.cmp(&b.0))
        });
        let unusual: Vec<_> = sorted
            .iter()
            .filter(|(_, s)| s.score.get() > 0.0)
            .cloned()
            .collect();
        let keys = |v: Vec<(ScoreKey, Scored)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        for n in [0, 1, 7, 50, 299, 300, 301, 600, 700] {
            for scores in [&table, &live] {
                let want = |all: &[(ScoreKey, Scored)]| keys(all[..n.min(all.len())].to_vec());
                assert_eq!(keys(scores.ranked(n)), want(&sorted), "ranked({n})");
                assert_eq!(keys(scores.top(n)), want(&unusual), "top({n})");
            }
        }
        let (key, scored) = &sorted[10];
        assert_eq!(live.get(key), Some(*scored));
        assert_eq!(live.find(|k| k == key).map(|f| f.1), Some(*scored));
        assert_eq!(live.len(), 600);
        // Writes do nothing to live scores: their holder's state is the truth.
        live.set(
            key.clone(),
            Scored::unknown(Timestamp::from_secs(2_000), 0.0),
        );
        assert_eq!(live.remove_older_than(Timestamp::from_secs(5_000)), 0);
        assert_eq!(live.get(key), Some(*scored));
        // The same exposition, line for line (each in its holder's order).
        let text = |scores: &Scores| {
            let mut registry = Registry::default();
            scores.register(&mut registry);
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        // A scrape reads one state for its four families: the holder is asked once.
        struct Counted(Kept, std::sync::atomic::AtomicUsize);
        impl LatestScores for Counted {
            fn read(&self, read: &mut dyn FnMut(&dyn Verdicts)) {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                read(&self.0);
            }
        }
        let counted = Arc::new(Counted(Kept(verdicts()), 0.into()));
        struct Shared(Arc<Counted>);
        impl LatestScores for Shared {
            fn read(&self, read: &mut dyn FnMut(&dyn Verdicts)) {
                self.0.read(read);
            }
        }
        let once = text(&Scores::live(Shared(Arc::clone(&counted))));
        assert_eq!(counted.1.load(std::sync::atomic::Ordering::Relaxed), 1);
        let exposed = text(&live);
        assert_eq!(once, exposed);
        assert_eq!(exposed.len(), 4 * 600 + 4 * 2 + 1, "{:?}", &exposed[..5]);
        assert_eq!(exposed, text(&table));
        assert_eq!(live.to_series().len(), 4 * 600);
    }

    #[test]
    fn remote_write_series_carry_names_and_nan() {
        let scores = Scores::new();
        let key = ScoreKey::new("q".into(), "m".into(), labels(&[("__name__", "up")]));
        scores.set(key, Scored::unknown(Timestamp::from_secs(7), 1.0));
        let series = scores.to_series();
        let names: Vec<&str> = series
            .iter()
            .map(|s| s.labels.metric_name().unwrap())
            .collect();
        assert_eq!(names, OUTPUT_METRICS);
        assert_eq!(series[0].samples[0].v, 0.0);
        assert!(series[1].samples[0].v.is_nan());
        assert!(!portent_core::is_stale_marker(series[1].samples[0].v));
        assert_eq!(series[1].samples[0].t, Timestamp::from_secs(7));
    }
}
