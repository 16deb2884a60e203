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
/// They are packed into one string, each pair as `name=len:value` (`len` the value's length in
/// bytes, in decimal; a name never holds `=`): one allocation, read front to back. At 100,000
/// series the push path compares every incoming sample's labels with the series' own, and
/// with a string per name and per value that was sixteen scattered cache misses per sample.
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
    packed: Arc<str>,
    len: u32,
    hash: u64,
}

/// One pair of a [`Labels`], borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelRef<'a> {
    /// The label name, e.g. `instance`.
    pub name: &'a str,
    /// The label value, never empty.
    pub value: &'a str,
}

impl LabelRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Label {
        Label {
            name: self.name.into(),
            value: self.value.into(),
        }
    }
}

/// The pairs of a [`Labels`], in order, unpacked as they are read.
#[derive(Clone, Debug)]
pub struct LabelsIter<'a> {
    rest: &'a str,
    left: usize,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = LabelRef<'a>;

    fn next(&mut self) -> Option<LabelRef<'a>> {
        // Packed by `Labels::pack`: `name=len:value`. A malformed rest (which `pack` never
        // writes) ends the iteration rather than panicking.
        let bytes = self.rest.as_bytes();
        let eq = bytes.iter().position(|&b| b == b'=')?;
        let mut at = eq + 1;
        let mut len = 0usize;
        loop {
            match bytes.get(at)? {
                b':' => break,
                d @ b'0'..=b'9' => len = len.checked_mul(10)?.checked_add(usize::from(d - b'0'))?,
                _ => return None,
            }
            at += 1;
        }
        let name = self.rest.get(..eq)?;
        let value = self.rest.get(at + 1..at + 1 + len)?;
        self.rest = self.rest.get(at + 1 + len..)?;
        self.left = self.left.saturating_sub(1);
        Some(LabelRef { name, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for LabelsIter<'_> {}

/// The hash of a label set's packed pairs (see [`Labels`]): what [`Labels`] caches and
/// [`LabelsRef`] computes, so that both hash equal when their pairs are equal. The packing
/// writes each value's length, so `("a", "bc")` and `("ab", "c")` hash apart. One write of
/// contiguous bytes: hashing pair by pair (four writes a pair) was 3% of the daemon's cycles
/// under remote_write load.
fn hash_packed(packed: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // One random seed per process: equal pairs must hash equal across every map and thread
    // of the process, and a sender must not be able to predict collisions.
    static STATE: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    let mut h = STATE.build_hasher();
    h.write(packed);
    h.finish()
}

/// `n` in decimal, written at the end of `digits` (room for any `usize`).
fn decimal(mut n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.get(at..).unwrap_or_default()
}

/// Pairs in the packed form, and how many there are.
fn pack_bytes<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let mut len = 0u32;
    for (name, value) in pairs {
        write_packed(&mut out, name.as_bytes(), value.as_bytes());
        len += 1;
    }
    (out, len)
}

/// Appends one pair to `out` in the packed form (`name=LEN:value`, see [`Labels`]).
fn write_packed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(b'=');
    // The length's digits by hand: `write!` through `fmt` was 7% of the daemon's cycles.
    out.extend_from_slice(decimal(value.len(), &mut [0; 20]));
    out.push(b':');
    out.extend_from_slice(value);
}

/// Hashes a [`Labels`] (or a [`LabelsRef`]) map key as the label set's cached hash itself.
///
/// That hash is already a well-mixed 64-bit hash, seeded per process, so hashing it again
/// only costs time. It also makes maps of the same series line up: two tables of equal
/// capacity put a series in the same bucket, so walking the push buffer while looking each
/// series up in the store reads the store in memory order rather than at random (at 100,000
/// series, a cache miss per lookup saved). Keys of other types should not use it: it folds
/// other writes in with FNV-1a, correct but slow.
#[derive(Clone, Copy, Debug, Default)]
pub struct LabelsHash;

/// The [`std::hash::Hasher`] of [`LabelsHash`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LabelsHasher(u64);

impl std::hash::BuildHasher for LabelsHash {
    type Hasher = LabelsHasher;

    fn build_hasher(&self) -> LabelsHasher {
        LabelsHasher(0)
    }
}

impl std::hash::Hasher for LabelsHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // A label set writes its hash once, into a fresh hasher: then this is that hash.
        self.0 = if self.0 == 0 {
            n
        } else {
            (self.0 ^ n).wrapping_mul(0x0000_0100_0000_01b3)
        };
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Labels {
    /// Packs pairs already in canonical form (sorted by name, names valid and unique, values
    /// non-empty), hashing them.
    fn pack<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let (bytes, len) = pack_bytes(pairs);
        // Strings and ASCII separators: always UTF-8, so the lossy branch is never taken.
        let packed = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Self {
            hash: hash_packed(packed.as_bytes()),
            packed: packed.into(),
            len,
        }
    }
}

impl Default for Labels {
    fn default() -> Self {
        Self::pack(std::iter::empty())
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        // Clones share their pairs: most comparisons in a map end at the pointer.
        self.hash == other.hash
            && (Arc::ptr_eq(&self.packed, &other.packed) || self.packed == other.packed)
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By pairs (name, then value), as before the hash was cached: the hash orders nothing.
impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
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
    /// A set as [`PackedLabels`] holds it: packed as a `Labels` packs its pairs.
    Packed {
        packed: &'a str,
        len: u32,
        hash: u64,
    },
    Labels(&'a Labels),
}

impl<'a> LabelsRef<'a> {
    /// Whether `pairs` are in canonical form (sorted by name, names valid and unique, values
    /// non-empty): then they are a valid label set, equal to the [`Labels`] built from them.
    /// Senders sort their labels, so this is the common case; for the others
    /// [`Labels::new`] decides whether they are a label set at all.
    ///
    /// Takes strings or raw bytes (a decoder checks the form before it checks UTF-8): a
    /// valid name is ASCII, and bytes order as the strings they spell.
    pub fn is_canonical<S: AsRef<[u8]>>(pairs: &[(S, S)]) -> bool {
        pairs
            .iter()
            .all(|(n, v)| valid_name_bytes(n.as_ref()) && !v.as_ref().is_empty())
            && pairs.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref())
    }

    /// The pairs as a `LabelsRef` (hashing them), if they are in canonical form; `None`
    /// otherwise. Hashing packs the pairs into a new string: for many sets, a
    /// [`PackedLabels`] packs them once and compares faster.
    pub fn canonical(pairs: &'a [(&'a str, &'a str)]) -> Option<Self> {
        Self::is_canonical(pairs).then(|| {
            Self(RefKind::Pairs {
                pairs,
                hash: hash_packed(&pack_bytes(pairs.iter().copied()).0),
            })
        })
    }

    fn hash_value(&self) -> u64 {
        match self.0 {
            RefKind::Pairs { hash, .. } | RefKind::Packed { hash, .. } => hash,
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
                    && pairs.len() == labels.len()
                    && packs_to(pairs, &labels.packed)
            }
            // One comparison of contiguous bytes: pair by pair, five short `memcmp`s a pair
            // were 7% of the daemon's cycles under remote_write load.
            RefKind::Packed { packed, len, hash } => {
                hash == labels.hash && len == labels.len && packed == &*labels.packed
            }
        }
    }

    /// The owned label set: allocates the strings of borrowed pairs, shares those of a
    /// `Labels`.
    pub fn to_labels(&self) -> Labels {
        match self.0 {
            RefKind::Labels(l) => l.clone(),
            RefKind::Pairs { pairs, .. } => Labels::pack(pairs.iter().copied()),
            RefKind::Packed { packed, len, hash } => Labels {
                packed: packed.into(),
                len,
                hash,
            },
        }
    }
}

/// Whether canonical `pairs` pack to `packed` (see [`Labels`]): compared byte for byte as
/// written, without unpacking `packed`. Exact, as the packing is: a name holds no `=` and the
/// value's length is written before it.
fn packs_to(pairs: &[(&str, &str)], packed: &str) -> bool {
    let mut rest = packed.as_bytes();
    let mut digits = [0u8; 20];
    for (name, value) in pairs {
        let len = decimal(value.len(), &mut digits);
        let fields: [&[u8]; 5] = [name.as_bytes(), b"=", len, b":", value.as_bytes()];
        for field in fields {
            match rest.strip_prefix(field) {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// Label sets packed back to back as [`Labels`] packs each: how a decoder of many sets (a
/// remote_write body, every series of every request with its whole label set) hands them on
/// as [`LabelsRef`]s that hash once over contiguous bytes, compare with a known set in one
/// comparison and become a `Labels` with one copy.
///
/// Filled from raw bytes ([`PackedLabels::push`]) and checked to be UTF-8 once for all
/// ([`PackedLabels::seal`]): checked string by string, the 16-odd strings of each series
/// were 4 to 5% of the daemon's cycles. Sets are readable once sealed. Reusable: clearing
/// keeps the room.
///
/// ```
/// # use portent_core::{Labels, PackedLabels};
/// let mut sets = PackedLabels::default();
/// let i = sets.push(&[(&b"job"[..], &b"node"[..]), (b"pod", "café".as_bytes())]).unwrap();
/// assert!(sets.push(&[(&b"pod"[..], &b"a"[..]), (b"job", b"b")]).is_none(), "unsorted");
/// sets.seal().unwrap();
/// let known = Labels::new([("pod", "café"), ("job", "node")]).unwrap();
/// assert!(sets.get(i).unwrap().matches(&known));
/// assert_eq!(sets.get(i).unwrap().to_labels(), known);
/// ```
#[derive(Debug, Default)]
pub struct PackedLabels {
    /// The packed sets while they are pushed, not yet checked to be UTF-8.
    open: Vec<u8>,
    /// The same once sealed: `open` moves here (and back when more are pushed).
    text: String,
    sealed: bool,
    sets: Vec<PackedSet>,
}

#[derive(Clone, Copy, Debug)]
struct PackedSet {
    from: usize,
    to: usize,
    len: u32,
    hash: u64,
}

/// [`PackedLabels::seal`] found a string that is not UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a label name or value is not UTF-8")]
pub struct NotUtf8;

impl PackedLabels {
    /// Forgets every set, keeping the room.
    pub fn clear(&mut self) {
        self.reopen();
        self.open.clear();
        self.sets.clear();
    }

    fn reopen(&mut self) {
        if self.sealed {
            self.open = std::mem::take(&mut self.text).into_bytes();
            self.sealed = false;
        }
    }

    /// Appends a set given as raw name and value bytes, if they are in canonical form
    /// ([`LabelsRef::is_canonical`]); returns its index for [`Self::get`], or `None` (and
    /// appends nothing) if they are not. Whether the bytes are UTF-8 is checked by
    /// [`Self::seal`].
    pub fn push(&mut self, pairs: &[(&[u8], &[u8])]) -> Option<usize> {
        if !LabelsRef::is_canonical(pairs) {
            return None;
        }
        self.reopen();
        let from = self.open.len();
        for (name, value) in pairs {
            write_packed(&mut self.open, name, value);
        }
        let packed = self.open.get(from..).unwrap_or_default();
        self.sets.push(PackedSet {
            from,
            to: self.open.len(),
            len: u32::try_from(pairs.len()).unwrap_or(u32::MAX),
            hash: hash_packed(packed),
        });
        Some(self.sets.len() - 1)
    }

    /// Checks that every set pushed is UTF-8, so that they can be read. Every string is
    /// whole UTF-8 exactly when the packed bytes are: each string sits between ASCII
    /// separators (`=`, `:`, digits), so none can end or begin inside a character. On error
    /// every set is forgotten.
    pub fn seal(&mut self) -> Result<(), NotUtf8> {
        if self.sealed {
            return Ok(());
        }
        match String::from_utf8(std::mem::take(&mut self.open)) {
            Ok(text) => {
                self.text = text;
                self.sealed = true;
                Ok(())
            }
            Err(e) => {
                self.open = e.into_bytes();
                self.clear();
                Err(NotUtf8)
            }
        }
    }

    /// The `i`-th set pushed, once sealed.
    pub fn get(&self, i: usize) -> Option<LabelsRef<'_>> {
        let set = self.sets.get(i)?;
        let packed = self.text.get(set.from..set.to).filter(|_| self.sealed)?;
        Some(LabelsRef(RefKind::Packed {
            packed,
            len: set.len,
            hash: set.hash,
        }))
    }

    /// Sets pushed.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether no set was pushed.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Bytes the buffers hold on to (their capacity).
    pub fn retained_bytes(&self) -> usize {
        self.open.capacity() + self.text.capacity() + self.sets.capacity() * size_of::<PackedSet>()
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
        let mut pairs: Vec<(N, V)> = pairs.into_iter().collect();
        pairs.retain(|(_, v)| !v.as_ref().is_empty());
        if let Some((bad, _)) = pairs.iter().find(|(n, _)| !valid_name(n.as_ref())) {
            return Err(LabelsError::InvalidName(bad.as_ref().to_owned()));
        }
        pairs.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        if let Some(w) = pairs
            .windows(2)
            .find(|w| w[0].0.as_ref() == w[1].0.as_ref())
        {
            return Err(LabelsError::Duplicate(w[0].0.as_ref().to_owned()));
        }
        Ok(Self::pack(
            pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())),
        ))
    }

    /// Whether `a` and `b` share their pairs (one is a clone of the other): then they are
    /// equal, and comparing them costs no look at the pairs. Maps that meet the same series
    /// under two allocations (one restored from a state file, one decoded) can keep the one
    /// that keeps arriving.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.packed, &b.packed)
    }

    /// Asks for the pairs and their reference counts in cache ([`crate::prefetch`]): a
    /// caller about to clone or read many label sets in turn asks for the next ones first.
    pub fn prefetch(&self) {
        crate::prefetch::prefetch_around(Arc::as_ptr(&self.packed).cast());
    }

    /// Bytes the pairs take on the heap, shared by every clone: the packed pairs and their
    /// reference counts, without the allocator's rounding.
    pub fn heap_bytes(&self) -> usize {
        2 * size_of::<usize>() + self.packed.len()
    }

    /// The empty label set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        // The pairs are read front to back; names are sorted, so the scan stops at the first
        // one past `name`. A series has a handful of labels (the daemon looks up `pod`,
        // `namespace` and `node` of every verdict).
        for l in self.iter() {
            match l.name.cmp(name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(l.value),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// The values of several labels in one pass over the pairs: `[get(names[0]), …]`. The
    /// incident correlator reads four labels of every verdict, and four scans were a tenth of
    /// the daemon's cycles at 100,000 series.
    ///
    /// ```
    /// # use portent_core::Labels;
    /// let l = Labels::new([("pod", "api-1"), ("node", "n1"), ("__name__", "up")]).unwrap();
    /// assert_eq!(l.get_many(["node", "namespace", "pod"]), [Some("n1"), None, Some("api-1")]);
    /// ```
    pub fn get_many<const N: usize>(&self, names: [&str; N]) -> [Option<&str>; N] {
        let mut out = [None; N];
        let mut left = N;
        for l in self.iter() {
            for (value, name) in out.iter_mut().zip(names) {
                if value.is_none() && l.name == name {
                    *value = Some(l.value);
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
        out
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(Self::METRIC_NAME)
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> LabelsIter<'_> {
        LabelsIter {
            rest: &self.packed,
            left: self.len as usize,
        }
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy with `name` set to `value` (replaced if present, removed if `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Result<Self, LabelsError> {
        let pairs = self
            .iter()
            .filter(|l| l.name != name)
            .map(|l| (l.name, l.value))
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
        for l in self.iter() {
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
    valid_name_bytes(name.as_bytes())
}

fn valid_name_bytes(name: &[u8]) -> bool {
    matches!(name.first(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

impl TryFrom<Vec<Label>> for Labels {
    type Error = LabelsError;

    fn try_from(labels: Vec<Label>) -> Result<Self, Self::Error> {
        Self::new(labels.into_iter().map(|l| (l.name, l.value)))
    }
}

impl From<Labels> for Vec<Label> {
    fn from(labels: Labels) -> Self {
        labels.iter().map(|l| l.to_owned()).collect()
    }
}

/// Prometheus' notation: `metric{a="x", b="y"}`, values escaped as in the text exposition format.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        let mut rest = self
            .iter()
            .filter(|l| l.name != Self::METRIC_NAME)
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
    fn packed_sets_hash_match_and_build_as_their_labels() {
        use std::hash::BuildHasher;
        let long = "ü".repeat(200);
        let sets: [&[(&str, &str)]; 4] = [
            &[("__name__", "up"), ("job", "node")],
            &[("a", "=:="), ("b", "12:34"), ("c", &long)],
            &[],
            &[("pod", "b")],
        ];
        let mut packed = PackedLabels::default();
        for round in 0..2 {
            packed.clear();
            fn bytes<'a>(s: &[(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
                s.iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                    .collect()
            }
            let at: Vec<usize> = sets
                .iter()
                .map(|s| packed.push(&bytes(s)).unwrap())
                .collect();
            assert!(packed.get(at[0]).is_none(), "readable only once sealed");
            packed.seal().unwrap();
            assert_eq!(packed.len(), sets.len());
            for (&i, s) in at.iter().zip(sets) {
                let l = Labels::new(s.iter().copied()).unwrap();
                let r = packed.get(i).unwrap();
                assert!(r.matches(&l), "round {round}: {s:?}");
                assert_eq!(LabelsHash.hash_one(r), LabelsHash.hash_one(&l));
                assert_eq!(r.to_labels(), l);
                assert_eq!(r.to_labels().iter().len(), s.len());
            }
            // Another set with the same hash forged in never matches.
            let other = Labels::new([("pod", "c")]).unwrap();
            assert!(!packed.get(at[3]).unwrap().matches(&other));
        }
        // Not canonical: nothing appended.
        assert!(packed.push(&[(b"b", b"1"), (b"a", b"2")]).is_none());
        assert!(packed.push(&[(b"a-b", b"1")]).is_none());
        assert!(packed.push(&[(b"a", b"")]).is_none());
        assert_eq!(packed.len(), sets.len());
        // A value that is not UTF-8, even one ending in half a character before an ASCII
        // name: the whole body of sets is refused, and forgotten.
        packed.push(&[(b"a", &[b'x', 0xc3]), (b"b", b"1")]).unwrap();
        assert_eq!(packed.seal(), Err(NotUtf8));
        assert!(packed.is_empty() && packed.get(0).is_none());
        packed.push(&[(b"a", "é".as_bytes())]).unwrap();
        packed.seal().unwrap();
        assert_eq!(packed.get(0).unwrap().to_labels().get("a"), Some("é"));
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
    fn values_holding_the_packing_characters_read_back_whole() {
        // `=`, `:` and digits in values, long and multi-byte values: the packing writes each
        // value's length, so nothing in a value can be taken for a boundary.
        let long = "x=1:".repeat(300);
        let pairs = [
            ("a", "=:="),
            ("b", "12:34"),
            ("c", "ü=ñ:9"),
            ("d", long.as_str()),
            ("e", ":"),
        ];
        let l = Labels::new(pairs).unwrap();
        let back: Vec<(&str, &str)> = l.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(back, pairs);
        assert_eq!(l.iter().len(), 5);
        for (n, v) in pairs {
            assert_eq!(l.get(n), Some(v));
        }
        assert!(LabelsRef::canonical(&pairs).unwrap().matches(&l));
        // A value one byte shorter or longer never matches.
        let shorter = [
            ("a", "=:"),
            ("b", "12:34"),
            ("c", "ü=ñ:9"),
            ("d", &long),
            ("e", ":"),
        ];
        let r = LabelsRef::canonical(&shorter).unwrap();
        let forged = LabelsRef(RefKind::Pairs {
            pairs: &shorter,
            hash: l.hash,
        });
        assert!(!r.matches(&l) && !forged.matches(&l));
        assert!(l.heap_bytes() > long.len());
        // Ordered as the pairs are, value by value.
        let m = Labels::new([("a", "=:=="), ("b", "0")]).unwrap();
        assert!(l < m);
    }

    #[test]
    fn maps_with_the_labels_hash_find_sets_by_their_own_hash() {
        use std::hash::BuildHasher;
        let a = Labels::new([("pod", "a")]).unwrap();
        assert_eq!(LabelsHash.hash_one(&a), a.hash);
        let pairs = [("pod", "a")];
        assert_eq!(
            LabelsHash.hash_one(LabelsRef::canonical(&pairs).unwrap()),
            a.hash
        );
        let mut map: std::collections::HashMap<Labels, u8, LabelsHash> =
            std::collections::HashMap::default();
        map.insert(a.clone(), 1);
        map.insert(Labels::new([("pod", "b")]).unwrap(), 2);
        assert_eq!(map[&a], 1);
        assert_eq!(map.len(), 2);
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
