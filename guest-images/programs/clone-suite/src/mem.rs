//! Buffer memory (anonymous 4 KiB or hugetlb 2 MiB mappings), data patterns
//! and the process's pinned-memory counter.

use std::time::{Duration, Instant};

/// Page size backing a [`Mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Small4K,
    Huge2M,
}

impl Page {
    pub fn bytes(self) -> usize {
        match self {
            Page::Small4K => 4096,
            Page::Huge2M => 2 << 20,
        }
    }
}

/// An anonymous private mapping, populated at creation, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; sharing the base
// pointer between threads is no different from sharing a Vec's.
unsafe impl Send for Mapping {}
// SAFETY: as above; all accesses go through raw pointers or &mut self.
unsafe impl Sync for Mapping {}

/// `MAP_HUGE_2MB` (21 << MAP_HUGE_SHIFT).
const MAP_HUGE_2MB: libc::c_int = 21 << 26;

impl Mapping {
    /// Maps and touches `len` bytes (rounded up to the page size) of `page` pages.
    pub fn new(len: usize, page: Page) -> std::io::Result<Self> {
        let len = len.div_ceil(page.bytes()) * page.bytes();
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if page == Page::Huge2M {
            flags |= libc::MAP_HUGETLB | MAP_HUGE_2MB;
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        if page == Page::Small4K {
            // Really 4 KiB pages even where THP is "always" (best effort).
            // SAFETY: advice on the mapping just created.
            unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        }
        let m = Mapping {
            ptr: ptr.cast(),
            len,
        };
        // Touch every page now: hugetlb faults may fail with SIGBUS when the
        // pool runs dry, better here than inside a case; 4 KiB faults are
        // slow in the guest, so do them once.
        for off in (0..len).step_by(page.bytes()) {
            // SAFETY: `off < len`, inside the mapping created above.
            unsafe { m.ptr.add(off).write_volatile(0) };
        }
        Ok(m)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Address of byte `off`.
    pub fn at(&self, off: usize) -> *mut u8 {
        assert!(
            off <= self.len,
            "offset {off} beyond mapping of {}",
            self.len
        );
        // SAFETY: in bounds (or one past the end) of the mapping, checked above.
        unsafe { self.ptr.add(off) }
    }

    /// `n` iovecs of `each` bytes each, back to back from the start.
    pub fn iovecs(&self, n: usize, each: usize) -> Vec<libc::iovec> {
        assert!(n * each <= self.len);
        (0..n)
            .map(|i| libc::iovec {
                iov_base: self.at(i * each).cast(),
                iov_len: each,
            })
            .collect()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; nothing borrows it
        // any more (the kernel keeps its own page references for registered
        // buffers).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

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

/// Copies `len` bytes from `addr` (memory the kernel may have written).
///
/// # Safety
/// `addr..addr+len` must be readable memory owned by the caller.
pub unsafe fn snapshot(addr: *const u8, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: inside addr..addr+len, readable as the caller guarantees.
        .map(|i| unsafe { addr.add(i).read_volatile() })
        .collect()
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

/// Free 2 MiB hugetlb pages according to /proc/meminfo (0 if unknown).
pub fn free_hugepages_2m() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let size_kb = s
        .lines()
        .find_map(|l| l.strip_prefix("Hugepagesize:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
    if size_kb != Some(2048) {
        // Only the default size is listed in meminfo; fall back to sysfs.
        return std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    }
    s.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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

    #[test]
    fn mapping_iovecs() {
        let m = Mapping::new(10_000, Page::Small4K).unwrap();
        assert_eq!(m.len(), 12_288);
        let iov = m.iovecs(3, 4096);
        assert_eq!(iov[1].iov_base as usize - iov[0].iov_base as usize, 4096);
    }
}
