//! clone-suite: the semantics and errors of `IORING_REGISTER_CLONE_BUFFERS`
//! (io_uring register opcode 30), one named case each.
//!
//! Output: `clone-suite: N cases: name name ...` (the cases selected, in
//! run order, so that a caller can tell a case that never ran from one that
//! was never selected), one line per case, `PASS name`, `FAIL name: detail`
//! or `SKIP name: why`, then `N passed, N failed[, N skipped]`; the exit status
//! is 0 iff nothing failed. `--list` prints the case names; other arguments
//! select the cases whose names contain any of them; `-v` times each case on
//! stderr. Run as root (a few cases fork a child that drops to uid 54321).
//! Buffers are small (two 256 KiB pools of 4 x 64 KiB, 4 MiB of hugetlb)
//! because the guest kernel runs emulated.
//!
//! Cases:
//! - `clone-all-to-empty`: whole table into an empty ring (the crate's API);
//!   every index maps the same memory, checked by fixed I/O both ways.
//! - `fixed-io-through-clone`: a 48 KiB unaligned READ_FIXED/WRITE_FIXED
//!   through a clone; past the buffer's end gives -EFAULT.
//! - `pages-4k`: 4 KiB-page buffers, I/O straddling page boundaries.
//! - `hugetlb-2m`: a 4 MiB buffer of two 2 MiB hugetlb pages (SKIP without
//!   2 free hugepages), I/O across the page boundary;
//!   VmPin +4 MiB once, not again on clone.
//! - `ebusy-dst-has-buffers`: destination not empty, no REPLACE.
//! - `enxio-src-empty`: source never registered / unregistered.
//! - `einval-unknown-flags`: flags beyond SRC_REGISTERED | DST_REPLACE.
//! - `einval-nonzero-pad`: each pad word.
//! - `einval-nr-args`: nr_args 0, 2, 32, and a NULL arg.
//! - `einval-offsets-without-nr`: src_off or dst_off with nr == 0.
//! - `einval-nr-exceeds-src`: nr larger than the source table.
//! - `einval-dst-beyond-max`: dst_off + nr past IORING_MAX_REG_BUFFERS.
//! - `einval-different-mm`: a forked child clones from the parent's ring.
//! - `einval-different-user`: a ring of another user (setuid child).
//! - `eoverflow-src-wrap`: src_off + nr wraps u32.
//! - `eoverflow-dst-wrap`: dst_off + nr wraps u32.
//! - `eoverflow-src-range`: src_off + nr beyond the source table.
//! - `efault-bad-pointer`: arg 8, an unmapped page, a kernel address.
//! - `ebadf-bad-fd`: src fd -1 or closed; dst fd i32::MAX or closed.
//! - `eopnotsupp-not-a-ring`: src /dev/null or a pipe; dst /dev/null.
//! - `eexist-single-issuer-other-task`: SINGLE_ISSUER source owned by
//!   another thread (created there; or R_DISABLED and enabled there), with
//!   the ownerless R_DISABLED state as control.
//! - `src-registered-index`: IORING_REGISTER_SRC_REGISTERED with a ring
//!   index from IORING_REGISTER_RING_FDS; stale index -EBADF, 16 -EINVAL.
//! - `clone-into-self`: REPLACE 0..2 -> 4..6 and an overlapping 1..4 -> 0..3.
//! - `replace-keeps-outside-range`: REPLACE keeps entries before and after
//!   the range, and grows the table.
//! - `partial-range-maps`: src_off/dst_off/nr map exactly the right buffers;
//!   the holes are empty.
//! - `after-src-unregister`: the clone works after the source unregistered.
//! - `after-src-close`: the clone works after the source ring closed.
//! - `sqpoll-dst`: an SQPOLL destination does fixed I/O through a clone.
//! - `vmpin-counts-pool-once`: VmPin grows by the pool on register, not on
//!   clones; a second registration does pin again (control).
//! - `vmpin-returns-after-close`: pinned while any clone lives, back to the
//!   start once all rings closed (teardown is asynchronous: polled).
//! - `memlock-user-charged-once`: unprivileged, RLIMIT_MEMLOCK: clones charge
//!   nothing, a second registration gets -ENOMEM, the charge comes back.
//! - `pool-of-64-rings`: 64 rings cloned from one, each does fixed I/O,
//!   VmPin counts the pool once and returns after close.
//! - `concurrent-opposite-clones`: two threads clone A->B and B->A and
//!   unregister for 2 s / 2000 iterations: only -EBUSY/-ENXIO, no deadlock.

mod cases;
mod harness;
mod mem;
mod ring;

/// Raw `io_uring_register(2)` and errno values (guest-common's).
mod sys {
    pub use guest_common::uring::*;
    pub use guest_common::Errno;
}

use guest_common::{ensure, fail};

use std::process::ExitCode;

pub fn main() -> ExitCode {
    let mut filters = Vec::new();
    let mut verbose = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--list" => {
                for c in cases::CASES {
                    println!("{}", c.name);
                }
                return ExitCode::SUCCESS;
            }
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => {
                println!("usage: clone-suite [--list] [-v] [CASE-SUBSTRING...]");
                return ExitCode::SUCCESS;
            }
            _ if a.starts_with('-') => {
                eprintln!("clone-suite: unknown option {a}");
                return ExitCode::from(2);
            }
            _ => filters.push(a),
        }
    }
    if !cases::CASES
        .iter()
        .any(|c| harness::selected(c.name, &filters))
    {
        eprintln!("clone-suite: no case matches {filters:?} (see --list)");
        return ExitCode::from(2);
    }
    println!("{}", harness::plan_line(cases::CASES, &filters));
    let tally = harness::run(cases::CASES, &filters, verbose);
    println!("{}", tally.summary());
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
