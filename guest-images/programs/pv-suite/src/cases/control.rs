//! Ring creation, registration and their errors; create/destroy cycles.

use crate::ctx::{Ctx, BUF, NBUF};
use crate::harness::{expect_errno, step, CaseResult};
use crate::{ensure, fail};
use pv_uring::uring_abi::wire::slot;
use pv_uring::{CloneSrc, PvRing};
use std::time::Instant;

pub fn create_layout(ctx: &Ctx) -> CaseResult {
    let info = *ctx.dev.info();
    ensure!(info.abi_version == 2, "abi_version {}", info.abi_version);
    ensure!(
        info.sq_slot_size as usize >= slot::SQES + info.max_entries as usize * 64,
        "sq_slot_size {:#x} cannot hold {} SQEs",
        info.sq_slot_size,
        info.max_entries
    );
    ensure!(
        info.nr_backends > ctx.p.backend,
        "backend {} of {} backends",
        ctx.p.backend,
        info.nr_backends
    );
    for entries in [1u32, 3, 8, 32, info.max_entries] {
        let r = step(
            &format!("create {entries} entries"),
            PvRing::new(&ctx.dev, entries, 0),
        )?;
        let want = entries.next_power_of_two();
        ensure!(
            r.sq_entries() == want,
            "{entries} entries: sq_entries {}, want {want}",
            r.sq_entries()
        );
        ensure!(
            r.cq_entries() >= want,
            "cq_entries {} < {want}",
            r.cq_entries()
        );
        ensure!(
            r.sq_space() == want,
            "fresh ring: {} free SQEs",
            r.sq_space()
        );
        ensure!(r.cq_ready() == 0, "fresh ring: {} CQEs", r.cq_ready());
        ensure!(!r.is_polled(), "a ring created without flags is polled");
        ensure!(
            r.id() < info.max_rings,
            "ring id {} >= max_rings {}",
            r.id(),
            info.max_rings
        );
        let c = r.create_info();
        ensure!(
            c.cq_tail < info.cq_slot_size && c.cqes < info.cq_slot_size,
            "CQ offsets tail {:#x} cqes {:#x} outside the {:#x}-byte completion slot",
            c.cq_tail,
            c.cqes,
            info.cq_slot_size
        );
    }
    Ok(())
}

pub fn create_errors(ctx: &Ctx) -> CaseResult {
    let max = ctx.dev.info().max_entries;
    expect_errno("0 entries", PvRing::new(&ctx.dev, 0, 0), &[libc::EINVAL])?;
    expect_errno(
        "max_entries + 1",
        PvRing::new(&ctx.dev, max + 1, 0),
        &[libc::EINVAL],
    )?;
    expect_errno(
        "u32::MAX entries",
        PvRing::new(&ctx.dev, u32::MAX, 0),
        &[libc::EINVAL],
    )?;
    expect_errno(
        "unknown flag 2 (1 is VURING_RING_POLLED)",
        PvRing::new(&ctx.dev, 8, 2),
        &[libc::EINVAL],
    )?;
    expect_errno(
        "unknown flag 1<<31",
        PvRing::new(&ctx.dev, 8, 1 << 31),
        &[libc::EINVAL],
    )?;
    // The device still creates rings.
    let mut r = ctx.ring()?;
    ctx.good_io(&mut r, 0)
}

pub fn create_until_enospc(ctx: &Ctx) -> CaseResult {
    let max = ctx.dev.info().max_rings as usize;
    let mut rings = Vec::new();
    let err = loop {
        match PvRing::new(&ctx.dev, 1, 0) {
            Ok(r) => rings.push(r),
            Err(e) => break e,
        }
        if rings.len() > max {
            fail!("created {} rings, max_rings {max}", rings.len());
        }
    };
    ensure!(
        rings.len() == max,
        "-ENOSPC after {} rings, max_rings {max} (leaked slots?)",
        rings.len()
    );
    expect_errno("create past max_rings", Err::<(), _>(err), &[libc::ENOSPC])?;
    let mut ids: Vec<u32> = rings.iter().map(|r| r.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == max, "ring ids repeat");
    // Free one: creation works again, and the new ring does I/O.
    rings.swap_remove(max / 2);
    let mut r = step("create after freeing one", PvRing::new(&ctx.dev, 8, 0))?;
    ctx.good_io(&mut r, 1)
}

pub fn register_errors(ctx: &Ctx) -> CaseResult {
    let mut r = ctx.ring()?;
    expect_errno(
        "unregister without buffers",
        r.unregister_buffers(),
        &[libc::ENXIO],
    )?;
    expect_errno(
        "register 0 iovecs",
        r.register_buffers(&[]),
        &[libc::EINVAL],
    )?;
    let zero = libc::iovec {
        iov_base: ctx.pool_a.at(0).cast(),
        iov_len: 0,
    };
    expect_errno(
        "register a 0-length iovec",
        r.register_buffers(&[zero]),
        &[libc::EINVAL],
    )?;
    // An unmapped page: reserve address space and unmap it.
    // SAFETY: a fresh PROT_NONE mapping, unmapped at once; only its address is used.
    let hole = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            1 << 16,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        ensure!(p != libc::MAP_FAILED, "mmap");
        libc::munmap(p, 1 << 16);
        p
    };
    let bad = libc::iovec {
        iov_base: hole,
        iov_len: 1 << 16,
    };
    expect_errno(
        "register unmapped memory",
        r.register_buffers(&[bad]),
        &[libc::EFAULT],
    )?;
    let kernel = libc::iovec {
        iov_base: 0xffff_8880_0000_0000usize as *mut libc::c_void,
        iov_len: 4096,
    };
    expect_errno(
        "register a kernel address",
        r.register_buffers(&[kernel]),
        &[libc::EFAULT],
    )?;
    ensure!(r.extents().is_empty(), "failed registration left extents");
    // Works, then -EBUSY a second time, then unregister and again.
    ctx.reg_a(&mut r)?;
    expect_errno(
        "register twice",
        r.register_buffers(&ctx.pool_b.iovecs(NBUF, BUF)),
        &[libc::EBUSY],
    )?;
    ctx.good_io(&mut r, 2)?;
    step("unregister", r.unregister_buffers())?;
    expect_errno("unregister twice", r.unregister_buffers(), &[libc::ENXIO])?;
    ctx.reg_b(&mut r)?;
    ctx.good_io(&mut r, 3)
}

/// Rings created one after another (the device reuses the lowest free
/// slot) start from zeroed ring state and see only their own completions,
/// also a few milliseconds after creation (a previous host ring of the same
/// slot must not write into it while it is torn down).
pub fn slot_reuse_fresh_state(ctx: &Ctx) -> CaseResult {
    for k in 0..24u32 {
        let mut r = step("create", PvRing::new(&ctx.dev, 8, 0))?;
        let id = r.id();
        let at_create = r.ring_indices();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let later = r.ring_indices();
        ensure!(
            at_create == (0, 0, 0, 0) && later == (0, 0, 0, 0),
            "ring {k} (id {id}): indices {at_create:?} at creation, {later:?} 5 ms later, want all 0 (stale state of the slot's previous ring)"
        );
        for n in 0..=(k % 3) {
            let res = ctx.run1(&mut r, pv_uring::nop())?;
            ensure!(res == 0, "ring {k}: NOP {n}: res {res}");
        }
    }
    Ok(())
}

/// `--cycles N`: create, register or clone, one checked read, destroy.
pub fn cycles(ctx: &Ctx, n: u64) -> CaseResult {
    let mut base = ctx.ring()?;
    let sb = ctx.reg_b(&mut base)?;
    let start = Instant::now();
    let step_every = (n / 10).max(1);
    for i in 0..n {
        let mut r = match PvRing::new(&ctx.dev, 8, 0) {
            Ok(r) => r,
            Err(e) => fail!("cycle {i}: create: {e}"),
        };
        let res = if i % 2 == 0 {
            ctx.reg_a(&mut r)
                .map(drop)
                .and_then(|_| ctx.good_io(&mut r, i))
        } else {
            match r.clone_buffers_from(CloneSrc::Ring(&base), 0, 0, 0, 0) {
                Ok(t) => ctx.check_clone(
                    &mut r,
                    &t,
                    (i as usize / 2) % sb.len(),
                    &sb[(i as usize / 2) % sb.len()],
                    i,
                ),
                Err(e) => fail!("cycle {i}: clone: {e}"),
            }
        };
        if let Err(e) = res {
            fail!("cycle {i}: {e}");
        }
        if i % 3 == 0 {
            if let Err(e) = r.unregister_buffers() {
                fail!("cycle {i}: unregister: {e}");
            }
        }
        drop(r);
        if (i + 1) % step_every == 0 {
            eprintln!(
                "pv-suite: {} of {n} cycles, {:.1} ms each",
                i + 1,
                start.elapsed().as_secs_f64() * 1e3 / (i + 1) as f64
            );
        }
    }
    ctx.good_io(&mut base, n)
}
