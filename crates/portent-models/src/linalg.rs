//! The little dense linear algebra the models need: dot products, Gram matrices, a Cholesky
//! solve and a median.
//!
//! Hand-written because the systems are tiny (at most [`MAX_FEATURES`] unknowns) and sit on the
//! fit path whose budget is a couple of milliseconds: a general-purpose crate's allocation and
//! dispatch would cost more than the arithmetic.

/// The largest system the models solve.
pub(crate) const MAX_FEATURES: usize = 20;

/// Adds `a · b` into eight lane accumulators; `a.len()` must be a multiple of eight. The lanes
/// are independent, so the compiler can vectorise them.
#[inline]
fn accumulate(a: &[f64], b: &[f64], acc: &mut [f64; 8]) {
    debug_assert!(a.len().is_multiple_of(8) && b.len() >= a.len());
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
}

/// The dot product from its lane accumulators and the tail of fewer than eight elements.
#[inline]
fn finish(acc: &[f64; 8], a_tail: &[f64], b_tail: &[f64]) -> f64 {
    let mut tail = 0.0;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// Rows per block in [`gram_lower`] (a multiple of eight): 21 columns of 256 rows are 42 KiB,
/// and stay in a 48 KiB L1 while all their products are formed.
const GRAM_BLOCK: usize = 256;

/// The lower triangle of the Gram matrix `CᵀC` of `p` columns of length `n`, stored one after
/// the other in `c`: `g[i * p + j] = cᵢ · cⱼ` for `j <= i` (the upper triangle is left alone).
///
/// The rows are taken in blocks, and every product of a block is formed before the next block
/// is read: the whole matrix (1.4 MB for a week at one minute) would otherwise be streamed
/// from L2 once per product, `p(p+1)/2` times. Each product keeps its eight lane accumulators
/// from block to block, so it is summed in exactly the order of one eight-lane dot product over
/// the whole columns, to the bit (the order of the fits before the blocking).
///
/// (Kernels that share the loads of one column between two or four products measured slower
/// here: the compiler shuffles across products instead of vectorising along the rows.)
pub(crate) fn gram_lower(c: &[f64], n: usize, p: usize, g: &mut [f64]) {
    const PAIRS: usize = (MAX_FEATURES + 1) * (MAX_FEATURES + 2) / 2;
    debug_assert!(c.len() >= n * p && g.len() >= p * p && p * (p + 1) / 2 <= PAIRS);
    let mut acc = [[0.0f64; 8]; PAIRS];
    let whole = n - n % 8;
    for start in (0..whole).step_by(GRAM_BLOCK) {
        let end = (start + GRAM_BLOCK).min(whole);
        let col = |j: usize| &c[j * n + start..j * n + end];
        let mut pair = acc.iter_mut();
        for i in 0..p {
            for (j, acc) in (0..=i).zip(&mut pair) {
                accumulate(col(i), col(j), acc);
            }
        }
    }
    let tail = |j: usize| &c[j * n + whole..(j + 1) * n];
    let mut pair = acc.iter();
    for i in 0..p {
        for (j, acc) in (0..=i).zip(&mut pair) {
            g[i * p + j] = finish(acc, tail(i), tail(j));
        }
    }
}

/// Solves `A x = b` for symmetric positive (semi-)definite `A` (row-major `p × p`), in place of
/// `b`. A small ridge keeps near-singular systems (a feature that barely varies in the window)
/// solvable; it returns `false` only if `A` is not positive definite even then.
pub(crate) fn cholesky_solve(a: &[f64], p: usize, b: &mut [f64]) -> bool {
    debug_assert!(p <= MAX_FEATURES && a.len() >= p * p && b.len() >= p);
    let mut l = [0.0f64; MAX_FEATURES * MAX_FEATURES];
    let trace: f64 = (0..p).map(|i| a[i * p + i]).sum();
    let ridge = 1e-10 * (trace / p as f64).max(f64::MIN_POSITIVE);
    for i in 0..p {
        for j in 0..=i {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= l[i * MAX_FEATURES + k] * l[j * MAX_FEATURES + k];
            }
            if i == j {
                let d = s + ridge;
                if d.is_nan() || d <= 0.0 || d.is_infinite() {
                    return false;
                }
                l[i * MAX_FEATURES + i] = d.sqrt();
            } else {
                l[i * MAX_FEATURES + j] = s / l[j * MAX_FEATURES + j];
            }
        }
    }
    // Forward then backward substitution.
    for i in 0..p {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * MAX_FEATURES + k] * b[k];
        }
        b[i] = s / l[i * MAX_FEATURES + i];
    }
    for i in (0..p).rev() {
        let mut s = b[i];
        for k in i + 1..p {
            s -= l[k * MAX_FEATURES + i] * b[k];
        }
        b[i] = s / l[i * MAX_FEATURES + i];
    }
    b[..p].iter().all(|x| x.is_finite())
}

/// The median of `v`, whose values must be non-negative (magnitudes); `v` is reordered in place.
/// NaN if empty.
///
/// For non-negative floats the order of the bit patterns, as integers, is the numeric order
/// (`f64::total_cmp`'s, NaN included), and an integer comparison is cheaper: this is a median
/// of absolute residuals on every robust iteration of a fit.
pub(crate) fn median_of_magnitudes(v: &mut [f64]) -> f64 {
    debug_assert!(v.iter().all(|x| x.is_sign_positive()));
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by_key(mid, |x| x.to_bits());
    *m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dot product the fit used before `gram_lower`: the order its sums must keep.
    fn reference_dot(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f64; 8];
        let chunks = n / 8;
        for c in 0..chunks {
            let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        let mut tail = 0.0;
        for i in chunks * 8..n {
            tail += a[i] * b[i];
        }
        (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
    }

    #[test]
    fn gram_is_the_reference_dot_to_the_bit() {
        // 7 columns of 605 rows: whole blocks, a partial block and the tails are exercised.
        let (n, p) = (605, 7);
        let c: Vec<f64> = (0..n * p)
            .map(|i| ((i * 37) % 101) as f64 / 7.3 - 5.0)
            .collect();
        let mut g = vec![f64::NAN; p * p];
        gram_lower(&c, n, p, &mut g);
        for i in 0..p {
            for j in 0..=i {
                let d = reference_dot(&c[i * n..(i + 1) * n], &c[j * n..(j + 1) * n]);
                assert_eq!(g[i * p + j].to_bits(), d.to_bits(), "({i}, {j})");
            }
        }
    }

    #[test]
    fn solves_a_small_system() {
        // A = [[4, 2], [2, 3]], x = [1, -2] → b = [0, -4]
        let a = [4.0, 2.0, 2.0, 3.0];
        let mut b = [0.0, -4.0];
        assert!(cholesky_solve(&a, 2, &mut b));
        assert!((b[0] - 1.0).abs() < 1e-9 && (b[1] + 2.0).abs() < 1e-9);
    }

    #[test]
    fn refuses_an_indefinite_system() {
        let a = [1.0, 2.0, 2.0, 1.0];
        let mut b = [1.0, 1.0];
        assert!(!cholesky_solve(&a, 2, &mut b));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median_of_magnitudes(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of_magnitudes(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median_of_magnitudes(&mut []).is_nan());
    }

    #[test]
    fn median_of_magnitudes_orders_like_total_cmp() {
        let v: Vec<f64> = (0..1001)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => f64::INFINITY,
                2 => 1e-310, // subnormal
                _ => ((i * 7919) % 1013) as f64 * 0.37,
            })
            .collect();
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let mut w = v;
        assert_eq!(median_of_magnitudes(&mut w), sorted[500]);
    }
}
