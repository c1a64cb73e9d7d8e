//! The case registry, in run order.

mod accounting;
mod basic;
mod concurrency;
mod errors;
mod lifetime;
mod process;
mod ranges;

use crate::harness::Case;
use crate::mem::vmpin_kb;
use std::time::{Duration, Instant};

macro_rules! cases {
    ($($name:literal => $f:path,)*) => {
        pub const CASES: &[Case] = &[$(Case { name: $name, run: $f },)*];
    };
}

cases! {
    "clone-all-to-empty" => basic::clone_all_to_empty,
    "fixed-io-through-clone" => basic::fixed_io_through_clone,
    "pages-4k" => basic::pages_4k,
    "hugetlb-2m" => basic::hugetlb_2m,
    "ebusy-dst-has-buffers" => errors::ebusy_dst_has_buffers,
    "enxio-src-empty" => errors::enxio_src_empty,
    "einval-unknown-flags" => errors::einval_unknown_flags,
    "einval-nonzero-pad" => errors::einval_nonzero_pad,
    "einval-nr-args" => errors::einval_nr_args,
    "einval-offsets-without-nr" => errors::einval_offsets_without_nr,
    "einval-nr-exceeds-src" => errors::einval_nr_exceeds_src,
    "einval-dst-beyond-max" => errors::einval_dst_beyond_max,
    "einval-different-mm" => process::einval_different_mm,
    "einval-different-user" => process::einval_different_user,
    "eoverflow-src-wrap" => errors::eoverflow_src_wrap,
    "eoverflow-dst-wrap" => errors::eoverflow_dst_wrap,
    "eoverflow-src-range" => errors::eoverflow_src_range,
    "efault-bad-pointer" => errors::efault_bad_pointer,
    "ebadf-bad-fd" => errors::ebadf_bad_fd,
    "eopnotsupp-not-a-ring" => errors::eopnotsupp_not_a_ring,
    "eexist-single-issuer-other-task" => process::eexist_single_issuer_other_task,
    "src-registered-index" => ranges::src_registered_index,
    "clone-into-self" => ranges::clone_into_self,
    "replace-keeps-outside-range" => ranges::replace_keeps_outside_range,
    "partial-range-maps" => ranges::partial_range_maps,
    "after-src-unregister" => lifetime::after_src_unregister,
    "after-src-close" => lifetime::after_src_close,
    "sqpoll-dst" => lifetime::sqpoll_dst,
    "vmpin-counts-pool-once" => accounting::vmpin_counts_pool_once,
    "vmpin-returns-after-close" => accounting::vmpin_returns_after_close,
    "memlock-user-charged-once" => process::memlock_user_charged_once,
    "pool-of-64-rings" => concurrency::pool_of_64_rings,
    "concurrent-opposite-clones" => concurrency::concurrent_opposite_clones,
}

/// Waits for rings closed by earlier cases to finish their (asynchronous)
/// teardown: VmPin at 0, or unchanged for 1.5 s (6.1 releases buffers
/// dropped by an update or a REPLACE after a 1 s delay, so a shorter
/// window can take a baseline that is still falling); returns the baseline.
pub fn settle_vmpin() -> u64 {
    let start = Instant::now();
    let mut last = vmpin_kb();
    let mut stable_since = Instant::now();
    while last != 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        let v = vmpin_kb();
        if v != last {
            last = v;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::CASES;

    #[test]
    fn names_unique_and_listed_in_header() {
        let header = include_str!("../lib.rs");
        let mut seen = std::collections::HashSet::new();
        for c in CASES {
            assert!(seen.insert(c.name), "duplicate case {}", c.name);
            assert!(
                header.contains(&format!("//! - `{}`", c.name)),
                "{} missing from lib.rs header",
                c.name
            );
        }
    }
}
