//! One series' samples in the push buffer: the newest few as they are, the older ones packed.
//!
//! A sample is 16 bytes as it is, and the buffer keeps hours of them for every pushed series
//! (warm-ups and refits read them): at 100,000 series that was more than half of the
//! daemon's memory. Packed, a sample takes what it differs from the one before it, in the
//! spirit of Gorilla (Pelkonen et al., VLDB 2015) and Prometheus' chunks, but byte-aligned:
//!
//! * a header byte: how the time is stored (two bits) and which bytes of the value are;
//! * the time as the change of the interval since the previous sample ("delta of delta"):
//!   nothing when scrapes are regular, else 1, 2 or 8 bytes;
//! * the value as the bytes of its XOR with the previous value that are not zero at either
//!   end: nothing when it repeats, one or two bytes for most counters and integer gauges,
//!   about six for a noisy float, never more than eight.
//!
//! So 1 to 17 bytes a sample: about 7 for the noisy floats of the benchmarks, 1 to 4 for
//! counters, gauges of whole numbers and repeated values. Bytes, not bits, because decoding
//! and encoding are then a few loads and shifts, and the saving that bit packing adds (a
//! byte or so a sample) is not worth a slower ingest.
//!
//! Written here rather than taken from a crate: the crates that implement Gorilla encode a
//! whole block at once and cannot drop the oldest sample of a stream, which a ring must do on
//! every push once the buffer is full. Here the oldest packed sample is kept as it is, with
//! the interval before it, so dropping it decodes one record and no more.
//!
//! The newest [`Shape::keep`] to `keep` + [`PACK`] samples stay as they are: each score tick
//! reads the last few samples of every series (six at a 1 m step with five minutes of
//! lateness), and those must not need decoding. They are packed four at a time, and dropped
//! eight at a time by [`Samples::pop_front_n`]'s callers, so that the packed part, a cache miss
//! away at 100,000 series, is touched on three pushes in eight rather than on each.

use std::collections::VecDeque;

use portent_core::{Sample, Timestamp};

/// The fewest newest samples left as they are once older ones are packed.
pub(super) const MIN_KEEP: usize = 8;
/// How many samples are packed at a time: the head holds up to `keep + PACK` samples.
///
/// Four, not eight: a head of twelve samples is 192 bytes where sixteen were 256, for every
/// series, and the packed part's room is the same either way. At 100,000 series with the
/// buffer full that was 128 bytes a series less resident memory, for no measurable CPU
/// (`push_loopback 100000 200`: 1,128 ns a sample against 1,133).
pub(super) const PACK: usize = 4;

/// What a ring is sized for, from the buffer's bounds and the series' step.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    /// Samples the ring is expected to hold once full: its share of the buffer's bounds.
    pub(super) expect: usize,
    /// The newest samples kept as they are (at least [`MIN_KEEP`]): as many as a score tick
    /// reads, so that it never decodes.
    pub(super) keep: usize,
}

/// A series' samples, strictly increasing in time, oldest first. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Samples {
    /// The newest samples, as they are.
    head: VecDeque<Sample>,
    /// The older ones, packed; `None` until the head first overflows.
    packed: Option<Box<Packed>>,
}

#[derive(Debug)]
struct Packed {
    /// The oldest sample, as it is, and the interval before it (0 for the first ever packed):
    /// where decoding starts.
    first: Sample,
    first_delta: i64,
    /// The newest packed sample and the interval before it: what the next one is packed
    /// against.
    last: Sample,
    last_delta: i64,
    /// The samples after `first`, each as a record against the one before it.
    bytes: VecDeque<u8>,
    /// Samples packed, `first` included.
    len: usize,
}

/// How the header's top two bits store the delta of delta.
const DOD_ZERO: u8 = 0;
const DOD_I8: u8 = 1;
const DOD_I16: u8 = 2;
const DOD_I64: u8 = 3;
/// The header's value code for a value equal to the previous one (no byte follows). Other
/// codes are `8 × leading zero bytes + (kept bytes − 1)`, at most 7 × 8 + 0 = 56.
const SAME_VALUE: u8 = 63;

impl Samples {
    /// Samples held.
    pub(super) fn len(&self) -> usize {
        self.head.len() + self.packed.as_ref().map_or(0, |p| p.len)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_empty() && self.packed.is_none()
    }

    /// Asks for the newest samples (both ends of the head, which a read looks at) in cache.
    pub(super) fn prefetch(&self) {
        if let (Some(front), Some(back)) = (self.head.front(), self.head.back()) {
            portent_core::prefetch::prefetch(front);
            portent_core::prefetch::prefetch(back);
        }
    }

    /// The newest sample.
    pub(super) fn back(&self) -> Option<Sample> {
        self.head.back().copied()
    }

    /// Appends `s`, which must be newer than [`Self::back`] (the buffer drops the others
    /// before this), in a ring of `shape`.
    pub(super) fn push_back(&mut self, s: Sample, shape: Shape) {
        let keep = shape.keep.max(MIN_KEEP);
        let expect = shape.expect;
        if self.head.len() >= keep + PACK {
            let n = self.head.len() - keep;
            let (packed, new) = match &mut self.packed {
                Some(p) => (p, false),
                None => {
                    let Some(first) = self.head.pop_front() else {
                        return;
                    };
                    // The interval to the next sample stands for the one before the first, so
                    // a regular series' first record takes no time bytes either.
                    let delta = self
                        .head
                        .front()
                        .map_or(0, |next| next.t.millis().wrapping_sub(first.t.millis()));
                    let p = self.packed.insert(Box::new(Packed {
                        first,
                        first_delta: delta,
                        last: first,
                        last_delta: delta,
                        bytes: VecDeque::new(),
                        len: 1,
                    }));
                    (p, true)
                }
            };
            let older = n.min(self.head.len());
            if new {
                // Packed in one go: the first records say how many bytes a sample of this
                // series takes, and the ring is given room for its whole share at once. Grown
                // step by step instead, the rings of 100,000 series left so many freed blocks
                // behind (allocated and freed on the receiver's threads) that the daemon's
                // resident memory grew by 18 bytes for each 7-byte sample packed.
                for x in self.head.drain(..older) {
                    packed.push(x);
                }
                // An eighth more than those records took, for the values yet to come.
                let room = expect
                    .saturating_sub(packed.len + keep)
                    .saturating_mul(packed.bytes.len() * 9)
                    .div_ceil(8 * older.max(1))
                    .min(expect.saturating_mul(17));
                packed.bytes.reserve_exact(room);
            } else {
                let want = packed.bytes.len() + 8 * older;
                if want > packed.bytes.capacity() {
                    // Half again, not double: a full buffer should not leave a third of its
                    // rings unused.
                    packed
                        .bytes
                        .reserve_exact((want - packed.bytes.len()).max(packed.bytes.len() / 2));
                }
                for x in self.head.drain(..older) {
                    packed.push(x);
                }
            }
        }
        if self.head.len() == self.head.capacity() {
            // Grows to `keep + PACK` in a few steps: series that live for a few samples stay
            // small.
            let most = keep + PACK;
            let room = (self.head.len() / 4).clamp(4, most);
            self.head
                .reserve_exact(room.min(most.saturating_sub(self.head.len())).max(1));
        }
        self.head.push_back(s);
    }

    /// Drops the `n` oldest samples (all of them if fewer); returns how many went.
    pub(super) fn pop_front_n(&mut self, n: usize) -> usize {
        let mut dropped = 0;
        while dropped < n {
            let Some(p) = &mut self.packed else {
                break;
            };
            if p.len == 1 {
                self.packed = None;
            } else {
                p.pop_front();
            }
            dropped += 1;
        }
        let from_head = (n - dropped).min(self.head.len());
        self.head.drain(..from_head);
        dropped + from_head
    }

    /// Appends to `out` the samples with `start <= t <= end`, oldest first.
    pub(super) fn read(&self, start: Timestamp, end: Timestamp, out: &mut Vec<Sample>) {
        // The packed samples are all older than the head's first: decoded only when the read
        // reaches back past it (a warm-up or a refit, not a score tick).
        if let Some(p) = &self.packed
            && self.head.front().is_none_or(|h| h.t > start)
        {
            for s in p.iter() {
                if s.t > end {
                    return;
                }
                if s.t >= start {
                    out.push(s);
                }
            }
        }
        out.extend(self.head.iter().filter(|s| s.t >= start && s.t <= end));
    }

    /// Bytes on the heap: the head's room and the packed part.
    pub(super) fn heap_bytes(&self) -> usize {
        self.head.capacity() * size_of::<Sample>()
            + self
                .packed
                .as_ref()
                .map_or(0, |p| size_of::<Packed>() + p.bytes.capacity())
    }
}

impl Packed {
    /// Packs `s`, newer than `self.last`.
    fn push(&mut self, s: Sample) {
        let delta = s.t.millis().wrapping_sub(self.last.t.millis());
        let dod = delta.wrapping_sub(self.last_delta);
        let xor = s.v.to_bits() ^ self.last.v.to_bits();
        let (time_code, time_len) = if dod == 0 {
            (DOD_ZERO, 0)
        } else if i8::try_from(dod).is_ok() {
            (DOD_I8, 1)
        } else if i16::try_from(dod).is_ok() {
            (DOD_I16, 2)
        } else {
            (DOD_I64, 8)
        };
        let (value_code, lead, kept) = if xor == 0 {
            (SAME_VALUE, 0, 0)
        } else {
            let lead = (xor.leading_zeros() / 8) as usize;
            let trail = (xor.trailing_zeros() / 8) as usize;
            let kept = 8 - lead - trail;
            // lead ≤ 7 and kept ≥ 1 for any xor ≠ 0: the code fits six bits and is not 63.
            ((8 * lead + kept - 1) as u8, lead, kept)
        };
        self.bytes.push_back(value_code | (time_code << 6));
        self.bytes.extend(&dod.to_le_bytes()[..time_len]);
        let trail = 8 - lead - kept;
        self.bytes.extend(&xor.to_le_bytes()[trail..trail + kept]);
        self.last = s;
        self.last_delta = delta;
        self.len += 1;
    }

    /// Drops `first`: the next record becomes the first sample. Needs `len > 1`.
    fn pop_front(&mut self) {
        let mut at = 0;
        if let Some((next, delta)) = decode(&self.bytes, &mut at, self.first, self.first_delta) {
            self.first = next;
            self.first_delta = delta;
            self.bytes.drain(..at);
            self.len -= 1;
        } else {
            // Only a bug could get here (records are written by `push`): forget the packed
            // samples rather than read garbage.
            self.bytes.clear();
            self.len = 1;
            self.first = self.last;
        }
    }

    /// Every packed sample, oldest first.
    fn iter(&self) -> impl Iterator<Item = Sample> + '_ {
        let mut at = 0;
        let mut prev = Some((self.first, self.first_delta));
        let mut left = self.len;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let (s, delta) = prev?;
            left -= 1;
            prev = if left > 0 {
                decode(&self.bytes, &mut at, s, delta)
            } else {
                None
            };
            Some(s)
        })
    }
}

/// Decodes the record at `bytes[*at..]` against `prev` (and the interval before it); moves
/// `at` past it. `None` if the bytes end inside the record.
fn decode(bytes: &VecDeque<u8>, at: &mut usize, prev: Sample, delta: i64) -> Option<(Sample, i64)> {
    let header = *bytes.get(*at)?;
    *at += 1;
    let mut take = |n: usize| -> Option<[u8; 8]> {
        let mut b = [0u8; 8];
        for slot in b.iter_mut().take(n) {
            *slot = *bytes.get(*at)?;
            *at += 1;
        }
        Some(b)
    };
    let dod = match header >> 6 {
        DOD_ZERO => 0,
        DOD_I8 => i64::from(i8::from_le_bytes([take(1)?[0]])),
        DOD_I16 => {
            let b = take(2)?;
            i64::from(i16::from_le_bytes([b[0], b[1]]))
        }
        _ => i64::from_le_bytes(take(8)?),
    };
    let code = header & 0x3f;
    let xor = if code == SAME_VALUE {
        0
    } else {
        let lead = usize::from(code / 8);
        let kept = usize::from(code % 8) + 1;
        let trail = 8usize.checked_sub(lead + kept)?;
        let b = take(kept)?;
        let mut le = [0u8; 8];
        le[trail..trail + kept].copy_from_slice(&b[..kept]);
        u64::from_le_bytes(le)
    };
    let delta = delta.wrapping_add(dod);
    let t = Timestamp::from_millis(prev.t.millis().wrapping_add(delta));
    Some((
        Sample::new(t, f64::from_bits(prev.v.to_bits() ^ xor)),
        delta,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portent_core::seeded::gauss;
    use portent_core::{STALE_NAN_BITS, Timestamp};

    use super::*;

    fn at(ms: i64, v: f64) -> Sample {
        Sample::new(Timestamp::from_millis(ms), v)
    }

    fn shape(expect: usize) -> Shape {
        Shape {
            expect,
            keep: MIN_KEEP,
        }
    }

    /// Sample series that exercise every code: regular and jittered times, jumps of every
    /// size, repeated values, counters, noise, NaN, both infinities, -0.0, a stale marker's
    /// bits, and the extremes of f64 and of time.
    fn awkward(seed: u64) -> Vec<Sample> {
        let mut t = -1_000_000_000i64 + seed as i64;
        let mut out = Vec::new();
        for i in 0..600u64 {
            let g = gauss(seed.wrapping_mul(7919) ^ i);
            t += match i % 11 {
                0 => 60_000,
                1 => 60_000 + (g * 40.0) as i64,
                2 => 60_000 + (g * 20_000.0) as i64,
                3 => 1,
                4 => 3_000_000_000,
                5 => i64::from(u32::MAX),
                _ => 60_000,
            }
            .max(1);
            let v = match i % 13 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => -0.0,
                4 => f64::from_bits(STALE_NAN_BITS),
                5 => f64::MAX,
                6 => f64::MIN_POSITIVE,
                7 => out.last().map_or(1.0, |s: &Sample| s.v),
                8 => (i * 1_000) as f64,
                _ => 50.0 + 2.0 * g,
            };
            out.push(at(t, v));
        }
        out.push(at(i64::MAX - 1, 0.5));
        out.push(at(i64::MAX, 0.25));
        out
    }

    fn all(s: &Samples) -> Vec<Sample> {
        let mut out = Vec::new();
        s.read(
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
            &mut out,
        );
        out
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
    }

    #[test]
    fn what_goes_in_comes_out_bit_for_bit() {
        for seed in 0..20 {
            let input = awkward(seed);
            let mut s = Samples::default();
            for (k, x) in input.iter().enumerate() {
                s.push_back(*x, shape(input.len()));
                assert_eq!(s.len(), k + 1);
                assert_eq!(s.back().unwrap().t, x.t);
            }
            assert!(same(&all(&s), &input), "seed {seed}");
        }
    }

    #[test]
    fn dropping_the_oldest_keeps_the_rest_exact() {
        let input = awkward(3);
        let mut s = Samples::default();
        let mut kept: VecDeque<Sample> = VecDeque::new();
        for (k, x) in input.iter().enumerate() {
            s.push_back(*x, shape(100));
            kept.push_back(*x);
            // Drops of every size, interleaved with pushes, as a bounded ring does.
            if k % 5 == 4 {
                let n = k % 7 + 1;
                let dropped = s.pop_front_n(n);
                assert_eq!(dropped, n.min(kept.len()));
                kept.drain(..dropped);
            }
            assert_eq!(s.len(), kept.len());
        }
        let expected: Vec<Sample> = kept.iter().copied().collect();
        assert!(same(&all(&s), &expected));
        assert_eq!(s.pop_front_n(usize::MAX), expected.len());
        assert!(s.is_empty() && s.back().is_none() && all(&s).is_empty());
        // And it fills again from empty.
        s.push_back(at(5, 1.0), shape(100));
        assert!(same(&all(&s), &[at(5, 1.0)]));
    }

    #[test]
    fn the_head_keeps_what_a_score_tick_reads() {
        // A 15 s step with five minutes of lateness: a tick reads 21 samples and more.
        let mut s = Samples::default();
        for i in 0..500i64 {
            s.push_back(
                at(i * 15_000, i as f64),
                Shape {
                    expect: 4_320,
                    keep: 23,
                },
            );
            if i >= 23 {
                assert!((23..=31).contains(&s.head.len()), "{i}: {}", s.head.len());
            }
        }
        // And never fewer than eight.
        let mut t = Samples::default();
        for i in 0..100i64 {
            t.push_back(
                at(i, 0.0),
                Shape {
                    expect: 100,
                    keep: 1,
                },
            );
        }
        assert!((MIN_KEEP..=MIN_KEEP + PACK).contains(&t.head.len()));
    }

    #[test]
    fn reads_return_the_range_asked_whether_packed_or_not() {
        let input: Vec<Sample> = (0..100).map(|i| at(i * 60_000, i as f64)).collect();
        let mut s = Samples::default();
        for x in &input {
            s.push_back(*x, shape(50));
        }
        for (from, to) in [
            (0, 99),
            (0, 0),
            (40, 60),
            (90, 99),
            (95, 200),
            (-5, 3),
            (99, 99),
        ] {
            let mut got = Vec::new();
            s.read(
                Timestamp::from_millis(from * 60_000),
                Timestamp::from_millis(to * 60_000),
                &mut got,
            );
            let want: Vec<Sample> = input
                .iter()
                .filter(|x| x.t.millis() >= from * 60_000 && x.t.millis() <= to * 60_000)
                .copied()
                .collect();
            assert!(same(&got, &want), "{from}..={to}");
        }
    }

    #[test]
    fn a_noisy_series_takes_about_half_its_raw_size_and_a_counter_a_quarter() {
        let mut s = Samples::default();
        for i in 0..4_320i64 {
            let v = 80.0 + 20.0 * (i as f64 / 229.0).sin() + 2.0 * gauss(i as u64);
            s.push_back(at(1_700_000_000_000 + i * 60_000, v), shape(4_320));
        }
        // Noise fills the low bytes of every value: about seven bytes a sample, and room to
        // grow into.
        let raw = 4_320 * size_of::<Sample>();
        assert!(
            s.heap_bytes() * 100 < raw * 60,
            "{} of {raw}",
            s.heap_bytes()
        );
        // A counter of whole numbers: a header and two or three bytes.
        let mut c = Samples::default();
        for i in 0..4_320i64 {
            c.push_back(
                at(1_700_000_000_000 + i * 15_000, (i * 37) as f64),
                shape(4_320),
            );
        }
        assert!(c.heap_bytes() * 4 < raw, "{} of {raw}", c.heap_bytes());
    }
}
