//! The buffer pool: one anonymous mapping (guest-common's) of 2 MiB hugetlb
//! or 4 KiB pages,
//! faulted in page by page with progress on stderr (minutes in the guest).

use crate::params::PageSize;
use crate::sys::now_ns;
use guest_common::mem::{Mapping, Page};
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
    map: Mapping,
    pub page: PageSize,
}

pub use guest_common::mem::free_hugepages_2m;

impl Pool {
    /// Maps `len` bytes (rounded up to the page) of `page` pages, not yet
    /// touched (hugetlb reserves at mmap time: a short pool fails here, not
    /// with SIGBUS while populating).
    pub fn map(len: u64, page: PageSize) -> Result<Self, PoolError> {
        let kind = match page {
            PageSize::Huge2M => Page::Huge2M,
            PageSize::Small4K => Page::Small4K,
        };
        let map = Mapping::reserve(len as usize, kind).map_err(|source| PoolError::Mmap {
            bytes: len.div_ceil(page.bytes()) * page.bytes(),
            page: page.label(),
            source,
        })?;
        Ok(Pool { map, page })
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Faults every page in (writing one byte each), reporting progress on
    /// stderr about every `every_s` seconds. Returns the seconds it took.
    pub fn populate(&self, every_s: f64) -> f64 {
        let step = self.page.bytes();
        let start = now_ns();
        let mut last = start;
        let mut off = 0u64;
        let len = self.len();
        while off < len {
            // SAFETY: `off < len`: inside the mapping.
            unsafe { self.map.at(off as usize).write_volatile(1) };
            off += step;
            if (off / step).is_multiple_of(64) {
                let now = now_ns();
                if (now - last) as f64 / 1e9 >= every_s {
                    last = now;
                    let el = (now - start) as f64 / 1e9;
                    let left = el * (len - off) as f64 / off as f64;
                    eprintln!(
                        "ring-pool: populating {:.0}% ({} of {} MiB), {el:.1} s elapsed, ~{left:.0} s left",
                        off as f64 * 100.0 / len as f64,
                        off >> 20,
                        len >> 20
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
                assert!(off + len <= self.len());
                libc::iovec {
                    iov_base: self.map.at(off as usize).cast(),
                    iov_len: len as usize,
                }
            })
            .collect()
    }
}
