//! Partial ranges, REPLACE, cloning into itself, registered source index.

use super::basic::{check_all_pool_a, src_ring};
use crate::harness::{expect_errno, step, CaseResult};
use crate::ring::{buf, pool_a, pool_b, Ring, Scratch, BUF, NBUF};
use crate::sys;
use io_uring::types::CloneBuffersFlags as Flags;

pub fn partial_range_maps() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    // Source entries 1..3 land at destination 2..4; 0 and 1 stay empty.
    step(
        "clone src 1..3 -> dst 2..4",
        dst.clone_range(src.fd(), 1, 2, 2, Flags::empty()),
    )?;
    let a = pool_a();
    dst.check_buffer(&file, 2, buf(a, 1), BUF, 60)?;
    dst.check_buffer(&file, 3, buf(a, 2), BUF, 61)?;
    dst.check_not_maps(&file, 0, buf(a, 0))?;
    dst.check_not_maps(&file, 1, buf(a, 1))?;
    dst.check_not_maps(&file, 2, buf(a, 0))?;
    dst.check_not_maps(&file, 4, buf(a, 3))?;
    // Fill the hole at 0 with source entry 3.
    step(
        "clone src 3 -> dst 0 (REPLACE)",
        dst.clone_range(src.fd(), 3, 0, 1, Flags::DST_REPLACE),
    )?;
    dst.check_buffer(&file, 0, buf(a, 3), BUF, 62)?;
    dst.check_not_maps(&file, 1, buf(a, 1))?;
    dst.check_buffer(&file, 2, buf(a, 1), BUF, 63)?;
    dst.check_buffer(&file, 3, buf(a, 2), BUF, 64)
}

pub fn replace_keeps_outside_range() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    let (a, b) = (pool_a(), pool_b());
    step(
        "register dst's own buffers",
        dst.register(&b.iovecs(NBUF, BUF)),
    )?;
    // dst: [B0, A0, A1, B3]
    step(
        "clone src 0..2 -> dst 1..3 (REPLACE)",
        dst.clone_range(src.fd(), 0, 1, 2, Flags::DST_REPLACE),
    )?;
    dst.check_buffer(&file, 0, buf(b, 0), BUF, 70)?;
    dst.check_buffer(&file, 1, buf(a, 0), BUF, 71)?;
    dst.check_buffer(&file, 2, buf(a, 1), BUF, 72)?;
    dst.check_buffer(&file, 3, buf(b, 3), BUF, 73)?;
    dst.check_not_maps(&file, 1, buf(b, 1))?;
    dst.check_not_maps(&file, 4, buf(b, 0))?;
    // Growing the table: src 2..4 -> dst 3..5 keeps 0..3, replaces 3, adds 4.
    step(
        "clone src 2..4 -> dst 3..5 (REPLACE)",
        dst.clone_range(src.fd(), 2, 3, 2, Flags::DST_REPLACE),
    )?;
    dst.check_buffer(&file, 0, buf(b, 0), BUF, 74)?;
    dst.check_buffer(&file, 2, buf(a, 1), BUF, 75)?;
    dst.check_buffer(&file, 3, buf(a, 2), BUF, 76)?;
    dst.check_buffer(&file, 4, buf(a, 3), BUF, 77)
}

pub fn clone_into_self() -> CaseResult {
    let file = Scratch::new()?;
    let mut ring = src_ring()?;
    let a = pool_a();
    expect_errno(
        "self clone without REPLACE",
        ring.clone_range(ring.fd(), 0, 4, 2, Flags::empty()),
        libc::EBUSY,
    )?;
    step(
        "self clone 0..2 -> 4..6 (REPLACE)",
        ring.clone_range(ring.fd(), 0, 4, 2, Flags::DST_REPLACE),
    )?;
    ring.check_buffer(&file, 4, buf(a, 0), BUF, 80)?;
    ring.check_buffer(&file, 5, buf(a, 1), BUF, 81)?;
    ring.check_not_maps(&file, 4, buf(a, 2))?;
    check_all_pool_a(&mut ring, &file, 82)?;
    ring.check_not_maps(&file, 6, buf(a, 0))?;
    // Overlapping self copy: 1..4 -> 0..3 over itself.
    step(
        "self clone 1..4 -> 0..3 (REPLACE)",
        ring.clone_range(ring.fd(), 1, 0, 3, Flags::DST_REPLACE),
    )?;
    ring.check_buffer(&file, 0, buf(a, 1), BUF, 86)?;
    ring.check_buffer(&file, 2, buf(a, 3), BUF, 87)?;
    ring.check_buffer(&file, 3, buf(a, 3), BUF, 88)?;
    ring.check_buffer(&file, 5, buf(a, 1), BUF, 89)
}

pub fn src_registered_index() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    let idx = step("register src ring fd", sys::register_ring_fd(src.fd()))?;
    let r = dst.clone_range(idx as i32, 0, 0, 0, Flags::SRC_REGISTERED);
    let un = sys::unregister_ring_fd(src.fd(), idx);
    step(&format!("clone from registered index {idx}"), r)?;
    step("unregister ring fd", un)?;
    check_all_pool_a(&mut dst, &file, 90)?;
    // After unregistering, the index is empty.
    let dst2 = Ring::new()?;
    expect_errno(
        "SRC_REGISTERED with an unregistered index",
        dst2.clone_range(idx as i32, 0, 0, 0, Flags::SRC_REGISTERED),
        libc::EBADF,
    )?;
    // IO_RINGFD_REG_MAX is 16.
    expect_errno(
        "SRC_REGISTERED with index 16",
        dst2.clone_range(16, 0, 0, 0, Flags::SRC_REGISTERED),
        libc::EINVAL,
    )
}
