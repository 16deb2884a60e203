//! The live state of every tracked series, and the fitted pools of the multivariate models
//! ([`crate::joint`]), so that one snapshot ([`crate::persist`]) holds all model state.
//!
//! Series are grouped by (model alias, query alias); inside a group an entry is keyed by the
//! series' [`Labels`]. An entry holds the fitted [`Detector`], the time of the last sample it
//! scored, the time of the last sample seen, and the latest verdict for the exposition. Nothing
//! else: no raw history (fits read theirs from the source), no copy of the aliases (the group
//! holds them once).
//!
//! # Memory per series
//!
//! The bar is a million series in under 4 KiB each. An entry costs its `size_of` (the detector
//! inline, about 600 bytes, plus times and the latest [`Scored`]), the hash table's slot, the
//! label set's heap (an array of 32-byte name/value pairs and the strings themselves), and the
//! detector's per-hour ranges on the heap for a series with a daily cycle (up to 168 pairs of
//! `f32` for a weekly one). The `resident_memory_per_series` test (`tests/memory.rs`) measures
//! the process's resident memory over 20,000 fitted series with eight Kubernetes-like labels
//! and a daily cycle each, and asserts it stays under 4 KiB: about 2.4 KiB at this commit, of
//! which 808 bytes are the entry inline and 631 bytes the detector's serialised state.
//! [`Store::approx_bytes`] estimates the same without measuring, for self-metrics.

use std::mem::size_of;
use std::sync::Arc;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use portent_core::{Labels, LabelsHash, Scored, Timestamp};
use portent_models::Detector;

use crate::joint::Pool;
use serde::{Deserialize, Serialize};

/// One series' state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The fitted detector.
    pub detector: Detector,
    /// The time of the last sample scored; later samples are new.
    pub last_scored: Option<Timestamp>,
    /// The time of the last sample seen; entries unseen for the retention expire.
    pub last_seen: Timestamp,
    /// The verdict on show in the exposition: of the samples scored at the latest score
    /// tick, the one with the highest score (a catch-up tick scores many; its onset must not
    /// hide behind calmer samples), or missing data's verdict.
    pub latest: Option<Scored>,
}

impl Entry {
    /// A fresh entry around `detector`, seen at `seen`, nothing scored yet.
    pub fn new(detector: Detector, seen: Timestamp) -> Self {
        Self {
            detector,
            last_scored: None,
            last_seen: seen,
            latest: None,
        }
    }
}

/// The series of one (model, query) pair. The map is hashbrown's (std's is the same table
/// behind a different API) for [`HashMap::get_key_value_mut`]: the scheduler swaps a key for
/// the equal label set its source sends, so that later lookups compare pointers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group {
    model: Arc<str>,
    query: Arc<str>,
    series: HashMap<Labels, Entry, LabelsHash>,
}

impl Group {
    /// The model alias.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The query alias.
    pub fn query(&self) -> &str {
        &self.query
    }

    pub(crate) fn model_arc(&self) -> Arc<str> {
        self.model.clone()
    }

    pub(crate) fn query_arc(&self) -> Arc<str> {
        self.query.clone()
    }

    /// The entries by labels.
    pub fn series(&self) -> &HashMap<Labels, Entry, LabelsHash> {
        &self.series
    }

    /// The entries by labels, to change.
    pub fn series_mut(&mut self) -> &mut HashMap<Labels, Entry, LabelsHash> {
        &mut self.series
    }

    /// Drops the entries last seen before `horizon`; returns how many.
    pub fn expire(&mut self, horizon: Timestamp) -> usize {
        let before = self.series.len();
        self.series.retain(|_, e| e.last_seen >= horizon);
        before - self.series.len()
    }
}

/// The stable fingerprint of a series in a group: FNV-1a over the model alias, the query alias
/// and the labels' own [`Labels::fingerprint`], for state files and sharding. Stable across
/// processes and releases.
pub fn fingerprint(model: &str, query: &str, labels: &Labels) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // 0xff never occurs in UTF-8: it separates the fields.
    for b in model
        .bytes()
        .chain([0xff])
        .chain(query.bytes())
        .chain([0xff])
        .chain(labels.fingerprint().to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// One series' latest verdict, for the exposition.
#[derive(Copy, Clone, Debug)]
pub struct Latest<'a> {
    /// The model alias (the `model` label).
    pub model: &'a str,
    /// The query alias (the `query` label).
    pub query: &'a str,
    /// The input series' labels.
    pub labels: &'a Labels,
    /// Its latest verdict: score, yhat, band and reason.
    pub scored: &'a Scored,
}

impl Latest<'_> {
    /// The output series' labels: the input's plus `query` and `model` (which replace any the
    /// input had under those names).
    pub fn output_labels(&self) -> Labels {
        // Aliases are valid label values and `query`/`model` valid names: this cannot fail,
        // but fall back to the input's labels rather than panic.
        self.labels
            .with("query", self.query)
            .and_then(|l| l.with("model", self.model))
            .unwrap_or_else(|_| self.labels.clone())
    }
}

/// Every tracked series, by (model, query) group, and the pools of the multivariate models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    groups: Vec<Group>,
    /// Per multivariate model alias, its pools' models by pool labels.
    pools: BTreeMap<String, HashMap<Labels, Pool>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the group of `(model, query)`, created if absent.
    pub fn group_id(&mut self, model: &str, query: &str) -> usize {
        if let Some(i) = self.find(model, query) {
            return i;
        }
        self.groups.push(Group {
            model: model.into(),
            query: query.into(),
            series: HashMap::default(),
        });
        self.groups.len() - 1
    }

    /// The index of the group of `(model, query)`, if any.
    pub fn find(&self, model: &str, query: &str) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| &*g.model == model && &*g.query == query)
    }

    /// The groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Group `id` (from [`Store::group_id`]).
    pub fn group(&self, id: usize) -> &Group {
        &self.groups[id]
    }

    /// Group `id`, to change.
    pub fn group_mut(&mut self, id: usize) -> &mut Group {
        &mut self.groups[id]
    }

    /// Keeps only the groups `keep` accepts (by model and query alias); returns how many
    /// series were dropped with the others.
    pub fn retain_groups(&mut self, mut keep: impl FnMut(&str, &str) -> bool) -> usize {
        let mut dropped = 0;
        self.groups.retain(|g| {
            let k = keep(&g.model, &g.query);
            if !k {
                dropped += g.series.len();
            }
            k
        });
        dropped
    }

    /// The entry of `labels` in `(model, query)`, if tracked.
    pub fn get(&self, model: &str, query: &str, labels: &Labels) -> Option<&Entry> {
        self.groups[self.find(model, query)?].series.get(labels)
    }

    /// The pools of multivariate model `model`, if it has any.
    pub fn pools(&self, model: &str) -> Option<&HashMap<Labels, Pool>> {
        self.pools.get(model)
    }

    /// The pools of multivariate model `model`, created empty if absent.
    pub fn pools_mut(&mut self, model: &str) -> &mut HashMap<Labels, Pool> {
        self.pools.entry(model.to_owned()).or_default()
    }

    /// Every multivariate model's pools, by model alias.
    pub fn all_pools(&self) -> impl Iterator<Item = (&str, &HashMap<Labels, Pool>)> {
        self.pools.iter().map(|(m, p)| (m.as_str(), p))
    }

    /// The groups to read and `model`'s pools to change, at once.
    pub(crate) fn split_pools(&mut self, model: &str) -> (&[Group], &mut HashMap<Labels, Pool>) {
        (
            &self.groups,
            self.pools.entry(model.to_owned()).or_default(),
        )
    }

    /// Keeps only the pools of the multivariate models `keep` accepts; returns how many pools
    /// were dropped.
    pub fn retain_pools(&mut self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let mut dropped = 0;
        self.pools.retain(|m, p| {
            let k = keep(m);
            if !k {
                dropped += p.len();
            }
            k
        });
        dropped
    }

    /// Series tracked, over all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.series.len()).sum()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every series' latest verdict (series that have none yet are left out).
    pub fn latest(&self) -> impl Iterator<Item = Latest<'_>> {
        self.groups.iter().flat_map(|g| {
            g.series.iter().filter_map(|(labels, e)| {
                Some(Latest {
                    model: &g.model,
                    query: &g.query,
                    labels,
                    scored: e.latest.as_ref()?,
                })
            })
        })
    }

    /// An estimate of the memory the entries hold, in bytes: each entry's size, its hash
    /// table slot (with the table's spare capacity), its labels' heap with 16 bytes of
    /// allocator overhead per allocation, and the detector's heap. For the `state size`
    /// self-metric; the resident-memory test checks it against the real thing.
    pub fn approx_bytes(&self) -> usize {
        let slot = size_of::<Labels>() + size_of::<Entry>() + 1;
        self.groups
            .iter()
            .map(|g| {
                let table = g.series.capacity() * slot;
                let heap: usize = g
                    .series
                    .iter()
                    .map(|(l, e)| labels_heap(l) + detector_heap(&e.detector))
                    .sum();
                table + heap
            })
            .sum()
    }
}

const ALLOC_OVERHEAD: usize = 16;

fn labels_heap(l: &Labels) -> usize {
    l.heap_bytes() + ALLOC_OVERHEAD
}

/// The detector's heap, bounded above: only a series with an evident weekly cycle can have
/// per-hour-of-week ranges on the heap (168 pairs of `f32`, in one allocation); a day's are
/// inline in the detector, counted in the size of an entry.
fn detector_heap(d: &Detector) -> usize {
    if d.selection().evident.weekly == 0 {
        return 0;
    }
    2 * 168 * size_of::<f32>() + ALLOC_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::Fit;
    use portent_models::DetectorConfig;

    fn entry(seen: i64) -> Entry {
        let d = DetectorConfig::default().fit(&[]).unwrap();
        Entry::new(d, Timestamp::from_secs(seen))
    }

    #[test]
    fn groups_expire_and_latest() {
        let mut s = Store::new();
        let g = s.group_id("m", "q");
        assert_eq!(s.group_id("m", "q"), g);
        let a = Labels::new([("pod", "a")]).unwrap();
        let b = Labels::new([("pod", "b")]).unwrap();
        s.group_mut(g).series_mut().insert(a.clone(), entry(100));
        let mut e = entry(10);
        e.latest = Some(Scored::unknown(Timestamp::from_secs(10), 1.0));
        s.group_mut(g).series_mut().insert(b.clone(), e);
        assert_eq!(s.len(), 2);
        let latest: Vec<_> = s.latest().collect();
        assert_eq!(latest.len(), 1);
        let out = latest[0].output_labels();
        assert_eq!(out.get("query"), Some("q"));
        assert_eq!(out.get("model"), Some("m"));
        assert_eq!(out.get("pod"), Some("b"));
        assert_eq!(s.group_mut(g).expire(Timestamp::from_secs(50)), 1);
        assert!(s.get("m", "q", &a).is_some());
        assert!(s.get("m", "q", &b).is_none());
        assert_eq!(s.retain_groups(|m, _| m != "m"), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn fingerprint_is_stable_and_separates_fields() {
        let l = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        // Pinned: state files and shards name series by it.
        assert_eq!(fingerprint("m", "q", &l), 0x7614_b188_403c_e7b7);
        assert_ne!(fingerprint("mq", "", &l), fingerprint("m", "q", &l));
    }
}
