//! Series identity: a sorted, validated, hashable set of labels (Prometheus' data model).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    /// A label name that Prometheus would not accept.
    #[error("label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
    /// The same name given twice.
    #[error("label name {0:?}: given more than once")]
    Duplicate(String),
}

/// One `name="value"` pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    /// The label name, e.g. `instance`.
    pub name: Box<str>,
    /// The label value, never empty (an empty value means "absent" in Prometheus).
    pub value: Box<str>,
}

/// The identity of a series: labels sorted by name, names valid and unique, empty values dropped.
///
/// Two label sets with the same pairs compare, order and hash equal whatever order they were
/// given in, so `Labels` can key maps directly. [`Labels::fingerprint`] is a hash that is
/// stable across processes and versions, for state files and sharding.
///
/// The pairs are shared: a clone is a reference count, not a copy, so the push buffer, the
/// series store and every verdict of a series hold one label set between them (the push path
/// clones a series' labels several times per sample).
///
/// The set also carries a hash of its pairs, computed once when it is built: `Hash` writes
/// only that, and equality compares it before the pairs. Maps keyed by `Labels` (the push
/// buffer, the store) look a series up once or twice per sample, and hashing some 150 bytes of
/// labels each time was a fifth of the push path's cycles. The hash is seeded per process
/// (a sender cannot choose labels that collide on purpose), so, like `std`'s, it is not for
/// state files: [`Labels::fingerprint`] is. [`LabelsRef`] hashes borrowed pairs the same way,
/// so a request's labels can be looked up without building a `Labels`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Vec<Label>", into = "Vec<Label>")]
pub struct Labels {
    pairs: Arc<[Label]>,
    hash: u64,
}

/// The hash of a label set's pairs, in order: what [`Labels`] caches and [`LabelsRef`]
/// computes, so that both hash equal when their pairs are equal. Lengths are written before
/// the bytes, so `("a", "bc")` and `("ab", "c")` hash apart.
fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // One random seed per process: equal pairs must hash equal across every map and thread
    // of the process, and a sender must not be able to predict collisions.
    static STATE: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    let mut h = STATE.build_hasher();
    for (name, value) in pairs {
        h.write_usize(name.len());
        h.write(name.as_bytes());
        h.write_usize(value.len());
        h.write(value.as_bytes());
    }
    h.finish()
}

impl Labels {
    fn from_sorted(pairs: Arc<[Label]>) -> Self {
        let hash = hash_pairs(pairs.iter().map(|l| (&*l.name, &*l.value)));
        Self { pairs, hash }
    }
}

impl Default for Labels {
    fn default() -> Self {
        Self::from_sorted(Arc::from([]))
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        // Clones share their pairs: most comparisons in a map end at the pointer.
        self.hash == other.hash
            && (Arc::ptr_eq(&self.pairs, &other.pairs) || self.pairs == other.pairs)
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By pairs, as before the hash was cached: the hash orders nothing.
impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pairs.cmp(&other.pairs)
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labels").field(&self.pairs).finish()
    }
}

/// A label set to look up in a map keyed by [`Labels`] without building one: either borrowed
/// pairs (from a request body) already in `Labels`' canonical form (names valid and strictly
/// increasing, no empty value), or a `Labels` itself. It hashes (`std::hash::Hash`) and
/// compares ([`LabelsRef::matches`]) as the `Labels` built from it would, so only a series the
/// map does not know yet pays for allocating its `Labels` ([`LabelsRef::to_labels`]).
#[derive(Clone, Copy, Debug)]
pub struct LabelsRef<'a>(RefKind<'a>);

#[derive(Clone, Copy, Debug)]
enum RefKind<'a> {
    Pairs {
        pairs: &'a [(&'a str, &'a str)],
        hash: u64,
    },
    Labels(&'a Labels),
}

impl<'a> LabelsRef<'a> {
    /// Whether `pairs` are in canonical form (sorted by name, names valid and unique, values
    /// non-empty): then they are a valid label set, equal to the [`Labels`] built from them.
    /// Senders sort their labels, so this is the common case; for the others
    /// [`Labels::new`] decides whether they are a label set at all.
    pub fn is_canonical(pairs: &[(&str, &str)]) -> bool {
        pairs.iter().all(|(n, v)| valid_name(n) && !v.is_empty())
            && pairs.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// The pairs as a `LabelsRef` (hashing them), if they are in canonical form; `None`
    /// otherwise.
    pub fn canonical(pairs: &'a [(&'a str, &'a str)]) -> Option<Self> {
        Self::is_canonical(pairs).then(|| {
            Self(RefKind::Pairs {
                pairs,
                hash: hash_pairs(pairs.iter().copied()),
            })
        })
    }

    fn hash_value(&self) -> u64 {
        match self.0 {
            RefKind::Pairs { hash, .. } => hash,
            RefKind::Labels(l) => l.hash,
        }
    }

    /// Whether `labels` has exactly these pairs. A hash collision cannot make two different
    /// sets match: the pairs are compared whenever the hashes are equal.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self.0 {
            RefKind::Labels(l) => l == labels,
            RefKind::Pairs { pairs, hash } => {
                hash == labels.hash
                    && pairs.len() == labels.pairs.len()
                    && pairs
                        .iter()
                        .zip(labels.pairs.iter())
                        .all(|((n, v), l)| *n == &*l.name && *v == &*l.value)
            }
        }
    }

    /// The owned label set: allocates the strings of borrowed pairs, shares those of a
    /// `Labels`.
    pub fn to_labels(&self) -> Labels {
        match self.0 {
            RefKind::Labels(l) => l.clone(),
            RefKind::Pairs { pairs, hash } => Labels {
                pairs: pairs
                    .iter()
                    .map(|(n, v)| Label {
                        name: (*n).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                hash,
            },
        }
    }
}

impl<'a> From<&'a Labels> for LabelsRef<'a> {
    fn from(labels: &'a Labels) -> Self {
        Self(RefKind::Labels(labels))
    }
}

/// Writes what [`Labels`]' `Hash` writes for the same pairs.
impl std::hash::Hash for LabelsRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_value());
    }
}

impl Labels {
    /// The reserved label that carries the metric name.
    pub const METRIC_NAME: &'static str = "__name__";

    /// Builds a label set from `(name, value)` pairs in any order.
    ///
    /// Pairs with an empty value are dropped, as Prometheus does.
    pub fn new<I, N, V>(pairs: I) -> Result<Self, LabelsError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let labels = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.as_ref().into(),
                value: v.as_ref().into(),
            })
            .collect::<Vec<_>>();
        Self::try_from(labels)
    }

    /// Whether `a` and `b` share their pairs (one is a clone of the other): then they are
    /// equal, and comparing them costs no look at the pairs. Maps that meet the same series
    /// under two allocations (one restored from a state file, one decoded) can keep the one
    /// that keeps arriving.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.pairs, &b.pairs)
    }

    /// The empty label set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        // A series has a handful of labels: a scan that compares lengths first rejects almost
        // every pair without looking at a byte, where a binary search calls `memcmp` at each
        // step (the daemon looks up `pod`, `namespace` and `node` of every verdict).
        if self.pairs.len() <= 16 {
            let n = name.as_bytes();
            return self
                .pairs
                .iter()
                .find(|l| l.name.len() == n.len() && l.name.as_bytes() == n)
                .map(|l| &*l.value);
        }
        self.pairs
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.pairs[i].value)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(Self::METRIC_NAME)
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Label> {
        self.pairs.iter()
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// A copy with `name` set to `value` (replaced if present, removed if `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Result<Self, LabelsError> {
        let pairs = self
            .pairs
            .iter()
            .filter(|l| &*l.name != name)
            .map(|l| (&*l.name, &*l.value))
            .chain(std::iter::once((name, value)));
        Self::new(pairs)
    }

    /// A 64-bit FNV-1a hash of the pairs, stable across processes, platforms and releases.
    ///
    /// `std`'s `Hash` is seeded per process, so it cannot name a series in a state file.
    pub fn fingerprint(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for l in self.pairs.iter() {
            // 0xff never occurs in UTF-8, so it separates fields unambiguously.
            for b in l
                .name
                .bytes()
                .chain([0xff])
                .chain(l.value.bytes())
                .chain([0xff])
            {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        }
        h
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl TryFrom<Vec<Label>> for Labels {
    type Error = LabelsError;

    fn try_from(mut labels: Vec<Label>) -> Result<Self, Self::Error> {
        labels.retain(|l| !l.value.is_empty());
        if let Some(bad) = labels.iter().find(|l| !valid_name(&l.name)) {
            return Err(LabelsError::InvalidName(bad.name.to_string()));
        }
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LabelsError::Duplicate(w[0].name.to_string()));
        }
        Ok(Self::from_sorted(labels.into()))
    }
}

impl From<Labels> for Vec<Label> {
    fn from(labels: Labels) -> Self {
        labels.pairs.to_vec()
    }
}

/// Prometheus' notation: `metric{a="x", b="y"}`, values escaped as in the text exposition format.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        let mut rest = self
            .pairs
            .iter()
            .filter(|l| &*l.name != Self::METRIC_NAME)
            .peekable();
        if rest.peek().is_none() && self.metric_name().is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"", l.name)?;
            for c in l.value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    fn std_hash(l: &Labels) -> u64 {
        let mut h = DefaultHasher::new();
        l.hash(&mut h);
        h.finish()
    }

    #[test]
    fn get_finds_every_label_of_small_and_large_sets() {
        // Names of equal length (`namespace`, `container`) must not be confused by the scan;
        // beyond 16 pairs the lookup is a binary search.
        for n in [3usize, 16, 17, 40] {
            let names: Vec<String> = (0..n).map(|i| format!("l{i:03}")).collect();
            let mut pairs: Vec<(&str, String)> = names
                .iter()
                .enumerate()
                .map(|(i, k)| (k.as_str(), format!("v{i}")))
                .collect();
            pairs.push(("namespace", "shop".into()));
            pairs.push(("container", "api".into()));
            let l = Labels::new(pairs).expect("valid");
            for (i, k) in names.iter().enumerate() {
                assert_eq!(l.get(k), Some(format!("v{i}").as_str()), "{n} {k}");
            }
            assert_eq!(l.get("namespace"), Some("shop"));
            assert_eq!(l.get("container"), Some("api"));
            assert_eq!(l.get("l99x"), None);
            assert_eq!(l.get(""), None);
        }
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = Labels::new([("job", "node"), ("__name__", "up"), ("instance", "a:9100")]).unwrap();
        let b = Labels::new([("instance", "a:9100"), ("job", "node"), ("__name__", "up")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(std_hash(&a), std_hash(&b));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.get("job"), Some("node"));
        assert_eq!(a.metric_name(), Some("up"));
        assert_eq!(a.get("missing"), None);
    }

    #[test]
    fn fingerprint_is_stable_across_releases() {
        // Pinned: state files name series by this value, so it must never change.
        let l = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        assert_eq!(
            l.fingerprint(),
            0x7bfe_d626_35f6_4858,
            "{:#x}",
            l.fingerprint()
        );
        assert_eq!(Labels::empty().fingerprint(), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn field_boundaries_change_the_fingerprint() {
        let a = Labels::new([("a", "bc")]).unwrap();
        let b = Labels::new([("ab", "c")]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn rejects_bad_and_duplicate_names() {
        assert_eq!(
            Labels::new([("1abc", "x")]),
            Err(LabelsError::InvalidName("1abc".into()))
        );
        assert_eq!(
            Labels::new([("a-b", "x")]),
            Err(LabelsError::InvalidName("a-b".into()))
        );
        assert_eq!(
            Labels::new([("a", "x"), ("a", "y")]),
            Err(LabelsError::Duplicate("a".into()))
        );
        let msg = Labels::new([("a-b", "x")]).unwrap_err().to_string();
        assert!(msg.contains("[a-zA-Z_]"), "{msg}");
    }

    #[test]
    fn empty_values_are_absent() {
        let l = Labels::new([("a", ""), ("b", "1")]).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l.with("b", "").unwrap(), Labels::empty());
    }

    #[test]
    fn display_escapes_values() {
        let l = Labels::new([("__name__", "m"), ("path", "a\"b\\c\nd")]).unwrap();
        assert_eq!(l.to_string(), r#"m{path="a\"b\\c\nd"}"#);
        assert_eq!(Labels::new([("a", "1")]).unwrap().to_string(), r#"{a="1"}"#);
        assert_eq!(Labels::new([("__name__", "m")]).unwrap().to_string(), "m");
    }

    #[test]
    fn a_borrowed_canonical_set_hashes_and_matches_like_its_labels() {
        let l = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        let pairs = [("__name__", "up"), ("job", "node")];
        let r = LabelsRef::canonical(&pairs).unwrap();
        assert!(r.matches(&l));
        assert_eq!(r.to_labels(), l);
        assert!(LabelsRef::from(&l).matches(&l));
        assert_eq!(LabelsRef::from(&l).to_labels(), l);
        assert!(Labels::ptr_eq(&LabelsRef::from(&l).to_labels(), &l));
        assert!(!Labels::ptr_eq(&r.to_labels(), &l));
        let hash_of = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut h = DefaultHasher::new();
            x(&mut h);
            h.finish()
        };
        assert_eq!(hash_of(&|h| r.hash(h)), hash_of(&|h| l.hash(h)));
        assert_eq!(
            hash_of(&|h| LabelsRef::from(&l).hash(h)),
            hash_of(&|h| l.hash(h))
        );
        // Not canonical: unsorted, an empty value, a duplicate, an invalid name.
        for bad in [
            &[("job", "node"), ("__name__", "up")][..],
            &[("__name__", "up"), ("job", "")],
            &[("a", "1"), ("a", "2")],
            &[("a-b", "1")],
        ] {
            assert!(LabelsRef::canonical(bad).is_none(), "{bad:?}");
        }
        let other = [("__name__", "up"), ("job", "nodf")];
        assert!(!LabelsRef::canonical(&other).unwrap().matches(&l));
        // The empty set is canonical and equals the default.
        assert_eq!(
            LabelsRef::canonical(&[]).unwrap().to_labels(),
            Labels::empty()
        );
        assert_eq!(Labels::empty(), Labels::new::<_, &str, &str>([]).unwrap());
    }

    #[test]
    fn colliding_hashes_never_merge_two_series() {
        // Force what a 64-bit collision would look like: same cached hash, other pairs.
        let a = Labels::new([("pod", "a")]).unwrap();
        let mut b = Labels::new([("pod", "b")]).unwrap();
        b.hash = a.hash;
        assert_ne!(a, b);
        let pairs = [("pod", "b")];
        let forged = LabelsRef(RefKind::Pairs {
            pairs: &pairs,
            hash: a.hash,
        });
        assert!(!forged.matches(&a));
        let mut map = std::collections::HashMap::new();
        map.insert(a.clone(), 1);
        map.insert(b.clone(), 2);
        assert_eq!((map.len(), map[&a], map[&b]), (2, 1, 2));
        // Ordering is by pairs, whatever the hashes.
        assert!(a < b);
    }

    #[test]
    fn serde_round_trip_validates() {
        let l = Labels::new([("z", "1"), ("a", "2")]).unwrap();
        let json = serde_json::to_string(&l).unwrap();
        let back: Labels = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
        let bad = r#"[{"name":"9","value":"x"}]"#;
        assert!(serde_json::from_str::<Labels>(bad).is_err());
    }
}
