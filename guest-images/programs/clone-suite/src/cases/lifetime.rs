//! Clones outliving their source; an SQPOLL destination.

use super::basic::{check_all_pool_a, src_ring};
use crate::ensure;
use crate::harness::{step, CaseResult};
use crate::mem::{vmpin_kb, wait_vmpin};
use crate::ring::{Ring, Scratch, POOL};
use std::time::Duration;

pub fn after_src_unregister() -> CaseResult {
    let file = Scratch::new()?;
    let base = crate::cases::settle_vmpin();
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    step("clone", dst.clone_all(&src))?;
    step("unregister src", src.unregister())?;
    check_all_pool_a(&mut dst, &file, 100)?;
    let pin = vmpin_kb();
    ensure!(
        pin == base + (POOL >> 10) as u64,
        "VmPin {pin} kB with the clone alive, want {} (pages stay pinned once)",
        base + (POOL >> 10) as u64
    );
    // The source can register again: that is a new pin, not shared.
    step(
        "src re-register",
        src.register(&crate::ring::pool_a().iovecs(crate::ring::NBUF, crate::ring::BUF)),
    )?;
    let pin = vmpin_kb();
    ensure!(
        pin == base + 2 * (POOL >> 10) as u64,
        "VmPin {pin} kB after the source registered again, want {}",
        base + 2 * (POOL >> 10) as u64
    );
    Ok(())
}

pub fn after_src_close() -> CaseResult {
    let file = Scratch::new()?;
    let base = crate::cases::settle_vmpin();
    let src = src_ring()?;
    let mut dst = Ring::new()?;
    step("clone", dst.clone_all(&src))?;
    drop(src);
    // Teardown of the source ring is asynchronous; the buffers must survive it.
    std::thread::sleep(Duration::from_millis(50));
    check_all_pool_a(&mut dst, &file, 110)?;
    let pin = vmpin_kb();
    ensure!(
        pin == base + (POOL >> 10) as u64,
        "VmPin {pin} kB after the source closed, want {}",
        base + (POOL >> 10) as u64
    );
    drop(dst);
    let end = wait_vmpin(base, Duration::from_secs(5));
    ensure!(
        end == base,
        "VmPin {end} kB after the clone closed too, want {base}"
    );
    Ok(())
}

pub fn sqpoll_dst() -> CaseResult {
    let file = Scratch::new()?;
    let src = src_ring()?;
    let mut dst = Ring::with(io_uring::IoUring::builder().setup_sqpoll(20))?;
    step("clone into SQPOLL ring", dst.clone_all(&src))?;
    check_all_pool_a(&mut dst, &file, 120)?;
    drop(src);
    check_all_pool_a(&mut dst, &file, 130)
}
