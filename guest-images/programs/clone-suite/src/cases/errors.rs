//! Every error opcode 30 returns, one condition at a time.

use super::basic::src_ring;
use crate::harness::{expect_errno, step, CaseError, CaseResult};
use crate::ring::{pool_b, Ring, BUF, NBUF};
use crate::sys::{self, CloneBuffers, REGISTER_CLONE_BUFFERS};
use io_uring::types::CloneBuffersFlags as Flags;
use std::os::fd::AsRawFd;

/// Raw opcode 30 with arbitrary pointer and nr_args.
fn raw_clone(dst: i32, arg: *const libc::c_void, nr_args: u32) -> Result<(), sys::Errno> {
    // SAFETY: the kernel validates `arg` (copy_from_user) and never faults
    // the caller; a valid pointer is only read.
    unsafe { sys::register(dst, REGISTER_CLONE_BUFFERS, arg, nr_args) }.map(drop)
}

pub fn ebusy_dst_has_buffers() -> CaseResult {
    let src = src_ring()?;
    let dst = Ring::new()?;
    step("register dst", dst.register(&pool_b().iovecs(NBUF, BUF)))?;
    expect_errno("clone into non-empty dst", dst.clone_all(&src), libc::EBUSY)?;
    expect_errno(
        "range clone into non-empty dst",
        dst.clone_range(src.fd(), 0, 0, 1, Flags::empty()),
        libc::EBUSY,
    )?;
    step(
        "same with DST_REPLACE",
        dst.clone_range(src.fd(), 0, 0, 0, Flags::DST_REPLACE),
    )
}

pub fn enxio_src_empty() -> CaseResult {
    let src = Ring::new()?;
    let dst = Ring::new()?;
    expect_errno(
        "clone from a ring that never registered",
        dst.clone_all(&src),
        libc::ENXIO,
    )?;
    let src2 = src_ring()?;
    step("unregister src", src2.unregister())?;
    expect_errno(
        "clone from a ring that unregistered",
        dst.clone_all(&src2),
        libc::ENXIO,
    )
}

pub fn einval_unknown_flags() -> CaseResult {
    let src = src_ring()?;
    let dst = Ring::new()?;
    for flags in [1u32 << 2, 1 << 3, 1 << 31] {
        expect_errno(
            &format!("flags {flags:#x}"),
            dst.clone_range(src.fd(), 0, 0, 0, Flags::from_bits_retain(flags)),
            libc::EINVAL,
        )?;
    }
    Ok(())
}

pub fn einval_nonzero_pad() -> CaseResult {
    let src = src_ring()?;
    let dst = Ring::new()?;
    for i in 0..3 {
        let mut a = CloneBuffers::all(src.fd());
        a.pad[i] = 1;
        // The crate's call zeroes the padding: a raw one.
        let r = raw_clone(dst.fd(), (&a as *const CloneBuffers).cast(), 1);
        expect_errno(&format!("pad[{i}] = 1"), r, libc::EINVAL)?;
    }
    Ok(())
}

pub fn einval_nr_args() -> CaseResult {
    let src = src_ring()?;
    let dst = Ring::new()?;
    let a = CloneBuffers::all(src.fd());
    let p = (&a as *const CloneBuffers).cast();
    for nr in [0u32, 2, 32] {
        expect_errno(
            &format!("nr_args {nr}"),
            raw_clone(dst.fd(), p, nr),
            libc::EINVAL,
        )?;
    }
    expect_errno(
        "NULL arg",
        raw_clone(dst.fd(), std::ptr::null(), 1),
        libc::EINVAL,
    )?;
    step("nr_args 1 (control)", raw_clone(dst.fd(), p, 1))
}

/// Range clones from a ring holding pool A into one empty ring, each
/// `(what, src_off, dst_off, nr)` expected to fail with `want`; gives the
/// two rings back.
fn ranges_fail(want: i32, tries: &[(&str, u32, u32, u32)]) -> Result<(Ring, Ring), CaseError> {
    let src = src_ring()?;
    let dst = Ring::new()?;
    for &(what, src_off, dst_off, nr) in tries {
        let r = dst.clone_range(src.fd(), src_off, dst_off, nr, Flags::empty());
        expect_errno(what, r, want)?;
    }
    Ok((src, dst))
}

pub fn einval_offsets_without_nr() -> CaseResult {
    let tries = [("src_off 1, nr 0", 1, 0, 0), ("dst_off 1, nr 0", 0, 1, 0)];
    ranges_fail(libc::EINVAL, &tries).map(drop)
}

pub fn einval_nr_exceeds_src() -> CaseResult {
    let tries = [("nr 5 from a 4-entry table", 0, 0, NBUF as u32 + 1)];
    ranges_fail(libc::EINVAL, &tries).map(drop)
}

pub fn einval_dst_beyond_max() -> CaseResult {
    // IORING_MAX_REG_BUFFERS is 16384: the destination table cannot reach it.
    ranges_fail(libc::EINVAL, &[("dst_off 16384, nr 1", 0, 16384, 1)]).map(drop)
}

pub fn eoverflow_src_wrap() -> CaseResult {
    let tries = [
        ("src_off u32::MAX, nr 1", u32::MAX, 0, 1),
        ("src_off u32::MAX-1, nr 4", u32::MAX - 1, 0, 4),
    ];
    ranges_fail(libc::EOVERFLOW, &tries).map(drop)
}

pub fn eoverflow_dst_wrap() -> CaseResult {
    let tries = [
        ("dst_off u32::MAX, nr 1", 0, u32::MAX, 1),
        ("dst_off u32::MAX-2, nr 4", 0, u32::MAX - 2, 4),
    ];
    ranges_fail(libc::EOVERFLOW, &tries).map(drop)
}

pub fn eoverflow_src_range() -> CaseResult {
    let tries = [
        ("src_off 2 + nr 4 > 4 entries", 2, 0, 4),
        ("src_off 4 + nr 1 > 4 entries", 4, 0, 1),
    ];
    let (src, dst) = ranges_fail(libc::EOVERFLOW, &tries)?;
    step(
        "src_off 3 + nr 1 (control)",
        dst.clone_range(src.fd(), 3, 0, 1, Flags::empty()),
    )
}

pub fn efault_bad_pointer() -> CaseResult {
    let dst = Ring::new()?;
    expect_errno(
        "arg = 8",
        raw_clone(dst.fd(), 8 as *const _, 1),
        libc::EFAULT,
    )?;
    // An address that was mapped and is not any more.
    // SAFETY: a fresh anonymous page, unmapped again at once; only its
    // (now invalid) address is used.
    let gone = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::munmap(p, 4096);
        p
    };
    expect_errno("unmapped page", raw_clone(dst.fd(), gone, 1), libc::EFAULT)?;
    expect_errno(
        "kernel address",
        raw_clone(dst.fd(), 0xffff_8880_0000_0000u64 as *const _, 1),
        libc::EFAULT,
    )
}

pub fn ebadf_bad_fd() -> CaseResult {
    let src = src_ring()?;
    let dst = Ring::new()?;
    expect_errno("src_fd -1", dst.clone_all_fd(-1), libc::EBADF)?;
    let closed = step("open /dev/null", std::fs::File::open("/dev/null"))?.as_raw_fd();
    // The File was dropped at the end of the statement: `closed` is a free
    // number, and nothing below opens a descriptor.
    expect_errno("closed src_fd", dst.clone_all_fd(closed), libc::EBADF)?;
    // Not -1: on kernels >= 6.13 fd -1 selects the "blind" register path
    // (no ring), which refuses opcode 30 with -EINVAL before any fd lookup.
    expect_errno(
        "dst fd i32::MAX",
        sys::clone_buffers(i32::MAX, &CloneBuffers::all(src.fd())),
        libc::EBADF,
    )?;
    expect_errno(
        "closed dst fd",
        sys::clone_buffers(closed, &CloneBuffers::all(src.fd())),
        libc::EBADF,
    )
}

pub fn eopnotsupp_not_a_ring() -> CaseResult {
    let dst = Ring::new()?;
    let null = step("open /dev/null", std::fs::File::open("/dev/null"))?;
    expect_errno(
        "src /dev/null",
        dst.clone_all_fd(null.as_raw_fd()),
        libc::EOPNOTSUPP,
    )?;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() returns.
    let piped = unsafe { libc::pipe(fds.as_mut_ptr()) };
    step(
        "pipe",
        if piped == 0 {
            Ok(())
        } else {
            Err(sys::Errno::last())
        },
    )?;
    let r = dst.clone_all_fd(fds[0]);
    // SAFETY: closing the two descriptors pipe() just gave us.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    expect_errno("src pipe", r, libc::EOPNOTSUPP)?;
    let src = src_ring()?;
    expect_errno(
        "dst /dev/null",
        sys::clone_buffers(null.as_raw_fd(), &CloneBuffers::all(src.fd())),
        libc::EOPNOTSUPP,
    )
}
