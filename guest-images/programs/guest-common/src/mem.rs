//! Buffer memory: anonymous private mappings of 4 KiB or 2 MiB hugetlb
//! pages, and volatile fills and copies of memory the kernel or the host
//! may write.

/// Page size backing a [`Mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// 4 KiB pages (no transparent hugepages).
    Small4K,
    /// 2 MiB hugetlb pages.
    Huge2M,
}

impl Page {
    /// The page size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Page::Small4K => 4096,
            Page::Huge2M => 2 << 20,
        }
    }
}

/// An anonymous private mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Whether 2 MiB hugetlb pages back it.
    pub huge: bool,
}

// SAFETY: the mapping is plain memory owned by this value; sharing the base
// pointer between threads is no different from sharing a Vec's.
unsafe impl Send for Mapping {}
// SAFETY: as above; all accesses go through raw pointers.
unsafe impl Sync for Mapping {}

/// `MAP_HUGE_2MB` (21 << MAP_HUGE_SHIFT).
const MAP_HUGE_2MB: libc::c_int = 21 << 26;

impl Mapping {
    /// Maps `len` bytes (rounded up to the page size) of `page` pages without
    /// touching them (hugetlb reserves its pages here: a short pool fails
    /// now, not with SIGBUS later).
    pub fn reserve(len: usize, page: Page) -> std::io::Result<Self> {
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
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            huge: page == Page::Huge2M,
        })
    }

    /// Maps and touches `len` bytes (rounded up to the page size) of `page`
    /// pages; 4 KiB pages are kept off transparent hugepages.
    pub fn with_page(len: usize, page: Page) -> std::io::Result<Self> {
        Self::touched(len, page, false)
    }

    /// [`Mapping::with_page`], its pages touched from the last one down.
    /// The guest kernel's hugetlb free list hands out its pages last-freed
    /// first, so highest guest-physical address first: touching a pool
    /// upwards maps it guest-physically backwards, one pv-uring extent
    /// (host buffer) per 2 MiB page; from the top down it is as
    /// guest-physically contiguous as the free list (usually one extent
    /// per GiB).
    pub fn with_page_top_down(len: usize, page: Page) -> std::io::Result<Self> {
        Self::touched(len, page, true)
    }

    fn touched(len: usize, page: Page, top_down: bool) -> std::io::Result<Self> {
        let m = Self::reserve(len, page)?;
        if page == Page::Small4K {
            // Really 4 KiB pages even where THP is "always" (best effort).
            // SAFETY: advice on the mapping just created.
            unsafe { libc::madvise(m.ptr.cast(), m.len, libc::MADV_NOHUGEPAGE) };
        }
        // Touch every page now: hugetlb faults may fail with SIGBUS when the
        // pool runs dry, better here than in a measurement or a case; 4 KiB
        // faults are slow in the guest, so do them once.
        let pages = m.len / page.bytes();
        for i in 0..pages {
            let n = if top_down { pages - 1 - i } else { i };
            // SAFETY: page n < pages lies inside the mapping created above.
            unsafe { m.ptr.add(n * page.bytes()).write_volatile(0) };
        }
        Ok(m)
    }

    /// Maps and touches `len` bytes of 2 MiB hugetlb pages when the system
    /// has enough free, else of 4 KiB pages (see [`Mapping::huge`]).
    pub fn new(len: usize) -> std::io::Result<Self> {
        Self::with_page(len, Page::Huge2M).or_else(|_| Self::with_page(len, Page::Small4K))
    }

    /// Its length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: mmap refuses a length of zero).
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    /// The first `total` bytes in iovecs of `each` bytes (the last one
    /// the remainder).
    pub fn iovecs_of(&self, total: usize, each: usize) -> Vec<libc::iovec> {
        assert!(total <= self.len && each > 0);
        (0..total)
            .step_by(each)
            .map(|off| libc::iovec {
                iov_base: self.at(off).cast(),
                iov_len: each.min(total - off),
            })
            .collect()
    }

    /// Whether `(addr, len)` lies inside this mapping.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let b = self.ptr as u64;
        addr >= b && addr + len <= b + self.len as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `reserve`; nothing
        // borrows it any more (the kernel keeps its own page references for
        // registered buffers).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Fills `len` bytes at `addr` with `v`.
///
/// # Safety
/// `addr..addr+len` must be writable memory the caller owns and no request
/// in flight targets.
pub unsafe fn memset(addr: *mut u8, v: u8, len: usize) {
    for i in 0..len {
        // SAFETY: inside addr..addr+len, writable as the caller guarantees.
        unsafe { addr.add(i).write_volatile(v) };
    }
}

/// Copies `len` bytes at `addr` (memory the kernel or the host may have
/// written).
///
/// # Safety
/// `addr..addr+len` must be readable.
pub unsafe fn snapshot(addr: *const u8, len: usize) -> Vec<u8> {
    (0..len)
        // SAFETY: inside addr..addr+len, readable as the caller guarantees.
        .map(|i| unsafe { addr.add(i).read_volatile() })
        .collect()
}

/// Free 2 MiB hugetlb pages (0 if unknown): /proc/meminfo when 2 MiB is the
/// default size, else sysfs.
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
    fn mapping_iovecs_and_bounds() {
        let m = Mapping::with_page(10_000, Page::Small4K).unwrap();
        assert_eq!(m.len(), 12_288);
        assert!(!m.huge);
        let iov = m.iovecs(3, 4096);
        assert_eq!(iov[1].iov_base as usize - iov[0].iov_base as usize, 4096);
        let base = m.at(0) as u64;
        assert!(m.contains(base, 12_288));
        assert!(!m.contains(base, 12_289));
        assert!(!m.contains(base - 1, 1));
        let iov = m.iovecs_of(10_000, 4096);
        let lens: Vec<usize> = iov.iter().map(|v| v.iov_len).collect();
        assert_eq!(lens, [4096, 4096, 1808]);
        assert_eq!(iov[2].iov_base as u64, base + 8192);
    }

    #[test]
    fn top_down_touches_every_page() {
        let m = Mapping::with_page_top_down(3 * 4096 + 1, Page::Small4K).unwrap();
        assert_eq!(m.len(), 4 * 4096);
        // SAFETY: inside the mapping, which nothing else uses.
        let got = unsafe { snapshot(m.at(0), m.len()) };
        assert!(got.iter().all(|&b| b == 0));
    }

    #[test]
    fn memset_and_snapshot() {
        let m = Mapping::new(8192).unwrap();
        // SAFETY: inside the mapping, which nothing else uses.
        unsafe { memset(m.at(100), 0xa5, 10) };
        // SAFETY: as above.
        let got = unsafe { snapshot(m.at(99), 12) };
        assert_eq!(got[0], 0);
        assert_eq!(&got[1..11], &[0xa5; 10]);
        assert_eq!(got[11], 0);
    }

    #[test]
    #[should_panic(expected = "beyond mapping")]
    fn at_checks_bounds() {
        let m = Mapping::reserve(4096, Page::Small4K).unwrap();
        let _ = m.at(4097);
    }
}
