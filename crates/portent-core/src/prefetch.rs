//! Cache prefetch hints, the one place in portent that needs `unsafe`.
//!
//! At 100,000 series and more, the state a score tick reads for each series (its detector,
//! about 1.1 KB over 18 cache lines, its label set, its newest samples) is a cache miss away,
//! and `perf` showed the daemon stalled on those misses one after another. Reading the next
//! series' state ahead of time overlaps them, but only so far: a load that misses holds up
//! the instructions after it from retiring, and a locked instruction (every `Arc` clone of
//! a verdict's labels) waits for every load before it. A prefetch instruction is a hint
//! that does neither. `std::hint::prefetch_read` is not stable yet; the crates that wrap the
//! instruction are small and little used, so the few lines are written here.

/// Bytes in a cache line on the machines portent runs on (x86_64, aarch64).
const LINE: usize = 64;

/// Asks the CPU to bring every cache line of `value` (its `size_of_val` bytes, not what it
/// points to) toward the L1 cache. A hint: it changes nothing the program can observe, and
/// does nothing on other architectures.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    let start = std::ptr::from_ref(value).cast::<u8>();
    let len = std::mem::size_of_val(value);
    let mut at = 0;
    while at < len {
        line(start.wrapping_add(at));
        at += LINE;
    }
    // The last line, when `value` does not start on a line boundary.
    if len > 0 {
        line(start.wrapping_add(len - 1));
    }
}

/// Asks for the cache line that holds the byte at `p`, and the one before it: an `Arc`'s
/// reference counts sit just before the data its pointer gives.
#[inline(always)]
pub fn prefetch_around(p: *const u8) {
    line(p.wrapping_sub(2 * size_of::<usize>()));
    line(p);
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs the `sse` target feature, which is part of the x86_64
    // baseline (every x86_64 target enables it). PREFETCHT0 is a hint: it does not fault on
    // any address, reads nothing into a register and writes nothing, so no pointer, valid or
    // not, makes it undefined behaviour.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_changes_nothing_the_program_sees() {
        let v: Vec<u64> = (0..1000).collect();
        prefetch(&v[..]);
        prefetch(&v[999]);
        prefetch(&[0u8; 0][..]);
        prefetch_around(v.as_ptr().cast());
        // A dangling address is fine too: nothing is read.
        prefetch_around(std::ptr::null());
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
