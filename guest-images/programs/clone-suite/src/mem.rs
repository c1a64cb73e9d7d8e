//! Buffer memory (guest-common's mappings), data patterns and the
//! process's pinned-memory counter.

use std::time::{Duration, Instant};

pub use guest_common::mem::{free_hugepages_2m, snapshot, Mapping, Page};

/// Deterministic test pattern byte `i` for `seed`.
pub fn pattern_byte(seed: u32, i: usize) -> u8 {
    let x = (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed.wrapping_mul(40_503));
    (x >> 13) as u8 ^ (i >> 12) as u8 ^ seed as u8
}

/// A vector of `len` pattern bytes.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(seed, i)).collect()
}

/// Fills `len` bytes at `addr` with `pattern(seed)`.
///
/// # Safety
/// `addr..addr+len` must be writable memory owned by the caller.
pub unsafe fn fill(addr: *mut u8, len: usize, seed: u32) {
    for i in 0..len {
        // SAFETY: inside addr..addr+len, writable as the caller guarantees.
        unsafe { addr.add(i).write_volatile(pattern_byte(seed, i)) };
    }
}

/// First index where `got` differs from `want`, for messages.
pub fn first_diff(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(a, b)| a != b).or({
        if got.len() != want.len() {
            Some(got.len().min(want.len()))
        } else {
            None
        }
    })
}

/// Parses the `VmPin:` line (kB) of a /proc/PID/status text.
pub fn parse_vmpin_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// This process's pinned memory (`mm->pinned_vm`) in kB.
pub fn vmpin_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_vmpin_kb(&s).unwrap_or(0)
}

/// Polls VmPin until it equals `want` (ring teardown is asynchronous).
/// Returns the last value seen.
pub fn wait_vmpin(want: u64, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let v = vmpin_kb();
        if v == want || start.elapsed() > timeout {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmpin_parse() {
        let s = "Name:\tx\nVmLck:\t       0 kB\nVmPin:\t    1024 kB\nVmHWM:\t 1 kB\n";
        assert_eq!(parse_vmpin_kb(s), Some(1024));
        assert_eq!(parse_vmpin_kb("Name:\tx\n"), None);
    }

    #[test]
    fn patterns_differ_by_seed() {
        assert_ne!(pattern(1, 64), pattern(2, 64));
        assert_eq!(pattern(3, 64), pattern(3, 64));
        assert_eq!(first_diff(&[1, 2, 3], &[1, 2, 4]), Some(2));
        assert_eq!(first_diff(&[1, 2], &[1, 2]), None);
        assert_eq!(first_diff(&[1, 2], &[1, 2, 3]), Some(2));
    }
}
