//! Time to exhaustion: when a series that grows towards a known limit (a disk, a memory limit, a
//! connection pool) will reach it, from a robust local trend.

use portent_core::Timestamp;
use serde::{Deserialize, Serialize};

/// A Holt-style level and trend, updated online, that extrapolates to a limit.
///
/// The trend is smoothed slowly so that a single spike does not predict doom, and only a
/// positive trend (towards the limit) yields an estimate.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exhaustion {
    limit: f64,
    alpha: f64,
    beta: f64,
    level: f64,
    slope_per_ms: f64,
    last: Option<Timestamp>,
}

impl Exhaustion {
    /// Tracks a series towards `limit` with level smoothing `alpha` and trend smoothing `beta`.
    pub fn new(limit: f64, alpha: f64, beta: f64) -> Self {
        Self {
            limit,
            alpha,
            beta,
            level: f64::NAN,
            slope_per_ms: 0.0,
            last: None,
        }
    }

    /// Adds a sample; NaN and infinite values are ignored.
    pub fn push(&mut self, t: Timestamp, v: f64) {
        if !v.is_finite() {
            return;
        }
        let Some(last) = self.last.filter(|_| self.level.is_finite()) else {
            self.level = v;
            self.last = Some(t);
            return;
        };
        let dt = t.millis_since(last) as f64;
        if dt <= 0.0 {
            return;
        }
        let predicted = self.level + self.slope_per_ms * dt;
        let level = predicted + self.alpha * (v - predicted);
        let slope = (level - self.level) / dt;
        self.slope_per_ms += self.beta * (slope - self.slope_per_ms);
        self.level = level;
        self.last = Some(t);
    }

    /// Milliseconds until the limit is reached at the current trend; `None` when the series is
    /// not heading towards it. Zero once it is reached.
    pub fn millis_to_limit(&self) -> Option<f64> {
        if !self.level.is_finite() {
            return None;
        }
        let room = self.limit - self.level;
        if room <= 0.0 {
            return Some(0.0);
        }
        (self.slope_per_ms > 0.0).then(|| room / self.slope_per_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_reaches_the_limit_on_schedule() {
        // 1 MiB a minute towards 1 GiB, from 512 MiB: 512 minutes left at the start.
        let mib = 1024.0 * 1024.0;
        let mut e = Exhaustion::new(1024.0 * mib, 0.3, 0.05);
        for i in 0..200 {
            let wobble = if i % 2 == 0 { 0.2 * mib } else { -0.2 * mib };
            e.push(
                Timestamp::from_secs(i * 60),
                512.0 * mib + i as f64 * mib + wobble,
            );
        }
        let left_min = e.millis_to_limit().unwrap() / 60_000.0;
        // At i = 199 the level is ~711 MiB: ~313 minutes remain.
        assert!((left_min - 313.0).abs() < 10.0, "{left_min}");
    }

    #[test]
    fn a_flat_or_falling_series_never_exhausts() {
        let mut e = Exhaustion::new(100.0, 0.3, 0.05);
        for i in 0..100 {
            e.push(Timestamp::from_secs(i * 60), 50.0 - i as f64 * 0.1);
        }
        assert_eq!(e.millis_to_limit(), None);
        e.push(Timestamp::from_secs(10_000), f64::NAN);
        assert_eq!(e.millis_to_limit(), None);
    }
}
