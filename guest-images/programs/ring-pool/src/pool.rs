//! The buffer pool: one anonymous mapping of 2 MiB hugetlb or 4 KiB pages,
//! faulted in page by page with progress on stderr (minutes in the guest).

use crate::params::PageSize;
use crate::sys::now_ns;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("mmap of {bytes} bytes ({page} pages) failed: {source}")]
    Mmap {
        bytes: u64,
        page: &'static str,
        source: std::io::Error,
    },
}

pub struct Pool {
    ptr: *mut u8,
    len: u64,
    pub page: PageSize,
}

/// `MAP_HUGE_2MB`.
const MAP_HUGE_2MB: libc::c_int = 21 << 26;

/// Free 2 MiB hugetlb pages (sysfs, then /proc/meminfo).
pub fn free_hugepages_2m() -> u64 {
    if let Ok(v) =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
    {
        return v.trim().parse().unwrap_or(0);
    }
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0)
}

impl Pool {
    /// Maps `len` bytes (rounded up to the page) of `page` pages.
    pub fn map(len: u64, page: PageSize) -> Result<Self, PoolError> {
        let len = len.div_ceil(page.bytes()) * page.bytes();
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if page == PageSize::Huge2M {
            // hugetlb reserves at mmap time: a short pool fails here, not
            // with SIGBUS while populating.
            flags |= libc::MAP_HUGETLB | MAP_HUGE_2MB;
        }
        // SAFETY: a new anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(PoolError::Mmap {
                bytes: len,
                page: page.label(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Pool {
            ptr: p.cast(),
            len,
            page,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Faults every page in (writing one byte each), reporting progress on
    /// stderr about every `every_s` seconds. Returns the seconds it took.
    pub fn populate(&self, every_s: f64) -> f64 {
        let step = self.page.bytes();
        let start = now_ns();
        let mut last = start;
        let mut off = 0u64;
        while off < self.len {
            // SAFETY: `off < len`: inside the mapping.
            unsafe { self.ptr.add(off as usize).write_volatile(1) };
            off += step;
            if (off / step).is_multiple_of(64) {
                let now = now_ns();
                if (now - last) as f64 / 1e9 >= every_s {
                    last = now;
                    let el = (now - start) as f64 / 1e9;
                    let left = el * (self.len - off) as f64 / off as f64;
                    eprintln!(
                        "ring-pool: populating {:.0}% ({} of {} MiB), {el:.1} s elapsed, ~{left:.0} s left",
                        off as f64 * 100.0 / self.len as f64,
                        off >> 20,
                        self.len >> 20
                    );
                }
            }
        }
        (now_ns() - start) as f64 / 1e9
    }

    /// iovecs for `(offset, len)` pieces of the pool.
    pub fn iovecs(&self, pieces: &[(u64, u64)]) -> Vec<libc::iovec> {
        pieces
            .iter()
            .map(|&(off, len)| {
                assert!(off + len <= self.len);
                libc::iovec {
                    // SAFETY: in bounds, checked above.
                    iov_base: unsafe { self.ptr.add(off as usize) }.cast(),
                    iov_len: len as usize,
                }
            })
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; the kernel holds its
        // own references to any pages still registered.
        unsafe { libc::munmap(self.ptr.cast(), self.len as usize) };
    }
}
