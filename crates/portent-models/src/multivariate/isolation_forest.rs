//! Isolation Forest (Liu, Ting and Zhou, "Isolation Forest", ICDM 2008).
//!
//! Each tree splits a random subsample of the training rows on a random feature at a random
//! value between that feature's minimum and maximum, until every row stands alone or the
//! height limit `⌈log2 ψ⌉` is reached. Unusual rows are isolated in few splits: the score of
//! a row is `2^(−E[h(x)] / c(ψ))`, with `h` its path length (plus `c(size)` for the rows left
//! together in its leaf) and `c(n)` the mean path length of an unsuccessful search in a binary
//! search tree of `n` keys. Near 1 is anomalous, around 0.5 and below is ordinary.
//!
//! Two departures from the paper, both because infrastructure anomalies are often of the kind
//! plain Isolation Forest sees worst:
//!
//! * **Residual features.** Axis-parallel splits isolate a row that breaks a correlation (memory
//!   up, latency down, while both normally follow traffic) only slowly: it lies inside the
//!   bounds of every feature. The trees therefore split each feature's standardised residual
//!   from a linear prediction by the others, on which such a row is far out (see
//!   `scaling::Expand` for why residuals replace the values rather than join them).
//! * **Range-aware scoring.** A fitted tree cannot tell a row just past its training range from
//!   one a hundred times past it: both follow the edge path. At each split on the path, the row
//!   is scored as if it had been among the node's rows: with the node's range on the split
//!   feature stretched to include it, a uniform threshold would have cut it off alone with
//!   probability `gap / stretched range`, ending its path there. The expected path length is
//!   taken over those chances. A row inside every range scores exactly as in the paper.

use std::sync::OnceLock;

use portent_core::FitError;
use serde::{Deserialize, Serialize};

use super::scaling::Expand;
use super::{
    Calibration, FeatureError, FeatureSet, Rng, RowScore, ScoreRows, check_contamination,
    normalise, trim, usable_rows,
};

/// The fewest usable rows a forest is fitted on.
const MIN_ROWS: usize = 32;
/// Trees in the preliminary forest that picks the training rows to drop as contamination.
/// Ten rather than 25: on eight seeds of `eval sim`, detection, false alarms and incidents moved
/// no more than they do between two seeds of the same forest (BENCHMARKS.md), and scoring the
/// window with 25 trees was a sixth of a fit.
const TRIM_TREES: usize = 10;
/// At most this many rows of the window are scored to calibrate the forest. Not fewer: with
/// 2,048 the joint shift was found later on two seeds of eight (35 minutes against 14 to 23),
/// as a noisier tail moves the alert threshold.
const CALIBRATION_ROWS: usize = 4096;

/// Options of an [`IsolationForest`].
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationForestConfig {
    /// How many trees; the score's noise falls as `1/√n_trees`.
    pub n_trees: usize,
    /// Rows per tree (ψ). The paper's 256: more makes trees deeper and slower without isolating
    /// anomalies better, as the bulk of normal rows masks them.
    pub subsample: usize,
    /// The fraction of the training window assumed anomalous (at most 0.05, default 0.02): the
    /// forest is fitted, the rows that score worst are dropped, and it is fitted again on the rest.
    pub contamination: f64,
    /// The forest learns from at most this many of the most recent rows (a week of minutes).
    pub window: usize,
    /// The seed of every random draw: the same seed and rows give the same forest.
    pub seed: u64,
}

impl Default for IsolationForestConfig {
    fn default() -> Self {
        Self {
            n_trees: 100,
            subsample: 256,
            contamination: 0.02,
            window: 10_080,
            seed: 0,
        }
    }
}

impl IsolationForestConfig {
    /// Checks that the options can work.
    pub fn validate(&self) -> Result<(), FitError> {
        let bad = |m: &str| Err(FitError::Config(format!("isolation forest: {m}")));
        if self.n_trees == 0 || self.n_trees > 10_000 {
            return bad("n_trees: must be in 1..=10000");
        }
        if self.subsample < 2 || self.subsample > 1 << 20 {
            return bad("subsample: must be in 2..=1048576");
        }
        if self.window < MIN_ROWS {
            return bad("window: must be at least 32 rows");
        }
        check_contamination(self.contamination)
    }

    /// Fits a forest on the rows of `rows` (the most recent `window` of them), each of
    /// `schema`'s width. Rows holding NaN or infinite values are skipped.
    pub fn fit<R: AsRef<[f64]>>(
        &self,
        schema: FeatureSet,
        rows: &[R],
    ) -> Result<IsolationForest, FitError> {
        self.validate()?;
        let rows = usable_rows(&schema, rows, self.window, MIN_ROWS)?;
        let d = schema.width();
        let (expand, x) = Expand::fit(&rows, d);
        let mut forest = IsolationForest {
            config: *self,
            expand,
            norm: 0.0,
            median_path: 0.0,
            trees: Trees::default(),
            schema,
            calibration: Calibration::fit(&[], 0.0),
        };
        if self.contamination > 0.0 {
            // Gross anomalies stand out in a few trees as well as in a hundred: the forest that
            // only picks the rows to drop is a small one, as scoring the window is most of a
            // fit's cost.
            forest.grow(&x, self.n_trees.min(TRIM_TREES));
            let raw = forest.raw_batch(&x, None);
            let kept = trim(&rows, &raw, self.contamination);
            let (expand, x) = Expand::fit(&kept, d);
            forest.expand = expand;
            forest.grow(&x, self.n_trees);
        } else {
            forest.grow(&x, self.n_trees);
        }
        // Calibrated on evenly spaced rows of the window: a few thousand pin the knots and the
        // tail as well as ten thousand, at a fraction of the cost.
        let step = rows.len().div_ceil(CALIBRATION_ROWS);
        let sample: Vec<&[f64]> = rows.iter().step_by(step).copied().collect();
        let mut paths: Vec<f64> = forest
            .raw_all(&sample)
            .iter()
            .map(|&r| forest.path_of(r))
            .collect();
        paths.sort_by(f64::total_cmp);
        forest.median_path = super::quantile_sorted(&paths, 0.5);
        let stat: Vec<f64> = paths
            .iter()
            .map(|&p| (forest.median_path - p).max(0.0).powi(2))
            .collect();
        forest.calibration = Calibration::fit(&stat, self.contamination);
        Ok(forest)
    }
}

/// One node of a tree. A leaf has `left == 0` (the root, index 0, is nobody's child); a split
/// sends a row with `row[feature] <= threshold` to `left`, others to `left + 1`.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    left: u32,
    /// Training rows that reached the node.
    size: u32,
    threshold: f64,
    /// The range of the split feature among the node's rows.
    lo: f64,
    hi: f64,
    /// Precomputed, as scoring would otherwise spend most of its time in `ln`: `ln(size)` for a
    /// split, `c(size)` (the path length the leaf's rows would still need) for a leaf.
    weight: f64,
}

const PLACEHOLDER: Node = Node {
    feature: 0,
    left: 0,
    size: 0,
    threshold: 0.0,
    lo: 0.0,
    hi: 0.0,
    weight: 0.0,
};

/// Grows `n_trees` trees on expanded rows `x` (concatenated, each `width` wide).
fn grow_forest(
    config: &IsolationForestConfig,
    n_trees: usize,
    x: &[f64],
    width: usize,
) -> Vec<Vec<Node>> {
    let n = x.len() / width;
    let psi = config.subsample.min(n);
    let limit = (psi as f64).log2().ceil() as usize;
    // A partial Fisher–Yates shuffle picks each tree's subsample; reusing the permutation left
    // by the previous tree is as random as starting afresh.
    let mut order: Vec<usize> = (0..n).collect();
    // Each tree's rows are copied next to each other first: growing then reads a few kilobytes
    // that stay in the first-level cache, instead of rows scattered over the window.
    let mut sub = vec![0.0; psi * width];
    let mut bounds = Vec::with_capacity(width);
    (0..n_trees)
        .map(|t| {
            let mut rng = Rng::new(config.seed, t as u64);
            for k in 0..psi {
                let j = k + rng.below(n - k);
                order.swap(k, j);
            }
            for (dst, &i) in sub.chunks_exact_mut(width).zip(&order[..psi]) {
                dst.copy_from_slice(&x[i * width..(i + 1) * width]);
            }
            let mut idx: Vec<u32> = (0..psi as u32).collect();
            let mut nodes = vec![PLACEHOLDER];
            let mut grower = Grower {
                sub: &sub,
                width,
                limit,
                rng: &mut rng,
                nodes: &mut nodes,
                bounds: &mut bounds,
            };
            grower.grow(&mut idx, 0, 0);
            nodes
        })
        .collect()
}

/// One tree's growth over its subsample `sub` (rows of `width`, concatenated).
struct Grower<'a> {
    sub: &'a [f64],
    width: usize,
    limit: usize,
    rng: &'a mut Rng,
    nodes: &'a mut Vec<Node>,
    /// Scratch: the features that can still split a node's rows, with their bounds.
    bounds: &'a mut Vec<(usize, f64, f64)>,
}

impl Grower<'_> {
    fn value(&self, i: u32, feature: usize) -> f64 {
        self.sub[i as usize * self.width + feature]
    }

    /// Grows the node at `at`, at `depth`, over the subsample rows `idx`.
    fn grow(&mut self, idx: &mut [u32], depth: usize, at: usize) {
        let leaf = Node {
            size: idx.len() as u32,
            weight: average_path(idx.len()),
            ..PLACEHOLDER
        };
        self.nodes[at] = leaf;
        if depth >= self.limit || idx.len() <= 1 {
            return;
        }
        self.bounds.clear();
        match self.width {
            1 => bounds_of::<1>(self.sub, idx, self.bounds),
            2 => bounds_of::<2>(self.sub, idx, self.bounds),
            3 => bounds_of::<3>(self.sub, idx, self.bounds),
            4 => bounds_of::<4>(self.sub, idx, self.bounds),
            5 => bounds_of::<5>(self.sub, idx, self.bounds),
            6 => bounds_of::<6>(self.sub, idx, self.bounds),
            7 => bounds_of::<7>(self.sub, idx, self.bounds),
            FIXED_WIDTHS => bounds_of::<FIXED_WIDTHS>(self.sub, idx, self.bounds),
            _ => {
                for j in 0..self.width {
                    // Feature by feature, so the bounds stay in registers.
                    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                    for &i in idx.iter() {
                        (lo, hi) = widen(lo, hi, self.value(i, j));
                    }
                    self.bounds.push((j, lo, hi));
                }
            }
        }
        self.bounds.retain(|b| b.2 > b.1);
        if self.bounds.is_empty() {
            return; // identical rows: nothing can separate them: a leaf
        }
        let (feature, lo, hi) = self.bounds[self.rng.below(self.bounds.len())];
        let mut threshold = lo + self.rng.uniform() * (hi - lo);
        if threshold >= hi {
            threshold = lo; // rounding: keep both sides non-empty
        }
        // Partitioned without a branch on each row (half of them would be mispredicted): the
        // row at `split` always trades places with row `k`, and `split` moves past it only if
        // it goes left. The order within a side changes nothing the tree depends on.
        let mut split = 0;
        for k in 0..idx.len() {
            let i = idx[k];
            let left = self.value(i, feature) <= threshold;
            idx[k] = idx[split];
            idx[split] = i;
            split += usize::from(left);
        }
        let left = self.nodes.len();
        self.nodes.push(PLACEHOLDER);
        self.nodes.push(PLACEHOLDER);
        self.nodes[at] = Node {
            feature: feature as u32,
            left: left as u32,
            size: idx.len() as u32,
            threshold,
            lo,
            hi,
            weight: (idx.len() as f64).ln(),
        };
        let (l, r) = idx.split_at_mut(split);
        self.grow(l, depth + 1, left);
        self.grow(r, depth + 1, left + 1);
    }
}

/// `[lo, hi]` widened to hold finite `v`: plain comparisons, without `f64::min`'s care for
/// NaN.
#[inline(always)]
fn widen(lo: f64, hi: f64, v: f64) -> (f64, f64) {
    (if v < lo { v } else { lo }, if v > hi { v } else { hi })
}

/// Pushes each feature's bounds over the rows `idx` of `sub` (rows `D` wide, concatenated) to
/// `out`, as `(feature, lo, hi)`. Row by row, every feature at once: with the width known when
/// compiling, the bounds stay in registers, and the features' chains of comparisons run side
/// by side where one feature after another waited on each comparison (growth took half the
/// time). The same comparisons in the same order: the same bounds to the bit.
fn bounds_of<const D: usize>(sub: &[f64], idx: &[u32], out: &mut Vec<(usize, f64, f64)>) {
    let (rows, _) = sub.as_chunks::<D>();
    let mut lo = [f64::INFINITY; D];
    let mut hi = [f64::NEG_INFINITY; D];
    for &i in idx {
        let row = &rows[i as usize];
        for j in 0..D {
            (lo[j], hi[j]) = widen(lo[j], hi[j], row[j]);
        }
    }
    out.extend((0..D).map(|j| (j, lo[j], hi[j])));
}

/// The fitted trees, and the same trees laid out for [`walk`]. Only `nodes` is serialised: the
/// layout is rebuilt from them on load, so saved forests do not depend on it.
#[derive(Clone, Debug, Default)]
struct Trees {
    nodes: Vec<Vec<Node>>,
    flat: Vec<Layout>,
    /// The depth of the deepest leaf: every walk takes this many steps.
    height: usize,
    /// What each step of each tree credits its feature with (see [`Credit`]), as long as its
    /// steps; zeros for a leaf. Built the first time the forest scores with credit: a fit's
    /// forests walk without, and writing them for 110 trees was 3% of a fit.
    credits: OnceLock<Vec<Vec<Credit>>>,
}

/// One tree laid out for a walk of a fixed number of steps.
#[derive(Clone, Debug)]
struct Layout {
    steps: Vec<Step>,
    /// For each leaf (by node index), the path length of a row that reaches it: its depth plus
    /// `c(size)`, less the tree's `height`; 0 for a split. Read once a walk, so kept apart.
    ends: Vec<f64>,
    /// The feature the root splits on (0 if the root is a leaf).
    feature: u32,
}

/// A split's credit terms, as [`IsolationForest`]'s contributions define them: `ln(size)` of
/// the split, and `ln(size / child size)` for a row that goes to the left or the right child
/// (with a leaf child's `ln(size)` at 0 for a single row).
#[derive(Copy, Clone, Debug, Default)]
struct Credit {
    weight: f64,
    left: f64,
    right: f64,
}

/// A node laid out for a walk of a fixed number of steps. A leaf is a node that leads to itself
/// with nothing to add: its threshold sends every finite value left, to `left`, its own index,
/// and its range is unbounded, so a row is never cut off there.
///
/// A step holds its children's split features, not its own: a walk reads the value it compares
/// next as soon as it knows which way it goes, alongside the child's threshold, instead of after
/// it (two loads one after the other are most of a step's latency).
#[derive(Copy, Clone, Debug)]
struct Step {
    threshold: f64,
    lo: f64,
    hi: f64,
    /// `hi − lo`; 1 for a leaf.
    span: f64,
    left: u32,
    /// The split features of the children: `left`'s in the low 32 bits, `left + 1`'s in the
    /// high ones (0 for a leaf, or for a child that is a leaf). Picked by a shift, not by
    /// indexing a pair: the compiler made that a load after the comparison, back on the chain.
    next: u64,
}

/// A leaf that leads to node 0, for padding.
const LEAF: Step = Step {
    threshold: f64::INFINITY,
    lo: f64::NEG_INFINITY,
    hi: f64::INFINITY,
    span: 1.0,
    left: 0,
    next: 0,
};

impl Trees {
    fn new(nodes: Vec<Vec<Node>>) -> Self {
        let mut height = 0;
        let mut flat: Vec<Layout> = nodes
            .iter()
            .map(|tree| {
                let mut steps: Vec<Step> = Vec::with_capacity(tree.len());
                let mut ends = vec![0.0; tree.len()];
                let mut depths = vec![0usize; tree.len()];
                let feature = |i: usize| tree.get(i).map_or(0, |c: &Node| c.feature);
                for (at, n) in tree.iter().enumerate() {
                    // Children always follow their parent, so a node's depth is known here.
                    let depth = depths[at];
                    if n.left == 0 {
                        height = height.max(depth);
                        ends[at] = depth as f64 + n.weight;
                        steps.push(Step {
                            left: at as u32,
                            ..LEAF
                        });
                    } else {
                        let left = n.left as usize;
                        for child in [left, left + 1] {
                            if let Some(d) = depths.get_mut(child) {
                                *d = depth + 1;
                            }
                        }
                        steps.push(Step {
                            threshold: n.threshold,
                            lo: n.lo,
                            hi: n.hi,
                            span: n.hi - n.lo,
                            left: n.left,
                            next: u64::from(feature(left)) | u64::from(feature(left + 1)) << 32,
                        });
                    }
                }
                // A power-of-two length, for `walk`'s masked indices; the padding is never reached.
                let size = steps.len().next_power_of_two();
                steps.resize(size, LEAF);
                ends.resize(size, 0.0);
                Layout {
                    steps,
                    ends,
                    feature: feature(0),
                }
            })
            .collect();
        for (layout, tree) in flat.iter_mut().zip(&nodes) {
            for (end, n) in layout.ends.iter_mut().zip(tree) {
                if n.left == 0 {
                    *end -= height as f64;
                }
            }
        }
        Self {
            nodes,
            flat,
            height,
            credits: OnceLock::new(),
        }
    }

    /// Each tree's credit terms, step by step, as long as its layout's steps.
    fn credits(&self) -> &[Vec<Credit>] {
        self.credits.get_or_init(|| {
            self.nodes
                .iter()
                .zip(&self.flat)
                .map(|(tree, layout)| {
                    let mut credits = vec![Credit::default(); layout.steps.len()];
                    for (c, n) in credits.iter_mut().zip(tree).filter(|(_, n)| n.left != 0) {
                        let side = |i: u32| {
                            tree.get(i as usize)
                                .map_or(0.0, |child| n.weight - ln_size_of(child))
                        };
                        *c = Credit {
                            weight: n.weight,
                            left: side(n.left),
                            right: side(n.left + 1),
                        };
                    }
                    credits
                })
                .collect()
        })
    }
}

impl PartialEq for Trees {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Serialize for Trees {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.nodes.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Trees {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Vec<Node>>::deserialize(d).map(Trees::new)
    }
}

/// How far finite value `v` lies outside a step's range, 0 inside it (and always at a leaf,
/// whose range is unbounded). The chance that the split would have cut the value off alone is
/// `gap / (gap + span)`, that it did not `span / (gap + span)` (1 at a leaf, whose span is 1).
/// Plain comparisons, not `f64::max`: the value is finite, so `max`'s care for NaN would only
/// cost instructions.
#[inline(always)]
fn gap(n: Step, v: f64) -> f64 {
    let below = n.lo - v;
    let above = v - n.hi;
    let gap = if below > above { below } else { above };
    if gap > 0.0 { gap } else { 0.0 }
}

/// Rows walked down a tree together by [`walk`] in a fit. Six: with four the processor waits
/// on the rows' chains of loads; with seven or more their state no longer fits in registers.
const LANES: usize = 6;

/// The widest rows for which [`walk`] is compiled for their width (see [`Lanes`]).
const FIXED_WIDTHS: usize = 8;

/// `N` expanded rows as [`walk`] reads them.
trait Lanes<const N: usize>: Copy {
    /// Feature `f` (below the rows' width) of row `k` (below `N`).
    fn value(self, k: usize, f: usize) -> f64;
}

/// Rows of a width known when compiling: reading a value takes one register for all the rows
/// and no bounds check, which on rows of any width cost a tenth of a walk.
impl<const N: usize, const D: usize> Lanes<N> for &[[f64; D]; N] {
    #[inline(always)]
    fn value(self, k: usize, f: usize) -> f64 {
        self[k][clamp::<D>(f)]
    }
}

/// `N` rows of any width (the slice, `N` times the width, and the width), concatenated.
#[derive(Copy, Clone)]
struct Wide<'a>(&'a [f64], usize);

/// Where a walk adds the credit of `N` rows' features, if anywhere.
trait Credits<const N: usize> {
    /// Whether credit is kept at all: without, a walk computes none.
    const KEPT: bool;
    /// Adds `v` to feature `f` (below the rows' width) of row `k` (below `N`).
    fn add(&mut self, k: usize, f: usize, v: f64);
}

/// No credit: a fit's walks.
struct NoCredit;

impl<const N: usize> Credits<N> for NoCredit {
    const KEPT: bool = false;
    #[inline(always)]
    fn add(&mut self, _: usize, _: usize, _: f64) {}
}

/// The credit of rows of a width known when compiling, as [`Lanes`]' rows.
impl<const N: usize, const D: usize> Credits<N> for &mut [[f64; D]; N] {
    const KEPT: bool = true;
    #[inline(always)]
    fn add(&mut self, k: usize, f: usize, v: f64) {
        self[k][clamp::<D>(f)] += v;
    }
}

/// The credit of rows of any width, as [`Wide`]'s.
struct WideCredit<'a>(&'a mut [f64], usize);

impl<const N: usize> Credits<N> for WideCredit<'_> {
    const KEPT: bool = true;
    #[inline(always)]
    fn add(&mut self, k: usize, f: usize, v: f64) {
        self.0[k * self.1 + f] += v;
    }
}

/// `f`, below `D`, clamped below `D`: the clamp changes nothing, and shows the optimiser so.
#[inline(always)]
fn clamp<const D: usize>(f: usize) -> usize {
    if D.is_power_of_two() {
        f & (D - 1)
    } else {
        f.min(D - 1)
    }
}

impl<const N: usize> Lanes<N> for Wide<'_> {
    #[inline(always)]
    fn value(self, k: usize, f: usize) -> f64 {
        self.0[k * self.1 + f]
    }
}

/// The expected path lengths of `N` expanded rows in `tree`, adding each split's credit to
/// `credit`, in a fixed number of steps; the same, bit for bit, as the path's definition (see
/// the tests' `path`). With no exit that depends on the row, nothing is mispredicted at the
/// end of a walk; and the rows' chains of dependent loads are independent, so interleaving
/// them step by step lets the processor overlap them, where one walk after another fills its
/// window with one chain. [`LANES`] rows at a time, the rest one by one.
///
/// The expected depth at which a row leaves the path, `Σ cut_i · i + alive_L · (L + c)` for a
/// leaf at depth `L`, is summed as `Σ_{i<height} alive_i + alive_L · (L + c − height)`: one
/// addition a step, a leaf adding `alive_L` for each step below it.
#[inline(always)]
fn walk<const N: usize, C: Credits<N>>(
    tree: &Layout,
    credits: &[Credit],
    height: usize,
    rows: impl Lanes<N>,
    credit: &mut C,
) -> [f64; N] {
    // Indices masked into a power-of-two length the optimiser can see: no bounds check, which
    // was a tenth of a walk's cost. The layout pads the steps so that no index is ever changed.
    let mask = tree.steps.len() - 1;
    let steps = &tree.steps[..=mask];
    // The tree's credit terms (see `Trees::credits`), read only when credit is kept.
    let credits = if C::KEPT { &credits[..=mask] } else { &[] };
    let mut sum = [0.0; N];
    let mut alive = [1.0; N];
    let mut at = [0usize; N];
    let mut feature = [tree.feature as usize; N];
    for _ in 0..height {
        for k in 0..N {
            let i = at[k] & mask;
            let n = steps[i];
            let v = rows.value(k, feature[k]);
            let gap = gap(n, v);
            sum[k] += alive[k];
            let right = v > n.threshold;
            if C::KEPT {
                // ln(size / child size) for the side the row takes; `ln(size)` for the chance
                // that the split cut it off alone. A leaf's terms are 0.
                let c = credits[i];
                let alone = gap / (gap + n.span);
                let side = if right { c.right } else { c.left };
                credit.add(
                    k,
                    feature[k],
                    alive[k] * (alone * c.weight + (1.0 - alone) * side),
                );
            }
            alive[k] *= n.span / (gap + n.span);
            at[k] = n.left as usize + usize::from(right);
            feature[k] = (n.next >> (32 * u32::from(right))) as u32 as usize;
        }
    }
    std::array::from_fn(|k| sum[k] + alive[k] * tree.ends[at[k]])
}

/// Adds each tree's path length of every expanded row of `x` (concatenated, each `D` wide) to
/// `totals`, and each row's credit to `credit` (as long as `x`) if given. Tree by tree, so that
/// each tree's steps stay in cache while every row goes down it.
fn add_paths<const D: usize>(
    trees: &Trees,
    x: &[f64],
    totals: &mut [f64],
    credit: Option<&mut [f64]>,
) {
    let (rows, _) = x.as_chunks::<D>();
    let (groups, rest) = rows.as_chunks::<LANES>();
    let (sums, rest_sums) = totals.split_at_mut(groups.len() * LANES);
    let h = trees.height;
    let add = |t: &mut [f64], got: &[f64]| t.iter_mut().zip(got).for_each(|(t, g)| *t += g);
    match credit {
        None => {
            for tree in &trees.flat {
                for (t, group) in sums.chunks_exact_mut(LANES).zip(groups) {
                    add(t, &walk(tree, &[], h, group, &mut NoCredit));
                }
                for (t, row) in rest_sums.chunks_exact_mut(1).zip(rest) {
                    let row = std::array::from_ref(row);
                    add(t, &walk(tree, &[], h, row, &mut NoCredit));
                }
            }
        }
        Some(credit) => {
            let (credit, _) = credit.as_chunks_mut::<D>();
            let (credit_groups, credit_rest) = credit.split_at_mut(groups.len() * LANES);
            let (credit_groups, _) = credit_groups.as_chunks_mut::<LANES>();
            for (tree, terms) in trees.flat.iter().zip(trees.credits()) {
                for ((t, group), mut c) in sums
                    .chunks_exact_mut(LANES)
                    .zip(groups)
                    .zip(credit_groups.iter_mut())
                {
                    add(t, &walk(tree, terms, h, group, &mut c));
                }
                for ((t, row), c) in rest_sums
                    .chunks_exact_mut(1)
                    .zip(rest)
                    .zip(credit_rest.iter_mut())
                {
                    let (row, mut c) = (std::array::from_ref(row), std::array::from_mut(c));
                    add(t, &walk(tree, terms, h, row, &mut c));
                }
            }
        }
    }
}

/// [`add_paths`] for rows of any width `d`: [`LANES`] rows at a time, the rest one by one.
fn add_paths_wide(
    trees: &Trees,
    x: &[f64],
    d: usize,
    totals: &mut [f64],
    mut credit: Option<&mut [f64]>,
) {
    let credits = if credit.is_some() {
        trees.credits()
    } else {
        &[]
    };
    let n = totals.len();
    let whole = n - n % LANES;
    for (k, tree) in trees.flat.iter().enumerate() {
        let one = WideTree {
            tree,
            terms: credits.get(k).map_or(&[][..], Vec::as_slice),
            height: trees.height,
            x,
            d,
        };
        for at in (0..whole).step_by(LANES) {
            one.walk::<LANES>(at, totals, credit.as_deref_mut());
        }
        for at in whole..n {
            one.walk::<1>(at, totals, credit.as_deref_mut());
        }
    }
}

/// One tree and rows of any width (`x`, each `d` wide), for [`add_paths_wide`].
struct WideTree<'a> {
    tree: &'a Layout,
    terms: &'a [Credit],
    height: usize,
    x: &'a [f64],
    d: usize,
}

impl WideTree<'_> {
    /// Walks rows `at..at + N`, adding to their totals and, if given, to their credit.
    #[inline(always)]
    fn walk<const N: usize>(&self, at: usize, totals: &mut [f64], credit: Option<&mut [f64]>) {
        let (tree, h, d) = (self.tree, self.height, self.d);
        let span = at * d..(at + N) * d;
        let rows = Wide(&self.x[span.clone()], d);
        let got: [f64; N] = match credit {
            Some(c) => walk(tree, self.terms, h, rows, &mut WideCredit(&mut c[span], d)),
            None => walk(tree, &[], h, rows, &mut NoCredit),
        };
        for (t, g) in totals[at..at + N].iter_mut().zip(got) {
            *t += g;
        }
    }
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// keys, `2·H(n − 1) − 2(n − 1)/n`, with the harmonic number computed exactly for small `n`.
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let m = (n - 1) as f64;
            let harmonic = if n <= 64 {
                (1..n).map(|k| 1.0 / k as f64).sum()
            } else {
                m.ln() + 0.577_215_664_901_532_9 + 1.0 / (2.0 * m) - 1.0 / (12.0 * m * m)
            };
            2.0 * harmonic - 2.0 * m / n as f64
        }
    }
}

/// A fitted Isolation Forest over rows of a [`FeatureSet`].
///
/// **Contributions** are path-based: along a row's path in each tree, every split is credited
/// to its feature with `ln(n_parent / n_child)`, the share of the remaining training rows that
/// the split cut away from the row (in nats), or `ln(n_parent)` for the chance that it cut the
/// row off alone (see range-aware scoring above); a split on a feature's residual is credited
/// to that feature. A row's path cuts the subsample down from `ψ` to its leaf, and this splits
/// the credit for that isolation among the features that did it: a row that breaks a
/// correlation is cut loose by splits on the features of the correlation. Each feature's
/// credit, summed over trees, is then weighted by the size of its standardised residual: one
/// broken metric also drags the residuals of the metrics it helps predict, and once several
/// residuals are far out, which of them a tree happens to split first is luck; the weight gives
/// the credit to the one furthest from what the others predict. Residuals alone cannot tell
/// which of two correlated metrics moved (CPU three times its usual level and memory at its
/// usual level leave both residuals as far out), so the weight also grows with each feature's
/// own distance from its usual level, `1 + |z|` (robust z-score, clipped): in that case CPU
/// takes about 0.8 of the credit, where it was a coin toss against memory. A row that breaks a
/// correlation with every value ordinary keeps its residuals' split. Normalised to sum to 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    config: IsolationForestConfig,
    schema: FeatureSet,
    expand: Expand,
    /// `c(ψ)`, the normaliser of the mean path length.
    norm: f64,
    /// The median over the training window of a row's mean path length.
    median_path: f64,
    trees: Trees,
    calibration: Calibration,
}

impl IsolationForest {
    /// The options it was fitted with.
    pub fn config(&self) -> &IsolationForestConfig {
        &self.config
    }

    /// Grows the trees on expanded rows `x` (concatenated).
    fn grow(&mut self, x: &[f64], n_trees: usize) {
        let w = self.schema.width();
        self.trees = Trees::new(grow_forest(&self.config, n_trees, x, w));
        self.norm = average_path(self.config.subsample.min(x.len() / w));
    }

    /// The mean path length `E[h(x)]` behind a raw score.
    fn path_of(&self, raw: f64) -> f64 {
        -self.norm * raw.log2()
    }

    /// What is calibrated: the squared shortfall of the mean path length below its training
    /// median. Averaged over a hundred trees the path length is close to normal, so this has a
    /// near-exponential upper tail, which [`Calibration`]'s tail model extrapolates well. The
    /// raw score `2^(−E/c)` itself has a light, bounded tail, on which an exponential fit near
    /// the 95th percentile overestimates the rarity needed for an alert many times over.
    fn calibrated_stat(&self, raw: f64) -> f64 {
        (self.median_path - self.path_of(raw)).max(0.0).powi(2)
    }

    fn raw_all(&self, rows: &[&[f64]]) -> Vec<f64> {
        let d = self.schema.width();
        let mut x = vec![0.0; rows.len() * d];
        for (r, o) in rows.iter().zip(x.chunks_exact_mut(d)) {
            self.expand.transform_into(r, o);
        }
        self.raw_batch(&x, None)
    }

    /// The raw scores of expanded rows `x` (concatenated), adding their credit to `credit`
    /// (as long as `x`) if given: [`add_paths`], for the rows' width if it is one compiled for.
    /// A row's score and credit do not depend on the rows beside it.
    fn raw_batch(&self, x: &[f64], credit: Option<&mut [f64]>) -> Vec<f64> {
        let d = self.schema.width();
        let mut totals = vec![0.0; x.len() / d];
        let (t, c) = (&mut totals, credit);
        match d {
            1 => add_paths::<1>(&self.trees, x, t, c),
            2 => add_paths::<2>(&self.trees, x, t, c),
            3 => add_paths::<3>(&self.trees, x, t, c),
            4 => add_paths::<4>(&self.trees, x, t, c),
            5 => add_paths::<5>(&self.trees, x, t, c),
            6 => add_paths::<6>(&self.trees, x, t, c),
            7 => add_paths::<7>(&self.trees, x, t, c),
            FIXED_WIDTHS => add_paths::<FIXED_WIDTHS>(&self.trees, x, t, c),
            _ => add_paths_wide(&self.trees, x, d, t, c),
        }
        totals.into_iter().map(|t| self.raw_of_total(t)).collect()
    }

    /// The raw score `2^(−E[h(x)]/c(ψ))` of an expanded row, adding each expanded feature's
    /// isolation credit to `credit` if given: a batch of one.
    fn raw(&self, x: &[f64], credit: Option<&mut [f64]>) -> f64 {
        self.raw_batch(x, credit)
            .first()
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn raw_of_total(&self, total: f64) -> f64 {
        let mean = total / self.trees.nodes.len() as f64;
        if self.norm > 0.0 {
            (-mean / self.norm).exp2()
        } else {
            0.5
        }
    }

    /// The score of finite `row`, expanded to `x`, with its credit.
    fn finish(&self, row: &[f64], x: &[f64], credit: &[f64], raw: f64) -> RowScore {
        let mut z = vec![0.0; row.len()];
        self.expand.scaled_into(row, &mut z);
        let mut contributions: Vec<f64> = credit
            .iter()
            .zip(x)
            .zip(&z)
            .map(|((c, x), z)| c * x.abs() * (1.0 + z.abs()))
            .collect();
        normalise(&mut contributions);
        RowScore {
            score: self.calibration.score(self.calibrated_stat(raw)),
            raw,
            contributions,
            missing: false,
        }
    }
}

/// `ln(size)` of node `c` as its parent's credit needs it: a split's weight, `ln(size)` of a
/// leaf (0 for a single row).
fn ln_size_of(c: &Node) -> f64 {
    if c.left != 0 {
        c.weight
    } else if c.size <= 1 {
        0.0
    } else {
        f64::from(c.size).ln()
    }
}

impl ScoreRows for IsolationForest {
    fn schema(&self) -> &FeatureSet {
        &self.schema
    }

    fn score_row(&self, row: &[f64]) -> Result<RowScore, FeatureError> {
        self.schema.check(row)?;
        if !row.iter().all(|v| v.is_finite()) {
            return Ok(RowScore::missing(row.len()));
        }
        let mut x = vec![0.0; row.len()];
        self.expand.transform_into(row, &mut x);
        let mut credit = vec![0.0; x.len()];
        let raw = self.raw(&x, Some(&mut credit));
        Ok(self.finish(row, &x, &credit, raw))
    }

    fn score_rows<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<RowScore>, FeatureError> {
        let d = self.schema.width();
        let mut x = Vec::with_capacity(rows.len() * d);
        let mut finite = Vec::with_capacity(rows.len());
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            let r = r.as_ref();
            self.schema.check(r)?;
            if r.iter().all(|v| v.is_finite()) {
                let at = x.len();
                x.resize(at + d, 0.0);
                self.expand.transform_into(r, &mut x[at..]);
                finite.push(true);
                kept.push(r);
            } else {
                finite.push(false);
            }
        }
        let mut credit = vec![0.0; x.len()];
        let raw = self.raw_batch(&x, Some(&mut credit));
        let mut scored = raw
            .iter()
            .zip(kept)
            .zip(x.chunks_exact(d).zip(credit.chunks_exact(d)))
            .map(|((&r, row), (x, c))| self.finish(row, x, c, r));
        Ok(finite
            .into_iter()
            .map(|ok| {
                if ok {
                    scored.next().unwrap_or_else(|| RowScore::missing(d))
                } else {
                    RowScore::missing(d)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_matches_the_paper() {
        assert_eq!(average_path(1), 0.0);
        assert_eq!(average_path(2), 1.0);
        // c(256) ≈ 10.24 (the paper's normaliser for ψ = 256).
        assert!(
            (average_path(256) - 10.244).abs() < 0.01,
            "{}",
            average_path(256)
        );
        // The asymptotic harmonic number joins the exact sum smoothly.
        let exact: f64 =
            (1..100).map(|k| 1.0 / f64::from(k)).sum::<f64>() * 2.0 - 2.0 * 99.0 / 100.0;
        assert!((average_path(100) - exact).abs() < 1e-9);
    }

    #[test]
    fn bad_options_are_rejected() {
        let schema = FeatureSet::new(["a"]).unwrap();
        let rows = vec![[1.0]; 100];
        for c in [
            IsolationForestConfig {
                n_trees: 0,
                ..Default::default()
            },
            IsolationForestConfig {
                subsample: 1,
                ..Default::default()
            },
            IsolationForestConfig {
                contamination: 0.5,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                c.fit(schema.clone(), &rows),
                Err(FitError::Config(_))
            ));
        }
        assert_eq!(
            IsolationForestConfig::default().fit(schema, &rows[..10]),
            Err(FitError::NotEnoughData {
                needed: 32,
                got: 10
            })
        );
    }

    /// A row's path in one tree as the contributions' docs define it, the plain way: down the
    /// tree until a leaf, crediting each split's feature. The reference [`walk`] is checked
    /// against, which computes the same sums over the forest's `height` steps.
    fn path(nodes: &[Node], height: usize, x: &[f64], mut credit: Option<&mut [f64]>) -> f64 {
        let mut total = 0.0;
        let mut at = 0;
        let mut depth = 0;
        // The chance that the row is still on the path (not cut off alone yet).
        let mut alive = 1.0;
        loop {
            let n = nodes[at];
            if n.left == 0 {
                for _ in depth..height {
                    total += alive;
                }
                return total + alive * ((depth as f64 + n.weight) - height as f64);
            }
            let f = n.feature as usize;
            let v = x[f];
            let gap = (n.lo - v).max(v - n.hi).max(0.0);
            let span = n.hi - n.lo;
            let next = n.left as usize + usize::from(v > n.threshold);
            total += alive;
            if let Some(c) = credit.as_deref_mut() {
                // The chance of being cut off here, and ln(size / child size).
                let alone = gap / (gap + span);
                let ln_child = ln_size_of(&nodes[next]);
                c[f] += alive * (alone * n.weight + (1.0 - alone) * (n.weight - ln_child));
            }
            alive *= span / (gap + span);
            at = next;
            depth += 1;
        }
    }

    #[test]
    fn the_fixed_step_walk_is_the_path_bit_for_bit() {
        // Three features: a width compiled for, not a power of two. Eleven: any width.
        for width in [3, 11] {
            let names: Vec<String> = (0..width).map(|j| format!("f{j}")).collect();
            let schema = FeatureSet::new(names).unwrap();
            let mut rng = Rng::new(7, 0);
            let rows: Vec<Vec<f64>> = (0..2_000)
                .map(|_| {
                    let a = rng.uniform();
                    let mut r = vec![a, 2.0 * a + 0.1 * rng.uniform()];
                    r.extend((2..width).map(|_| rng.uniform().powi(3)));
                    r
                })
                .collect();
            let f = IsolationForestConfig::default().fit(schema, &rows).unwrap();
            assert!(f.trees.height >= 2);
            // Rows inside the training ranges, far outside them, and breaking the correlation;
            // 1,001, so that the batch walks whole groups of lanes and a remainder.
            let probes: Vec<Vec<f64>> = (0..501)
                .map(|i| {
                    let a = rng.uniform() * 3.0 - 1.0;
                    let b = if i % 2 == 0 { 2.0 * a } else { -5.0 * a };
                    let mut r = vec![a, b];
                    r.extend((2..width).map(|_| rng.uniform() * 1e3 - 10.0));
                    r
                })
                .chain(rows.iter().take(500).cloned())
                .collect();
            let mut x = vec![0.0; probes.len() * width];
            let mut credit = vec![0.0; x.len()];
            let mut totals = vec![0.0; probes.len()];
            for (((p, x), c), t) in probes
                .iter()
                .zip(x.chunks_exact_mut(width))
                .zip(credit.chunks_exact_mut(width))
                .zip(&mut totals)
            {
                f.expand.transform_into(p, x);
                for (nodes, tree) in f.trees.nodes.iter().zip(&f.trees.flat) {
                    let slow = path(nodes, f.trees.height, x, Some(c));
                    let [fast] = walk(tree, &[], f.trees.height, Wide(x, width), &mut NoCredit);
                    assert_eq!(slow.to_bits(), fast.to_bits(), "{p:?}: {slow} != {fast}");
                    *t += slow;
                }
            }
            // Restored from its serialised form, the layout is rebuilt the same, and the
            // batch of walks (lanes of six and the rest, fixed widths and any) gives each
            // row's score and credit as the paths do; so does a row alone.
            let back: IsolationForest =
                postcard::from_bytes(&postcard::to_stdvec(&f).unwrap()).unwrap();
            assert_eq!(back.trees.height, f.trees.height);
            let mut batch_credit = vec![0.0; x.len()];
            let batch = back.raw_batch(&x, Some(&mut batch_credit));
            let bits = |v: &[f64]| v.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&batch_credit), bits(&credit), "width {width}");
            for ((b, x), t) in batch.iter().zip(x.chunks_exact(width)).zip(&totals) {
                assert_eq!(b.to_bits(), f.raw_of_total(*t).to_bits(), "width {width}");
                assert_eq!(b.to_bits(), f.raw(x, None).to_bits(), "width {width}");
            }
            assert_eq!(back.raw_batch(&x, None), batch);
        }
    }

    #[test]
    fn identical_rows_fit_and_score_without_failing() {
        let schema = FeatureSet::new(["a", "b"]).unwrap();
        let f = IsolationForestConfig::default()
            .fit(schema, &vec![[3.0, 4.0]; 300])
            .unwrap();
        let same = f.score_row(&[3.0, 4.0]).unwrap();
        assert!(same.score.get() < 0.8 && same.raw.is_finite());
    }
}
