//! CLONE semantics, case by case after guest-images/programs/clone-suite
//! (the host runs IORING_REGISTER_CLONE_BUFFERS between its rings; errors
//! come back as negative ioctl returns).

use crate::ctx::{Ctx, BUF, ENTRIES};
use crate::harness::{expect_errno, step, CaseError, CaseResult};
use crate::{ensure, fail, skip};
use pv_uring::{
    CloneSrc, Extent, InfoExt, PvRing, VuringClone, VURING_CLONE_DST_REPLACE as REPLACE,
    VURING_RING_POLLED,
};

/// `IORING_MAX_REG_BUFFERS`.
const KERNEL_MAX_BUFS: u32 = 1 << 14;

/// A ring holding pool A and a fresh ring holding a whole clone of its
/// table: (source, its extents, clone, the clone's table).
type Cloned = (PvRing, Vec<Extent>, PvRing, Vec<Extent>);

fn a_and_clone(ctx: &Ctx) -> Result<Cloned, CaseError> {
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    let t = step(
        "clone",
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
    )?;
    Ok((a, sa, b, t))
}

pub fn clone_all_to_empty(ctx: &Ctx) -> CaseResult {
    let (mut a, src, mut b, t) = a_and_clone(ctx)?;
    ensure!(
        t.len() == src.len(),
        "clone: {} buffers, want {}",
        t.len(),
        src.len()
    );
    for (i, s) in src.iter().enumerate() {
        ctx.check_clone(&mut b, &t, i, s, i as u64)?;
    }
    // The source still works too.
    ctx.good_io(&mut a, 99)
}

pub fn ebusy_dst_has_buffers(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    let own = ctx.reg_b(&mut b)?;
    expect_errno(
        "clone into a ring with buffers",
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
        &[libc::EBUSY],
    )?;
    // Its own table is untouched.
    ctx.check_maps(&mut b, 0, 0, own[0].user_addr as *mut u8, 5)
}

pub fn enxio_src_empty(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    let mut b = ctx.ring()?;
    expect_errno(
        "clone from a never-registered ring",
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
        &[libc::ENXIO],
    )?;
    ctx.reg_a(&mut a)?;
    step("unregister", a.unregister_buffers())?;
    expect_errno(
        "clone from an unregistered ring",
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
        &[libc::ENXIO],
    )
}

fn raw(src: &PvRing, flags: u32, src_off: u32, dst_off: u32, nr: u32) -> VuringClone {
    VuringClone {
        src: src.fd() as u32,
        flags,
        src_off,
        dst_off,
        nr,
        ..Default::default()
    }
}

pub fn einval_unknown_flags(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    for f in [4u32, 8, 1 << 31, REPLACE | 4] {
        expect_errno(
            &format!("flags {f:#x}"),
            b.clone_raw(&mut raw(&a, f, 0, 0, 0)),
            &[libc::EINVAL],
        )?;
    }
    ensure!(
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0).is_ok(),
        "control clone failed"
    );
    Ok(())
}

pub fn einval_nonzero_resv(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    for v in [1u32, 1 << 31] {
        let mut c = raw(&a, 0, 0, 0, 0);
        c.resv = v;
        expect_errno(
            &format!("resv {v:#x}"),
            b.clone_raw(&mut c),
            &[libc::EINVAL],
        )?;
    }
    Ok(())
}

/// Clones `(flags, src_off, dst_off, nr)` = `args(n)` from a ring holding
/// pool A (`n` buffers) into a fresh ring; expects one of `want`.
fn clone_fails(
    ctx: &Ctx,
    what: &str,
    args: impl FnOnce(u32) -> (u32, u32, u32, u32),
    want: &[i32],
) -> CaseResult {
    let mut a = ctx.ring()?;
    let n = ctx.reg_a(&mut a)?.len() as u32;
    let mut b = ctx.ring()?;
    let (flags, src_off, dst_off, nr) = args(n);
    expect_errno(
        what,
        b.clone_buffers_from(CloneSrc::Ring(&a), flags, src_off, dst_off, nr),
        want,
    )
}

pub fn einval_offsets_without_nr(ctx: &Ctx) -> CaseResult {
    clone_fails(ctx, "src_off 1, nr 0", |_| (0, 1, 0, 0), &[libc::EINVAL])?;
    clone_fails(ctx, "dst_off 1, nr 0", |_| (0, 0, 1, 0), &[libc::EINVAL])
}

pub fn einval_nr_exceeds_src(ctx: &Ctx) -> CaseResult {
    let args = |n| (0, 0, 0, n + 1);
    clone_fails(ctx, "nr = source + 1", args, &[libc::EINVAL])
}

pub fn einval_dst_beyond_max(ctx: &Ctx) -> CaseResult {
    let args = |_| (0, 0, KERNEL_MAX_BUFS, 1);
    clone_fails(ctx, "dst_off 16384, nr 1", args, &[libc::EINVAL])
}

pub fn eoverflow_src_wrap(ctx: &Ctx) -> CaseResult {
    let args = |_| (0, u32::MAX, 0, 1);
    clone_fails(ctx, "src_off u32::MAX, nr 1", args, &[libc::EOVERFLOW])
}

pub fn eoverflow_dst_wrap(ctx: &Ctx) -> CaseResult {
    let args = |_| (0, 0, u32::MAX, 1);
    clone_fails(ctx, "dst_off u32::MAX, nr 1", args, &[libc::EOVERFLOW])
}

pub fn eoverflow_src_range(ctx: &Ctx) -> CaseResult {
    let args = |n| (0, n - 1, 0, 2);
    clone_fails(ctx, "src_off n-1, nr 2", args, &[libc::EOVERFLOW])
}

pub fn ebadf_src_not_a_ring(ctx: &Ctx) -> CaseResult {
    let mut b = ctx.ring()?;
    expect_errno(
        "src fd -1",
        b.clone_buffers_from(CloneSrc::RawFd(u32::MAX), 0, 0, 0, 0),
        &[libc::EBADF, libc::EINVAL],
    )?;
    // A /dev/vuring fd without a ring: no buffers to clone.
    let plain = ctx.dev.fd() as u32;
    expect_errno(
        "src = device fd without a ring",
        b.clone_buffers_from(CloneSrc::RawFd(plain), 0, 0, 0, 0),
        &[libc::ENXIO, libc::EINVAL, libc::ENOENT],
    )
}

pub fn enoent_unknown_table_token(ctx: &Ctx) -> CaseResult {
    if !ctx.dev.info().has_table() {
        skip!("device without PVU_F_TABLE (see table-publish-errors)");
    }
    let mut b = ctx.ring()?;
    // Nothing is published: every token is unknown.
    for token in [0, 1, 63, 64, u64::MAX] {
        expect_errno(
            &format!("token {token:#x}"),
            b.clone_buffers_from(CloneSrc::Table(token), 0, 0, 0, 0),
            &[libc::ENOENT],
        )?;
    }
    Ok(())
}

pub fn clone_into_self(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    let src = ctx.reg_a(&mut a)?;
    let n = src.len() as u32;
    // 0..2 -> n..n+2: the table grows by two, aliases of 0 and 1.
    let t = step(
        "clone 0..2 -> n..n+2 REPLACE",
        a.clone_buffers_from(CloneSrc::This, REPLACE, 0, n, 2),
    )?;
    ensure!(
        t.len() == n as usize + 2,
        "table has {} entries, want {}",
        t.len(),
        n + 2
    );
    ctx.check_clone(&mut a, &t, n as usize, &src[0], 1)?;
    ctx.check_clone(&mut a, &t, n as usize + 1, &src[1], 2)?;
    ctx.check_clone(&mut a, &t, 0, &src[0], 3)?;
    // Overlapping shift 0..n -> 2..n+2 (reaches the end of the table, as
    // the host requires for REPLACE).
    let t2 = step(
        "clone 0..n -> 2..n+2 REPLACE",
        a.clone_buffers_from(CloneSrc::This, REPLACE, 0, 2, n),
    )?;
    ensure!(
        t2.len() == t.len(),
        "table has {} entries, want {}",
        t2.len(),
        t.len()
    );
    ctx.check_clone(&mut a, &t2, 0, &src[0], 10)?;
    ctx.check_clone(&mut a, &t2, 1, &src[1], 11)?;
    ctx.check_clone(&mut a, &t2, 2, &src[0], 12)?;
    ctx.check_clone(&mut a, &t2, 3, &src[1], 13)?;
    ctx.check_clone(&mut a, &t2, n as usize + 1, &src[n as usize - 1], 14)
}

pub fn replace_keeps_outside_range(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    // Two single pages: exactly two buffers, fewer than A's (the host
    // requires destination count <= source count for REPLACE).
    let sb = ctx.reg_pages_b(&mut b, &[0, BUF])?;
    let t = step(
        "clone A 0..2 -> B 1..3 REPLACE",
        b.clone_buffers_from(CloneSrc::Ring(&a), REPLACE, 0, 1, 2),
    )?;
    ensure!(t.len() == 3, "table has {} entries, want 3", t.len());
    ctx.check_clone(&mut b, &t, 0, &sb[0], 1)?;
    ctx.check_clone(&mut b, &t, 1, &sa[0], 2)?;
    ctx.check_clone(&mut b, &t, 2, &sa[1], 3)?;
    // Past the end: the table grows, with a hole at 3.
    let t = step(
        "clone A 0..1 -> B 4..5 REPLACE",
        b.clone_buffers_from(CloneSrc::Ring(&a), REPLACE, 0, 4, 1),
    )?;
    ensure!(t.len() == 5, "table has {} entries, want 5", t.len());
    ensure!(t[3].len == 0, "hole at 3 is {:x?}", t[3]);
    ctx.check_not_maps(&mut b, 3, 0)?;
    ctx.check_clone(&mut b, &t, 4, &sa[0], 6)?;
    ctx.check_clone(&mut b, &t, 2, &sa[1], 7)?;
    ctx.check_clone(&mut b, &t, 0, &sb[0], 8)
}

pub fn einval_replace_short_of_end(ctx: &Ctx) -> CaseResult {
    // docs/pv-uring.md: with DST_REPLACE the clone must reach the end of
    // the destination table, and the destination may not have more
    // buffers than the source; else -EINVAL (host kernels differ in what
    // they keep after the range).
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    let sb = ctx.reg_pages_b(&mut b, &[0, BUF, 2 * BUF])?;
    expect_errno(
        "REPLACE 0..1 -> 0..1 of a 3-entry table",
        b.clone_buffers_from(CloneSrc::Ring(&a), REPLACE, 0, 0, 1),
        &[libc::EINVAL],
    )?;
    let mut c = ctx.ring()?;
    ctx.reg_pages_b(&mut c, &[3 * BUF])?;
    expect_errno(
        "REPLACE from a 1-entry source into a 3-entry table",
        b.clone_buffers_from(CloneSrc::Ring(&c), REPLACE, 0, 2, 1),
        &[libc::EINVAL],
    )?;
    // B is unchanged and the same clone reaching the end works.
    ctx.check_maps(&mut b, 1, 0, sb[1].user_addr as *mut u8, 1)?;
    let t = step(
        "REPLACE A 0..1 -> B 2..3",
        b.clone_buffers_from(CloneSrc::Ring(&a), REPLACE, 0, 2, 1),
    )?;
    ctx.check_clone(&mut b, &t, 2, &sa[0], 2)
}

pub fn partial_range_maps(ctx: &Ctx) -> CaseResult {
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let mut b = ctx.ring()?;
    let t = step(
        "clone A 1..3 -> B 2..4",
        b.clone_buffers_from(CloneSrc::Ring(&a), 0, 1, 2, 2),
    )?;
    ensure!(t.len() == 4, "table has {} entries, want 4", t.len());
    ctx.check_not_maps(&mut b, 0, 0)?;
    ctx.check_not_maps(&mut b, 1, 0)?;
    ctx.check_clone(&mut b, &t, 2, &sa[1], 1)?;
    ctx.check_clone(&mut b, &t, 3, &sa[2], 2)?;
    // Index 2 holds A[1] only: a range past its end is refused.
    ctx.check_not_maps(&mut b, 2, sa[1].len)
}

pub fn after_src_unregister(ctx: &Ctx) -> CaseResult {
    let (mut a, sa, mut b, t) = a_and_clone(ctx)?;
    step("unregister source", a.unregister_buffers())?;
    for i in [0, sa.len() - 1] {
        ctx.check_clone(&mut b, &t, i, &sa[i], i as u64)?;
    }
    ctx.check_not_maps(&mut a, 0, 0)
}

pub fn after_src_close(ctx: &Ctx) -> CaseResult {
    let (a, sa, mut b, t) = a_and_clone(ctx)?;
    drop(a);
    for i in [0, sa.len() - 1] {
        ctx.check_clone(&mut b, &t, i, &sa[i], i as u64)?;
    }
    // And a third ring can clone from the clone.
    let mut c = ctx.ring()?;
    let t = step(
        "clone from the clone",
        c.clone_buffers_from(CloneSrc::Ring(&b), 0, 0, 0, 0),
    )?;
    ctx.check_clone(&mut c, &t, 1, &sa[1], 7)
}

/// A polled ring as a clone destination: its submitter takes SQEs without
/// a doorbell, sets `PVU_SQ_NEED_WAKEUP` after 1 s without work, and the
/// library rings the doorbell then.
pub fn polled_dst(ctx: &Ctx) -> CaseResult {
    let r = PvRing::new(&ctx.dev, ENTRIES, VURING_RING_POLLED);
    if !ctx.dev.info().has_polled() {
        return expect_errno("polled ring without PVU_F_POLLED", r, &[libc::EOPNOTSUPP]);
    }
    let mut s = step("create polled ring", r)?;
    ensure!(
        s.is_polled(),
        "ring_flags {:#x} lack VURING_RING_POLLED",
        s.create_info().ring_flags
    );
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let t = step(
        "clone",
        s.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
    )?;
    for (i, e) in sa.iter().enumerate().take(4) {
        ctx.check_clone(&mut s, &t, i, e, i as u64)?;
    }
    // Let the submitter go to sleep (1 s without work), then submit again:
    // the doorbell is rung because NEED_WAKEUP is set.
    let t0 = std::time::Instant::now();
    while s.sq_flags() & pv_uring::uring_abi::wire::PVU_SQ_NEED_WAKEUP == 0 {
        ensure!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "the polled submitter did not set PVU_SQ_NEED_WAKEUP after 5 s idle"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctx.check_clone(&mut s, &t, 0, &sa[0], 9)
}

pub fn pool_of_rings(ctx: &Ctx) -> CaseResult {
    let want = ctx.p.pool_rings;
    let max = ctx.dev.info().max_rings as usize;
    if want + 1 > max {
        skip!("pool of {want} rings + source needs max_rings >= {} (device has {max}; --uring rings=N or rv.pv.pool_rings)", want + 1);
    }
    let mut a = ctx.ring()?;
    let sa = ctx.reg_a(&mut a)?;
    let mut pool = Vec::with_capacity(want);
    for k in 0..want {
        let mut r = step(&format!("create ring {k}"), PvRing::new(&ctx.dev, 8, 0))?;
        let t = step(
            &format!("clone into ring {k}"),
            r.clone_buffers_from(CloneSrc::Ring(&a), 0, 0, 0, 0),
        )?;
        ensure!(
            t.len() == sa.len(),
            "ring {k}: {} buffers, want {}",
            t.len(),
            sa.len()
        );
        pool.push((r, t));
    }
    drop(a);
    for (k, (r, t)) in pool.iter_mut().enumerate() {
        let i = k % sa.len();
        if let Err(e) = ctx.check_clone(r, t, i, &sa[i], k as u64) {
            fail!("ring {k}: {e}");
        }
    }
    Ok(())
}
