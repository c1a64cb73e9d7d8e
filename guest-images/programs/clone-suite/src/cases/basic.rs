//! Cloning whole tables and doing fixed I/O through the clones.

use crate::ensure;
use crate::harness::{step, CaseError, CaseResult};
use crate::mem::{free_hugepages_2m, vmpin_kb, Mapping, Page};
use crate::ring::{buf, pool_a, Ring, Scratch, BUF, NBUF};
use io_uring::types::CloneBuffersFlags as Flags;

/// A source ring with the whole of pool A registered as NBUF buffers.
pub fn src_ring() -> Result<Ring, CaseError> {
    let src = Ring::new()?;
    step(
        "register src buffers",
        src.register(&pool_a().iovecs(NBUF, BUF)),
    )?;
    Ok(src)
}

/// Checks that every index of `ring` maps the same buffer of pool A.
pub fn check_all_pool_a(ring: &mut Ring, file: &Scratch, seed: u32) -> CaseResult {
    for i in 0..NBUF {
        ring.check_buffer(file, i as u16, buf(pool_a(), i), BUF, seed + i as u32)?;
    }
    Ok(())
}

pub fn clone_all_to_empty() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    // The crate's own wrapper for opcode 30 (whole table, no flags).
    step(
        "register_buffers_clone",
        dst.io.submitter().register_buffers_clone(src.fd()),
    )?;
    check_all_pool_a(&mut dst, &file, 10)?;
    // The source still maps them too.
    let mut src = src;
    check_all_pool_a(&mut src, &file, 20)
}

pub fn fixed_io_through_clone() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    step("clone", dst.clone_all(&src))?;
    // A large, unaligned transfer inside buffer 2, spanning many pages.
    // SAFETY: 1000 + 48 KiB < BUF, inside buffer 2 of pool A.
    let addr = unsafe { buf(pool_a(), 2).add(1000) };
    dst.check_maps(&file, 2, addr, 48 << 10, 30)?;
    // A transfer that runs past the end of the buffer must be refused.
    // SAFETY: still inside pool A (buffer 3 follows buffer 2).
    let late = unsafe { buf(pool_a(), 2).add(BUF - 2048) };
    let r = dst.fixed(false, &file, 2, late, 4096, 0)?;
    ensure!(
        r == -libc::EFAULT,
        "READ_FIXED past the end of buffer 2: want -EFAULT, got {r}"
    );
    Ok(())
}

pub fn pages_4k() -> CaseResult {
    let file = Scratch::new()?;
    let m = step("mmap 4K pool", Mapping::with_page(64 << 10, Page::Small4K))?;
    let src = Ring::new()?;
    step("register", src.register(&m.iovecs(2, 32 << 10)))?;
    let mut dst = Ring::new()?;
    step("clone", dst.clone_all(&src))?;
    // Straddle a 4 KiB page boundary in each buffer.
    dst.check_maps(&file, 0, m.at(4096 - 100), 4096, 40)?;
    dst.check_maps(&file, 1, m.at((32 << 10) + 8192 - 7), 4096, 41)
}

pub fn hugetlb_2m() -> CaseResult {
    const HUGE: usize = 2 << 20;
    let free = free_hugepages_2m();
    if free < 2 {
        return Err(CaseError::Skip(format!(
            "needs 2 free 2 MiB hugetlb pages, HugePages_Free is {free} (boot with hugepages=N)"
        )));
    }
    let m = match Mapping::with_page(2 * HUGE, Page::Huge2M) {
        Ok(m) => m,
        Err(e) => return Err(CaseError::Skip(format!("MAP_HUGETLB 4 MiB failed: {e}"))),
    };
    let file = Scratch::new()?;
    let before = crate::cases::settle_vmpin();
    let src = Ring::new()?;
    // One buffer over both huge pages. (Within one IORING_REGISTER_BUFFERS
    // call the kernel charges a huge page again for each further buffer
    // that touches it, so overlapping buffers would blur the VmPin check.)
    let whole = [libc::iovec {
        iov_base: m.at(0).cast(),
        iov_len: 2 * HUGE,
    }];
    step("register hugetlb buffer", src.register(&whole))?;
    let after_reg = vmpin_kb();
    ensure!(
        after_reg - before == 4096,
        "VmPin grew by {} kB on registering 2 huge pages, want 4096",
        after_reg - before
    );
    let mut dst = Ring::new()?;
    step("clone", dst.clone_all(&src))?;
    let after_clone = vmpin_kb();
    ensure!(
        after_clone == after_reg,
        "clone changed VmPin: {after_reg} -> {after_clone} kB"
    );
    // Clone the huge buffer again into index 1 of the destination.
    step(
        "clone src 0 -> dst 1 (REPLACE)",
        dst.clone_range(src.fd(), 0, 1, 1, Flags::DST_REPLACE),
    )?;
    ensure!(vmpin_kb() == after_reg, "second clone changed VmPin");
    let boundary = m.at(HUGE - 2048);
    dst.check_maps(&file, 0, boundary, 4096, 50)?;
    dst.check_maps(&file, 1, boundary, 4096, 51)?;
    dst.check_maps(&file, 0, m.at(2 * HUGE - 4096), 4096, 52)?;
    dst.check_maps(&file, 1, m.at(0), 64 << 10, 53)?;
    drop(src);
    dst.check_maps(&file, 1, m.at(HUGE + 4096), 4096, 54)?;
    drop(dst);
    let end = crate::mem::wait_vmpin(before, std::time::Duration::from_secs(5));
    ensure!(end == before, "VmPin {end} kB after closing, want {before}");
    Ok(())
}
