//! A small autoencoder: rows that the network cannot reconstruct are unusual.
//!
//! The network is `d → h → b → h → d` (tanh hidden layers, a linear bottleneck of `b < d` and a
//! linear output), trained with Adam on mini-batches to reproduce the robustly scaled training
//! rows. The bottleneck forces it to learn the relations between features (memory and latency
//! both follow traffic), so a row that breaks one is reconstructed badly even when each of its
//! values is ordinary.
//!
//! It is written here, in plain Rust, rather than with an ML framework: for a handful of
//! features and a few hundred weights a framework's tensors, graph and kernels cost more than
//! the arithmetic (burn or candle add minutes of build and megabytes of binary), while forward
//! and backward passes of four dense layers are a few dozen lines whose every floating-point
//! operation runs in a fixed order, so fits are bit-for-bit reproducible.

use portent_core::FitError;
use serde::{Deserialize, Serialize};

use super::scaling::CLIP;
use super::{
    Calibration, FeatureError, FeatureSet, Rng, RobustScaler, RowScore, ScoreRows,
    check_contamination, normalise, trim, usable_rows,
};

/// The fewest usable rows an autoencoder is fitted on.
const MIN_ROWS: usize = 64;
/// The median of a χ²(1) variable: `median(r²) / 0.455` estimates `σ²` of a normal residual.
const CHI2_1_MEDIAN: f64 = 0.454_936_4;
/// The smallest residual scale, in robust standard deviations of the feature: a deviation under
/// a tenth of a feature's usual spread is no news, and a feature the network happens to
/// reconstruct almost perfectly (one it spends its bottleneck on) must not make every tiny
/// misfit look enormous.
const MIN_RESIDUAL_SCALE: f64 = 0.1;

/// Options of an [`Autoencoder`].
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Units in each of the two hidden layers.
    pub hidden: usize,
    /// Units in the bottleneck; 0 picks `max(1, d / 2)` for `d` features.
    pub bottleneck: usize,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per gradient step.
    pub batch_size: usize,
    /// Adam's step size at the start; it falls linearly to a tenth of that by the last epoch,
    /// so that the fit settles.
    pub learning_rate: f64,
    /// The fraction of the training window assumed anomalous (at most 0.05, default 0.02): the
    /// network is trained, the rows it reconstructs worst are dropped, and it is trained again on
    /// the rest.
    pub contamination: f64,
    /// The network learns from at most this many of the most recent rows (a week of minutes).
    pub window: usize,
    /// The seed of the initial weights and of the order of the rows in each epoch.
    pub seed: u64,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            hidden: 8,
            bottleneck: 0,
            epochs: 20,
            batch_size: 32,
            learning_rate: 0.01,
            contamination: 0.02,
            window: 10_080,
            seed: 0,
        }
    }
}

impl AutoencoderConfig {
    /// Checks that the options can work.
    pub fn validate(&self) -> Result<(), FitError> {
        let bad = |m: &str| Err(FitError::Config(format!("autoencoder: {m}")));
        if self.hidden == 0 || self.hidden > 1024 {
            return bad("hidden: must be in 1..=1024");
        }
        if self.bottleneck > 1024 {
            return bad("bottleneck: must be in 0..=1024");
        }
        if self.epochs == 0 || self.epochs > 10_000 {
            return bad("epochs: must be in 1..=10000");
        }
        if self.batch_size == 0 {
            return bad("batch_size: must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate: must be in (0, 1]");
        }
        if self.window < MIN_ROWS {
            return bad("window: must be at least 64 rows");
        }
        check_contamination(self.contamination)
    }

    /// Trains an autoencoder on the rows of `rows` (the most recent `window` of them), each of
    /// `schema`'s width. Rows holding NaN or infinite values are skipped.
    pub fn fit<R: AsRef<[f64]>>(
        &self,
        schema: FeatureSet,
        rows: &[R],
    ) -> Result<Autoencoder, FitError> {
        self.validate()?;
        let d = schema.width();
        let rows = usable_rows(&schema, rows, self.window, MIN_ROWS)?;
        let scaler = RobustScaler::fit(&rows, d);
        let b = if self.bottleneck == 0 {
            (d / 2).max(1)
        } else {
            self.bottleneck
        };
        if b >= d && d > 1 {
            // A bottleneck as wide as the row lets the network learn the identity, which
            // reconstructs every row, anomalous or not.
            return Err(FitError::Config(format!(
                "autoencoder: bottleneck: must be smaller than the {d} features, got {b}"
            )));
        }
        let mut model = Autoencoder {
            config: *self,
            scaler,
            layers: init_layers(d, self.hidden, b, self.seed),
            residual_scale: vec![1.0; d],
            calibration: Calibration::fit(&[], 0.0),
            schema,
        };
        let all = model.scale_rows(&rows);
        if self.contamination > 0.0 {
            // Gross anomalies reconstruct badly after a quarter of the training as after all
            // of it: the network that only picks the rows to drop is trained briefly.
            model.train(&all, self.epochs.div_ceil(4));
            model.residual_scale = model.robust_residual_scale(&all);
            let raw = model.raw_all(&all);
            let chunks: Vec<&[f64]> = all.chunks_exact(d).collect();
            let kept: Vec<f64> = trim(&chunks, &raw, self.contamination).concat();
            model.layers = init_layers(d, self.hidden, b, self.seed);
            model.train(&kept, self.epochs);
        } else {
            model.train(&all, self.epochs);
        }
        model.residual_scale = model.robust_residual_scale(&all);
        model.calibration = Calibration::fit(&model.raw_all(&all), self.contamination);
        Ok(model)
    }
}

/// A dense layer: `y = act(W x + b)`, `W` row-major (`n_out × n_in`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Dense {
    n_in: usize,
    n_out: usize,
    w: Vec<f64>,
    b: Vec<f64>,
    tanh: bool,
}

impl Dense {
    /// Glorot-uniform weights, zero biases.
    fn new(n_in: usize, n_out: usize, tanh: bool, rng: &mut Rng) -> Self {
        let a = (6.0 / (n_in + n_out) as f64).sqrt();
        let w = (0..n_in * n_out)
            .map(|_| (2.0 * rng.uniform() - 1.0) * a)
            .collect();
        Self {
            n_in,
            n_out,
            w,
            b: vec![0.0; n_out],
            tanh,
        }
    }

    fn forward(&self, x: &[f64], y: &mut [f64]) {
        for (o, (yo, w)) in y.iter_mut().zip(self.w.chunks_exact(self.n_in)).enumerate() {
            let z = self.b[o] + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
            *yo = if self.tanh { z.tanh() } else { z };
        }
    }
}

fn init_layers(d: usize, h: usize, b: usize, seed: u64) -> Vec<Dense> {
    let mut rng = Rng::new(seed, 0);
    vec![
        Dense::new(d, h, true, &mut rng),
        Dense::new(h, b, false, &mut rng),
        Dense::new(b, h, true, &mut rng),
        Dense::new(h, d, false, &mut rng),
    ]
}

/// Adam's moments and gradient accumulators for one layer.
struct Moments {
    gw: Vec<f64>,
    gb: Vec<f64>,
    mw: Vec<f64>,
    vw: Vec<f64>,
    mb: Vec<f64>,
    vb: Vec<f64>,
}

impl Moments {
    fn new(l: &Dense) -> Self {
        let z = |n| vec![0.0; n];
        Self {
            gw: z(l.w.len()),
            gb: z(l.b.len()),
            mw: z(l.w.len()),
            vw: z(l.w.len()),
            mb: z(l.b.len()),
            vb: z(l.b.len()),
        }
    }
}

/// One Adam step on `p` from the accumulated gradient `g` (cleared after), with `step` the
/// bias-corrected step size and `inv_n` the mini-batch's `1/len`.
fn adam(p: &mut [f64], g: &mut [f64], m: &mut [f64], v: &mut [f64], step: f64, inv_n: f64) {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    for (((p, g), m), v) in p.iter_mut().zip(g.iter_mut()).zip(m).zip(v) {
        let gi = *g * inv_n;
        *m = B1 * *m + (1.0 - B1) * gi;
        *v = B2 * *v + (1.0 - B2) * gi * gi;
        *p -= step * *m / (v.sqrt() + 1e-8);
        *g = 0.0;
    }
}

/// A fitted autoencoder over rows of a [`FeatureSet`].
///
/// A row's raw score is the root mean square over features of the reconstruction error, each
/// in units of that feature's typical error on the training window (a robust scale: the median
/// squared error, so that the anomalies the window holds do not inflate it). Without that
/// normalisation a feature the network reconstructs loosely (a noisy one) would dominate every
/// score. The root (rather than the mean square) keeps the calibration's exponential tail
/// conservative: for normal errors the root's tail is lighter than exponential, the mean
/// square's heavier. A feature's **contribution** is its share of the normalised squared
/// error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Autoencoder {
    config: AutoencoderConfig,
    schema: FeatureSet,
    scaler: RobustScaler,
    layers: Vec<Dense>,
    /// Each feature's typical reconstruction error, in scaled units.
    residual_scale: Vec<f64>,
    calibration: Calibration,
}

impl Autoencoder {
    /// The options it was fitted with.
    pub fn config(&self) -> &AutoencoderConfig {
        &self.config
    }

    /// The per-feature scaling fitted on the training window.
    pub fn scaler(&self) -> &RobustScaler {
        &self.scaler
    }

    /// The finite rows scaled and clipped, concatenated.
    fn scale_rows(&self, rows: &[&[f64]]) -> Vec<f64> {
        let d = self.schema.width();
        let mut out = vec![0.0; rows.len() * d];
        for (r, o) in rows.iter().zip(out.chunks_exact_mut(d)) {
            self.scale_into(r, o);
        }
        out
    }

    fn scale_into(&self, row: &[f64], out: &mut [f64]) {
        self.scaler.transform_into(row, out);
        out.iter_mut().for_each(|x| *x = x.clamp(-CLIP, CLIP));
    }

    /// Buffers for each layer's input and output: `acts[0]` is the input, `acts[l + 1]` the
    /// output of layer `l`.
    fn buffers(&self) -> Vec<Vec<f64>> {
        std::iter::once(self.schema.width())
            .chain(self.layers.iter().map(|l| l.n_out))
            .map(|n| vec![0.0; n])
            .collect()
    }

    fn forward(&self, acts: &mut [Vec<f64>]) {
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = acts.split_at_mut(l + 1);
            layer.forward(&done[l], &mut rest[0]);
        }
    }

    /// Trains the layers on the scaled rows `x` (concatenated).
    fn train(&mut self, x: &[f64], epochs: usize) {
        let d = self.schema.width();
        let n = x.len() / d;
        if n == 0 {
            return;
        }
        let mut rng = Rng::new(self.config.seed, 1);
        let mut moments: Vec<Moments> = self.layers.iter().map(Moments::new).collect();
        let mut acts = self.buffers();
        let mut deltas: Vec<Vec<f64>> = self.layers.iter().map(|l| vec![0.0; l.n_out]).collect();
        let mut order: Vec<usize> = (0..n).collect();
        let mut t = 0i32;
        for epoch in 0..epochs {
            for k in (1..n).rev() {
                order.swap(k, rng.below(k + 1));
            }
            let lr = self.config.learning_rate * (1.0 - 0.9 * epoch as f64 / epochs as f64);
            for batch in order.chunks(self.config.batch_size) {
                for &i in batch {
                    acts[0].copy_from_slice(&x[i * d..(i + 1) * d]);
                    self.forward(&mut acts);
                    self.backward(&acts, &mut deltas, &mut moments);
                }
                t = t.saturating_add(1);
                let step = lr * (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - 0.9f64.powi(t));
                let inv_n = 1.0 / batch.len() as f64;
                for (layer, m) in self.layers.iter_mut().zip(&mut moments) {
                    adam(&mut layer.w, &mut m.gw, &mut m.mw, &mut m.vw, step, inv_n);
                    adam(&mut layer.b, &mut m.gb, &mut m.mb, &mut m.vb, step, inv_n);
                }
            }
        }
    }

    /// Adds the gradient of the row's loss `mean((y − x)²)` to the accumulators.
    fn backward(&self, acts: &[Vec<f64>], deltas: &mut [Vec<f64>], moments: &mut [Moments]) {
        let last = self.layers.len() - 1;
        let inv_d = 2.0 / self.schema.width() as f64;
        // The output layer is linear: the loss's derivative is its pre-activation delta.
        for ((dl, y), x) in deltas[last].iter_mut().zip(&acts[last + 1]).zip(&acts[0]) {
            *dl = (y - x) * inv_d;
        }
        for l in (0..=last).rev() {
            let layer = &self.layers[l];
            let input = &acts[l];
            let m = &mut moments[l];
            let (before, after) = deltas.split_at_mut(l);
            let delta = &after[0];
            for (o, &dz) in delta.iter().enumerate() {
                m.gb[o] += dz;
                let gw = &mut m.gw[o * layer.n_in..(o + 1) * layer.n_in];
                for (g, a) in gw.iter_mut().zip(input) {
                    *g += dz * a;
                }
            }
            if l == 0 {
                break;
            }
            let prev = &mut before[l - 1];
            prev.iter_mut().for_each(|p| *p = 0.0);
            for (o, &dz) in delta.iter().enumerate() {
                let w = &layer.w[o * layer.n_in..(o + 1) * layer.n_in];
                for (p, w) in prev.iter_mut().zip(w) {
                    *p += w * dz;
                }
            }
            if self.layers[l - 1].tanh {
                for (p, a) in prev.iter_mut().zip(input) {
                    *p *= 1.0 - a * a;
                }
            }
        }
    }

    /// Each feature's squared reconstruction error for the scaled row in `acts[0]`, in units of
    /// its residual scale, written into `err`.
    fn errors(&self, acts: &mut [Vec<f64>], err: &mut [f64]) {
        self.forward(acts);
        let out = &acts[acts.len() - 1];
        for (((e, y), x), s) in err
            .iter_mut()
            .zip(out)
            .zip(&acts[0])
            .zip(&self.residual_scale)
        {
            let r = (y - x) / s;
            *e = r * r;
        }
    }

    /// The raw score of each scaled row in `x` (concatenated).
    fn raw_all(&self, x: &[f64]) -> Vec<f64> {
        let d = self.schema.width();
        let mut acts = self.buffers();
        let mut err = vec![0.0; d];
        x.chunks_exact(d)
            .map(|row| {
                acts[0].copy_from_slice(row);
                self.errors(&mut acts, &mut err);
                (err.iter().sum::<f64>() / d as f64).sqrt()
            })
            .collect()
    }

    /// `σ_j` with `σ_j² = median(r_j²) / median(χ²₁)` over the scaled rows `x`, with residuals
    /// in scaled units.
    fn robust_residual_scale(&mut self, x: &[f64]) -> Vec<f64> {
        let d = self.schema.width();
        self.residual_scale = vec![1.0; d];
        let mut acts = self.buffers();
        let mut err = vec![0.0; d];
        let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(x.len() / d); d];
        for row in x.chunks_exact(d) {
            acts[0].copy_from_slice(row);
            self.errors(&mut acts, &mut err);
            for (c, e) in cols.iter_mut().zip(&err) {
                c.push(*e);
            }
        }
        cols.into_iter()
            .map(|mut c| {
                c.sort_by(f64::total_cmp);
                let med = super::quantile_sorted(&c, 0.5);
                (med / CHI2_1_MEDIAN).sqrt().max(MIN_RESIDUAL_SCALE)
            })
            .collect()
    }
}

impl ScoreRows for Autoencoder {
    fn schema(&self) -> &FeatureSet {
        &self.schema
    }

    fn score_row(&self, row: &[f64]) -> Result<RowScore, FeatureError> {
        self.schema.check(row)?;
        if !row.iter().all(|v| v.is_finite()) {
            return Ok(RowScore::missing(row.len()));
        }
        let mut acts = self.buffers();
        self.scale_into(row, &mut acts[0]);
        let mut contributions = vec![0.0; row.len()];
        self.errors(&mut acts, &mut contributions);
        let raw = (contributions.iter().sum::<f64>() / row.len() as f64).sqrt();
        normalise(&mut contributions);
        Ok(RowScore {
            score: self.calibration.score(raw),
            raw,
            contributions,
            missing: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient matches finite differences of the loss.
    #[test]
    fn backward_matches_finite_differences() {
        let schema = FeatureSet::new(["a", "b", "c"]).unwrap();
        let rows: Vec<[f64; 3]> = (0..100)
            .map(|i| {
                let x = f64::from(i);
                [x, 2.0 * x, (x * 0.1).sin()]
            })
            .collect();
        let config = AutoencoderConfig {
            epochs: 1,
            contamination: 0.0,
            ..Default::default()
        };
        let ae = config.fit(schema, &rows).unwrap();
        let x = [0.3, -1.2, 0.7];
        let loss = |ae: &Autoencoder| {
            let mut acts = ae.buffers();
            acts[0].copy_from_slice(&x);
            ae.forward(&mut acts);
            acts[4]
                .iter()
                .zip(&x)
                .map(|(y, x)| (y - x).powi(2))
                .sum::<f64>()
                / 3.0
        };
        let mut acts = ae.buffers();
        acts[0].copy_from_slice(&x);
        ae.forward(&mut acts);
        let mut deltas: Vec<Vec<f64>> = ae.layers.iter().map(|l| vec![0.0; l.n_out]).collect();
        let mut moments: Vec<Moments> = ae.layers.iter().map(Moments::new).collect();
        ae.backward(&acts, &mut deltas, &mut moments);
        for (l, m) in moments.iter().enumerate() {
            for k in [0, ae.layers[l].w.len() - 1] {
                let mut p = ae.clone();
                p.layers[l].w[k] += 1e-6;
                let mut q = ae.clone();
                q.layers[l].w[k] -= 1e-6;
                let numeric = (loss(&p) - loss(&q)) / 2e-6;
                let analytic = m.gw[k];
                assert!(
                    (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                    "layer {l} weight {k}: {numeric} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn bad_options_are_rejected() {
        let schema = FeatureSet::new(["a"]).unwrap();
        let rows = vec![[1.0]; 100];
        for c in [
            AutoencoderConfig {
                hidden: 0,
                ..Default::default()
            },
            AutoencoderConfig {
                learning_rate: f64::NAN,
                ..Default::default()
            },
            AutoencoderConfig {
                batch_size: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                c.fit(schema.clone(), &rows),
                Err(FitError::Config(_))
            ));
        }
    }
}
