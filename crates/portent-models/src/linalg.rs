//! The little dense linear algebra the models need: dot products and a Cholesky solve.
//!
//! Hand-written because the systems are tiny (at most [`MAX_FEATURES`] unknowns) and sit on the
//! fit path whose budget is a couple of milliseconds: a general-purpose crate's allocation and
//! dispatch would cost more than the arithmetic.

/// The largest system the models solve.
pub(crate) const MAX_FEATURES: usize = 20;

/// `a · b`, with eight independent accumulators so that the compiler can vectorise it.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
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

/// The median of `v` (reordered in place); NaN if empty.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.5).collect();
        let b: Vec<f64> = (0..37).map(|i| 1.0 - i as f64).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-9);
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
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&mut []).is_nan());
    }
}
