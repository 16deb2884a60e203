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
//! inline, about 1,000 bytes with a day's per-hour ranges, plus times and the latest
//! [`Scored`], which the daemon's `/metrics` reads in place) in a dense vector, five bytes of
//! the hash table that finds it (see [`Group`]), the label set's packed text (shared with the
//! push buffer's copy, see [`Group::get_adopting`]), and for a series with a weekly cycle its
//! per-hour-of-week ranges on the heap (168 pairs of `f32`). The `resident_memory_per_series`
//! test (`tests/memory.rs`) measures the process's resident memory over 20,000 fitted series
//! with eight Kubernetes-like labels and a daily cycle each, and asserts it stays under 4 KiB.
//! [`Store::approx_bytes`] estimates the same without measuring, for self-metrics.

use std::mem::size_of;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::{HashMap, HashTable};
use portent_core::{Labels, LabelsHash, Scored, Timestamp};
use portent_models::Detector;

use crate::joint::Pool;
use crate::source::Hint;
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
    /// Whether a score tick of this process has reported the series yet (see
    /// [`crate::StepScore::first`]); not saved, so a restored series is news again.
    #[serde(skip)]
    pub(crate) reported: bool,
}

impl Entry {
    /// A fresh entry around `detector`, seen at `seen`, nothing scored yet.
    pub fn new(detector: Detector, seen: Timestamp) -> Self {
        Self {
            detector,
            last_scored: None,
            last_seen: seen,
            latest: None,
            reported: false,
        }
    }

    /// Whether this is the first report of the series in this process (see
    /// [`crate::StepScore::first`]); it is reported from now on.
    pub(crate) fn first_report(&mut self) -> bool {
        !std::mem::replace(&mut self.reported, true)
    }
}

/// The series of one (model, query) pair: entries side by side in a vector, found by their
/// labels through a hash table of positions.
///
/// Not a map from labels to entries: a hash table holds its entries in its own buckets, and
/// after it doubles (at 7/8 full) half of them are empty, each as large as an entry (over a
/// kilobyte, the detector inline): at a million series that was 1.2 KB of empty bucket per
/// series. Here a bucket is a 4-byte position, entries are dense, and a score tick's pass over
/// every entry reads them in order. Boxing each entry would save as much memory, but the pass
/// then chases a pointer per series: the step took twice as long at a million series.
#[derive(Clone, Debug, Default)]
pub struct Group {
    model: Arc<str>,
    query: Arc<str>,
    slots: Vec<Slot>,
    /// Positions in `slots`, hashed by the labels there.
    index: HashTable<u32>,
    /// How many slots, from the first, are in bucket order (see [`Group::sort_by_bucket`]).
    in_order: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct Slot {
    labels: Labels,
    entry: Entry,
}

fn hash(labels: &Labels) -> u64 {
    LabelsHash.hash_one(labels)
}

impl PartialEq for Group {
    /// The same aliases and the same entries by labels, in any order.
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
            && self.query == other.query
            && self.len() == other.len()
            && self
                .iter()
                .all(|(l, e)| other.get(l).is_some_and(|o| o == e))
    }
}

impl Group {
    fn new(model: &str, query: &str) -> Self {
        Self {
            model: model.into(),
            query: query.into(),
            ..Self::default()
        }
    }

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

    /// Series tracked.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn position(&self, labels: &Labels) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash(labels), |&i| slots[i as usize].labels == *labels)
            .map(|&i| i as usize)
    }

    /// The entry of `labels`.
    pub fn get(&self, labels: &Labels) -> Option<&Entry> {
        self.position(labels).map(|i| &self.slots[i].entry)
    }

    /// The entry of `labels` with the label set it is kept under.
    pub fn get_key_value(&self, labels: &Labels) -> Option<(&Labels, &Entry)> {
        self.position(labels).map(|i| {
            let s = &self.slots[i];
            (&s.labels, &s.entry)
        })
    }

    /// The entry of `labels`, to change.
    pub fn get_mut(&mut self, labels: &Labels) -> Option<&mut Entry> {
        self.position(labels).map(|i| &mut self.slots[i].entry)
    }

    /// Asks for the entry at position `at`, if any, in cache ([`portent_core::prefetch`]): a
    /// score tick walking the series in slot order asks for the next one before scoring
    /// this one, whose detector (about 1.1 KB) would otherwise stall `observe` on a miss
    /// per cache line at 100,000 series.
    pub fn prefetch(&self, at: usize) {
        if let Some(s) = self.slots.get(at) {
            portent_core::prefetch::prefetch(s);
        }
    }

    /// The entry of `labels`, to change; an equal label set kept in another allocation
    /// (restored from a state file, or rebuilt by the source) is replaced by `labels`, so that
    /// later lookups compare pointers and the two share one copy. Looks first where `hint`
    /// points, and leaves it pointing at the entry.
    pub fn get_adopting(&mut self, labels: &Labels, hint: &Hint) -> Option<&mut Entry> {
        if let Some(at) = hint.get()
            && self
                .slots
                .get(at)
                .is_some_and(|s| Labels::ptr_eq(&s.labels, labels))
        {
            return Some(&mut self.slots[at].entry);
        }
        let at = self.position(labels)?;
        hint.set(at);
        let slot = &mut self.slots[at];
        if !Labels::ptr_eq(&slot.labels, labels) {
            slot.labels = labels.clone();
        }
        Some(&mut slot.entry)
    }

    /// Tracks `labels` with `entry`; returns the entry it replaces, if any.
    pub fn insert(&mut self, labels: Labels, entry: Entry) -> Option<Entry> {
        let replaced = self.insert_unordered(labels, entry);
        // New series go last, out of bucket order; once they are an eighth of the group,
        // the slots are put in order again (so a growing group is reordered a bounded number
        // of times per doubling).
        if replaced.is_none() && (self.slots.len() - self.in_order) * 8 > self.slots.len() {
            self.sort_by_bucket();
        }
        replaced
    }

    /// [`Group::insert`] without reordering: for loading many series, ordered once at the end
    /// ([`Store::sort_by_bucket`]).
    pub(crate) fn insert_unordered(&mut self, labels: Labels, entry: Entry) -> Option<Entry> {
        if let Some(i) = self.position(&labels) {
            let slot = &mut self.slots[i];
            slot.labels = labels;
            return Some(std::mem::replace(&mut slot.entry, entry));
        }
        let at = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let h = hash(&labels);
        self.slots.push(Slot { labels, entry });
        let slots = &self.slots;
        let before = self.index.capacity();
        self.index
            .insert_unique(h, at, |&i| hash(&slots[i as usize].labels));
        if self.index.capacity() != before {
            // Bucket order depends on the number of buckets.
            self.in_order = 0;
        }
        None
    }

    /// Orders the slots as a hash table of their labels with as many buckets as the index
    /// lays them out: the push buffer's table, keyed by the same hash, lends its series to a
    /// score tick in that order, so the tick then reads the slots one after another instead of
    /// at random. Without it the step took 1.8 times as long at a million series, and the
    /// whole daemon 10% more CPU per sample at 100,000.
    pub(crate) fn sort_by_bucket(&mut self) {
        self.in_order = self.slots.len();
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two() as u64;
        let mask = buckets.saturating_sub(1);
        let mut order: Vec<(u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (hash(&s.labels) & mask, i as u32))
            .collect();
        order.sort_unstable();
        if order.windows(2).all(|w| w[0].1 < w[1].1) {
            return;
        }
        // In place, cycle by cycle (position k takes the slot at `from[k]`): a copy would
        // double the largest allocation of the process for a moment.
        let mut from: Vec<u32> = order.into_iter().map(|(_, i)| i).collect();
        for start in 0..from.len() {
            let mut k = start;
            loop {
                let src = from[k] as usize;
                from[k] = k as u32;
                if src == start || src == k {
                    break;
                }
                self.slots.swap(k, src);
                k = src;
            }
        }
        self.reindex();
    }

    /// Stops tracking `labels`; returns its entry. The last entry takes its place.
    pub fn remove(&mut self, labels: &Labels) -> Option<Entry> {
        let slots = &self.slots;
        let found = self
            .index
            .find_entry(hash(labels), |&i| slots[i as usize].labels == *labels)
            .ok()?;
        let (i, _) = found.remove();
        let i = i as usize;
        self.in_order = self.in_order.min(i);
        let removed = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            let last = self.slots.len() as u32;
            if let Some(p) = self.index.find_mut(hash(&moved.labels), |&j| j == last) {
                *p = i as u32;
            }
        }
        Some(removed.entry)
    }

    /// Keeps the entries `keep` accepts, visiting each once in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Labels, &mut Entry) -> bool) {
        let before = self.slots.len();
        // Removing keeps the order of the rest, so an ordered prefix stays ordered.
        let mut kept_in_order = 0;
        let mut at = 0;
        let in_order = self.in_order;
        self.slots.retain_mut(|s| {
            let k = keep(&s.labels, &mut s.entry);
            kept_in_order += usize::from(k && at < in_order);
            at += 1;
            k
        });
        if self.slots.len() != before {
            self.in_order = kept_in_order;
            self.reindex();
        }
    }

    /// Rebuilds the index over the slots as they lie. Its capacity stays (five bytes a bucket,
    /// even after a mass expiry), so the slots' bucket order stays valid.
    fn reindex(&mut self) {
        self.index.clear();
        let slots = &self.slots;
        for (i, s) in slots.iter().enumerate() {
            self.index.insert_unique(hash(&s.labels), i as u32, |&j| {
                hash(&slots[j as usize].labels)
            });
        }
    }

    /// Every tracked series and its entry.
    pub fn iter(&self) -> impl Iterator<Item = (&Labels, &Entry)> {
        self.slots.iter().map(|s| (&s.labels, &s.entry))
    }

    /// Every entry.
    pub fn values(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().map(|s| &s.entry)
    }

    /// Every entry, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slots.iter_mut().map(|s| &mut s.entry)
    }

    /// Drops the entries last seen before `horizon`; returns how many.
    pub fn expire(&mut self, horizon: Timestamp) -> usize {
        let before = self.len();
        self.retain(|_, e| e.last_seen >= horizon);
        before - self.len()
    }

    /// Bytes held by the slots and the index (not the labels' and detectors' heaps).
    fn table_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>() + self.index.capacity() * (size_of::<u32>() + 1)
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
        self.groups.push(Group::new(model, query));
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
                dropped += g.len();
            }
            k
        });
        dropped
    }

    /// The entry of `labels` in `(model, query)`, if tracked.
    pub fn get(&self, model: &str, query: &str, labels: &Labels) -> Option<&Entry> {
        self.groups[self.find(model, query)?].get(labels)
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

    /// Puts every group's slots in bucket order, after loading with
    /// [`Group::insert_unordered`].
    pub(crate) fn sort_by_bucket(&mut self) {
        for g in &mut self.groups {
            g.sort_by_bucket();
        }
    }

    /// Series tracked, over all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(Group::len).sum()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every series' latest verdict (series that have none yet are left out).
    pub fn latest(&self) -> impl Iterator<Item = Latest<'_>> {
        self.groups.iter().flat_map(|g| {
            g.iter().filter_map(|(labels, e)| {
                Some(Latest {
                    model: &g.model,
                    query: &g.query,
                    labels,
                    scored: e.latest.as_ref()?,
                })
            })
        })
    }

    /// An estimate of the memory the entries hold, in bytes: each entry's size, the index's
    /// buckets (with its spare capacity), its labels' heap with 16 bytes of
    /// allocator overhead per allocation, and the detector's heap. For the `state size`
    /// self-metric; the resident-memory test checks it against the real thing.
    pub fn approx_bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                let heap: usize = g
                    .iter()
                    .map(|(l, e)| labels_heap(l) + detector_heap(&e.detector))
                    .sum();
                g.table_bytes() + heap
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
        s.group_mut(g).insert(a.clone(), entry(100));
        let mut e = entry(10);
        e.latest = Some(Scored::unknown(Timestamp::from_secs(10), 1.0));
        s.group_mut(g).insert(b.clone(), e);
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
    fn a_group_finds_every_entry_through_removals_and_retains() {
        let pod = |i: usize| Labels::new([("pod", format!("p{i}"))]).unwrap();
        let mut g = Group::new("m", "q");
        for i in 0..1_000 {
            assert!(g.insert(pod(i), entry(i as i64)).is_none());
        }
        // Most slots are in the bucket order of a table of the index's size (the order the
        // push buffer lends series in), and only the last eighth at most is not.
        let buckets = (g.index.capacity() * 8 / 7).next_power_of_two() as u64;
        let keys: Vec<u64> = g.slots[..g.in_order]
            .iter()
            .map(|s| hash(&s.labels) & (buckets - 1))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert!((g.len() - g.in_order) * 8 <= g.len());
        // Replacing keeps one entry per label set (seen at 8, now at 8,001: odd, as the
        // retain below then expects of it).
        let old = g.insert(pod(8), entry(8_001)).map(|e| e.last_seen);
        assert_eq!(old, Some(Timestamp::from_secs(8)));
        assert_eq!(g.len(), 1_000);
        // Removals move the last entry into the hole; every other entry is still found.
        for i in (0..1_000).step_by(3) {
            let removed = g.remove(&pod(i)).map(|e| e.last_seen);
            assert_eq!(removed, Some(Timestamp::from_secs(i as i64)));
            assert!(g.remove(&pod(i)).is_none());
        }
        g.retain(|_, e| e.last_seen.millis() / 1000 % 2 == 0);
        let expected: Vec<usize> = (0..1_000)
            .filter(|&i| i % 3 != 0 && i % 2 == 0 && i != 8)
            .collect();
        assert_eq!(g.len(), expected.len());
        for i in 0..1_000 {
            let found = g.get(&pod(i)).map(|e| e.last_seen.millis() / 1000);
            let want = expected.contains(&i).then_some(i as i64);
            assert_eq!(found, want, "pod {i}");
        }
        // An equal label set in another allocation is adopted as the key.
        let again = pod(expected[0]);
        assert!(!Labels::ptr_eq(g.get_key_value(&again).unwrap().0, &again));
        let hint = Hint::default();
        assert!(g.get_adopting(&again, &hint).is_some());
        assert_eq!(hint.get(), g.position(&again));
        // A stale hint costs a lookup, never a wrong entry.
        let other = pod(expected[1]);
        assert_eq!(
            g.get_adopting(&other, &hint).map(|e| e.last_seen),
            Some(Timestamp::from_secs(expected[1] as i64))
        );
        assert_eq!(hint.get(), g.position(&other));
        assert!(Labels::ptr_eq(g.get_key_value(&again).unwrap().0, &again));
        // Equality ignores the order entries were inserted in (the persist tests compare
        // fitted stores; these unfitted detectors hold NaN, equal to nothing).
        let mut reversed = Group::new("m", "q");
        for (l, e) in g.iter().collect::<Vec<_>>().into_iter().rev() {
            reversed.insert(l.clone(), e.clone());
        }
        assert_eq!(reversed.len(), g.len());
        let same =
            |(l, e): (&Labels, &Entry)| reversed.get(l).map(|r| r.last_seen) == Some(e.last_seen);
        assert!(g.iter().all(same));
    }

    #[test]
    fn fingerprint_is_stable_and_separates_fields() {
        let l = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        // Pinned: state files and shards name series by it.
        assert_eq!(fingerprint("m", "q", &l), 0x7614_b188_403c_e7b7);
        assert_ne!(fingerprint("mq", "", &l), fingerprint("m", "q", &l));
    }
}
