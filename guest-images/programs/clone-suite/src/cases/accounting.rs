//! Pinned-memory accounting: the pool counts once, whatever the clones.

use super::basic::src_ring;
use crate::ensure;
use crate::harness::{step, CaseResult};
use crate::mem::{vmpin_kb, wait_vmpin};
use crate::ring::{pool_a, Ring, BUF, NBUF, POOL};
use std::time::Duration;

const POOL_KB: u64 = (POOL >> 10) as u64;

pub fn vmpin_counts_pool_once() -> CaseResult {
    let base = super::settle_vmpin();
    let src = src_ring()?;
    let reg = vmpin_kb();
    ensure!(
        reg == base + POOL_KB,
        "VmPin {base} -> {reg} kB on register, want +{POOL_KB}"
    );
    let mut clones = Vec::new();
    for i in 0..3 {
        let r = Ring::new()?;
        step(&format!("clone {i}"), r.clone_all(&src))?;
        clones.push(r);
        let now = vmpin_kb();
        ensure!(
            now == reg,
            "VmPin {reg} -> {now} kB after clone {i}: pages pinned again"
        );
    }
    // Control: registering the same memory again does pin it again.
    let again = Ring::new()?;
    step(
        "register again",
        again.register(&pool_a().iovecs(NBUF, BUF)),
    )?;
    let now = vmpin_kb();
    ensure!(
        now == reg + POOL_KB,
        "VmPin {reg} -> {now} kB on a second registration, want +{POOL_KB} (control)"
    );
    Ok(())
}

pub fn vmpin_returns_after_close() -> CaseResult {
    let base = super::settle_vmpin();
    let src = src_ring()?;
    let mut clones = Vec::new();
    for i in 0..4 {
        let r = Ring::new()?;
        step(&format!("clone {i}"), r.clone_all(&src))?;
        clones.push(r);
    }
    // Close the source first: the clones keep the pages pinned, once.
    drop(src);
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..3 {
        drop(clones.remove(0));
        std::thread::sleep(Duration::from_millis(20));
        let now = vmpin_kb();
        ensure!(
            now == base + POOL_KB,
            "VmPin {now} kB after closing the source and {} clone(s), want {}",
            i + 1,
            base + POOL_KB
        );
    }
    drop(clones);
    let end = wait_vmpin(base, Duration::from_secs(5));
    ensure!(
        end == base,
        "VmPin {end} kB 5 s after every ring closed, want {base}"
    );
    Ok(())
}
